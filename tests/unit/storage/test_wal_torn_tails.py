"""The WAL against torn tails and corruption: every cut point, flipped bytes.

ARCHITECTURE.md "Storage": a torn last record is truncated (it was never
acknowledged); a bad record in the middle is corruption naming file and offset.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from tests.unit.storage.walfiles import (
    ents,
    flip,
    frame,
    opened,
    record_offsets,
    recover,
    written_log,
)
from zraft.core.messages import Entry, EntryKind, HardState
from zraft.storage import CorruptionError, Recovered
from zraft.storage.records import HEADER_SIZE
from zraft.storage.records import hard_state_record as _hard_state_record
from zraft.storage.wal import WalStorage


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
