"""The one door into the pure Raft core, and the role switches.

``Raft`` does no I/O: time enters only as ``tick()``, randomness only as the
injected ``random.Random``, and everything the node must do comes back from
``ready()`` as a value (see ``zraft.core.messages.Ready``). ``step`` applies
the shared term rules (Raft §5.1), then the current role's handler, which
``become_*`` swaps (etcd's stepLeader/stepCandidate/stepFollower):

* ``zraft.core.follower``: appends and heartbeats (§5.3);
* ``zraft.core.election``: vote requests, PreVote and the candidate (§5.2, thesis §9.6);
* ``zraft.core.leader``: replication, commitment, CheckQuorum, transfer;
* ``zraft.core.reads``: ReadIndex (thesis §6.4);
* ``zraft.core.quorum``: every majority count.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import zraft.core.election as election
import zraft.core.follower as follower
import zraft.core.leader as leader
import zraft.core.reads as reads
from zraft.core.config import CoreConfig
from zraft.core.election import LEADER_MESSAGES, TRANSFER_CONTEXT, VOTE_REQUESTS
from zraft.core.log import RaftLog
from zraft.core.messages import (
    NO_NODE,
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    NodeId,
    ReadContext,
    Ready,
    Role,
    SnapshotMeta,
    SoftState,
)
from zraft.core.state import RaftState
from zraft.core.status import PeerProgress, RaftStatus

__all__ = ["CoreConfig", "NotLeader", "ProposalDropped", "Raft", "TRANSFER_CONTEXT"]

_READ_MESSAGES = (MsgType.READ_INDEX, MsgType.READ_INDEX_RESP)

StepHandler = Callable[[RaftState, Message], None]


class NotLeader(Exception):
    """The request needs the leader; ``leader_id`` is who this node thinks leads."""

    def __init__(self, leader_id: NodeId) -> None:
        super().__init__(f"not the leader (leader: {leader_id or 'unknown'})")
        self.leader_id = leader_id


class ProposalDropped(Exception):
    """The leader cannot take proposals now (e.g. a leadership transfer is under way)."""


class Raft(RaftState):
    """One node's Raft state machine. Single-threaded: the driver is the only caller.

    The door: ``tick``, ``step``, ``propose``, ``read_index``, ``campaign``,
    ``transfer_leader``, ``compact``, ``report_snapshot`` go in;
    ``has_ready``/``ready``/``advance`` come out;
    ``status`` and ``transfer_target`` observe. ``role``, ``term`` and
    ``leader_id`` are plain attributes, read-only for callers. Between
    ``ready()`` and ``advance()`` the caller must not call anything else: it
    persists, sends and applies what the Ready says, then advances.
    """

    def __init__(
        self,
        config: CoreConfig,
        rng: random.Random,
        hard_state: HardState | None = None,
        log: RaftLog | None = None,
    ) -> None:
        super().__init__(config, rng, hard_state, log)
        self._prev_hard = HardState(self.term, self.voted_for, self.log.committed)
        self._prev_soft = SoftState(NO_NODE, Role.FOLLOWER, self.term)
        self._step: StepHandler = follower.step
        self.become_follower(self.term, NO_NODE)

    # ------------------------------------------------------------------
    # the door: inputs
    # ------------------------------------------------------------------

    def tick(self) -> None:
        """Advance logical time by one tick."""
        self.now += 1
        if self.role is Role.LEADER:
            leader.tick(self)
            return
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_timeout:
            self.election_elapsed = 0
            self.campaign()

    def step(self, m: Message) -> None:
        """Handle one message from a peer, applying the shared term rules first (Raft §5.1)."""
        if m.src not in self.majority.voters or m.dst != self.id or m.src == self.id:
            return  # the driver counts these; the core only refuses them
        if m.type in _READ_MESSAGES and ReadContext.decode(m.context) is None:
            return  # a ReadIndex tag we never make: a broken or hostile peer
        if m.term > self.term:
            if m.type in VOTE_REQUESTS:
                forced = m.context == TRANSFER_CONTEXT
                in_lease = (
                    self.cfg.check_quorum
                    and self.election_elapsed < self.cfg.election_ticks
                    # A node that has just started may have acknowledged a leader
                    # before it stopped: it honours that lease for one election
                    # timeout from start, which is what lets a leader fence its
                    # payloads by lease (zraft/payload/fencing.py).
                    and (
                        self.leader_id != NO_NODE
                        or (self.cfg.boot_lease and self.now < self.cfg.election_ticks)
                        or self.now < self.own_lease_until
                    )
                )
                if in_lease and not forced:
                    # Thesis §4.2.3: a node that hears from a current leader
                    # ignores candidates, so a rejoining node cannot depose it.
                    return
            if m.type is MsgType.PRE_VOTE or (m.type is MsgType.PRE_VOTE_RESP and not m.reject):
                pass  # PreVote never changes terms (thesis §9.6)
            elif m.type in (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT):
                self.become_follower(m.term, m.src)
            else:
                if self.role is Role.LEADER and m.type not in VOTE_REQUESTS:
                    # Deposed by a higher term in a reply: this node counted itself in
                    # its own lease quorum, so it keeps refusing votes until that
                    # lease is over, as its followers do (zraft/payload/fencing.py).
                    self.own_lease_until = self.now + self.cfg.election_ticks
                self.become_follower(m.term, NO_NODE)
        elif m.term < self.term:
            if m.type in LEADER_MESSAGES and (self.cfg.check_quorum or self.cfg.pre_vote):
                # A stale leader learns the new term from our reply and steps down;
                # without this, PreVote could leave it stranded (etcd raft.go).
                self.send(MsgType.APPEND_RESP, m.src)
            elif m.type is MsgType.PRE_VOTE:
                self.send(MsgType.PRE_VOTE_RESP, m.src, reject=True)
            return
        if m.type in VOTE_REQUESTS:
            election.handle_vote_request(self, m)
            return
        self._step(self, m)

    def propose(self, data: bytes, kind: EntryKind = EntryKind.NORMAL) -> tuple[int, int]:
        """Append ``data`` to the leader's log; return its (index, term).

        The entry is committed once a quorum stores it; the caller learns the
        outcome when an entry at that index is applied: the same term means
        this proposal, another term means it was lost. Raises NotLeader or
        ProposalDropped.
        """
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader_id)
        if self.lead_transferee != NO_NODE:
            raise ProposalDropped(f"leadership is moving to {self.lead_transferee}")
        index = self.log.last_index() + 1
        self.log.append([Entry(self.term, index, kind, data)])
        self.append_pending = True  # one broadcast per Ready carries them all
        return index, self.term

    def read_index(self, ctx: ReadContext) -> None:
        """Ask for a linearizable read point (thesis §6.4).

        The answer arrives as a ``ReadState`` whose ``context`` is ``ctx`` in a
        later Ready (``rejected`` when leadership was lost). A follower forwards
        the request to the leader. Raises NotLeader when no leader is known,
        TypeError when ``ctx`` is not a ``ReadContext``.
        """
        if not isinstance(ctx, ReadContext):
            raise TypeError(f"read_index needs a ReadContext, not {type(ctx).__name__}")
        if self.role is Role.LEADER:
            reads.handle_read(self, self.id, ctx)
        elif self.leader_id != NO_NODE:
            reads.forward(self, ctx)
        else:
            raise NotLeader(NO_NODE)

    def campaign(self, transfer: bool = False) -> None:
        """Start an election now: PreVote first unless disabled or a transfer (§5.2, §9.6).

        ``transfer`` (a TIMEOUT_NOW from the leader, thesis §3.10) also makes the
        vote requests override the receivers' leader lease.
        """
        if self.role is Role.LEADER:
            return
        election.start_election(self, pre_vote=self.cfg.pre_vote and not transfer, forced=transfer)

    def compact(self, index: int) -> SnapshotMeta:
        """Forget log entries up to ``index``; a durable snapshot holds them (thesis §5.1).

        The driver calls this only after a snapshot at or beyond ``index`` is
        durable, and keeps a tail of entries below the snapshot for followers
        that lag a little. ``index`` must be applied; at or below the log's
        start it does nothing. Returns where the log now starts (the index and
        term of the last entry dropped), for the WAL's compaction mark.
        """
        self.log.compact(index)
        return SnapshotMeta(self.log.snapshot_index, self.log.snapshot_term, self.voters)

    def report_snapshot(self, peer: NodeId, index: int, ok: bool) -> None:
        """Tell the leader how streaming snapshot ``index`` to ``peer`` ended."""
        if self.role is Role.LEADER:
            leader.snapshot_reported(self, peer, index, ok)

    def transfer_leader(self, target: NodeId) -> None:
        """Hand leadership to ``target`` once its log is caught up (thesis §3.10).

        Raises NotLeader, or ValueError when ``target`` is not another voter.
        """
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader_id)
        leader.transfer(self, target)

    # ------------------------------------------------------------------
    # the door: outputs
    # ------------------------------------------------------------------

    def has_ready(self) -> bool:
        """Tell whether ``ready()`` would have anything to do."""
        return bool(
            self.msgs
            or self.read_states
            or self.append_pending
            or self.read_heartbeat_pending
            or self.pending_snapshot is not None
            or self.log.stable_index < self.log.last_index()
            or self.log.committed > self.log.applied
            or self._soft() != self._prev_soft
            or self._hard() != self._prev_hard
        )

    def ready(self) -> Ready:
        """Collect everything the driver must do now (see ``Ready`` for the order)."""
        if self.role is Role.LEADER:
            leader.flush(self)
        soft, hard = self._soft(), self._hard()
        hard_changed = hard != self._prev_hard
        vote_changed = (hard.term, hard.voted_for) != (
            self._prev_hard.term,
            self._prev_hard.voted_for,
        )
        entries = self.log.unstable_entries()
        msgs, self.msgs = self.msgs, []
        early: list[Message] = []
        if self.role is Role.LEADER and not vote_changed:
            late = []
            for m in msgs:
                (early if m.type in LEADER_MESSAGES else late).append(m)
            msgs = late
        read_states, self.read_states = self.read_states, []
        return Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hard if hard_changed else None,
            entries=entries,
            messages=tuple(msgs),
            committed_entries=self.log.next_committed(),
            read_states=tuple(read_states),
            must_sync=bool(entries) or vote_changed or self.pending_snapshot is not None,
            early_messages=tuple(early),
            snapshot=self.pending_snapshot,
        )

    def advance(self, rd: Ready) -> None:
        """Record that ``rd`` was persisted, sent and applied."""
        if rd.snapshot is not None and rd.snapshot == self.pending_snapshot:
            self.pending_snapshot = None
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
            if self.role is Role.LEADER:
                leader.self_persisted(self)
        if rd.committed_entries:
            self.log.applied_to(rd.committed_entries[-1].index)

    # ------------------------------------------------------------------
    # the door: observation
    # ------------------------------------------------------------------

    def status(self) -> RaftStatus:
        """Return a typed snapshot of this node's Raft state (cheap: fine every tick)."""
        log = self.log
        progress: tuple[PeerProgress, ...] = ()
        if self.role is Role.LEADER:
            horizon = self.now - self.cfg.election_ticks  # CheckQuorum's window
            progress = tuple(
                PeerProgress(
                    peer,
                    pr.match_index,
                    pr.next_index,
                    pr.state.value,
                    self.last_active.get(peer, 0) > horizon,
                )
                for peer in self.voters
                if peer != self.id and (pr := self.progress.get(peer)) is not None
            )
        return RaftStatus(
            id=self.id,
            role=self.role,
            term=self.term,
            leader_id=self.leader_id,
            commit=log.committed,
            applied=log.applied,
            first_index=log.first_index(),
            last_index=log.last_index(),
            committed_in_term=log.term(log.committed) == self.term,
            lead_transferee=self.lead_transferee,
            voters=self.voters,
            progress=progress,
            election_ticks=self.cfg.election_ticks,
        )

    def term_at(self, index: int) -> int | None:
        """Return the term of the entry at ``index`` (None when compacted or not held)."""
        return self.log.term(index)

    @property
    def transferring(self) -> bool:
        """Tell whether this leader is handing leadership over (it refuses proposals)."""
        return self.lead_transferee != NO_NODE

    def transfer_target(self) -> NodeId:
        """Return the best voter to hand leadership to: the other voter with the
        highest match index (NO_NODE when not leader or the only voter)."""
        if self.role is not Role.LEADER:
            return NO_NODE
        return leader.transfer_target(self)

    # ------------------------------------------------------------------
    # roles
    # ------------------------------------------------------------------

    def become_follower(self, term: int, leader_id: NodeId) -> None:
        """Become a follower in ``term`` of ``leader_id`` (NO_NODE when unknown)."""
        self._reset(term)
        self.set_leader(leader_id)
        self.role = Role.FOLLOWER
        self._step = follower.step

    def become_pre_candidate(self) -> None:
        """Enter the PreVote phase (thesis §9.6)."""
        # No term bump and no vote, so a failed PreVote leaves no trace.
        reads.fail_all(self)
        self.votes = {}
        self.set_leader(NO_NODE)
        self.role = Role.PRE_CANDIDATE
        self._step = election.step_candidate

    def become_candidate(self) -> None:
        """Start a real election: next term, vote for self (Raft §5.2)."""
        self._reset(self.term + 1)
        self.voted_for = self.id
        self.set_leader(NO_NODE)
        self.role = Role.CANDIDATE
        self._step = election.step_candidate

    def become_leader(self) -> None:
        """Take leadership: reset progress and append a no-op (Raft §5.4.2, thesis §6.4)."""
        self._reset(self.term)
        self.role = Role.LEADER
        self.set_leader(self.id)
        self._step = leader.step
        leader.init(self)

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.voted_for = NO_NODE
        reads.fail_all(self)
        self.votes = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = self.cfg.election_ticks + self.rng.randrange(
            self.cfg.election_ticks
        )
        self.lead_transferee = NO_NODE
        self.progress = {}
        self.append_pending = False
        self.read_heartbeat_pending = False

    def _soft(self) -> SoftState:
        return SoftState(self.leader_id, self.role, self.term)

    def _hard(self) -> HardState:
        return HardState(self.term, self.voted_for, self.log.committed)
