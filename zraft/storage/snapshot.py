"""Snapshot files: one checksummed file per snapshot, written atomically.

File layout (little endian)::

    offset  0  magic      b"ZRSN"
    offset  4  u32        meta_len
    offset  8  u64        data_len
    offset 16  u32        data_crc    zlib.crc32 of data
    offset 20  u32        header_crc  zlib.crc32 of bytes 0..19 + meta
    offset 24  meta       meta_len bytes (``encode_meta``)
    offset 24+meta_len    data        data_len bytes

A file is named ``<index:016x>-<term:016x>.snap`` so that names sort by index.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path

from zraft.core.messages import SnapshotMeta
from zraft.storage import CorruptionError, StorageError

MAGIC = b"ZRSN"
KEEP = 2  # snapshots kept on disk: the newest and one before it

_FIXED = struct.Struct("<4sIQI")  # magic, meta_len, data_len, data_crc
_HEADER = struct.Struct("<4sIQII")  # _FIXED + header_crc
_U32 = struct.Struct("<I")
_META = struct.Struct("<QQH")  # index, term, number of voters
_U16 = struct.Struct("<H")
_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")


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


def fsync_dir(path: Path) -> None:
    """Fsync directory ``path`` so that creates, renames and unlinks in it are durable.

    Raises StorageError (chained) on failure.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(f"fsync of directory {path} failed: {exc}") from exc


class SnapshotStore:
    """Saves and loads state-machine snapshots in directory ``dir``.

    Single-threaded like the WAL. ``save`` is atomic (temp file, fsync, rename,
    fsync of the directory) and keeps the newest ``KEEP`` snapshots. The WAL may
    be compacted only after ``save`` has returned.
    """

    def __init__(self, dir: str | Path) -> None:
        self.dir = Path(dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {self.dir}: {exc}") from exc

    def save(self, meta: SnapshotMeta, data: bytes) -> None:
        """Write the snapshot durably, then delete all but the newest ``KEEP`` ones.

        On return the snapshot survives a power loss. Raises StorageError on any
        I/O failure; the previous snapshots are then still intact.
        """
        final = self.dir / f"{meta.index:016x}-{meta.term:016x}.snap"
        tmp = final.with_name(final.name + ".tmp")
        meta_raw = encode_meta(meta)
        fixed = _FIXED.pack(MAGIC, len(meta_raw), len(data), zlib.crc32(data))
        header_crc = zlib.crc32(meta_raw, zlib.crc32(fixed))
        blob = b"".join((fixed, _U32.pack(header_crc), meta_raw, data))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(blob)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
        except OSError as exc:
            raise StorageError(f"cannot write snapshot {final}: {exc}") from exc
        # The rename must be durable before older snapshots go (the WAL may
        # already be compacted past them only once this one is safe).
        fsync_dir(self.dir)
        self._prune()

    def load(self) -> tuple[SnapshotMeta, bytes] | None:
        """Return the newest snapshot, or None when there is none.

        Raises CorruptionError (file and offset) when the newest snapshot file
        is damaged: falling back to an older one could lose entries that the
        WAL already compacted away, so the operator must decide.
        """
        files = self._files()
        if not files:
            return None
        return self._read(files[-1])

    def paths(self) -> list[Path]:
        """Return the snapshot files on disk, oldest first."""
        return self._files()

    def _files(self) -> list[Path]:
        found = []
        try:
            names = os.listdir(self.dir)
        except OSError as exc:
            raise StorageError(f"cannot list {self.dir}: {exc}") from exc
        for name in names:
            m = _NAME.match(name)
            if m:
                found.append((int(m.group(1), 16), int(m.group(2), 16), self.dir / name))
        found.sort()
        return [p for _, _, p in found]

    def _prune(self) -> None:
        stale = self._files()[:-KEEP]
        try:
            # A temp file left by a crash in the middle of an earlier save.
            stale += [self.dir / n for n in os.listdir(self.dir) if n.endswith(".snap.tmp")]
            if not stale:
                return
            for path in stale:
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot remove old snapshot: {exc}") from exc
        fsync_dir(self.dir)

    @staticmethod
    def _read(path: Path) -> tuple[SnapshotMeta, bytes]:
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read snapshot {path}: {exc}") from exc
        where = str(path)
        if len(blob) < _HEADER.size:
            raise CorruptionError(where, 0, f"header truncated ({len(blob)} bytes)")
        magic, meta_len, data_len, data_crc, header_crc = _HEADER.unpack_from(blob, 0)
        if magic != MAGIC:
            raise CorruptionError(where, 0, f"bad magic {magic!r}")
        meta_end = _HEADER.size + meta_len
        if meta_end > len(blob):
            raise CorruptionError(where, _HEADER.size, "meta extends past end of file")
        meta_raw = blob[_HEADER.size : meta_end]
        if zlib.crc32(meta_raw, zlib.crc32(blob[: _FIXED.size])) != header_crc:
            raise CorruptionError(where, 0, "header checksum mismatch")
        if meta_end + data_len != len(blob):
            raise CorruptionError(
                where, meta_end, f"data is {len(blob) - meta_end} bytes, header says {data_len}"
            )
        data = blob[meta_end:]
        if zlib.crc32(data) != data_crc:
            raise CorruptionError(where, meta_end, "data checksum mismatch")
        try:
            meta = decode_meta(meta_raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorruptionError(where, _HEADER.size, f"bad meta: {exc}") from exc
        return meta, data
