"""The WAL's INSTALL record: a snapshot from the leader replaces the whole log (Raft §7).

Thesis §5.1: when the follower's log does not hold the snapshot's last entry,
the whole log is discarded. The record makes that durable, so a restart never
replays the old entries on top of the installed state.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.storage.walfiles import ents, recover
from zraft.core.messages import HardState, SnapshotMeta
from zraft.storage.memory import MemoryStorage
from zraft.storage.wal import WalStorage


def test_install_discards_every_entry_and_survives_a_restart(tmp_path: Path) -> None:
    wal = WalStorage(tmp_path, segment_bytes=256)
    wal.open()
    for i in range(1, 21, 4):  # one write per call: a segment rotates between calls
        wal.append(HardState(3, "n1", 8), ents(i, i + 3, term=1), sync=True)
    assert len(wal.segment_paths) > 2
    meta = SnapshotMeta(15, 2, ("n1", "n2", "n3"))  # term 2: the stored entry 15 differs
    wal.install(meta)
    assert wal.last_index == 15 and len(wal.segment_paths) == 1
    wal.append(HardState(3, "n1", 16), ents(16, 17, term=3), sync=True)
    wal.close()
    rec = recover(tmp_path)
    assert rec.snapshot == meta
    assert [e.index for e in rec.entries] == [16, 17]
    assert rec.hard_state == HardState(3, "n1", 16)


def test_install_beyond_the_log_end(tmp_path: Path) -> None:
    wal = WalStorage(tmp_path)
    wal.open()
    wal.append(HardState(1, "", 2), ents(1, 3), sync=True)
    wal.install(SnapshotMeta(100, 5))
    wal.append(None, ents(101, 101, term=5), sync=True)
    wal.close()
    rec = recover(tmp_path)
    assert rec.snapshot.index == 100 and [e.index for e in rec.entries] == [101]
    assert rec.hard_state.term == 1  # the hard state went with the record


def test_install_below_the_log_start_is_refused(tmp_path: Path) -> None:
    wal = WalStorage(tmp_path)
    wal.open()
    wal.append(None, ents(1, 10), sync=True)
    wal.compact(SnapshotMeta(8, 1))
    with pytest.raises(ValueError, match="below the log start"):
        wal.install(SnapshotMeta(5, 1))


def test_a_compaction_mark_keeps_the_tail_an_install_does_not(tmp_path: Path) -> None:
    """The negative control's contrast: a mark where an INSTALL belongs keeps stale entries."""
    for install in (True, False):
        d = tmp_path / str(install)
        wal = WalStorage(d)
        wal.open()
        wal.append(None, ents(1, 10, term=1), sync=True)
        meta = SnapshotMeta(5, 2)
        (wal.install if install else wal.compact)(meta)
        wal.close()
        kept = [e.index for e in recover(d).entries]
        assert kept == ([] if install else [6, 7, 8, 9, 10])


def test_memory_storage_install_is_durable() -> None:
    mem = MemoryStorage()
    mem.open()
    mem.append(HardState(1, "", 0), ents(1, 6), sync=False)
    mem.install(SnapshotMeta(9, 2))
    mem.append(None, ents(10, 11, term=2), sync=False)
    survivor = mem.crash().open()
    assert survivor.snapshot.index == 9 and survivor.entries == []
