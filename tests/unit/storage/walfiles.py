"""Helpers of the storage tests: entries, WAL files on disk, and damage to them.

``record_offsets`` and ``frame`` parse and build records independently of
zraft/storage/wal.py, so that the tests do not trust the code under test.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from zraft.core.messages import Entry, EntryKind, HardState
from zraft.storage import Recovered
from zraft.storage.records import HEADER, HEADER_CHECKED, HEADER_SIZE
from zraft.storage.wal import WalStorage


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
