"""The WAL's round trips: what a restart replays, segment rotation, compaction.

ARCHITECTURE.md "Storage": a node restarting on its WAL recovers every synced
entry and the newest hard state; segments rotate and replay in order; a
compaction mark drops old segments and survives a restart.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.storage.walfiles import ents, opened, recover
from zraft.core.messages import Entry, EntryKind, HardState, SnapshotMeta
from zraft.storage import CorruptionError
from zraft.storage.wal import WalStorage


def test_round_trip_across_reopen(tmp_path: Path) -> None:
    wal = WalStorage(tmp_path)
    assert wal.open().entries == []
    entries = ents(1, 30) + [
        Entry(2, 31, EntryKind.NOOP, b""),
        Entry(2, 32, EntryKind.CONFIG, bytes(range(256))),
    ]
    for i in range(0, len(entries), 7):
        wal.append(None, entries[i : i + 7], sync=True)
    wal.close()

    again = WalStorage(tmp_path)
    recovered = again.open()
    assert recovered.entries == entries
    assert recovered.truncated_bytes == 0
    assert again.last_index == 32
    again.append(None, ents(33, 33, term=2), sync=True)
    again.close()
    assert recover(tmp_path).entries == entries + ents(33, 33, term=2)


def test_hard_state_persisted_newest_wins(tmp_path: Path) -> None:
    wal = opened(tmp_path)
    wal.append(HardState(1, "n1", 0), ents(1, 3), sync=True)
    wal.append(HardState(2, "", 3), [], sync=True)
    wal.append(HardState(3, "nœud-2", 3), [], sync=True)
    wal.close()
    recovered = recover(tmp_path)
    assert recovered.hard_state == HardState(3, "nœud-2", 3)
    assert recovered.entries == ents(1, 3)


def test_suffix_overwrite_replays_as_replaced(tmp_path: Path) -> None:
    # Raft §5.3: a conflicting entry replaces it and everything that follows.
    wal = opened(tmp_path)
    wal.append(None, ents(1, 10, term=1), sync=True)
    wal.append(None, ents(6, 7, term=2), sync=True)
    wal.append(None, ents(8, 8, term=2), sync=True)
    wal.close()
    wal = WalStorage(tmp_path)
    assert wal.open().entries == ents(1, 5, term=1) + ents(6, 8, term=2)
    assert wal.last_index == 8
    wal.append(None, ents(1, 2, term=3), sync=True)  # overwrite from the very start
    wal.close()
    assert recover(tmp_path).entries == ents(1, 2, term=3)


def test_gap_or_non_contiguous_batch_is_value_error_and_writes_nothing(tmp_path: Path) -> None:
    wal = opened(tmp_path)
    wal.append(None, ents(1, 3), sync=True)
    with pytest.raises(ValueError, match="gap"):
        wal.append(HardState(9, "x", 0), ents(5, 6), sync=True)
    with pytest.raises(ValueError, match="contiguous"):
        wal.append(None, [*ents(4, 4), *ents(6, 6)], sync=True)
    wal.append(None, ents(4, 4), sync=True)  # still usable
    wal.close()
    recovered = recover(tmp_path)
    assert recovered.entries == ents(1, 4)
    assert recovered.hard_state == HardState()


def test_segments_rotate_and_replay_in_order(tmp_path: Path) -> None:
    wal = opened(tmp_path, segment_bytes=1024)
    for first in range(1, 301, 10):
        wal.append(HardState(1, "n1", first), ents(first, first + 9, size=40), sync=True)
    paths = wal.segment_paths
    wal.close()
    assert len(paths) > 5
    names = sorted(p.name for p in (tmp_path / "wal").iterdir())
    assert names == [p.name for p in paths]  # file names sort in replay order
    assert all(p.stat().st_size < 1024 + 10 * 80 for p in paths)  # records are never split

    recovered = recover(tmp_path, segment_bytes=1024)
    assert recovered.entries == ents(1, 300, size=40)
    assert recovered.hard_state == HardState(1, "n1", 291)


def test_rotation_makes_the_old_segment_durable_first(tmp_path: Path) -> None:
    wal = opened(tmp_path, segment_bytes=100)
    wal.append(None, ents(1, 5, size=40), sync=False)
    before = wal.stats.fsync_count
    wal.append(None, ents(6, 6), sync=False)  # rotates
    assert len(wal.segment_paths) == 2
    assert wal.stats.fsync_count == before + 1
    wal.close()


def test_compact_deletes_old_segments_and_reopen_starts_after_mark(tmp_path: Path) -> None:
    wal = opened(tmp_path, segment_bytes=1024)
    # The only hard state record lives in the first segment, which compaction deletes.
    wal.append(HardState(4, "n2", 0), [], sync=True)
    for first in range(1, 201, 10):
        wal.append(None, ents(first, first + 9, size=40), sync=True)
    before = list(wal.segment_paths)
    meta = SnapshotMeta(index=150, term=1, voters=("n1", "n2", "n3"))
    wal.compact(meta)
    after = wal.segment_paths
    assert len(after) < len(before)
    assert not any(p.exists() for p in before if p not in after)
    wal.close()

    wal = WalStorage(tmp_path, segment_bytes=1024)
    recovered = wal.open()
    assert recovered.snapshot == meta
    assert recovered.entries == ents(151, 200, size=40)
    assert recovered.hard_state == HardState(4, "n2", 0)
    wal.append(None, ents(201, 201), sync=True)
    with pytest.raises(ValueError, match="snapshot"):
        wal.append(None, ents(150, 150), sync=True)
    wal.close()
    assert recover(tmp_path).entries[-1] == ents(201, 201)[0]


def test_compact_past_the_end_of_the_log(tmp_path: Path) -> None:
    # A follower installing a snapshot beyond its log: the log restarts after it.
    wal = opened(tmp_path)
    wal.append(None, ents(1, 10), sync=True)
    wal.compact(SnapshotMeta(100, 3))
    with pytest.raises(ValueError, match="gap"):
        wal.append(None, ents(102, 102, term=3), sync=True)
    wal.append(None, ents(101, 101, term=3), sync=True)
    wal.close()
    recovered = recover(tmp_path)
    assert recovered.snapshot == SnapshotMeta(100, 3)
    assert recovered.entries == ents(101, 101, term=3)


def test_missing_segment_is_corruption(tmp_path: Path) -> None:
    wal = opened(tmp_path, segment_bytes=200)
    for i in range(1, 31):
        wal.append(None, ents(i, i, size=60), sync=True)
    paths = wal.segment_paths
    wal.close()
    paths[1].unlink()
    with pytest.raises(CorruptionError, match="missing") as err:
        recover(tmp_path, segment_bytes=200)
    assert err.value.path == str(paths[2])


def test_a_mark_that_opens_a_segment_survives_the_deletion_of_the_segment_before(
    tmp_path: Path,
) -> None:
    """A compaction mark that rotated into a new segment, followed there by entries
    far above it, replays once the older segment (holding the entries between the
    mark and them) is deleted by a later mark."""
    wal = opened(tmp_path, segment_bytes=200)
    wal.append(HardState(2, "n1", 10), ents(1, 10, size=40), sync=True)  # fills segment 1
    wal.compact(SnapshotMeta(5, 1))  # the mark opens segment 2
    wal.append(None, ents(11, 20, size=40), sync=True)  # behind it in segment 2
    first = wal.segment_paths[0]
    wal.compact(SnapshotMeta(15, 1))  # segment 3; deletes segment 1 (entries 1..10)
    assert not first.exists() and len(wal.segment_paths) == 2
    wal.close()
    recovered = recover(tmp_path, segment_bytes=200)
    assert recovered.snapshot == SnapshotMeta(15, 1)
    assert [e.index for e in recovered.entries] == list(range(16, 21))
    assert recovered.hard_state == HardState(2, "n1", 10)
