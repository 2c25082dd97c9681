"""InstallSnapshot streaming: a snapshot file in chunks from a leader to a follower.

Two state machines, pure except for reading (``Sender``) or writing
(``Receiver``) the one file they move; time is passed in, nothing sleeps.
The driver sends what they return as ``SnapChunk``/``SnapAck`` frames
(``zraft.transport.codec``) and hands them what arrives.

The protocol is go-back-N over a lossy, duplicating, reordering link
(ARCHITECTURE.md: the mesh guarantees nothing). The follower accepts a chunk
only at the next byte it expects and answers every chunk with that offset;
the leader keeps at most ``window`` chunks beyond the last acknowledged byte
and rewinds to it when an answer shows a gap (or after ``resend_s`` of
silence). Chunks carry no checksum of their own: the finished file is
checked once by ``format.verify`` (every record's CRC and the END sha256),
and its header must name the snapshot the chunks claimed and our ensemble
before the follower reports it ``Received`` (Raft §7, thesis §5.3). A file
that fails is deleted and the transfer ABORTed: never a wrong file installed.
"""

from __future__ import annotations

import errno
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from zraft.snapshot.format import SnapshotInfo, read_header, verify
from zraft.snapshot.store import SnapshotStore, file_name
from zraft.storage import CorruptionError, StorageError
from zraft.transport.wire import SnapAck, SnapChunk, SnapStatus

__all__ = ["DROP_REASONS", "INCOMING", "RECEIVED", "Received", "Receiver", "Sender"]

INCOMING = "incoming"
"""The receiver writes chunks to ``store.temp_path(INCOMING)``."""
RECEIVED = "received"
"""A whole file is renamed to ``store.temp_path(RECEIVED)`` before it is verified, so
that the next transfer (which truncates INCOMING) cannot touch it."""

DROP_REASONS = frozenset(
    {
        "disk",  # an OSError writing or syncing the partial file (ENOSPC, EIO): ABORT
        "bad_file",  # the finished file failed format.verify: ABORT
        "mismatch",  # verified, but not the snapshot the chunks named or not our ensemble
        "bad_chunk",  # a chunk reaching past its total (the codec never lets one through)
        "stale",  # a chunk of a transfer older than the newest seen: answered ABORT
        "replaced",  # a newer transfer replaced the one in progress
        "expired",  # no chunk for idle_s: dropped by expire()
        "aborted",  # the driver called abort()
    }
)
"""Every key of ``Receiver.drops``; use them to pre-declare metric labels."""

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)

# A transfer is named by the leader (the authenticated peer, never a field of the
# frame), its term, the snapshot's last index and term, and the file's size.
_Key = tuple[str, int, int, int, int]


class Sender:
    """Streams one snapshot file to one follower (leader side).

    Call ``pump(now)`` every loop round and send the chunks it returns; hand
    every ``SnapAck`` from ``peer`` to ``on_ack``. The file is read chunk by
    chunk with ``os.pread`` (never whole). It ends with ``done`` (the
    follower acknowledged every byte, so it verified the file) or ``failed``
    (a reason: the follower aborted, no progress for ``ack_timeout_s``, or
    the file could not be read); after that ``pump`` returns nothing and the
    file is closed. ``size`` is the file's size, at least 1; ``chunk_bytes``
    must fit a frame (``Limits.max_snap_chunk_bytes``). ``close()`` it when
    dropping it unfinished. ``corrupt_at`` is a fault double for tests
    (``zraft/unsafe.py`` ``corrupt_snapshot_chunks``): the byte at that file
    offset is flipped in every chunk sent that holds it.
    """

    def __init__(
        self,
        peer: str,
        path: str | Path,
        index: int,
        snap_term: int,
        term: int,
        size: int,
        *,
        chunk_bytes: int = 256 * 1024,
        window: int = 4,
        ack_timeout_s: float = 5.0,
        resend_s: float = 1.0,
        corrupt_at: int | None = None,
    ) -> None:
        if size < 1 or chunk_bytes < 1 or window < 1:
            raise ValueError(f"size {size}, chunk_bytes {chunk_bytes}, window {window} must be > 0")
        if not (resend_s > 0 and ack_timeout_s > 0):
            raise ValueError("resend_s and ack_timeout_s must be > 0")
        self.peer = peer
        self.path = Path(path)
        self.index = index
        self.snap_term = snap_term
        self.term = term
        self.size = size
        self.chunk_bytes = chunk_bytes
        self.window = window
        self.ack_timeout_s = ack_timeout_s
        self.resend_s = resend_s
        self.corrupt_at = corrupt_at
        self.done = False
        self.failed: str | None = None
        self.bytes_sent = 0  # data bytes pumped, retransmissions included
        self.resends = 0  # rewinds to ``acked`` (a gap reported, or silence)
        self.acked = 0  # every byte before this is on the follower's disk
        self._next = 0  # the offset of the next chunk to send
        self._fd: int | None = None
        self._progress_at: float | None = None  # when ``acked`` last moved (or the start)
        self._sent_at = 0.0  # when a chunk was last sent or ``acked`` last moved
        self._rewound_at = -1  # the ``acked`` a gap report already rewound to

    @property
    def finished(self) -> bool:
        """Whether the transfer is over, ``done`` or ``failed``."""
        return self.done or self.failed is not None

    @property
    def in_flight(self) -> int:
        """The chunks sent beyond ``acked`` and not yet acknowledged (at most ``window``)."""
        return -(-(self._next - self.acked) // self.chunk_bytes)

    def pump(self, now: float) -> list[SnapChunk]:
        """Return the chunks to send now: enough to have ``window`` in flight.

        Checks the timers first: no progress for ``ack_timeout_s`` fails the
        transfer; nothing sent or acknowledged for ``resend_s`` while chunks
        are in flight rewinds to ``acked`` (a lost tail yields no gap report).
        """
        if self.finished:
            return []
        if self._progress_at is None:
            self._progress_at = self._sent_at = now
        elif now - self._progress_at >= self.ack_timeout_s:
            self._fail(f"no progress for {self.ack_timeout_s} s at {self.acked} of {self.size}")
            return []
        elif self._next > self.acked and now - self._sent_at >= self.resend_s:
            self._rewind(now)
        out: list[SnapChunk] = []
        limit = min(self.size, self.acked + self.window * self.chunk_bytes)
        while self._next < limit:
            offset = self._next
            n = min(self.chunk_bytes, self.size - offset)
            data = self._read(offset, n)
            if data is None:
                return []
            at = self.corrupt_at
            if at is not None and offset <= at < offset + n:  # a fault double (tests only)
                flipped = bytearray(data)
                flipped[at - offset] ^= 0xFF
                data = bytes(flipped)
            end = offset + n
            out.append(
                SnapChunk(
                    self.term, self.index, self.snap_term, offset, self.size, data, end == self.size
                )
            )
            self._next = end
            self.bytes_sent += n
            self._sent_at = now
        return out

    def on_ack(self, ack: SnapAck, now: float) -> None:
        """Take the follower's answer into account.

        Answers naming another transfer (term, index, snap_term) are ignored,
        as are stale ones (below ``acked``). ABORT fails the transfer. An
        offset above ``acked`` is progress (cumulative: it may skip chunks
        whose answers were lost); an offset equal to it while chunks are in
        flight reports a gap, and the sender goes back to it, once per
        ``acked`` (the timer covers a lost retransmission). A follower that
        restarted and lost its partial file answers 0, which looks stale:
        the transfer then fails on ``ack_timeout_s`` and the leader retries.
        """
        if self.finished or ack.term != self.term:
            return
        if ack.index != self.index or ack.snap_term != self.snap_term:
            return
        if ack.status == SnapStatus.ABORT:
            self._fail(f"{self.peer} aborted the transfer at {self.acked} of {self.size}")
            return
        if ack.offset > self.size:
            return  # not this file: ignore rather than trust it
        if ack.offset > self.acked:
            self.acked = ack.offset
            self._progress_at = self._sent_at = now
            self._next = max(self._next, self.acked)
            if self.acked == self.size:
                self.done = True
                self.close()
        elif ack.offset == self.acked < self._next and self._rewound_at != self.acked:
            self._rewind(now)

    def close(self) -> None:
        """Close the file (idempotent); the driver calls it when it drops an unfinished sender."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:
                pass

    def _rewind(self, now: float) -> None:
        # Go-back-N: the follower drops everything after a gap, so resend it all.
        self._next = self._rewound_at = self.acked
        self._sent_at = now
        self.resends += 1

    def _read(self, offset: int, n: int) -> bytes | None:
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            data = os.pread(self._fd, n, offset)
        except OSError as exc:
            self._fail(f"cannot read {self.path}: {exc}")
            return None
        if len(data) != n:
            self._fail(f"{self.path} ends before {offset + n} (size {self.size})")
            return None
        return data

    def _fail(self, reason: str) -> None:
        self.failed = reason
        self.close()


@dataclass(frozen=True, slots=True)
class Received:
    """A snapshot file that arrived whole and verified, at ``path``.

    ``path`` is ``store.temp_path(RECEIVED)`` (``info.path`` too). The caller owns
    the file from now on: publish it (``SnapshotStore.publish``) or delete it. A
    newer transfer may begin meanwhile (it writes INCOMING); only the next
    ``Received`` replaces this file. ``leader`` sent it in ``term``.
    """

    path: Path
    info: SnapshotInfo
    leader: str
    term: int


@dataclass(slots=True)
class _Incoming:
    key: _Key
    last_seen: float
    path: Path  # the file the chunks go to
    expected: int = 0  # every byte before this is written
    fd: int | None = None  # opened (and truncated) by the chunk at offset 0


class Receiver:
    """Receives snapshot files (follower side), at most one transfer at a time.

    Hand it every ``SnapChunk`` with the authenticated peer it came from; send
    back the ``SnapAck`` it returns. Never raises on a disk error or a bad
    file: the transfer is ABORTed, the partial file deleted, and the reason
    counted in ``drops`` (keys in ``DROP_REASONS``; ``last_error`` says more).
    ``bytes_received`` counts the bytes written, over all transfers. The
    driver checks the chunk's term against its own before calling this.

    ``unsafe`` may hold two negative controls (``zraft/unsafe.py``), for tests
    only: ``skip_snapshot_verify`` (a finished file is reported Received after
    reading its header only) and ``snapshot_in_place`` (chunks are written
    straight to the snapshot's final name, not to INCOMING).
    """

    def __init__(
        self, store: SnapshotStore, ensemble: str, *, unsafe: frozenset[str] = frozenset()
    ) -> None:
        self.store = store
        self.ensemble = ensemble
        self.skip_verify = "skip_snapshot_verify" in unsafe
        self.in_place = "snapshot_in_place" in unsafe
        self.path = store.temp_path(INCOMING)
        self.received_path = store.temp_path(RECEIVED)
        self.bytes_received = 0
        self.drops: Counter[str] = Counter()
        self.last_error: str | None = None
        self._cur: _Incoming | None = None
        self._newest = (-1, -1)  # (term, index) of the newest transfer begun
        self._finished: tuple[_Key, SnapStatus] | None = None  # the last transfer to end

    @property
    def in_progress(self) -> tuple[str, int, int, int] | None:
        """(leader, index, bytes so far, total) of the transfer under way, if any."""
        cur = self._cur
        if cur is None:
            return None
        return cur.key[0], cur.key[2], cur.expected, cur.key[4]

    def on_chunk(
        self, peer: str, c: SnapChunk, now: float
    ) -> tuple[SnapAck | None, Received | None]:
        """Take one chunk from ``peer``; return the answer to send and maybe a finished file.

        A chunk of a newer transfer (by term, then index) than the one in
        progress replaces it (its partial file is truncated); one of an
        older transfer is answered ABORT. A chunk at any offset but the next
        expected is dropped and answered with that offset (go-back-N). The
        last chunk is followed by fsync, a rename to RECEIVED and
        ``format.verify``; the header must name ``c.index``/``c.snap_term``
        and our ensemble, else ABORT (and the file is deleted).
        A transfer that already ended is answered as it ended: OK at
        ``total``, or ABORT (unless the chunk is at offset 0: a retry).
        """
        key: _Key = (peer, c.term, c.index, c.snap_term, c.total)
        cur = self._cur
        if cur is None or cur.key != key:
            if (c.term, c.index) < self._newest:
                self.drops["stale"] += 1
                return self._ack(c, 0, SnapStatus.ABORT), None
            if self._finished is not None and self._finished[0] == key:
                if self._finished[1] is SnapStatus.OK:
                    return self._ack(c, c.total, SnapStatus.OK), None
                if c.offset != 0:
                    return self._ack(c, 0, SnapStatus.ABORT), None
            if cur is not None:
                self._drop("replaced", f"transfer from {cur.key[0]} replaced by one from {peer}")
            path = self.path
            if self.in_place:  # negative control: no file beside the old state
                path = self.store.dir / file_name(c.index, c.snap_term)
            cur = self._cur = _Incoming(key, now, path)
            self._newest = (c.term, c.index)
        cur.last_seen = now
        if c.offset != cur.expected:
            return self._ack(c, cur.expected, SnapStatus.OK), None
        end = c.offset + len(c.data)
        if end > c.total or c.last != (end == c.total):
            return self._abort(c, "bad_chunk", f"chunk at {c.offset} ends at {end} of {c.total}")
        try:
            if cur.fd is None:
                cur.fd = os.open(cur.path, _OPEN_FLAGS, 0o600)
            _pwrite_all(cur.fd, c.data, c.offset)
        except OSError as exc:
            return self._abort(c, "disk", f"cannot write {cur.path}: {exc}")
        cur.expected = end
        self.bytes_received += len(c.data)
        if end < c.total:
            return self._ack(c, end, SnapStatus.OK), None
        return self._complete(peer, c)

    def abort(self, reason: str) -> tuple[str, SnapAck] | None:
        """Give up the transfer in progress, if any: delete its partial file.

        Returns the leader and the ABORT answer to send it, or None.
        """
        cur = self._cur
        if cur is None:
            return None
        peer, term, index, snap_term, _ = cur.key
        self._drop("aborted", reason)
        return peer, SnapAck(term, index, snap_term, 0, SnapStatus.ABORT)

    def expire(self, now: float, idle_s: float) -> bool:
        """Drop the transfer in progress if no chunk came for ``idle_s``; say whether it did."""
        cur = self._cur
        if cur is None or now - cur.last_seen < idle_s:
            return False
        self._drop("expired", f"no chunk from {cur.key[0]} for {idle_s} s")
        return True

    def close(self) -> None:
        """Drop any transfer in progress without counting it (node shutdown)."""
        if self._cur is not None:
            self._discard()
            self._cur = None

    def _complete(self, peer: str, c: SnapChunk) -> tuple[SnapAck | None, Received | None]:
        cur = self._cur
        assert cur is not None and cur.fd is not None
        fd, cur.fd = cur.fd, None
        try:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            return self._abort(c, "disk", f"cannot sync {cur.path}: {exc}")
        if not self.in_place:
            try:
                os.replace(cur.path, self.received_path)
            except OSError as exc:
                return self._abort(c, "disk", f"cannot rename {cur.path}: {exc}")
            cur.path = self.received_path
        info, reason, message = self._check(c, cur.path)
        if info is None:
            return self._abort(c, reason, message)
        self._cur = None
        self._finished = (cur.key, SnapStatus.OK)
        return self._ack(c, c.total, SnapStatus.OK), Received(info.path, info, peer, c.term)

    def _check(self, c: SnapChunk, path: Path) -> tuple[SnapshotInfo | None, str, str]:
        """Verify the whole file: (info, "", "") or (None, drop reason, message)."""
        try:
            if self.skip_verify:  # negative control: the header is taken on trust
                size = path.stat().st_size
                info = SnapshotInfo(path, read_header(path), (), size, "")
            else:
                info = verify(path)
        except CorruptionError as exc:
            return None, "bad_file", str(exc)
        except (StorageError, OSError) as exc:
            return None, "disk", str(exc)
        except Exception as exc:  # a gap in verify's checks must cost a transfer, not the node
            return None, "bad_file", f"{path}: {type(exc).__name__}: {exc}"
        h = info.header
        got = (h.index, h.term, h.ensemble, info.size)
        want = (c.index, c.snap_term, self.ensemble, c.total)
        if got != want:
            return None, "mismatch", f"{path} holds (index, term, ensemble, size) {got}, not {want}"
        return info, "", ""

    def _abort(self, c: SnapChunk, reason: str, message: str) -> tuple[SnapAck, None]:
        self._drop(reason, message)
        return self._ack(c, 0, SnapStatus.ABORT), None

    def _drop(self, reason: str, message: str) -> None:
        cur = self._cur
        assert cur is not None
        self._discard()
        self._cur = None
        self._finished = (cur.key, SnapStatus.ABORT)
        self.drops[reason] += 1
        self.last_error = message

    def _discard(self) -> None:
        cur = self._cur
        if cur is None:
            return
        if cur.fd is not None:
            fd, cur.fd = cur.fd, None
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            cur.path.unlink(missing_ok=True)
        except OSError:
            pass  # left for SnapshotStore.remove_partials at the next start

    @staticmethod
    def _ack(c: SnapChunk, offset: int, status: SnapStatus) -> SnapAck:
        return SnapAck(c.term, c.index, c.snap_term, offset, status)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.EIO, "pwrite wrote nothing")
        view = view[n:]
        offset += n
