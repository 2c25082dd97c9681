"""The write-ahead log: entries, hard state and compaction marks in segment files.

Layout: ``<dir>/wal/<seq:016x>-<first_index:016x>.wal``. ``seq`` counts segments
from 1 and has no gaps; ``first_index`` is the index the segment was opened for
(informational: replay order is ``seq`` order).

Records and their replay are defined in ``zraft.storage.records``.

Recovery: in the last segment only, a torn final record was never
acknowledged and is truncated. A record is torn when

* fewer than 13 bytes (a header) are left before end of file;
* its header check fails and nothing but zero bytes follows the header (a
  tail of zero padding, or a header whose last bytes never reached the disk);
* its header is valid but its payload runs past end of file;
* its payload check fails and nothing but zero bytes follows the record.

Any other bad record (in particular a header check failure with data after
it: the length cannot be trusted, so acknowledged records may follow), any bad
record in an older segment, or a well-framed record that makes no sense
(unknown type, gap in indexes), is corruption.
"""

from __future__ import annotations

import os
import re
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from zraft.core.messages import Entry, HardState, SnapshotMeta
from zraft.storage import CorruptionError, Recovered, StorageError, StorageStats
from zraft.storage.records import (
    ENT,
    ENTRY,
    HEAD,
    INSTALL,
    SNAPSHOT_MARK,
    U32,
    Replay,
    check_append,
    hard_state_record,
    record,
    scan,
)
from zraft.storage.snapshot import encode_meta, fsync_dir

# StorageStats lives in zraft.storage; the import above also keeps
# ``from zraft.storage.wal import StorageStats`` working.

_SEGMENT_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")


@dataclass
class _Segment:
    path: Path
    seq: int
    max_index: int = 0  # highest entry index written to it; 0 when none
    size: int = 0


class WalStorage:
    """``LogStorage`` on segment files under ``<dir>/wal`` (see the module docstring).

    Single-threaded. ``append`` writes each call's records with one ``os.write``
    and, when ``sync`` is true, makes them durable with one ``os.fsync`` (group
    commit: the driver calls it once per loop round). Any OSError becomes a
    StorageError and the object refuses further use: the node must stop.
    """

    def __init__(self, dir: str | Path, segment_bytes: int = 64 * 1024 * 1024) -> None:
        self.dir = Path(dir)
        self.wal_dir = self.dir / "wal"
        self.segment_bytes = segment_bytes
        self.stats = StorageStats()
        self._segments: list[_Segment] = []
        self._fd: int | None = None
        self._dirty = False  # written since the last fsync of the current segment
        self._failed = False
        self._last_index = 0
        self._snapshot = SnapshotMeta()
        self._hard_state = HardState()

    @property
    def last_index(self) -> int:
        """Return the last stored entry index (the snapshot index if the log is empty)."""
        return self._last_index

    @property
    def segment_paths(self) -> list[Path]:
        """Return the segment files in replay order."""
        return [seg.path for seg in self._segments]

    def open(self) -> Recovered:
        """Replay the segments; truncate a torn tail; open the last segment for appends.

        Raises CorruptionError naming the file and byte offset of the first bad
        record that is not a torn tail, and StorageError on an I/O failure.
        """
        if self._fd is not None:
            raise RuntimeError("WalStorage.open called twice")
        try:
            fresh = not self.wal_dir.exists()
            self.wal_dir.mkdir(parents=True, exist_ok=True)
            names = os.listdir(self.wal_dir)
        except OSError as exc:
            raise StorageError(f"cannot open {self.wal_dir}: {exc}") from exc
        if fresh:
            fsync_dir(self.dir)
        segments = []
        for name in names:
            m = _SEGMENT_NAME.match(name)
            if m:
                segments.append(_Segment(self.wal_dir / name, int(m.group(1), 16)))
        segments.sort(key=lambda s: s.seq)
        for prev, seg in zip(segments, segments[1:], strict=False):
            if seg.seq != prev.seq + 1:
                raise CorruptionError(str(seg.path), 0, f"segment {prev.seq + 1} is missing")

        replay = Replay()
        truncated = 0
        for n, seg in enumerate(segments):
            try:
                buf = seg.path.read_bytes()
            except OSError as exc:
                raise StorageError(f"cannot read {seg.path}: {exc}") from exc
            is_last = n == len(segments) - 1
            seg.size, seg.max_index = scan(str(seg.path), buf, is_last, replay)
            if is_last:
                truncated = len(buf) - seg.size
        if replay.log and replay.first != replay.mark.index + 1:
            raise CorruptionError(
                str(segments[0].path),
                0,
                f"log starts at entry {replay.first} but the snapshot mark is at "
                f"{replay.mark.index} (a segment is missing)",
            )

        self._segments = segments
        self._snapshot = replay.mark
        self._hard_state = replay.hard_state
        self._last_index = replay.log[-1].index if replay.log else replay.mark.index
        if segments:
            self._open_segment(segments[-1], truncate=truncated > 0)
        else:
            self._create_segment(1, self._last_index + 1)
        return Recovered(
            hard_state=replay.hard_state,
            snapshot=replay.mark,
            entries=replay.log,
            truncated_bytes=truncated,
        )

    def append(self, hard_state: HardState | None, entries: Sequence[Entry], sync: bool) -> None:
        """Write ``entries``, then ``hard_state`` (if given), in one write; fsync once if ``sync``.

        An entry at or below the last stored index replaces the stored suffix
        from that index (§5.3). Raises ValueError, before writing anything, if
        the entries are not contiguous or leave a gap; StorageError on I/O
        failure. With ``sync`` true, everything written so far is durable on
        return.
        """
        self._check_usable()
        if entries:
            check_append(entries, self._last_index, self._snapshot.index)
        parts: list[bytes] = []
        pack_head = HEAD.pack
        pack_u32 = U32.pack
        pack_entry = ENT.pack
        crc32 = zlib.crc32
        add = parts.append
        try:
            for e in entries:  # record(), inlined: this loop is the hot path
                payload = pack_entry(e.term, e.index, e.kind) + e.data
                head = pack_head(len(payload), ENTRY, crc32(payload))
                add(head)
                add(pack_u32(crc32(head)))
                add(payload)
            # The hard state goes after the entries it may commit (etcd's order): if a
            # power loss keeps it, recovery either finds every entry before it or stops
            # at a bad record, so a surviving commit index never covers lost entries.
            if hard_state is not None:
                add(hard_state_record(hard_state))
        except struct.error as exc:  # negative or > u64 numbers, data over 4 GiB
            raise ValueError(f"cannot encode record: {exc}") from exc
        if parts:
            first = entries[0].index if entries else self._last_index + 1
            self._write(b"".join(parts), first)
            if hard_state is not None:
                self._hard_state = hard_state
            if entries:
                self._last_index = entries[-1].index
                seg = self._segments[-1]
                seg.max_index = max(seg.max_index, self._last_index)
        if sync and self._dirty:
            self._fsync()

    def compact(self, snapshot: SnapshotMeta) -> None:
        """Record (durably) that the log starts after ``snapshot.index``; drop old segments.

        The snapshot itself must already be durable. A mark at or below the
        current one is ignored. Entries above ``snapshot.index`` are kept. A
        segment is deleted only when it and every older segment hold no entry
        above ``snapshot.index`` and it is not the segment being appended to.
        """
        self._check_usable()
        if snapshot.index <= self._snapshot.index:
            return
        # The hard state goes with the mark so that deleting older segments
        # can never lose the newest term and vote.
        blob = record(SNAPSHOT_MARK, encode_meta(snapshot)) + hard_state_record(self._hard_state)
        self._write(blob, max(self._last_index, snapshot.index) + 1)
        self._fsync()
        self._snapshot = snapshot
        self._last_index = max(self._last_index, snapshot.index)
        removed = False
        # Only a prefix goes: deleting a segment while keeping an older one
        # could resurrect the older one's entries that the deleted one overwrote.
        while len(self._segments) > 1 and self._segments[0].max_index <= snapshot.index:
            seg = self._segments.pop(0)
            try:
                seg.path.unlink()
            except OSError as exc:
                self._failed = True
                raise StorageError(f"cannot remove {seg.path}: {exc}") from exc
            removed = True
        if removed:
            self._fsync_dir()

    def install(self, snapshot: SnapshotMeta) -> None:
        """Record (durably) that a received snapshot replaced the whole log; drop old segments.

        The snapshot file must already be durable. Every stored entry is
        discarded (Raft §7: the log did not hold the snapshot's last entry),
        the log continues at ``snapshot.index + 1``, and every segment but the
        one being appended to is deleted (they hold nothing the node needs).
        """
        self._check_usable()
        if snapshot.index < self._snapshot.index:
            raise ValueError(
                f"installing snapshot {snapshot.index} below the log start {self._snapshot.index}"
            )
        blob = record(INSTALL, encode_meta(snapshot)) + hard_state_record(self._hard_state)
        self._write(blob, snapshot.index + 1)
        self._fsync()
        self._snapshot = snapshot
        self._last_index = snapshot.index
        self._segments[-1].max_index = snapshot.index
        if len(self._segments) > 1:
            old, self._segments = self._segments[:-1], self._segments[-1:]
            for seg in old:
                try:
                    seg.path.unlink()
                except OSError as exc:
                    self._failed = True
                    raise StorageError(f"cannot remove {seg.path}: {exc}") from exc
            self._fsync_dir()

    def close(self) -> None:
        """Close the current segment. Does not fsync; unsynced writes may be lost."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError as exc:
                raise StorageError(f"close of {self._segments[-1].path} failed: {exc}") from exc

    # -- internals ---------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failed:
            raise StorageError("WAL unusable after an earlier I/O failure")
        if self._fd is None:
            raise RuntimeError("WalStorage is not open")

    def _segment_path(self, seq: int, first_index: int) -> Path:
        return self.wal_dir / f"{seq:016x}-{first_index:016x}.wal"

    def _open_segment(self, seg: _Segment, truncate: bool) -> None:
        try:
            self._fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND)
            if truncate:
                # The torn record was never acknowledged; cut it off durably so
                # new records do not land behind garbage.
                os.ftruncate(self._fd, seg.size)
        except OSError as exc:
            self._failed = True
            raise StorageError(f"cannot open {seg.path}: {exc}") from exc
        if truncate:
            self._dirty = True
            self._fsync()

    def _create_segment(self, seq: int, first_index: int) -> None:
        seg = _Segment(self._segment_path(seq, first_index), seq)
        try:
            self._fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            self._failed = True
            raise StorageError(f"cannot create {seg.path}: {exc}") from exc
        self._segments.append(seg)
        self._dirty = False
        self._fsync_dir()

    def _rotate(self, first_index: int) -> None:
        # The old segment must be durable before a newer one exists: recovery
        # treats a bad tail in any segment but the last as corruption.
        if self._dirty:
            self._fsync()
        old = self._segments[-1]
        fd, self._fd = self._fd, None
        try:
            os.close(fd)  # type: ignore[arg-type]
        except OSError as exc:
            self._failed = True
            raise StorageError(f"close of {old.path} failed: {exc}") from exc
        self._create_segment(old.seq + 1, first_index)

    def _write(self, blob: bytes, first_index: int) -> None:
        """Append ``blob`` to the current segment, rotating first if it is full."""
        if self._segments[-1].size >= self.segment_bytes:
            self._rotate(first_index)
        seg = self._segments[-1]
        fd = self._fd
        assert fd is not None
        try:
            written = os.write(fd, blob)
            if written < len(blob):  # short writes are rare on files but legal
                view = memoryview(blob)
                while written < len(blob):
                    written += os.write(fd, view[written:])
        except OSError as exc:
            self._failed = True
            raise StorageError(f"write to {seg.path} failed: {exc}") from exc
        seg.size += len(blob)
        self.stats.bytes_written += len(blob)
        self._dirty = True

    def _fsync(self) -> None:
        start = time.perf_counter()
        try:
            os.fsync(self._fd)  # type: ignore[arg-type]
        except OSError as exc:
            # Never retry or continue: after a failed fsync the page cache may
            # already have dropped the dirty pages (the "fsyncgate" lesson).
            self._failed = True
            raise StorageError(f"fsync of {self._segments[-1].path} failed: {exc}") from exc
        elapsed = time.perf_counter() - start
        self._dirty = False
        self.stats.fsync_count += 1
        self.stats.last_fsync_seconds = elapsed
        self.stats.total_fsync_seconds += elapsed

    def _fsync_dir(self) -> None:
        try:
            fsync_dir(self.wal_dir)
        except StorageError:
            self._failed = True
            raise
