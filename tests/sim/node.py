"""A simulated node: the real ``Shell`` (core, replicated state, request book) on memory.

``SimNode`` is the shell's ``Io`` for one node of the simulation: persisting
goes to ``MemoryStorage`` (a crash keeps only what an fsync made durable),
sending goes to the simulated network, and replies go to the simulated
clients. Everything else, the Ready order, the apply path, sessions,
ReadIndex batching and the reply rules, is the code a real node runs
(``zraft/node/shell.py``). Snapshots (taking, compaction, install, start-up
from a snapshot) follow ``zraft/node/snapshots.py`` on the in-memory store
of ``tests.sim.snapshots``. Time is the schedule's step counter. Not for
production.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from typing import Any, Protocol

from tests.sim.snapshots import NodeSnapshots, SimSnapshot, Stream
from tests.support.kv import kv_replica
from zraft.api.book import RequestBook
from zraft.api.routes import Reply, Request, Route
from zraft.core import (
    CoreConfig,
    Entry,
    HardState,
    Message,
    MsgType,
    Raft,
    RaftLog,
    ReadState,
    SnapshotMeta,
    SoftState,
)
from zraft.node.shell import Shell
from zraft.storage import StorageError
from zraft.storage.memory import MemoryStorage

DRIVER_SWITCHES = frozenset({"local_reads", "ack_before_commit"})
STEP_MS = 10  # leader time advances this much per schedule step


class Host(Protocol):
    """What a node reports to the simulation while it handles a Ready, in Ready order."""

    def send(self, node: SimNode, messages: Sequence[Message]) -> None:
        """Put ``messages`` on the network."""

    def logged(self, node: SimNode, entries: Sequence[Entry]) -> None:
        """See new (or rewritten) entries of ``node``'s log, before they are persisted."""

    def synced(self, node: SimNode, first_index: int) -> None:
        """See an fsync: ``node.durable`` changed from ``first_index`` on."""

    def applied(self, node: SimNode, entry: Entry) -> None:
        """See ``entry`` applied (``node.applied_index`` already counts it)."""

    def replied(self, node: SimNode, reply: Reply) -> None:
        """See a reply to a simulated client."""

    def stream(self, node: SimNode, request: Message) -> None:
        """Stream ``node``'s newest durable snapshot to ``request.dst`` (its core asked)."""

    def snapshot_taken(self, node: SimNode, snap: SimSnapshot, compacted: int) -> None:
        """See a snapshot written (and the log compacted up to ``compacted``, 0: not)."""

    def installed(self, node: SimNode, snap: SimSnapshot) -> None:
        """See a received snapshot switched in (storage and replica)."""

    def note(self, what: object, suffix: str = "") -> None:
        """Add a line to the trace."""

    @property
    def now(self) -> int:
        """The current step."""


class CrashPoint(enum.Enum):
    """Where in the handling of a pending Ready a crash strikes."""

    BEFORE_READY = "before-ready"  # nothing of the pending Ready happened
    AFTER_EARLY = "after-early"  # early messages left; the write was not fsynced
    AFTER_PERSIST = "after-persist"  # early messages left and the fsync finished
    # A received snapshot was published but the storage did not record the install
    # (start-up finishes it); without an install in the Ready, as AFTER_EARLY.
    MID_INSTALL = "mid-install"


class Crash(Exception):
    """Raised inside a Ready to stop the node at its crash point."""


class SimNode:
    """One node of the simulated cluster (the shell's ``Io``).

    ``shell`` (and its core, replica and book) is replaced at every restart;
    ``life`` counts boots (1 = first). ``durable`` mirrors the entries that
    would survive a crash now.
    """

    def __init__(
        self,
        node_id: str,
        voters: tuple[str, ...],
        seed: int,
        host: Host,
        *,
        pre_vote: bool,
        check_quorum: bool,
        heartbeat_ticks: int,
        election_ticks: int,
        max_inflight: int,
        max_entries_per_msg: int,
        unsafe: frozenset[str],
        skip_fsync: bool,
        timeout_steps: int,
        snapshot_every: int,
        snapshot_trailing: int,
        compact_unsnapshotted: bool = False,
    ) -> None:
        self.id = node_id
        self.host = host
        self.config = CoreConfig(
            id=node_id,
            voters=voters,
            election_ticks=election_ticks,
            heartbeat_ticks=heartbeat_ticks,
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            max_inflight=max_inflight,
            max_entries_per_msg=max_entries_per_msg,
            unsafe=unsafe - DRIVER_SWITCHES,
        )
        self.unsafe = unsafe & DRIVER_SWITCHES
        self.voters = voters
        self.seed = seed
        self.skip_fsync = skip_fsync
        self.timeout_steps = timeout_steps
        self.storage = MemoryStorage()
        self.snaps = NodeSnapshots(snapshot_every, snapshot_trailing, compact_unsnapshotted)
        self.durable: list[Entry] = []  # the durable log, after snaps.log_start
        self.uncovered = ""  # why this life started without the state its log needs
        self.life = 0
        self.up = False
        self.applied_terms: list[int] = []
        self._crash_at: CrashPoint | None = None
        self.boot()

    # -- life -------------------------------------------------------------

    def boot(self) -> None:
        """Start (or restart) from what storage holds, as ``zraft.node.Node`` does.

        The replica is restored from the newest durable snapshot (finishing an
        install the storage did not record, ``zraft.snapshot.recovery``); the
        core then hands out again every committed entry after it. A log that
        starts after an entry no snapshot holds would make a real node refuse
        to start; here (only reachable with ``snapshot_coverage`` unchecked)
        the node starts with an empty state at the log's start, and
        ``snapshot_state`` judges it.
        """
        start = self.snaps.recover(self.storage)
        hard_state = start.hard_state
        self.snaps.new_life()
        self.life += 1
        snap, mark = start.snapshot, start.log_start
        applied = snap.meta.index if snap is not None else mark.index
        commit = max(hard_state.commit, applied)
        log = RaftLog(start.entries, mark.index, mark.term, commit, max(applied, mark.index))
        # A fresh Random per life: the restarted core must not replay the dead one's timeouts.
        rng = random.Random(self.seed * 1_000_003 + self.life)
        self.raft = Raft(self.config, rng, hard_state, log)
        self.replica = kv_replica(applied_index=self.raft.status().applied)
        self.applied_terms = [0] * applied  # unknown: the invariants see no snapshot's terms
        if snap is not None:
            self.replica.restore_sections(snap.chunks(), snap.meta.index, snap.time_ms)
            self.applied_terms = list(snap.terms)
            self.snaps.stats.restarts += 1
        self.uncovered = start.uncovered
        self.finished_install = start.finished_install
        book = RequestBook(
            self.replica.commands,
            self.replica,
            timeout_s=float(self.timeout_steps),
            max_pending=1 << 30,
            unsafe=self.unsafe,
        )
        self.shell = Shell(self.raft, self.replica, book, self, {v: v for v in self.voters})
        self.durable = list(start.entries)
        self.up = True

    def crash(self, point: CrashPoint) -> None:
        """Lose power, possibly in the middle of handling the pending Ready.

        Only what an fsync made durable survives (``MemoryStorage.crash``).
        """
        if point is not CrashPoint.BEFORE_READY and self.raft.has_ready():
            self._crash_at = point
            try:
                self.shell.handle_ready(self.raft.ready())
            except Crash:
                pass
            self._crash_at = None
        self.storage = self.storage.crash()
        self.snaps.crashed()
        self.up = False

    # -- inputs, through the shell -----------------------------------------

    def tick(self) -> None:
        """One tick of this node's clock (first, the snapshot outcomes now due)."""
        now = self.host.now
        for r in self.snaps.due_reports(now):
            self.shell.report_snapshot(r.peer, r.index, r.ok)
        self.shell.tick(1, float(now), now * STEP_MS)

    def step(self, m: Message) -> None:
        """Deliver one message."""
        self.shell.step(m)

    def submit(self, route: Route, req: Request) -> None:
        """Take a client request (replies reach the host, possibly at once)."""
        now = self.host.now
        self.shell.submit(route, req, float(now), now * STEP_MS)

    def has_work(self) -> bool:
        """Tell whether ``drain`` would do something."""
        return self.shell.has_work()

    def drain(self) -> None:
        """Send the round's reads and handle Readys until none is left (a node's loop round)."""
        for _ in range(100):
            if not self.shell.has_work():
                self.maybe_snapshot()
                return
            self.shell.process()
        raise AssertionError(f"{self.id}: the core kept producing Readys")

    # -- snapshots (zraft/node/snapshots.py) ----------------------------------

    def maybe_snapshot(self) -> None:
        """Start a snapshot of the applied state when one is due (end of a loop round)."""
        snaps, replica = self.snaps, self.replica
        if not snaps.due(replica.applied_index):
            return
        term = self.shell.term_at(replica.applied_index)
        assert term is not None, f"{self.id}: applied entry {replica.applied_index} not in the log"
        snaps.start(replica.start_capture(), term, self.voters, self.applied_terms)
        self.host.note(f"{self.id} starts a snapshot at {replica.applied_index}")
        if snaps.compact_unsnapshotted:  # negative control: compact before it is durable
            self.compact(replica.applied_index)

    def snapshot_step(self) -> None:
        """Read one more chunk of the snapshot under way; write it and compact once read."""
        snaps = self.snaps
        assert snaps.taking is not None
        snap = snaps.taking.step()
        if snap is None:
            return
        snaps.taking = None
        snaps.store.publish(snap)
        snaps.last_index = snap.meta.index
        snaps.stats.taken += 1
        self.host.snapshot_taken(self, snap, self.compact(snaps.point(snap.meta.index)))

    def compact(self, point: int) -> int:
        """Compact the core's log and the storage up to ``point``; return the new start
        (0 when ``point`` is at or below the start: nothing to do)."""
        if point <= self.snaps.log_start.index:
            return 0
        meta = self.shell.compact(point)
        self.storage.compact(meta)
        self.snaps.log_start = meta
        self.snaps.stats.compactions += 1
        self.durable = self.storage.durable_entries()
        return meta.index

    def receive(self, stream: Stream) -> None:
        """Take a whole snapshot streamed by the leader, and step the core (``on_chunk``)."""
        snap = stream.snapshot
        assert snap is not None
        self.snaps.received(snap)
        meta = snap.meta
        log = self.raft.log
        if meta.index > log.committed and not log.match_term(meta.index, meta.term):
            if log.last_index() > meta.index:  # Raft §7: this install must discard a tail
                self.snaps.stats.divergent += 1
        self.shell.step(
            Message(MsgType.SNAPSHOT, stream.term, stream.src, self.id, meta.index, meta.term)
        )

    def durable_term(self, index: int) -> int | None:
        """Return the term of entry ``index`` as a crash now would keep it (None: lost)."""
        newest = self.snaps.store.newest()
        if newest is not None and index <= newest.meta.index:
            return newest.terms[index - 1]
        offset = index - self.snaps.log_start.index - 1
        return self.durable[offset].term if 0 <= offset < len(self.durable) else None

    @property
    def applied_index(self) -> int:
        """What the state machine holds."""
        return self.replica.applied_index

    def kv(self) -> dict[str, Any]:
        """The KV state machine's keys and values (for messages)."""
        store = self.replica.pm.get_plugin("kv")
        return dict(store._data)

    # -- Io ---------------------------------------------------------------

    def install(self, meta: SnapshotMeta) -> None:
        """Publish the received snapshot, switch the storage's log, restore the replica."""
        snap = self.snaps.incoming.pop((meta.index, meta.term), None)
        if snap is None:
            raise StorageError(f"{self.id}: no received snapshot for index {meta.index}")
        self.snaps.store.publish(snap)
        self.snaps.last_index = max(self.snaps.last_index, meta.index)
        if self._crash_at is CrashPoint.MID_INSTALL:
            raise Crash
        self.storage.install(meta)
        self.snaps.log_start = meta
        self.durable = []
        self.replica.restore_sections(snap.chunks(), meta.index, snap.time_ms)
        self.applied_terms = list(snap.terms)
        self.snaps.since = 0
        self.snaps.stats.installs += 1
        self.host.installed(self, snap)

    def persist(self, hard_state: HardState | None, entries: tuple[Entry, ...], sync: bool) -> None:
        if self._crash_at in (CrashPoint.AFTER_EARLY, CrashPoint.MID_INSTALL):
            raise Crash
        if entries:
            self.host.logged(self, entries)
        sync = sync and not self.skip_fsync  # negative control: nothing ever becomes durable
        self.storage.append(hard_state, entries, sync=sync)
        if sync:
            self.durable = self.storage.durable_entries()
            first = entries[0].index if entries else self.snaps.log_start.index + 1
            first += 0 if entries else len(self.durable)
            self.host.synced(self, first)
        if self._crash_at is CrashPoint.AFTER_PERSIST:
            raise Crash

    def send(self, messages: tuple[Message, ...]) -> None:
        plain = []
        for m in messages:
            if m.type is MsgType.SNAPSHOT:  # stream a snapshot; never a network message
                self.host.stream(self, m)
            else:
                plain.append(m)
        self.host.send(self, plain)

    def forward(self, leader: str, fwd_id: int, data: bytes) -> bool:
        return False  # simulated clients ask with forward=False: followers redirect them

    def reply(self, reply: Reply) -> None:
        self.host.replied(self, reply)

    def on_applied(self, entries: tuple[Entry, ...]) -> None:
        self.snaps.since += len(entries)
        for entry in entries:
            self.applied_terms.append(entry.term)
            self.host.applied(self, entry)

    def lease_read(self, rs: ReadState) -> None:
        pass  # no payloads in the simulation

    def observe(self, soft: SoftState, previous: SoftState) -> None:
        pass  # the schedule reads roles after every step
