"""``MemoryStorage``: the in-memory twin of ``WalStorage``. Not for production.

It keeps two copies of the log: what was written, and what was *durable*
(reached by an ``append(sync=True)`` or a ``compact``). ``crash()`` models a
power loss by handing back a fresh storage that holds only the durable copy,
so simulation tests can crash a node and check that Raft's promises hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from zraft.core.messages import Entry, HardState, SnapshotMeta
from zraft.storage import Recovered, StorageError, StorageStats
from zraft.storage.records import check_append


@dataclass
class _State:
    """One copy of what a WAL would replay: hard state, mark, contiguous entries."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: SnapshotMeta = field(default_factory=SnapshotMeta)
    entries: list[Entry] = field(default_factory=list)

    @property
    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snapshot.index

    def append(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        if hard_state is not None:
            self.hard_state = hard_state
        if entries:
            # Entries are contiguous and start right after the snapshot mark.
            keep = entries[0].index - self.snapshot.index - 1
            del self.entries[keep:]
            self.entries.extend(entries)

    def compact(self, snapshot: SnapshotMeta) -> None:
        if self.last_index <= snapshot.index:
            self.entries.clear()  # compaction past the log's end (snapshot install)
        else:
            del self.entries[: snapshot.index - self.snapshot.index]
        self.snapshot = snapshot

    def install(self, snapshot: SnapshotMeta) -> None:
        self.entries.clear()
        self.snapshot = snapshot

    def copy(self) -> _State:
        return _State(self.hard_state, self.snapshot, list(self.entries))


class MemoryStorage:
    """``LogStorage`` in memory, with a power-loss model. Not for production.

    Same contract as ``WalStorage``: ``append`` raises ValueError for a gap or
    non-contiguous entries; ``append(sync=True)`` and ``compact`` make every
    earlier write durable; ``crash()`` returns what survives a power loss.
    After ``crash()`` this object raises StorageError on use (the node died).
    """

    def __init__(self) -> None:
        self.stats = StorageStats()
        self._written = _State()
        self._durable = _State()
        # Writes since the last sync, replayed onto the durable copy at the
        # next sync so a sync costs the batch, not the whole log.
        self._pending: list[tuple[HardState | None, tuple[Entry, ...]]] = []
        self._crashed = False

    @property
    def last_index(self) -> int:
        """Return the last written entry index (the snapshot index if the log is empty)."""
        return self._written.last_index

    def open(self) -> Recovered:
        """Return what was written (after ``crash()``: what was durable)."""
        self._check_usable()
        state = self._written
        return Recovered(
            hard_state=state.hard_state, snapshot=state.snapshot, entries=list(state.entries)
        )

    def append(self, hard_state: HardState | None, entries: Sequence[Entry], sync: bool) -> None:
        """Write ``hard_state`` and ``entries``; make all writes so far durable if ``sync``."""
        self._check_usable()
        if entries:
            check_append(entries, self._written.last_index, self._written.snapshot.index)
        if hard_state is not None or entries:
            entries = tuple(entries)
            self._written.append(hard_state, entries)
            self._pending.append((hard_state, entries))
            self.stats.bytes_written += sum(len(e.data) for e in entries)
        if sync and self._pending:
            self._sync()

    def compact(self, snapshot: SnapshotMeta) -> None:
        """Forget entries up to ``snapshot.index``, durably (like the WAL's synced mark)."""
        self._check_usable()
        if snapshot.index <= self._written.snapshot.index:
            return
        self._sync()
        self._written.compact(snapshot)
        self._durable.compact(snapshot)

    def install(self, snapshot: SnapshotMeta) -> None:
        """Discard the whole log for a received snapshot, durably (like the WAL's INSTALL)."""
        self._check_usable()
        self._sync()
        self._written.install(snapshot)
        self._durable.install(snapshot)

    def close(self) -> None:
        """Do nothing: there are no files. Unsynced writes stay lost on ``crash()``."""

    def crash(self) -> MemoryStorage:
        """Return a new storage holding only what was durable; this one becomes unusable."""
        self._crashed = True
        survivor = MemoryStorage()
        survivor._written = self._durable.copy()
        survivor._durable = self._durable.copy()
        return survivor

    def durable_entries(self) -> list[Entry]:
        """Return the entries that would survive a crash now (for test assertions)."""
        return list(self._durable.entries)

    def _sync(self) -> None:
        for hard_state, entries in self._pending:
            self._durable.append(hard_state, entries)
        self._pending.clear()
        self.stats.fsync_count += 1

    def _check_usable(self) -> None:
        if self._crashed:
            raise StorageError("MemoryStorage used after crash()")
