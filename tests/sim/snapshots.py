"""Snapshots in the simulation: taking, compaction, InstallSnapshot and start-up, in memory.

What ``zraft/node/snapshots.py`` and ``zraft/snapshot/`` do on disk, done here
on a ``SnapshotStore`` that survives crashes (the snapshot directory), so the
seeded scheduler can crash a node at any point of it. Not for production.

* **Taking.** After a loop round in which the applied log since the last
  snapshot reached the profile's ``every``, a node starts a capture
  (``Replica.start_capture``) and reads it one chunk per "snapshot" event
  while entries keep being applied: the KV store's copy-on-write must keep
  the state of the capture's index. Once read, the snapshot is written
  (published, durable); a crash before that loses it.
* **Compaction.** After a snapshot is written, the core's log and the
  storage are compacted up to ``min(newest - trailing, older kept)``, as
  ``Snapshots._compact_log`` does; the negative control
  ``compact_unsnapshotted`` compacts up to the applied index when the
  capture *starts*, before anything of it is durable (as the real node's
  switch does in ``Snapshots.take``).
* **Streaming.** A leader's SNAPSHOT message asks the driver to stream its
  newest durable snapshot: it travels as a ``Stream`` through the simulated
  network (delayed, reordered, dropped, cut like any message). On arrival
  the follower keeps the bytes and steps the core; the leader's core hears
  ``report_snapshot(ok=True)``. A stream lost, or a request with no snapshot
  to send, is reported failed ``RETRY_STEPS`` later (the driver's
  ``RETRY_AFTER_S``).
* **Install and start-up.** ``install`` publishes the received snapshot,
  switches the storage's log (``MemoryStorage.install``) and restores the
  replica; ``recover`` picks the newest durable snapshot at start and
  finishes an install the storage did not record, as
  ``zraft.snapshot.recovery`` does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields

from zraft.core import Entry, HardState, Message, SnapshotMeta
from zraft.replica import Capture
from zraft.storage.memory import MemoryStorage

KEEP = 2  # durable snapshots kept per node: the newest and the one before (as on disk)
RETRY_STEPS = 30  # a failed stream is reported this many steps later (RETRY_AFTER_S)


@dataclass(frozen=True)
class SimSnapshot:
    """A written snapshot: where it ends, the replica's sections, the leader time.

    ``terms`` is the simulation's bookkeeping, not part of a real snapshot:
    the term of every entry the state holds (index i at ``terms[i - 1]``),
    so that a node restored from it keeps the per-index record the
    invariants compare (state machine safety, acknowledged writes).
    """

    meta: SnapshotMeta
    sections: tuple[tuple[str, bytes], ...]
    time_ms: int
    terms: tuple[int, ...]

    def chunks(self) -> list[tuple[str, Iterator[bytes]]]:
        """Return the sections as ``Replica.restore_sections`` reads them."""
        return [(name, iter((data,))) for name, data in self.sections]

    def digest(self) -> str:
        """Return the hash ``Replica.state_hash`` gives for the state these sections hold."""
        h = hashlib.sha256()  # the same construction as zraft.replica.capture.digest
        for name, data in self.sections:
            raw = name.encode()
            size = len(data).to_bytes(8, "big")
            h.update(len(raw).to_bytes(8, "big") + raw + size + hashlib.sha256(data).digest())
        return h.hexdigest()

    @property
    def size(self) -> int:
        return sum(len(data) for _, data in self.sections)


@dataclass(frozen=True, slots=True)
class Stream(Message):
    """A snapshot travelling from a leader's driver to a follower's (type SNAPSHOT).

    ``index``/``log_term`` are the snapshot's; ``life`` is the sender's boot
    at the time, so that an outcome is reported only to the core that asked.
    """

    snapshot: SimSnapshot | None = None
    life: int = 0


class SnapshotStore:
    """One node's durable snapshots, oldest first (its snapshot directory). Survives crashes."""

    def __init__(self) -> None:
        self.files: list[SimSnapshot] = []

    def publish(self, snap: SimSnapshot) -> None:
        """Make ``snap`` durable; keep it and the newest ``KEEP`` (as ``SnapshotStore.publish``)."""
        key = (snap.meta.index, snap.meta.term)
        files = [f for f in self.files if (f.meta.index, f.meta.term) != key] + [snap]
        files.sort(key=lambda f: (f.meta.index, f.meta.term))
        self.files = [f for f in files[:-KEEP] if f is snap] + files[-KEEP:]

    def newest(self) -> SimSnapshot | None:
        """Return the snapshot with the highest index, if any."""
        return self.files[-1] if self.files else None

    def newest_index(self) -> int:
        return self.files[-1].meta.index if self.files else 0

    def older_index(self) -> int:
        """Return the index of the second newest snapshot (0 when fewer than two)."""
        return self.files[-2].meta.index if len(self.files) >= 2 else 0


class Taking:
    """A snapshot being written: its capture, read one chunk per ``step``."""

    def __init__(self, capture: Capture, meta: SnapshotMeta, terms: tuple[int, ...]) -> None:
        self.meta = meta
        self.terms = terms
        self.time_ms = capture.time_ms
        self.capture = capture
        self.chunks = 0
        self.sections: list[tuple[str, bytes]] = []
        self._reader = self._read(capture)

    def _read(self, capture: Capture) -> Iterator[None]:
        for name, chunks in capture.sections():
            parts = []
            for chunk in chunks:
                parts.append(chunk)
                yield
            self.sections.append((name, b"".join(parts)))

    def step(self) -> SimSnapshot | None:
        """Read one more chunk; once all is read, return the snapshot (now to be written)."""
        if next(self._reader, False) is None:
            self.chunks += 1
            return None
        return SimSnapshot(self.meta, tuple(self.sections), self.time_ms, self.terms)


@dataclass
class SnapshotStats:
    """What one node's snapshots did, over all its lives."""

    taken: int = 0  # snapshots written
    lost: int = 0  # captures under way when the node crashed
    compactions: int = 0
    installs: int = 0  # received snapshots switched in
    divergent: int = 0  # received ones whose install discards log entries after them
    restarts: int = 0  # boots that restored the replica from a snapshot
    finished_installs: int = 0  # boots that finished an install the storage had not recorded
    streams: int = 0  # snapshots put on the network (as leader)
    streams_lost: int = 0
    refused: int = 0  # requests with no snapshot to send

    @classmethod
    def total(cls, parts: Iterable[SnapshotStats]) -> SnapshotStats:
        """Return the sum of ``parts``."""
        out = cls()
        for part in parts:
            out.add(part)
        return out

    def add(self, other: SnapshotStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class Start:
    """What a node boots from (``zraft.snapshot.recovery.Start``)."""

    hard_state: HardState
    snapshot: SimSnapshot | None
    log_start: SnapshotMeta
    entries: list[Entry]
    finished_install: bool = False
    uncovered: str = ""  # why no snapshot covers the log's start (a real node refuses to start)


@dataclass
class PendingReport:
    """A snapshot outcome owed to a leader's core: (due step, peer, index, ok)."""

    due: int
    peer: str
    index: int
    ok: bool


@dataclass
class NodeSnapshots:
    """The snapshot side of one ``SimNode``: durable store, and this life's volatile state.

    ``log_start`` is where the storage's log starts (durable: it changes only
    by ``MemoryStorage.compact``/``install``, which are durable at once).
    """

    every: int  # take a snapshot after this many applied entries
    trailing: int  # entries kept below the newest snapshot for lagging followers
    compact_unsnapshotted: bool = False  # negative control: compact when the capture starts
    store: SnapshotStore = field(default_factory=SnapshotStore)
    log_start: SnapshotMeta = field(default_factory=SnapshotMeta)
    stats: SnapshotStats = field(default_factory=SnapshotStats)

    def __post_init__(self) -> None:
        self.new_life()

    def new_life(self) -> None:
        """Forget what a crash loses: the capture, received bytes, owed reports."""
        self.taking: Taking | None = None
        self.incoming: dict[tuple[int, int], SimSnapshot] = {}
        self.reports: list[PendingReport] = []
        self.since = 0
        self.last_index = self.store.newest_index()

    def crashed(self) -> None:
        if self.taking is not None:
            self.stats.lost += 1
        self.new_life()

    # -- start-up ------------------------------------------------------------

    def recover(self, storage: MemoryStorage) -> Start:
        """Pick the snapshot and log to boot from (``zraft.snapshot.recovery.recover``).

        The newest snapshot is used when it reaches the log's start; if the
        log does not hold its last entry, the install it came from was not
        recorded by the storage: finish it now (the log goes, Raft §7).
        """
        rec = storage.open()
        mark = rec.snapshot
        self.log_start = mark
        snap = self.store.newest()
        if snap is None or snap.meta.index < mark.index:
            why = ""
            if mark.index > 0:
                have = f"the newest is {snap.meta.index}" if snap else "there is none"
                why = f"the log starts after {mark.index}; no durable snapshot reaches it ({have})"
            return Start(rec.hard_state, None, mark, rec.entries, uncovered=why)
        meta = snap.meta
        if meta.index == mark.index or _holds(rec.entries, meta):
            return Start(rec.hard_state, snap, mark, rec.entries)
        storage.install(meta)
        self.log_start = meta
        self.stats.finished_installs += 1
        return Start(rec.hard_state, snap, meta, [], finished_install=True)

    # -- taking --------------------------------------------------------------

    def due(self, applied_index: int) -> bool:
        """Tell whether a snapshot should start now (none under way, enough applied)."""
        return self.taking is None and self.since >= self.every and applied_index > self.last_index

    def start(self, capture: Capture, term: int, voters: tuple[str, ...], terms: list[int]) -> None:
        """Start writing the capture (of the applied state, whose last entry has ``term``)."""
        meta = SnapshotMeta(capture.index, term, voters)
        self.taking = Taking(capture, meta, tuple(terms[: capture.index]))
        self.since = 0

    def point(self, newest: int) -> int:
        """Return where to compact after snapshot ``newest`` is durable (``_compact_log``)."""
        return min(newest - self.trailing, self.store.older_index())

    # -- receiving -------------------------------------------------------------

    def received(self, snap: SimSnapshot) -> None:
        """Keep a whole received snapshot until the core's Ready installs it (the newest only)."""
        self.incoming = {(snap.meta.index, snap.meta.term): snap}

    def report(self, due: int, peer: str, index: int, ok: bool) -> None:
        self.reports.append(PendingReport(due, peer, index, ok))

    def due_reports(self, now: int) -> list[PendingReport]:
        """Return (and forget) the reports due at step ``now``."""
        due = [r for r in self.reports if r.due <= now]
        if due:
            self.reports = [r for r in self.reports if r.due > now]
        return due


def _holds(entries: list[Entry], meta: SnapshotMeta) -> bool:
    if not entries:
        return False
    offset = meta.index - entries[0].index
    return 0 <= offset < len(entries) and entries[offset].term == meta.term
