"""A deterministic in-memory network of pure Raft cores, driven through the one door.

Not for production. Each ``SimNode`` handles its Readys with the real shell
(``zraft.node.shell.Shell.handle_ready``, the one Ready loop): it persists
into a durable dict, sends into the network, applies committed entries, then
advances. The replicated state is a recorder (these tests are about the
core; ``tests/sim`` runs the real replica and request book). The network
delivers messages in FIFO order, unless a test drops, cuts or reorders them.
Everything is seeded.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from zraft.api.book import RequestBook
from zraft.core import (
    NO_NODE,
    CoreConfig,
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    Raft,
    RaftLog,
    ReadContext,
    ReadState,
    Role,
    SnapshotMeta,
    SoftState,
)
from zraft.node.shell import Shell
from zraft.plugins import CommandTable


class _Applied:
    """The replicated state's place in the shell, recording entries (core tests only)."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.applied_index = 0

    def apply(self, e: Entry) -> None:
        self.entries.append(e)
        self.applied_index = e.index


class _ReadRecorder(RequestBook):
    """The request book's place in the shell, recording every ReadIndex answer."""

    def __init__(self, replica: _Applied, sink: list[ReadState]) -> None:
        super().__init__(CommandTable(), replica, timeout_s=1e9, max_pending=1)  # type: ignore[arg-type]
        self.sink = sink

    def read_state(self, ctx: ReadContext, index: int, rejected: bool) -> None:
        self.sink.append(ReadState(index, ctx, rejected))


class SimNode:
    """One node: a core plus what it has made durable and what it applied (the shell's Io)."""

    def __init__(self, node_id: str, voters: tuple[str, ...], seed: int, **cfg: object) -> None:
        self.id = node_id
        self.voters = voters
        self.cfg = CoreConfig(id=node_id, voters=voters, **cfg)  # type: ignore[arg-type]
        self.seed = seed
        self.durable_hs = HardState()
        self.durable_log: list[Entry] = []
        # The durable snapshot (meta, applied entries up to it) and where the log starts.
        self.snapshot: tuple[SnapshotMeta, list[Entry]] | None = None
        self.log_start = SnapshotMeta()
        self.incoming: tuple[SnapshotMeta, list[Entry]] | None = None  # a received snapshot
        self.crashes = 0
        self._start(Raft(self.cfg, random.Random(seed)))

    def _start(self, raft: Raft) -> None:
        self.raft = raft
        self.read_states: list[ReadState] = []
        self._applied = _Applied()
        book = _ReadRecorder(self._applied, self.read_states)
        self.shell = Shell(raft, self._applied, book, self, {})  # type: ignore[arg-type]
        self._out: list[Message] = []

    @property
    def applied(self) -> list[Entry]:
        return self._applied.entries

    def restart(self) -> None:
        """Crash and restart from what was durable (volatile state is lost)."""
        self.crashes += 1
        start = self.log_start
        snap_index = self.snapshot[0].index if self.snapshot else 0
        log = RaftLog(
            list(self.durable_log), start.index, start.term, self.durable_hs.commit, snap_index
        )
        seed = self.seed * 1000 + self.crashes
        self._start(Raft(self.cfg, random.Random(seed), self.durable_hs, log))
        if self.snapshot:
            self._applied.entries = list(self.snapshot[1])
            self._applied.applied_index = snap_index

    def take_snapshot(self, keep: int = 0) -> SnapshotMeta:
        """Snapshot the applied state (durably), then compact all but ``keep`` entries."""
        index = self._applied.applied_index
        term = self.raft.log.term(index)
        assert term is not None
        meta = SnapshotMeta(index, term, self.voters)
        self.snapshot = (meta, list(self._applied.entries))
        start = max(index - keep, self.log_start.index)
        if start > self.log_start.index:
            start_term = self.raft.log.term(start)
            assert start_term is not None
            self.raft.compact(start)
            del self.durable_log[: start - self.log_start.index]
            self.log_start = SnapshotMeta(start, start_term)
        return meta

    def handle_ready(self) -> list[Message]:
        """Run one Ready in the driver's order; return messages to send."""
        if not self.raft.has_ready():
            return []
        self.shell.handle_ready(self.raft.ready())
        out, self._out = self._out, []
        return out

    # -- Io ------------------------------------------------------------------

    def install(self, meta: SnapshotMeta) -> None:
        assert self.incoming is not None and self.incoming[0].index == meta.index
        self.snapshot = self.incoming
        self.incoming = None
        self.durable_log.clear()
        self.log_start = meta
        self._applied.entries = list(self.snapshot[1])
        self._applied.applied_index = meta.index

    def persist(self, hard_state: HardState | None, entries: tuple[Entry, ...], sync: bool) -> None:
        if hard_state is not None:
            self.durable_hs = hard_state
        if entries:
            del self.durable_log[entries[0].index - self.log_start.index - 1 :]
            self.durable_log.extend(entries)

    def send(self, messages: tuple[Message, ...]) -> None:
        self._out.extend(messages)

    def forward(self, leader: str, fwd_id: int, data: bytes) -> bool:
        return False

    def reply(self, reply: object) -> None:
        pass

    def on_applied(self, entries: tuple[Entry, ...]) -> None:
        pass

    def lease_read(self, rs: ReadState) -> None:
        self.read_states.append(rs)

    def observe(self, soft: SoftState, previous: SoftState) -> None:
        pass


class SimNetwork:
    """Nodes plus a message queue with test-controlled faults."""

    def __init__(self, n: int = 3, seed: int = 1, **cfg: object) -> None:
        self.ids = tuple(f"n{i + 1}" for i in range(n))
        self.nodes = {
            nid: SimNode(nid, self.ids, seed * 100 + i, **cfg) for i, nid in enumerate(self.ids)
        }
        self.queue: list[Message] = []
        self.cut: set[tuple[str, str]] = set()  # (src, dst) pairs that drop messages
        self.delivered = 0
        self.drop_filter: Callable[[Message], bool] | None = None
        self.snapshot_fails = False  # streaming a snapshot fails (the sender reports it)
        self.snapshots_sent = 0
        self._failed_snapshots: list[Message] = []

    # -- faults ------------------------------------------------------------

    def isolate(self, nid: str) -> None:
        """Cut ``nid`` off from every other node, both ways."""
        for other in self.ids:
            if other != nid:
                self.cut.add((nid, other))
                self.cut.add((other, nid))

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the nodes into groups that cannot talk to each other."""
        sets = [set(g) for g in groups]
        for a in self.ids:
            for b in self.ids:
                if a != b and not any(a in g and b in g for g in sets):
                    self.cut.add((a, b))

    def heal(self) -> None:
        """Remove every cut."""
        self.cut.clear()

    # -- driving -----------------------------------------------------------

    def flush_ready(self) -> None:
        """Let every node handle its Ready, queueing what it sends."""
        for node in self.nodes.values():
            self.queue.extend(node.handle_ready())

    def deliver_all(self, max_rounds: int = 1000) -> None:
        """Deliver messages (and the messages they cause) until quiet."""
        for _ in range(max_rounds):
            self.flush_ready()
            if not self.queue:
                return
            batch, self.queue = self.queue, []
            for m in batch:
                if (m.src, m.dst) in self.cut:
                    continue
                if self.drop_filter is not None and self.drop_filter(m):
                    continue
                self.delivered += 1
                if m.type is MsgType.SNAPSHOT:
                    self._stream_snapshot(m)
                else:
                    self.nodes[m.dst].raft.step(m)
        raise AssertionError("network did not go quiet")

    def _stream_snapshot(self, m: Message) -> None:
        """What a driver does for a leader's SNAPSHOT: stream its snapshot, then report."""
        src, dst = self.nodes[m.src], self.nodes[m.dst]
        if src.snapshot is None or src.snapshot[0].index < m.index or self.snapshot_fails:
            self._failed_snapshots.append(m)  # reported at the next tick: a driver backs off
            return
        meta, entries = src.snapshot
        dst.incoming = (meta, list(entries))
        dst.raft.step(Message(MsgType.SNAPSHOT, m.term, m.src, m.dst, meta.index, meta.term))
        src.raft.report_snapshot(m.dst, meta.index, ok=True)
        self.snapshots_sent += 1

    def tick(self, n: int = 1, only: Iterable[str] | None = None) -> None:
        """Tick nodes ``n`` times, delivering messages after each tick."""
        ids = tuple(only) if only is not None else self.ids
        for _ in range(n):
            failed, self._failed_snapshots = self._failed_snapshots, []
            for m in failed:
                self.nodes[m.src].raft.report_snapshot(m.dst, m.index, ok=False)
            for nid in ids:
                self.nodes[nid].raft.tick()
            self.deliver_all()

    def elect(self, nid: str) -> None:
        """Make ``nid`` campaign and deliver until the election settles."""
        self.nodes[nid].raft.campaign()
        self.deliver_all()

    def leaders(self) -> list[str]:
        return [nid for nid, n in self.nodes.items() if n.raft.role is Role.LEADER]

    def leader(self) -> SimNode:
        (nid,) = self.leaders()
        return self.nodes[nid]

    def propose(self, nid: str, data: bytes) -> tuple[int, int]:
        out = self.nodes[nid].raft.propose(data)
        self.deliver_all()
        return out

    def applied_data(self, nid: str) -> list[bytes]:
        return [e.data for e in self.nodes[nid].applied if e.kind is EntryKind.NORMAL]


def no_leader(net: SimNetwork) -> bool:
    return all(n.raft.leader_id == NO_NODE for n in net.nodes.values())
