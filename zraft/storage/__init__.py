"""Durable storage for one node: the WAL (entries + hard state) and snapshots.

The seam is ``LogStorage``. ``zraft.storage.wal.WalStorage`` is the real
implementation; ``zraft.storage.memory.MemoryStorage`` is its in-memory twin
for tests (not for production).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from zraft.core.messages import Entry, HardState, SnapshotMeta


class StorageError(Exception):
    """Storage cannot go on (EIO, ENOSPC, failed fsync). Fatal for the node:
    it must stop and recover from what is durable (ARCHITECTURE.md)."""


class CorruptionError(StorageError):
    """A record in the middle of the WAL (or a snapshot) fails its checksum.

    The node refuses to start; ``path`` and ``offset`` say where.
    """

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"{path}: corrupt record at offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


@dataclass
class StorageStats:
    """Counters the driver turns into metrics. Only data-file fsyncs are counted."""

    fsync_count: int = 0
    last_fsync_seconds: float = 0.0
    total_fsync_seconds: float = 0.0
    bytes_written: int = 0


@dataclass
class Recovered:
    """What ``LogStorage.open`` found on disk."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: SnapshotMeta = field(default_factory=SnapshotMeta)
    entries: list[Entry] = field(default_factory=list)  # contiguous, after snapshot.index
    truncated_bytes: int = 0  # torn tail bytes removed at open (never acknowledged)


class LogStorage(Protocol):
    """The WAL seam. Single-threaded: the driver thread is the only caller.

    Call order: ``open`` once, then any number of ``append``/``compact``/``install``,
    then ``close``. Every method raises ``StorageError`` on an I/O failure,
    after which the object must not be used again.

    Attributes:
        stats: counters (fsyncs, their durations, bytes written) that the
            driver turns into metrics; updated by ``append`` and ``compact``.
    """

    stats: StorageStats

    def open(self) -> Recovered:
        """Read what is durable; truncate a torn tail; raise CorruptionError
        on a bad record that is not the tail."""

    def append(self, hard_state: HardState | None, entries: Sequence[Entry], sync: bool) -> None:
        """Write ``hard_state`` (if given) and ``entries``; fsync when ``sync``.

        An entry whose index is at or below the last stored index replaces that
        entry and every later one (the log's suffix was overwritten, §5.3).
        When ``sync`` is true, everything written so far is durable on return.
        """

    def compact(self, snapshot: SnapshotMeta) -> None:
        """Forget entries up to ``snapshot.index`` (the snapshot is already durable)."""

    def install(self, snapshot: SnapshotMeta) -> None:
        """Discard every entry durably: a received snapshot replaced the log (Raft §7)."""

    def close(self) -> None:
        """Release files. Does not fsync."""
