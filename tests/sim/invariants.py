"""Raft's safety properties, checked incrementally after every simulation step.

The properties are those of Raft Figure 3 (thesis Figure 3.2), plus what the
driver promises clients (ARCHITECTURE.md "Safety rules"):

``election_safety``
    At most one leader per term, over the whole run (Raft §5.2).
``log_matching``
    Two entries with the same index and term hold the same data and follow
    identical prefixes (Raft §5.3). Checked per entry: the first time any
    node logs ``(index, term)`` it is recorded with its data and the term of
    the entry before it; every later sighting must agree. By induction on
    the index this is the whole prefix property.
``leader_completeness``
    An entry committed in term T is in the log of every leader of a term
    >= T (Raft §5.4). T is taken as the lowest term in which any node was
    seen with the entry committed, which is never below the true one.
``state_machine_safety``
    No two nodes commit or apply different entries at one index (Raft §5.4.3);
    each node applies in index order without gaps.
``commit_monotonic``
    A node's commit index never decreases within one life.
``commit_durable``
    Every index ever known committed is durable (fsynced) on a quorum, now and
    forever: the precise form of "the cluster-wide commit never goes back
    across crashes". A node's *stored commit index* may legitimately be
    behind after a crash (a commit-only hard state is not fsynced); the
    committed entries themselves may never be lost (Raft §5.4, thesis §10.2.1).
``acked_writes``
    A write is acknowledged to its client only once it is applied: every
    acknowledged ``(index, term)`` is in the global applied map
    (ARCHITECTURE.md: "answered only after it is committed *and* applied").
``snapshot_state``
    A snapshot holds, and a node restored from one (installed from the
    leader, or loaded at start) equals, the state that applying the
    committed log up to the snapshot's index gives (``tests.sim.reference``):
    copy-on-write capture, transfer, install and restore lose nothing.
``snapshot_coverage``
    A node's durable log never starts after an entry that its newest durable
    snapshot does not hold (ARCHITECTURE.md: "compaction never removes an
    entry that is not inside a durable snapshot"), checked on every node,
    up or down, after every step.

End-of-run properties (checked by the scheduler): ``convergence``,
``final_state`` and ``linearizability``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from tests.sim.reference import Reference, kv_of
from zraft.core import Entry, EntryKind, Role
from zraft.replica import entries

if TYPE_CHECKING:
    from tests.sim.node import SimNode
    from tests.sim.snapshots import SimSnapshot

ELECTION_SAFETY = "election_safety"
LOG_MATCHING = "log_matching"
LEADER_COMPLETENESS = "leader_completeness"
STATE_MACHINE_SAFETY = "state_machine_safety"
COMMIT_MONOTONIC = "commit_monotonic"
COMMIT_DURABLE = "commit_durable"
ACKED_WRITES = "acked_writes"
SNAPSHOT_STATE = "snapshot_state"
SNAPSHOT_COVERAGE = "snapshot_coverage"
CONVERGENCE = "convergence"
FINAL_STATE = "final_state"
LINEARIZABILITY = "linearizability"

ALL_CHECKS = frozenset(
    {
        ELECTION_SAFETY,
        LOG_MATCHING,
        LEADER_COMPLETENESS,
        STATE_MACHINE_SAFETY,
        COMMIT_MONOTONIC,
        COMMIT_DURABLE,
        ACKED_WRITES,
        SNAPSHOT_STATE,
        SNAPSHOT_COVERAGE,
        CONVERGENCE,
        FINAL_STATE,
        LINEARIZABILITY,
    }
)


class Violation(Exception):
    """A safety property failed: ``invariant`` names it, ``details`` says how."""

    def __init__(self, invariant: str, details: str) -> None:
        super().__init__(f"{invariant}: {details}")
        self.invariant = invariant
        self.details = details


class Invariants:
    """Global knowledge of the run, and the checks against it.

    The scheduler calls ``logged``/``synced``/``applied`` from the nodes'
    Ready handling, ``booted`` after each restart and ``after_step`` once per
    step. Each method raises ``Violation`` on the first broken property among
    those named in ``checks``.
    """

    def __init__(self, nodes: Sequence[SimNode], checks: Iterable[str] = ALL_CHECKS) -> None:
        self.nodes = nodes  # every node, up or down: durable logs survive crashes
        self.quorum = len(nodes) // 2 + 1
        self.checks = frozenset(checks)
        self.leader_of_term: dict[int, str] = {}
        # (index, term) -> (kind, data, term of the entry before it)
        self.entries: dict[tuple[int, int], tuple[EntryKind, bytes, int]] = {}
        self.committed: list[int] = []  # term of the committed entry at index i + 1
        self.commit_term: list[int] = []  # lowest term it was seen committed in
        self.applied_log: list[tuple[int, bytes]] = []  # (term, data) applied at index i + 1
        self.applied_entries: list[Entry] = []  # the same entries, whole (for the reference)
        self.reference = Reference(self.applied_entries)
        self.last_commit: dict[str, int] = {}  # per node, this life
        self.leader_checked: dict[tuple[str, int, int], int] = {}  # (node, life, term) -> done
        self.acked: list[tuple[int, int, bytes, str]] = []  # (index, term, data, what)
        self.acked_checked = 0

    # -- hooks from the nodes' Ready handling -------------------------------

    def logged(self, node: SimNode, entries: Sequence[Entry]) -> None:
        """Check entries entering ``node``'s log against every earlier sighting (Raft §5.3)."""
        if LOG_MATCHING not in self.checks:
            return
        log = node.raft.log
        for e in entries:
            prev = log.term(e.index - 1) or 0
            seen = self.entries.setdefault((e.index, e.term), (e.kind, e.data, prev))
            if seen != (e.kind, e.data, prev):
                raise Violation(
                    LOG_MATCHING,
                    f"{node.id} logs index {e.index} term {e.term} ({_show(e.data)}, "
                    f"after term {prev}) but it was first seen as ({_show(seen[1])}, "
                    f"after term {seen[2]})",
                )

    def synced(self, node: SimNode, first_index: int) -> None:
        """Check that an fsync that rewrote ``node``'s durable log from ``first_index`` on
        left every committed entry on a quorum's durable logs."""
        if COMMIT_DURABLE not in self.checks:
            return
        for index in range(first_index, len(self.committed) + 1):
            self._check_durable(index, node.id)

    def applied(self, node: SimNode, entry: Entry) -> None:
        """Check an applied entry: in order on ``node``, and the same on every node (§5.4.3).

        The first entry applied at each index is recorded whatever the checks:
        the reference state (``snapshot_state``) is built from them.
        """
        if entry.index > len(self.applied_log):
            if entry.index == len(self.applied_log) + 1:
                self.applied_log.append((entry.term, entry.data))
                self.applied_entries.append(entry)
        if STATE_MACHINE_SAFETY not in self.checks:
            return
        if len(node.applied_terms) != entry.index:
            raise Violation(
                STATE_MACHINE_SAFETY,
                f"{node.id} applies index {entry.index} after {len(node.applied_terms) - 1}",
            )
        if entry.index > len(self.applied_log):
            raise Violation(
                STATE_MACHINE_SAFETY,
                f"{node.id} applies index {entry.index} before any node applied "
                f"{len(self.applied_log) + 1}",
            )
        first = self.applied_log[entry.index - 1]
        if first != (entry.term, entry.data):
            raise Violation(
                STATE_MACHINE_SAFETY,
                f"{node.id} applies index {entry.index} term {entry.term} "
                f"({_show(entry.data)}) where term {first[0]} "
                f"({_show(first[1])}) was applied before",
            )

    def booted(self, node: SimNode) -> None:
        """Start a new life of ``node``: its recovered commit prefix is checked again, and
        a state loaded from a snapshot (or from nothing) is compared with the reference."""
        self.last_commit[node.id] = 0
        if node.uncovered:
            self.restored(node, "restarted with no snapshot holding the start of its log")
        elif node.applied_index:
            self.restored(node, "restarted from its snapshot")

    def snapshot_taken(self, node: SimNode, snap: SimSnapshot) -> None:
        """Check that a snapshot just written holds the committed state at its index."""
        if SNAPSHOT_STATE not in self.checks:
            return
        index = snap.meta.index
        if snap.digest() != self.reference.hash_at(index):
            raise Violation(
                SNAPSHOT_STATE,
                f"{node.id} wrote a snapshot at index {index} that differs from the committed "
                f"log applied up to {index} ({self.reference.kv_at(index)})",
            )

    def restored(self, node: SimNode, how: str) -> None:
        """Check that ``node``, just restored, equals the committed state at its index."""
        if SNAPSHOT_STATE not in self.checks:
            return
        index = node.applied_index
        if node.replica.state_hash() != self.reference.hash_at(index):
            raise Violation(
                SNAPSHOT_STATE,
                f"{node.id} {how} at index {index} holds {kv_of(node.replica)} (and its "
                f"sessions) but the committed log applied up to {index} gives "
                f"{self.reference.kv_at(index)}",
            )

    def acknowledged(self, index: int, term: int, data: bytes, what: str) -> None:
        """Record that a client was told its write at ``(index, term)`` took effect."""
        self.acked.append((index, term, data, what))

    # -- once per step -------------------------------------------------------

    def after_step(self) -> None:
        """Check every property that depends on the nodes' current state."""
        checks = self.checks
        lowered = len(self.committed)
        leaders = []
        for node in self.nodes:
            if not node.up:
                continue
            r = node.raft
            if r.role is Role.LEADER:
                leaders.append(node)
                first = self.leader_of_term.setdefault(r.term, node.id)
                if first != node.id and ELECTION_SAFETY in checks:
                    raise Violation(
                        ELECTION_SAFETY, f"{node.id} and {first} are both leaders of term {r.term}"
                    )
            commit = r.log.committed
            last = self.last_commit.get(node.id, 0)
            if commit < last and COMMIT_MONOTONIC in checks:
                raise Violation(
                    COMMIT_MONOTONIC, f"{node.id}'s commit index went from {last} to {commit}"
                )
            if commit > last:
                lowered = min(lowered, self._register_commits(node, last, commit))
                self.last_commit[node.id] = commit
        if LEADER_COMPLETENESS in checks:
            self._check_leaders(leaders, lowered)
        if ACKED_WRITES in checks:
            self._check_acks()
        if SNAPSHOT_COVERAGE in checks:
            self._check_coverage()

    def _check_coverage(self) -> None:
        """Every node's durable log starts at or below its newest durable snapshot."""
        for node in self.nodes:
            start = node.snaps.log_start.index
            newest = node.snaps.store.newest_index()
            if start > newest:
                raise Violation(
                    SNAPSHOT_COVERAGE,
                    f"{node.id}'s durable log starts after entry {start} but its newest "
                    f"durable snapshot is at {newest or 'none'}: a crash now loses entries "
                    f"{newest + 1}..{start}",
                )

    def _register_commits(self, node: SimNode, lo: int, hi: int) -> int:
        """Record indexes lo+1..hi as committed on ``node``; return the lowest index whose
        commit term went down (len(committed) if none)."""
        log, term = node.raft.log, node.raft.term
        lowered = len(self.committed)
        for index in range(lo + 1, hi + 1):
            t = log.term(index)
            if t is None:  # below the log's start: a snapshot holds it
                if index <= len(node.applied_terms):
                    t = node.applied_terms[index - 1]  # the snapshot's record
                elif index <= len(self.committed):
                    continue  # a received snapshot, not switched in yet: nothing to compare
                else:
                    raise Violation(
                        STATE_MACHINE_SAFETY,
                        f"{node.id} commits index {index}, which it does not hold and "
                        "no node was seen committing",
                    )
            if index <= len(self.committed):
                if self.committed[index - 1] != t and STATE_MACHINE_SAFETY in self.checks:
                    raise Violation(
                        STATE_MACHINE_SAFETY,
                        f"{node.id} commits index {index} with term {t} where term "
                        f"{self.committed[index - 1]} was committed before",
                    )
                if term < self.commit_term[index - 1]:
                    self.commit_term[index - 1] = term
                    lowered = min(lowered, index - 1)
            else:
                self.committed.append(t)
                self.commit_term.append(term)
                if COMMIT_DURABLE in self.checks:
                    self._check_durable(index, node.id)
        return lowered

    def _check_durable(self, index: int, why: str) -> None:
        term = self.committed[index - 1]
        holders = [n.id for n in self.nodes if n.durable_term(index) == term]
        if len(holders) < self.quorum:
            raise Violation(
                COMMIT_DURABLE,
                f"index {index} (term {term}) is committed (seen on {why}) but durable only on "
                f"{holders or 'no node'}; a quorum is {self.quorum}",
            )

    def _check_leaders(self, leaders: list[SimNode], lowered: int) -> None:
        """Raft §5.4 Leader Completeness, for the leaders of this step."""
        checked: dict[tuple[str, int, int], int] = {}
        committed, commit_term = self.committed, self.commit_term
        for node in leaders:
            r = node.raft
            key = (node.id, node.life, r.term)
            # Entries below the log's start are in the snapshot it restored from
            # (checked against the reference by snapshot_state when restored).
            start = max(min(self.leader_checked.get(key, 0), lowered), r.log.snapshot_index - 1)
            for i in range(start, len(committed)):
                if commit_term[i] <= r.term and r.log.term(i + 1) != committed[i]:
                    raise Violation(
                        LEADER_COMPLETENESS,
                        f"{node.id} leads term {r.term} but its log has term "
                        f"{r.log.term(i + 1)} at index {i + 1}, committed with term "
                        f"{committed[i]} (seen committed in term {commit_term[i]})",
                    )
            checked[key] = len(committed)
        self.leader_checked = checked

    def _check_acks(self) -> None:
        acked, applied = self.acked, self.applied_log
        for n in range(self.acked_checked, len(acked)):
            index, term, data, what = acked[n]
            if index > len(applied) or applied[index - 1] != (term, data):
                have = "nothing" if index > len(applied) else f"term {applied[index - 1][0]}"
                raise Violation(
                    ACKED_WRITES,
                    f"{what} was acknowledged at index {index} term {term} but the applied "
                    f"state has {have} there",
                )
        self.acked_checked = len(acked)


def _show(data: bytes) -> str:
    """Return entry data for a message: the client and command, or "no-op" for an empty entry."""
    if not data:
        return "no-op"
    try:
        p = entries.decode(data)
    except ValueError:
        return repr(data[:40])
    return f"{p.client}#{p.seq} {p.command}" if p.command is not None else "clock"
