"""The WAL's appends: I/O failures are fatal, one fsync covers a whole group.

ARCHITECTURE.md "Storage": a failed fsync is fatal (never continue after it);
one fsync covers a whole group of entries; appending costs about the fsyncs.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from tests.unit.storage.walfiles import ents, opened, recover
from zraft.core.messages import HardState, SnapshotMeta
from zraft.storage import StorageError


def test_fsync_failure_is_fatal_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = opened(tmp_path)
    wal.append(None, ents(1, 1), sync=True)

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(StorageError) as err:
        wal.append(None, ents(2, 2), sync=True)
    assert isinstance(err.value.__cause__, OSError)
    assert err.value.__cause__.errno == errno.EIO
    monkeypatch.undo()
    # Never continue after a failed fsync, even if the disk "recovers".
    with pytest.raises(StorageError):
        wal.append(None, ents(3, 3), sync=True)
    with pytest.raises(StorageError):
        wal.compact(SnapshotMeta(1, 1))


def test_write_failure_is_storage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wal = opened(tmp_path)

    def full_disk(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(StorageError) as err:
        wal.append(None, ents(1, 1), sync=False)
    assert err.value.__cause__.errno == errno.ENOSPC  # type: ignore[union-attr]


def test_group_commit_one_fsync_per_synced_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = opened(tmp_path)
    calls = {"fsync": 0, "write": 0}
    real_fsync, real_write = os.fsync, os.write

    def counting_fsync(fd: int) -> None:
        calls["fsync"] += 1
        real_fsync(fd)

    def counting_write(fd: int, data: bytes) -> int:
        calls["write"] += 1
        return real_write(fd, data)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    monkeypatch.setattr(os, "write", counting_write)

    wal.append(HardState(1, "n1", 0), ents(1, 500), sync=True)
    assert calls == {"fsync": 1, "write": 1}
    wal.append(None, ents(501, 501), sync=True)
    assert calls == {"fsync": 2, "write": 2}
    for first in (502, 552, 602):
        wal.append(HardState(1, "n1", first), ents(first, first + 49), sync=False)
    assert calls == {"fsync": 2, "write": 5}
    wal.append(None, [], sync=True)  # makes the three unsynced appends durable
    assert calls["fsync"] == 3
    wal.append(None, [], sync=True)  # nothing new: nothing to sync
    assert calls["fsync"] == 3
    assert wal.stats.fsync_count == 3
    assert wal.stats.bytes_written == sum(p.stat().st_size for p in wal.segment_paths)
    assert wal.stats.last_fsync_seconds > 0
    wal.close()


def test_append_cost_is_fsync_dominated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Encoding must be cheap: without the fsyncs, 10k entries in batches of
    # 100 must take a small fraction of the ~0.35 s their 100 fsyncs cost.
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    wal = opened(tmp_path)
    entries = ents(1, 10_000, size=100)
    start = time.perf_counter()
    for i in range(0, 10_000, 100):
        wal.append(None, entries[i : i + 100], sync=True)
    assert time.perf_counter() - start < 0.25
    wal.close()


def test_open_of_100k_entries_is_fast(tmp_path: Path) -> None:
    wal = opened(tmp_path)
    entries = ents(1, 100_000, size=100)
    for i in range(0, 100_000, 10_000):
        wal.append(None, entries[i : i + 10_000], sync=False)
    wal.close()
    start = time.perf_counter()
    recovered = recover(tmp_path)
    assert time.perf_counter() - start < 2.0
    assert recovered.entries == entries
