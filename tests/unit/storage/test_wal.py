"""Storage: the WAL's durability and recovery rules, its in-memory twin, snapshots.

ARCHITECTURE.md "Storage": a torn last record is truncated (it was never
acknowledged); a bad record in the middle is corruption naming file and offset;
a failed fsync is fatal; one fsync covers a whole group of entries.
"""

from __future__ import annotations

import errno
import os
import struct
import time
import zlib
from pathlib import Path

import pytest

from zraft.core.messages import Entry, EntryKind, HardState, SnapshotMeta
from zraft.storage import CorruptionError, LogStorage, Recovered, StorageError
from zraft.storage.memory import MemoryStorage
from zraft.storage.records import HEADER, HEADER_CHECKED, HEADER_SIZE
from zraft.storage.records import hard_state_record as _hard_state_record
from zraft.storage.wal import WalStorage

# -- helpers -------------------------------------------------------------------


def ents(first: int, last: int, term: int = 1, size: int = 10) -> list[Entry]:
    """Entries first..last (inclusive) whose data names their index and term."""
    return [
        Entry(term, i, EntryKind.NORMAL, f"{i}@{term}:".encode().ljust(size, b"x"))
        for i in range(first, last + 1)
    ]


def opened(path: Path, **kwargs: int) -> WalStorage:
    """A WalStorage on ``path``, opened (what it recovered is not needed)."""
    wal = WalStorage(path, **kwargs)
    wal.open()
    return wal


def recover(path: Path, **kwargs: int) -> Recovered:
    """What a node restarting on ``path`` would recover."""
    wal = WalStorage(path, **kwargs)
    try:
        return wal.open()
    finally:
        wal.close()


def record_offsets(path: Path) -> list[int]:
    """Start offsets of the records in a segment, parsed independently of wal.py."""
    buf = path.read_bytes()
    offsets, off = [], 0
    while off < len(buf):
        offsets.append(off)
        (length,) = struct.unpack_from("<I", buf, off)  # the header starts with the length
        off += HEADER_SIZE + length
    assert off == len(buf)
    return offsets


def flip(path: Path, offset: int, mask: int = 0xFF) -> None:
    buf = bytearray(path.read_bytes())
    buf[offset] ^= mask
    path.write_bytes(bytes(buf))


def frame(rtype: int, payload: bytes) -> bytes:
    """A well-formed record of any type: checked header part, header crc, payload."""
    head = HEADER.pack(len(payload), rtype, zlib.crc32(payload), 0)[:HEADER_CHECKED]
    return head + struct.pack("<I", zlib.crc32(head)) + payload


def written_log(tmp_path: Path, n: int = 20) -> tuple[Path, list[Entry]]:
    """A closed WAL with a hard state and entries 1..n, each in its own record."""
    wal = opened(tmp_path)
    entries = ents(1, n)
    wal.append(HardState(1, "n1", 0), [], sync=True)
    wal.append(None, entries, sync=True)  # the last record is entry n
    wal.close()
    (segment,) = (tmp_path / "wal").iterdir()
    return segment, entries


# -- WalStorage: round trips ----------------------------------------------------


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


# -- WalStorage: torn tails and corruption ------------------------------------


@pytest.mark.parametrize("cut", [1, 4, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 3, -1])
def test_torn_last_record_is_truncated(tmp_path: Path, cut: int) -> None:
    segment, entries = written_log(tmp_path)
    last = record_offsets(segment)[-1]
    size = segment.stat().st_size
    keep = last + cut if cut > 0 else size + cut
    os.truncate(segment, keep)

    wal = WalStorage(tmp_path)
    recovered = wal.open()
    assert recovered.truncated_bytes == keep - last
    assert recovered.entries == entries[:-1]
    assert segment.stat().st_size == last  # cut durably, not just ignored
    wal.append(None, entries[-1:], sync=True)
    wal.close()
    again = recover(tmp_path)
    assert again.entries == entries
    assert again.truncated_bytes == 0


def test_bad_checksum_on_last_record_is_truncated(tmp_path: Path) -> None:
    segment, entries = written_log(tmp_path)
    last = record_offsets(segment)[-1]
    size = segment.stat().st_size
    flip(segment, size - 1)
    recovered = recover(tmp_path)
    assert recovered.entries == entries[:-1]
    assert recovered.truncated_bytes == size - last
    assert segment.stat().st_size == last


@pytest.mark.parametrize("zeros", [1, HEADER_SIZE - 1, HEADER_SIZE, 4096])
def test_zero_padding_tail_is_truncated(tmp_path: Path, zeros: int) -> None:
    segment, entries = written_log(tmp_path)
    size = segment.stat().st_size
    with segment.open("ab") as f:
        f.write(bytes(zeros))
    recovered = recover(tmp_path)
    assert recovered.entries == entries
    assert recovered.truncated_bytes == zeros
    assert segment.stat().st_size == size


def test_partly_zeroed_last_write_is_truncated(tmp_path: Path) -> None:
    # Pages of the final write never reached the disk: its tail reads as zeros.
    segment, entries = written_log(tmp_path)
    third_last = record_offsets(segment)[-3]
    buf = bytearray(segment.read_bytes())
    cut = third_last + HEADER_SIZE + 7  # inside the payload
    buf[cut:] = bytes(len(buf) - cut)
    segment.write_bytes(bytes(buf))
    recovered = recover(tmp_path)
    assert recovered.entries == entries[:-3]
    assert recovered.truncated_bytes == len(buf) - third_last


def _overwrite_then_tear(tmp_path: Path, keep: slice) -> tuple[Recovered, HardState, list[Entry]]:
    """A follower stores 1..5@1 and 6..10@2 durably; a term-3 leader then overwrites
    6..10 and commits them in one Ready. Of that last write only the bytes in
    ``keep`` reach the disk (the rest reads as zeros): a power loss mid-writeback."""
    wal = opened(tmp_path)
    wal.append(HardState(2, "n1", 5), ents(1, 5) + ents(6, 10, term=2), sync=True)
    (segment,) = (tmp_path / "wal").iterdir()
    durable = segment.stat().st_size
    new_hs, new_entries = HardState(3, "", 10), ents(6, 10, term=3)
    wal.append(new_hs, new_entries, sync=False)
    wal.close()
    buf = bytearray(segment.read_bytes())
    last_write = bytes(buf[durable:])
    torn = bytearray(len(last_write))
    torn[keep] = last_write[keep]
    buf[durable:] = torn
    segment.write_bytes(bytes(buf))
    return recover(tmp_path), new_hs, new_entries


def test_a_torn_write_never_keeps_a_commit_without_its_entries(tmp_path: Path) -> None:
    # Regression (safety review): the hard state was written before the entries it
    # commits, so a torn write could keep commit=10 over the stale 6..10@2 and the
    # node would apply entries that were never committed. Every prefix of the write.
    for cut in range(0, 400, 7):
        recovered, new_hs, new_entries = _overwrite_then_tear(tmp_path / f"{cut}", slice(0, cut))
        if recovered.hard_state == new_hs:
            assert recovered.entries[5:] == new_entries, cut
        else:
            assert recovered.hard_state.commit == 5, cut


def test_hard_state_surviving_alone_is_refused_not_applied(tmp_path: Path) -> None:
    # Pages can reach the disk out of order: if only the end of the write (the hard
    # state) survived, recovery must stop at the hole, never trust the commit index.
    hs_size = len(_hard_state_record(HardState(3, "", 10)))
    with pytest.raises(CorruptionError, match="corrupt record at offset"):
        _overwrite_then_tear(tmp_path, slice(-hs_size, None))


def test_flipped_byte_in_middle_record_names_file_and_offset(tmp_path: Path) -> None:
    segment, _ = written_log(tmp_path)
    bad = record_offsets(segment)[10]
    flip(segment, bad + HEADER_SIZE + 5)  # inside the payload
    with pytest.raises(CorruptionError) as err:
        recover(tmp_path)
    assert err.value.path == str(segment)
    assert err.value.offset == bad
    assert f"{segment}: corrupt record at offset {bad}:" in str(err.value)
    assert segment.stat().st_size > bad  # nothing was truncated


@pytest.mark.parametrize("bit", range(32))
def test_flipped_length_bit_in_middle_record_of_last_segment_is_corruption(
    tmp_path: Path, bit: int
) -> None:
    """A damaged length must not turn acknowledged records into a "torn tail".

    Under the old framing (``[u32 length][u32 crc][u8 type]``, crc over type and
    payload only) the length was trusted before anything was checked. For bits
    9..31 the damaged length reached past the end of the ~800-byte file, which
    open() took for a torn tail: it recovered entries 1..9 only, cut the file
    at this record and silently lost the acknowledged entries 10..20, so
    ``pytest.raises`` failed. (Bits 0..8 gave a "checksum mismatch" corruption,
    which fails the ``match`` here.) Now the header has its own checksum: the
    record is corruption at its offset, whatever bit flips, and nothing is cut.
    """
    segment, _ = written_log(tmp_path)
    bad = record_offsets(segment)[10]
    size = segment.stat().st_size
    flip(segment, bad + bit // 8, 1 << (bit % 8))  # the length is the header's first u32
    with pytest.raises(CorruptionError, match="header checksum") as err:
        recover(tmp_path)
    assert (err.value.path, err.value.offset) == (str(segment), bad)
    assert f"{segment}: corrupt record at offset {bad}:" in str(err.value)
    assert segment.stat().st_size == size  # nothing was truncated


@pytest.mark.parametrize("cut", range(1, HEADER_SIZE))
def test_header_cut_short_at_eof_is_torn(tmp_path: Path, cut: int) -> None:
    # A write that stopped inside the next record's header: never acknowledged.
    segment, entries = written_log(tmp_path)
    size = segment.stat().st_size
    record = frame(1, struct.pack("<QQB", 1, 21, EntryKind.NORMAL.value) + b"data")
    with segment.open("ab") as f:
        f.write(record[:cut])
    wal = WalStorage(tmp_path)
    recovered = wal.open()
    assert recovered.entries == entries
    assert recovered.truncated_bytes == cut
    assert segment.stat().st_size == size  # cut durably
    wal.append(None, ents(21, 21), sync=True)
    wal.close()
    assert recover(tmp_path).entries == entries + ents(21, 21)


@pytest.mark.parametrize("written", [1, 4, HEADER_SIZE - 1])
def test_header_whose_last_bytes_read_as_zeros_is_torn(tmp_path: Path, written: int) -> None:
    # The final write's header straddled a page that never reached the disk:
    # its header check fails, but only zeros follow the header, so it is torn.
    segment, entries = written_log(tmp_path)
    last = record_offsets(segment)[-1]
    buf = bytearray(segment.read_bytes())
    buf[last + written :] = bytes(len(buf) - last - written)
    segment.write_bytes(bytes(buf))
    recovered = recover(tmp_path)
    assert recovered.entries == entries[:-1]
    assert recovered.truncated_bytes == len(buf) - last
    assert segment.stat().st_size == last


def test_bad_header_of_last_record_with_its_payload_after_it_is_corruption(
    tmp_path: Path,
) -> None:
    # Its payload is still there, so the record was written whole: a bit flip.
    segment, _ = written_log(tmp_path)
    last = record_offsets(segment)[-1]
    flip(segment, last + 4, 0x01)  # the type byte
    with pytest.raises(CorruptionError, match="header checksum") as err:
        recover(tmp_path)
    assert err.value.offset == last


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_bad_tail_of_a_non_last_segment_is_corruption(tmp_path: Path, damage: str) -> None:
    # What would be a torn tail in the last segment is corruption in an older
    # one: a segment is fsynced before the next one is created.
    wal = opened(tmp_path, segment_bytes=300)
    for i in range(1, 21):
        wal.append(None, ents(i, i, size=60), sync=True)
    paths = wal.segment_paths
    wal.close()
    assert len(paths) >= 3
    last_record = record_offsets(paths[1])[-1]
    size = paths[1].stat().st_size
    if damage == "flip":
        flip(paths[1], size - 1)
    else:
        os.truncate(paths[1], size - 3)
    with pytest.raises(CorruptionError) as err:
        recover(tmp_path, segment_bytes=300)
    assert (err.value.path, err.value.offset) == (str(paths[1]), last_record)
    assert paths[1].stat().st_size == size - (3 if damage == "truncate" else 0)


def test_unknown_record_type_is_corruption_even_at_the_tail(tmp_path: Path) -> None:
    segment, _ = written_log(tmp_path)
    size = segment.stat().st_size
    with segment.open("ab") as f:
        f.write(frame(9, b"hello"))
    with pytest.raises(CorruptionError, match="unknown record type 9") as err:
        recover(tmp_path)
    assert err.value.offset == size


# -- WalStorage: I/O failures and fsync discipline -----------------------------


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


# -- MemoryStorage -------------------------------------------------------------


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
