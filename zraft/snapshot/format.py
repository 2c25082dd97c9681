"""The snapshot file format v2: a pure encoder and a streaming reader.

A snapshot file is a sequence of records framed exactly like WAL records
(``zraft.storage.records``)::

    [u32 length][u8 type][u32 crc32(payload)][u32 crc32(first 9 header bytes)][payload]

Record types, in the only order allowed::

    HEADER  0x11  once, first: msgpack map (format, version, ensemble, index, term,
                  voters, time_ms, node, created_ms)
    SECTION 0x12  utf-8 section name (a plugin name, or "@sessions"); unique in a file
    CHUNK   0x13  raw bytes of the current section (a section may have none)
    END     0x14  once, last: msgpack map {"sections": [[name, total_bytes, n_chunks],
                  ...], "sha256": sha256 of every byte of the file before this record}

Nothing may follow END. The reader streams: it never holds more than one CHUNK
(``read_sections``) or one ``READ_SIZE`` piece of one (``verify``) in memory.
Every error names the file, the byte offset of the record at fault and, inside a
section, the section.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgpack

from zraft.core.messages import SnapshotMeta
from zraft.storage import CorruptionError, StorageError
from zraft.storage.records import HEADER, HEADER_CHECKED, HEADER_SIZE, record

FORMAT = "zraft-snapshot"
VERSION = 2
SESSIONS = "@sessions"  # the section holding the client session table

REC_HEADER = 0x11
REC_SECTION = 0x12
REC_CHUNK = 0x13
REC_END = 0x14
REC_NAMES = {REC_HEADER: "HEADER", REC_SECTION: "SECTION", REC_CHUNK: "CHUNK", REC_END: "END"}

MAX_CHUNK = 16 << 20  # a CHUNK payload above this is corruption
MAX_META = 1 << 20  # a HEADER or END payload above this is corruption
MAX_NAME = 255  # a section name above this many utf-8 bytes is corruption
READ_SIZE = 1 << 20  # verify() reads CHUNK payloads in pieces of at most this
_INT_LIMIT = 1 << 63
_HEADER_INTS = ("index", "term", "time_ms", "created_ms")
_HEADER_STRS = ("ensemble", "node")
_FIELDS = ("ensemble", "index", "term", "voters", "time_ms", "node", "created_ms")


@dataclass(frozen=True, slots=True)
class SnapshotHeader:
    """What a snapshot is of: the first record of every snapshot file.

    ``time_ms`` is the leader time of the entry at ``index`` (the replica's
    clock after applying it); ``node`` wrote the file; ``created_ms`` is that
    node's wall clock, for people only. Raises ValueError on a field of the
    wrong type or out of range (ints must be in ``[0, 2**63)``).
    """

    ensemble: str
    index: int
    term: int
    voters: tuple[str, ...]
    time_ms: int
    node: str
    created_ms: int

    def __post_init__(self) -> None:
        for name in _HEADER_INTS:
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value < _INT_LIMIT:
                raise ValueError(f"header {name} must be an int in [0, 2**63), not {value!r}")
        for name in _HEADER_STRS:
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"header {name} must be a string")
        if not isinstance(self.voters, tuple) or not all(isinstance(v, str) for v in self.voters):
            raise ValueError("header voters must be a tuple of strings")

    def meta(self) -> SnapshotMeta:
        """Return the Raft view of this snapshot: last included index, term, voters."""
        return SnapshotMeta(index=self.index, term=self.term, voters=self.voters)

    def to_map(self) -> dict[str, Any]:
        """Return the HEADER record's msgpack map (msgpack packs the voters tuple as an array)."""
        fields = {name: getattr(self, name) for name in _FIELDS}
        return {"format": FORMAT, "version": VERSION, **fields}

    @classmethod
    def from_map(cls, fields: object) -> SnapshotHeader:
        """Build a header from a decoded HEADER map; raise ValueError if it is not one."""
        if not isinstance(fields, dict):
            raise ValueError("not a map")
        if fields.get("format") != FORMAT:
            raise ValueError(f"format is {fields.get('format')!r}, not {FORMAT!r}")
        version = fields.get("version")
        if type(version) is not int or version != VERSION:
            raise ValueError(f"unsupported version {version!r} (this zraft reads {VERSION})")
        missing = [name for name in _FIELDS if name not in fields]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        if not isinstance(fields["voters"], list):
            raise ValueError("header voters must be a list")
        return cls(
            **{name: fields[name] for name in _FIELDS if name != "voters"},
            voters=tuple(fields["voters"]),
        )


@dataclass(frozen=True, slots=True)
class SectionInfo:
    """One section of a snapshot file: its total bytes, CHUNK count, SECTION record offset."""

    name: str
    size: int
    chunks: int
    offset: int


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A snapshot file that ``verify`` found whole (or that ``write_file`` wrote)."""

    path: Path
    header: SnapshotHeader
    sections: tuple[SectionInfo, ...]
    size: int  # bytes in the file
    sha256: str  # hex sha256 of the file before its END record (what END records)


class SnapshotError(CorruptionError):
    """A snapshot file is damaged or malformed at byte ``offset`` (of the record at fault).

    ``section`` names the section the reader was in, or is None outside sections.
    """

    def __init__(self, path: str, offset: int, reason: str, section: str | None = None) -> None:
        super().__init__(str(path), offset, reason)
        self.section = section
        where = "at offset" if section is None else f"section '{section}' at offset"
        self.args = (f"{path}: {where} {offset}: {reason}",)


def check_name(name: str) -> bytes:
    """Return section ``name`` in utf-8; ValueError unless it is 1..MAX_NAME bytes."""
    if not isinstance(name, str):
        raise ValueError(f"section name must be a string, not {name!r}")
    raw = name.encode("utf-8")
    if not 0 < len(raw) <= MAX_NAME:
        raise ValueError(f"section name must be 1..{MAX_NAME} utf-8 bytes, not {len(raw)}")
    return raw


class Encoder:
    """Pure byte producer with a running sha256: each method returns the bytes to append.

    Call ``begin`` once, then for each section ``section`` and any number of
    ``chunk``, then ``end`` once; after ``end`` the encoder is finished. A call
    out of that order raises RuntimeError; a bad or duplicate section name,
    ValueError. ``size`` counts the bytes produced so far.
    """

    def __init__(self, header: SnapshotHeader) -> None:
        self.header = header
        self.size = 0
        self.sections: list[SectionInfo] = []
        self.sha256: str | None = None  # hex, set by end()
        self._sha = hashlib.sha256()
        self._state = "new"  # new -> begun -> section -> ended

    def _emit(self, rtype: int, payload: bytes | memoryview) -> bytes:
        out = record(rtype, payload)
        if rtype != REC_END:
            self._sha.update(out)
        self.size += len(out)
        return out

    def begin(self) -> bytes:
        """Return the HEADER record."""
        if self._state != "new":
            raise RuntimeError("Encoder.begin() called twice")
        payload = msgpack.packb(self.header.to_map(), use_bin_type=True)
        if len(payload) > MAX_META:
            raise ValueError(f"header of {len(payload)} bytes is over {MAX_META}")
        self._state = "begun"
        return self._emit(REC_HEADER, payload)

    def section(self, name: str) -> bytes:
        """Return the SECTION record that starts section ``name``."""
        if self._state not in ("begun", "section"):
            raise RuntimeError(f"Encoder.section() in state {self._state}")
        raw = check_name(name)
        if any(s.name == name for s in self.sections):
            raise ValueError(f"duplicate section {name!r}")
        self.sections.append(SectionInfo(name, 0, 0, self.size))
        self._state = "section"
        return self._emit(REC_SECTION, raw)

    def chunk(self, data: bytes | bytearray | memoryview) -> bytes:
        """Return CHUNK records holding ``data`` (several if it is over MAX_CHUNK; none
        if it is empty) in the current section."""
        if self._state != "section":
            raise RuntimeError(f"Encoder.chunk() in state {self._state}")
        view = memoryview(data).cast("B")
        limit = MAX_CHUNK
        parts = [self._emit(REC_CHUNK, view[i : i + limit]) for i in range(0, len(view), limit)]
        last = self.sections[-1]
        self.sections[-1] = SectionInfo(
            last.name, last.size + len(view), last.chunks + len(parts), last.offset
        )
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def end(self) -> bytes:
        """Return the END record; the encoder is finished after it."""
        if self._state not in ("begun", "section"):
            raise RuntimeError(f"Encoder.end() in state {self._state}")
        digest = self._sha.digest()
        listed = [[s.name, s.size, s.chunks] for s in self.sections]
        payload = msgpack.packb({"sections": listed, "sha256": digest}, use_bin_type=True)
        if len(payload) > MAX_META:
            raise ValueError(f"END of {len(payload)} bytes is over {MAX_META}")
        self._state = "ended"
        self.sha256 = digest.hex()
        return self._emit(REC_END, payload)

    def info(self, path: str | Path) -> SnapshotInfo:
        """Return what the finished encoder wrote, as if ``verify(path)`` had read it."""
        if self.sha256 is None:
            raise RuntimeError("Encoder.info() before end()")
        return SnapshotInfo(Path(path), self.header, tuple(self.sections), self.size, self.sha256)


# -- reading --------------------------------------------------------------------------


class _Reader:
    """Reads one snapshot file record by record, checking framing, order, END and sha256."""

    def __init__(self, path: str | Path, f: BinaryIO) -> None:
        self.path = Path(path)
        self.f = f
        self.size = os.fstat(f.fileno()).st_size
        self.off = 0
        self.sha = hashlib.sha256()
        self.header: SnapshotHeader | None = None
        self.section: str | None = None  # the section being read; None outside sections
        self.sections: dict[str, list[Any]] = {}  # name -> [name, size, chunks, offset]
        self.ended = False
        self._buf: bytearray | None = None

    def fail(self, offset: int, reason: str) -> SnapshotError:
        return SnapshotError(str(self.path), offset, reason, self.section)

    def _head(self) -> tuple[int, int, int, int] | None:
        """Read and check the next record's header: (offset, type, length, crc) or None at EOF."""
        start = self.off
        raw = self.f.read(HEADER_SIZE)
        if not raw:
            return None
        if len(raw) < HEADER_SIZE:
            raise self.fail(start, f"record header truncated ({len(raw)} of {HEADER_SIZE} bytes)")
        length, rtype, crc, header_crc = HEADER.unpack(raw)
        if zlib.crc32(raw[:HEADER_CHECKED]) != header_crc:
            raise self.fail(start, "header checksum mismatch")
        if rtype not in REC_NAMES:
            raise self.fail(start, f"unknown record type {rtype:#04x}")
        if rtype != REC_CHUNK:
            self.section = None  # a new section, or none: the old one has ended
        limit = {REC_CHUNK: MAX_CHUNK, REC_SECTION: MAX_NAME}.get(rtype, MAX_META)
        if length > limit:
            raise self.fail(start, f"{REC_NAMES[rtype]} record of {length} bytes (limit {limit})")
        if start + HEADER_SIZE + length > self.size:
            raise self.fail(start, f"record of {length} bytes runs past end of file ({self.size})")
        if rtype != REC_END:
            self.sha.update(raw)
        self.off = start + HEADER_SIZE + length
        return start, rtype, length, crc

    def _payload(self, start: int, rtype: int, length: int, crc: int) -> bytes:
        data = self.f.read(length)
        if len(data) != length:
            raise self.fail(start, f"record of {length} bytes runs past end of file")
        if zlib.crc32(data) != crc:
            raise self.fail(start, "payload checksum mismatch")
        if rtype != REC_END:
            self.sha.update(data)
        return data

    def _skim(self, start: int, length: int, crc: int) -> None:
        """Check a CHUNK payload piece by piece, keeping none of it (bounded memory)."""
        if self._buf is None:
            self._buf = bytearray(min(READ_SIZE, MAX_CHUNK))
        buf = memoryview(self._buf)
        running, left = 0, length
        while left:
            piece = buf[: min(left, len(buf))]
            n = self.f.readinto(piece)
            if not n:
                raise self.fail(start, f"record of {length} bytes runs past end of file")
            running = zlib.crc32(piece[:n], running)
            self.sha.update(piece[:n])
            left -= n
        if running != crc:
            raise self.fail(start, "payload checksum mismatch")

    def read_header(self) -> SnapshotHeader:
        """Read the first record, which must be a valid HEADER."""
        head = self._head()
        if head is None:
            raise self.fail(0, "empty file (no HEADER record)")
        start, rtype, length, crc = head
        if rtype != REC_HEADER:
            raise self.fail(start, f"first record is {REC_NAMES[rtype]}, not HEADER")
        try:
            fields = msgpack.unpackb(self._payload(start, rtype, length, crc), raw=False)
            self.header = SnapshotHeader.from_map(fields)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise self.fail(start, f"bad HEADER: {exc}") from None
        return self.header

    def next(self, keep: bool) -> tuple[int, bytes | None]:
        """Read the record after the header: (type, payload), or (REC_END, None) after END.

        A CHUNK payload is returned only when ``keep`` (else it is checked and dropped).
        """
        if self.ended:
            return REC_END, None
        head = self._head()
        if head is None:
            raise self.fail(self.off, "file ends without an END record")
        start, rtype, length, crc = head
        if rtype == REC_CHUNK:
            if self.section is None:
                raise self.fail(start, "CHUNK record outside any section")
            data = (
                self._payload(start, rtype, length, crc) if keep else self._skim(start, length, crc)
            )
            entry = self.sections[self.section]
            entry[1] += length
            entry[2] += 1
            return rtype, data
        payload = self._payload(start, rtype, length, crc)
        if rtype == REC_HEADER:
            raise self.fail(start, "second HEADER record")
        if rtype == REC_SECTION:
            try:
                name = payload.decode("utf-8")
            except UnicodeDecodeError:
                raise self.fail(start, "section name is not utf-8") from None
            if not name:
                raise self.fail(start, "empty section name")
            if name in self.sections:
                raise self.fail(start, f"duplicate section '{name}'")
            self.sections[name] = [name, 0, 0, start]
            self.section = name
            return rtype, payload
        self._end(start, payload)
        return rtype, None

    def _end(self, start: int, payload: bytes) -> None:
        try:
            fields = msgpack.unpackb(payload, raw=False)
        except (ValueError, msgpack.UnpackException) as exc:
            raise self.fail(start, f"bad END: {exc}") from None
        if not isinstance(fields, dict):
            raise self.fail(start, "bad END: not a map")
        listed = fields.get("sections")
        if not isinstance(listed, list):
            raise self.fail(start, "bad END: no section list")
        held = [s[:3] for s in self.sections.values()]
        if len(listed) != len(held):
            raise self.fail(start, f"END lists {len(listed)} sections, the file has {len(held)}")
        for said, found in zip(listed, held, strict=True):
            if said != found:
                raise self.fail(start, f"END lists section {said!r}, the file has {found!r}")
        digest = fields.get("sha256")
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise self.fail(start, "bad END: sha256 is not 32 bytes")
        if digest != self.sha.digest():
            raise self.fail(start, f"sha256 mismatch: file hashes to {self.sha.hexdigest()}")
        if self.off != self.size:
            raise self.fail(self.off, f"{self.size - self.off} bytes after the END record")
        self.ended = True

    def info(self) -> SnapshotInfo:
        assert self.header is not None and self.ended
        sections = tuple(SectionInfo(*s) for s in self.sections.values())
        return SnapshotInfo(self.path, self.header, sections, self.size, self.sha.hexdigest())


@contextmanager
def _open(path: str | Path) -> Iterator[_Reader]:
    """Read ``path`` in the ``with`` block; an OSError in it becomes StorageError."""
    try:
        with open(path, "rb") as f:
            yield _Reader(path, f)
    except OSError as exc:
        raise StorageError(f"cannot read snapshot {path}: {exc}") from exc


def verify(path: str | Path) -> SnapshotInfo:
    """Check the whole snapshot file at ``path`` and describe it.

    Streams the file (bounded memory): every record's CRCs, the record order
    (HEADER first, CHUNK only inside a SECTION, unique section names, END last
    and nothing after it), END's per-section sizes and chunk counts and its
    sha256, and the header's fields. Raises SnapshotError (path, byte offset,
    section) on damage, StorageError on an I/O error.
    """
    with _open(path) as rd:
        rd.read_header()
        while not rd.ended:
            rd.next(keep=False)
        return rd.info()


def read_header(path: str | Path) -> SnapshotHeader:
    """Return the header of the snapshot file at ``path``, checking only the first record.

    Raises SnapshotError if that record is damaged, StorageError on an I/O error.
    """
    with _open(path) as rd:
        return rd.read_header()


def read_sections(path: str | Path) -> Iterator[tuple[str, Iterator[bytes]]]:
    """Stream the sections of the snapshot file at ``path`` for a restore.

    Yields ``(name, chunks)`` per section, in file order; consume ``chunks``
    before asking for the next section (chunks left unread are checked and
    skipped). Every check of ``verify`` is made as the file goes by, so a
    damaged file raises SnapshotError part-way, at the latest when the caller
    asks for a section after the last one (END and the sha256 are checked
    then): a restore must not commit its state before this generator is
    exhausted. StorageError on an I/O error.
    """
    with _open(path) as rd:
        rd.read_header()
        rtype, _ = rd.next(keep=True)
        while rtype != REC_END:
            name = rd.section  # next() returns only SECTION or END here
            assert rtype == REC_SECTION and name is not None
            pending: list[int] = []
            chunks = _chunks(rd, pending)
            yield name, chunks
            for _ in chunks:  # drain what the caller left unread
                pass
            rtype = pending[0]


def _chunks(rd: _Reader, pending: list[int]) -> Iterator[bytes]:
    """Yield the current section's CHUNK payloads; append the next record's type to ``pending``."""
    while True:
        rtype, data = rd.next(keep=True)
        if rtype != REC_CHUNK:
            pending.append(rtype)
            return
        assert data is not None
        yield data


def write_file(
    path: str | Path,
    header: SnapshotHeader,
    sections: Iterable[tuple[str, Iterable[bytes]]],
) -> SnapshotInfo:
    """Write a whole snapshot file at ``path`` (created or truncated) and fsync it.

    A convenience for tools and tests: no rename (``SnapshotStore.publish`` does
    that). On an I/O error the partial file is removed and StorageError raised.
    """
    enc = Encoder(header)
    try:
        with open(path, "wb") as f:
            f.write(enc.begin())
            for name, chunks in sections:
                f.write(enc.section(name))
                for data in chunks:
                    f.write(enc.chunk(data))
            f.write(enc.end())
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        with suppress(OSError):
            Path(path).unlink(missing_ok=True)
        raise StorageError(f"cannot write snapshot {path}: {exc}") from exc
    return enc.info(path)
