"""MemoryStorage, the WAL's in-memory twin: crashes keep only what was synced.

Not for production; the simulation runs on it, so it must agree with the WAL.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.storage.walfiles import ents
from zraft.core.messages import HardState, SnapshotMeta
from zraft.storage import LogStorage, StorageError
from zraft.storage.memory import MemoryStorage
from zraft.storage.wal import WalStorage


def test_memory_crash_keeps_only_synced_data() -> None:
    mem = MemoryStorage()
    mem.open()
    mem.append(HardState(1, "n1", 0), ents(1, 5), sync=True)
    mem.append(HardState(2, "n2", 0), ents(6, 8), sync=False)
    mem.append(None, ents(4, 4, term=2), sync=False)  # unsynced overwrite
    assert mem.open().entries == ents(1, 3) + ents(4, 4, term=2)

    survivor = mem.crash()
    recovered = survivor.open()
    assert recovered.entries == ents(1, 5)
    assert recovered.hard_state == HardState(1, "n1", 0)
    with pytest.raises(StorageError):
        mem.append(None, ents(6, 6), sync=True)  # the crashed node is gone

    survivor.append(HardState(2, "n2", 0), ents(6, 7), sync=False)
    survivor.append(None, [], sync=True)  # a later sync covers earlier writes
    assert survivor.crash().open().entries == ents(1, 7)


def test_memory_compact_is_durable_and_checks_like_the_wal() -> None:
    mem = MemoryStorage()
    mem.append(HardState(1, "n1", 0), ents(1, 10), sync=False)
    mem.compact(SnapshotMeta(6, 1, ("n1",)))
    with pytest.raises(ValueError):
        mem.append(None, ents(12, 12), sync=True)
    recovered = mem.crash().open()
    assert recovered.snapshot == SnapshotMeta(6, 1, ("n1",))
    assert recovered.entries == ents(7, 10)
    assert recovered.hard_state == HardState(1, "n1", 0)


@pytest.mark.parametrize("kind", ["wal", "memory"])
def test_wal_and_memory_twin_agree(tmp_path: Path, kind: str) -> None:
    storage: LogStorage
    storage = WalStorage(tmp_path, segment_bytes=256) if kind == "wal" else MemoryStorage()
    storage.open()
    storage.append(HardState(1, "n1", 0), ents(1, 12), sync=True)
    storage.append(HardState(2, "", 4), ents(9, 14, term=2), sync=True)
    storage.compact(SnapshotMeta(10, 2, ("n1", "n2")))
    storage.compact(SnapshotMeta(5, 1))  # older mark: ignored
    storage.append(None, ents(15, 16, term=2), sync=True)
    if isinstance(storage, MemoryStorage):
        recovered = storage.crash().open()
    else:
        storage.close()
        recovered = WalStorage(tmp_path, segment_bytes=256).open()
    assert recovered.hard_state == HardState(2, "", 4)
    assert recovered.snapshot == SnapshotMeta(10, 2, ("n1", "n2"))
    assert recovered.entries == ents(11, 16, term=2)
