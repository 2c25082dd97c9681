"""SnapshotStore: snapshots written atomically, the newest two kept, corruption named."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tests.unit.storage.walfiles import flip
from zraft.core.messages import SnapshotMeta
from zraft.storage import CorruptionError, StorageError
from zraft.storage.snapshot import SnapshotStore

# -- SnapshotStore -------------------------------------------------------------


def test_snapshot_round_trip_and_keeps_last_two(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snap")
    assert store.load() is None
    for index in (10, 20, 30):
        store.save(SnapshotMeta(index, 2, ("n1", "n2")), f"state@{index}".encode() * 100)
    assert [p.name[:16] for p in store.paths()] == [f"{20:016x}", f"{30:016x}"]
    assert store.load() == (SnapshotMeta(30, 2, ("n1", "n2")), b"state@30" * 100)
    assert not list((tmp_path / "snap").glob("*.tmp"))
    assert SnapshotStore(tmp_path / "snap").load() == store.load()


def test_snapshot_empty_data_and_leftover_temp_file(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.save(SnapshotMeta(1, 1), b"")
    (tmp_path / f"{2:016x}-{1:016x}.snap.tmp").write_bytes(b"half a snapshot")
    assert store.load() == (SnapshotMeta(1, 1), b"")


def test_corrupt_newest_snapshot_names_file_and_offset(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.save(SnapshotMeta(5, 1, ("n1",)), b"old state")
    store.save(SnapshotMeta(9, 1, ("n1",)), b"new state")
    newest = store.paths()[-1]
    size = newest.stat().st_size
    data_offset = size - len(b"new state")
    flip(newest, size - 2)
    with pytest.raises(CorruptionError, match="data checksum") as err:
        store.load()
    assert (err.value.path, err.value.offset) == (str(newest), data_offset)

    flip(newest, size - 2)  # repair the data, break the meta
    flip(newest, 24 + 3)
    with pytest.raises(CorruptionError, match="header checksum") as err:
        store.load()
    assert (err.value.path, err.value.offset) == (str(newest), 0)

    flip(newest, 24 + 3)
    os.truncate(newest, size - 1)
    with pytest.raises(CorruptionError) as err:
        store.load()
    assert err.value.offset == data_offset


def test_snapshot_fsync_failure_keeps_previous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SnapshotStore(tmp_path)
    store.save(SnapshotMeta(5, 1), b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(StorageError):
        store.save(SnapshotMeta(9, 1), b"new")
    monkeypatch.undo()
    assert store.load() == (SnapshotMeta(5, 1), b"old")
