"""The WAL's record format and its replay rules. Pure: bytes in, values out.

Every record is a 13-byte header and a payload (little endian)::

    [u32 length][u8 type][u32 payload_crc][u32 header_crc][payload: length bytes]

``payload_crc`` is ``zlib.crc32`` of the payload and ``header_crc`` is
``zlib.crc32`` of the 9 header bytes before it, so a damaged ``length`` (or any
other header bit) is detected before it is trusted. Payloads:

* ENTRY: ``<QQB`` term, index, kind, then the raw entry data;
* HARD_STATE: ``<QQ`` term, commit, then voted_for in utf-8;
* SNAPSHOT_MARK: ``snapshot.encode_meta`` (index, term, voters): the log starts
  after ``index`` (compaction: entries after ``index`` are kept);
* INSTALL: the same payload: a snapshot received from the leader replaced the
  whole log (thesis §5.1), so every entry before this record is discarded and
  the log starts after ``index``.

Replay applies records in order: a later ENTRY at index ``i`` discards every
entry at ``i`` or above that came before it (a suffix overwrite, Raft §5.3).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

from zraft.core.messages import Entry, EntryKind, HardState, SnapshotMeta
from zraft.storage import CorruptionError
from zraft.storage.snapshot import decode_meta

ENTRY = 1
HARD_STATE = 2
SNAPSHOT_MARK = 3
INSTALL = 4

HEADER = struct.Struct("<IBII")  # payload length, type, crc32(payload), header crc
HEADER_SIZE = HEADER.size  # 13
HEAD = struct.Struct("<IBI")  # the checked part: length, type, crc32(payload)
HEADER_CHECKED = HEAD.size  # 9: header_crc is crc32 of the header's first 9 bytes
U32 = struct.Struct("<I")
ENT = struct.Struct("<QQB")  # term, index, kind
HS = struct.Struct("<QQ")  # term, commit
KINDS = {k.value: k for k in EntryKind}


def check_append(entries: Sequence[Entry], last_index: int, snapshot_index: int) -> None:
    """Raise ValueError unless ``entries`` may follow a log ending at ``last_index``.

    The first entry may overwrite a stored suffix (index <= ``last_index``) but
    never a compacted entry (index <= ``snapshot_index``), and may not leave a
    gap; the rest must be contiguous. After a compaction past the log's end,
    ``last_index`` is the snapshot index, so the next entry is snapshot index + 1.
    """
    first = entries[0].index
    if first <= snapshot_index:
        raise ValueError(f"entry {first} is at or below the snapshot index {snapshot_index}")
    if first > last_index + 1:
        raise ValueError(f"entry {first} leaves a gap after the last index {last_index}")
    expected = first
    for entry in entries:
        if entry.index != expected:
            raise ValueError(f"entries not contiguous: {entry.index} where {expected} belongs")
        expected += 1


def record(rtype: int, payload: bytes) -> bytes:
    head = HEAD.pack(len(payload), rtype, zlib.crc32(payload))
    return head + U32.pack(zlib.crc32(head)) + payload


def hard_state_record(hs: HardState) -> bytes:
    return record(HARD_STATE, HS.pack(hs.term, hs.commit) + hs.voted_for.encode("utf-8"))


class Bad(Exception):
    """A record that is well framed but makes no sense (becomes CorruptionError)."""


class Replay:
    """Rebuilds the log, hard state and snapshot mark from records in order."""

    def __init__(self) -> None:
        self.log: list[Entry] = []
        self.first = 0  # index of log[0]
        self.hard_state = HardState()
        self.mark = SnapshotMeta()
        self.mark_seen = False

    def entry(self, entry: Entry) -> None:
        log = self.log
        i = entry.index
        if not log:
            # Whole segments may have been compacted away, so the surviving log
            # may start anywhere above the mark: even after a mark, the entries
            # between it and the next surviving one can have lived in a segment
            # that a later mark deleted. open() checks the final start.
            if self.mark_seen and i <= self.mark.index:
                raise Bad(f"entry {i} is at or below snapshot mark {self.mark.index}")
            if i < 1:
                raise Bad("entry index 0")
            self.first = i
            log.append(entry)
            return
        nxt = self.first + len(log)
        if i == nxt:
            log.append(entry)
            return
        if i > nxt:
            raise Bad(f"entry {i} leaves a gap after {nxt - 1}")
        if i <= self.mark.index:
            raise Bad(f"entry {i} overwrites compacted entries (mark {self.mark.index})")
        # Suffix overwrite (§5.3): this entry replaces i and everything after.
        if i <= self.first:
            log.clear()
            self.first = i
        else:
            del log[i - self.first :]
        log.append(entry)

    def snapshot_mark(self, meta: SnapshotMeta) -> None:
        if meta.index < self.mark.index:
            return  # never written by WalStorage; keep the newest compaction point
        self.mark = meta
        self.mark_seen = True
        log = self.log
        if log and meta.index >= self.first:
            del log[: meta.index - self.first + 1]
            self.first = meta.index + 1

    def install(self, meta: SnapshotMeta) -> None:
        if meta.index < self.mark.index:
            raise Bad(f"installed snapshot {meta.index} is below the mark {self.mark.index}")
        self.mark = meta
        self.mark_seen = True
        self.log.clear()
        self.first = meta.index + 1


def scan(where: str, buf: bytes, is_last: bool, replay: Replay) -> tuple[int, int]:
    """Replay the records of one segment file; return (where its valid data ends, its
    highest entry index). Raises CorruptionError naming ``where`` and the offset."""
    n = len(buf)
    view = memoryview(buf)
    unpack_header = HEADER.unpack_from
    unpack_entry = ENT.unpack_from
    crc32 = zlib.crc32
    hsize = HEADER_SIZE
    checked = HEADER_CHECKED
    esize = ENT.size
    kinds = KINDS
    max_index = 0
    off = 0
    # (reason, where the bad record (or its bad header) ends, or None when it
    # runs past end of file)
    bad: tuple[str, int | None] | None = None
    while off < n:
        if n - off < hsize:
            bad = ("record header truncated", None)
            break
        length, rtype, crc, header_crc = unpack_header(buf, off)
        body = off + hsize
        if crc32(view[off : off + checked]) != header_crc:
            # The length is garbage: only zeros after the header make it torn.
            bad = ("header checksum mismatch", body)
            break
        end = body + length
        if end > n:
            bad = (f"record of {length} bytes extends past end of file ({n})", None)
            break
        if crc32(view[body:end]) != crc:
            bad = ("payload checksum mismatch", end)
            break
        try:
            if rtype == ENTRY:
                if length < esize:
                    raise Bad("entry record too short")
                term, index, kind = unpack_entry(buf, body)
                entry_kind = kinds.get(kind)
                if entry_kind is None:
                    raise Bad(f"unknown entry kind {kind}")
                replay.entry(Entry(term, index, entry_kind, buf[body + esize : end]))
                if index > max_index:
                    max_index = index
            elif rtype == HARD_STATE:
                if length < HS.size:
                    raise Bad("hard state record too short")
                term, commit = HS.unpack_from(buf, body)
                voted_for = buf[body + HS.size : end].decode("utf-8")
                replay.hard_state = HardState(term=term, voted_for=voted_for, commit=commit)
            elif rtype == SNAPSHOT_MARK:
                replay.snapshot_mark(decode_meta(view[body:end]))
            elif rtype == INSTALL:
                replay.install(decode_meta(view[body:end]))
            else:
                raise Bad(f"unknown record type {rtype}")
        except (Bad, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            raise CorruptionError(where, off, str(exc)) from None
        off = end
    if bad is not None:
        return bad_tail(where, buf, off, is_last, *bad), max_index
    return off, max_index


def bad_tail(where: str, buf: bytes, off: int, is_last: bool, reason: str, end: int | None) -> int:
    """Return ``off`` if the bad record at ``off`` is a torn tail, else raise.

    Torn means: in the last segment, the record runs past end of file
    (``end`` is None: a short header, or a valid header whose payload is
    cut), or only zero bytes follow ``end`` (the end of the record, or of
    its header when the header check failed: a file extended but not fully
    written). Other data after a bad record means acknowledged records may
    follow: that is corruption.
    """
    if is_last and (end is None or buf.count(0, end) == len(buf) - end):
        return off
    raise CorruptionError(where, off, reason)
