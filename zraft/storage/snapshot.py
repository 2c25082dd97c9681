"""Helpers the WAL shares with snapshots: the snapshot meta encoding and directory fsync.

The snapshot files themselves (format, directory, transfer) live in ``zraft.snapshot``.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from zraft.core.messages import SnapshotMeta
from zraft.storage import StorageError

_META = struct.Struct("<QQH")  # index, term, number of voters
_U16 = struct.Struct("<H")


def encode_meta(meta: SnapshotMeta) -> bytes:
    """Encode ``meta`` as ``<QQH`` (index, term, voter count) + length-prefixed utf-8 ids.

    The WAL's SNAPSHOT_MARK record uses the same encoding.
    """
    parts = [_META.pack(meta.index, meta.term, len(meta.voters))]
    for voter in meta.voters:
        raw = voter.encode("utf-8")
        parts.append(_U16.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)


def decode_meta(buf: bytes | memoryview) -> SnapshotMeta:
    """Decode what ``encode_meta`` wrote; raise ValueError if ``buf`` is malformed."""
    if len(buf) < _META.size:
        raise ValueError("snapshot meta too short")
    index, term, count = _META.unpack_from(buf, 0)
    off = _META.size
    voters = []
    for _ in range(count):
        if off + _U16.size > len(buf):
            raise ValueError("snapshot meta: voter list truncated")
        (n,) = _U16.unpack_from(buf, off)
        off += _U16.size
        if off + n > len(buf):
            raise ValueError("snapshot meta: voter id truncated")
        voters.append(bytes(buf[off : off + n]).decode("utf-8"))
        off += n
    if off != len(buf):
        raise ValueError("snapshot meta: trailing bytes")
    return SnapshotMeta(index=index, term=term, voters=tuple(voters))


def fsync_path(path: Path) -> None:
    """Fsync the file or directory at ``path``; raises OSError."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Fsync directory ``path`` so that creates, renames and unlinks in it are durable.

    Raises StorageError (chained) on failure.
    """
    try:
        fsync_path(path)
    except OSError as exc:
        raise StorageError(f"fsync of directory {path} failed: {exc}") from exc
