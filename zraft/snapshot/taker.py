"""Writing one snapshot without stalling the event loop.

Why this way (README "Snapshots"): the state machines capture their state
copy-on-write (``zraft.replica.capture``), so a capture starts in O(keys)
pointer copies, not a copy of the values, and the loop keeps applying
entries while it is written. The loop encodes a few chunks per round, within
a time budget, and hands the bytes to a writer thread that appends them to a
temporary file, fsyncs it and publishes it (rename, directory fsync). A
forked writer was the alternative: CPython's reference counts dirty every
page the child reads, so the copy-on-write fork still copies the state, and
forking a process with ZeroMQ threads is fragile.

Memory stays bounded: at most ``max_queued`` encoded chunks wait for the disk.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from zraft.replica.capture import Capture
from zraft.snapshot.format import Encoder, SnapshotHeader, SnapshotInfo
from zraft.snapshot.store import SnapshotStore
from zraft.storage import StorageError

log = logging.getLogger("zraft.snapshot")

_DONE = b""  # the queue's end marker (no record is empty)


class Taker:
    """Writes the snapshot of one capture to ``store``; the loop calls ``step`` each round.

    States: ``running`` until ``done`` (``info`` is the published file) or
    ``failed`` (``error`` says why; the temporary file is gone, older
    snapshots and the log are untouched). Not thread-safe: one loop thread
    calls ``step``/``abort``; the writer thread only writes.
    """

    def __init__(
        self,
        store: SnapshotStore,
        capture: Capture,
        header: SnapshotHeader,
        *,
        max_queued: int = 16,
        started: float | None = None,
    ) -> None:
        self.store = store
        self.header = header
        self.capture = capture
        self.started = time.monotonic() if started is None else started
        self.tmp = store.temp_path(f"taking-{header.index:x}")
        self.info: SnapshotInfo | None = None
        self.error: str | None = None
        self.encoded = False
        self._encoder = Encoder(header)
        self._pieces = self._produce()
        self._queue: queue.Queue[bytes] = queue.Queue(max_queued)
        self._failed = threading.Event()
        self._finished = threading.Event()
        self._writer_error: str | None = None
        self._thread = threading.Thread(target=self._write, name="zraft-snapshot", daemon=True)
        self._thread.start()

    @property
    def state(self) -> str:
        """Return ``running``, ``done`` or ``failed``."""
        if self.error is not None:
            return "failed"
        if self._finished.is_set():
            if self._writer_error is not None:
                self._fail(self._writer_error)
                return "failed"
            return "done"
        return "running"

    def busy(self) -> bool:
        """Tell whether ``step`` has encoding to do now (the loop should not sleep)."""
        return not self.encoded and self.error is None and not self._queue.full()

    def step(self, budget_s: float) -> None:
        """Encode chunks for up to ``budget_s`` seconds (or until the queue is full)."""
        if self.encoded or self.error is not None:
            return
        if self._failed.is_set():  # the writer gave up: stop encoding
            self._fail(self._writer_error or "writer failed")
            return
        deadline = time.perf_counter() + budget_s
        put = self._queue.put_nowait
        try:
            while not self._queue.full():
                try:
                    piece = next(self._pieces)
                except StopIteration:
                    self.encoded = True
                    put(_DONE)
                    return
                put(piece)
                if time.perf_counter() >= deadline:
                    return
        except Exception as exc:  # a state machine failed to snapshot itself
            log.exception("snapshot %d: capture failed", self.header.index)
            self._fail(f"capture failed: {type(exc).__name__}: {exc}")

    def abort(self, reason: str = "aborted") -> None:
        """Give up (leadership or shutdown does not matter; a stop or a newer install does)."""
        if self.state == "running":
            self._fail(reason)

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the writer thread to end (tests, shutdown)."""
        self._thread.join(timeout)

    # -- internals ----------------------------------------------------------

    def _produce(self) -> Iterator[bytes]:
        enc = self._encoder
        yield enc.begin()
        for name, chunks in self.capture.sections():
            yield enc.section(name)
            for data in chunks:
                if data:
                    yield enc.chunk(data)
        yield enc.end()

    def _fail(self, reason: str) -> None:
        if self.error is None:
            self.error = reason
        self.capture.close()
        self._failed.set()
        try:
            self._queue.put_nowait(_DONE)  # wake the writer if it waits
        except queue.Full:
            pass

    def _write(self) -> None:
        """The writer thread: append pieces, fsync, publish; never touches the state."""
        fd = -1
        try:
            fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            while True:
                piece = self._queue.get()
                if self._failed.is_set():
                    raise _Aborted
                if piece is _DONE or not piece:
                    break
                view = memoryview(piece)
                while view:
                    view = view[os.write(fd, view) :]
            os.fsync(fd)
            os.close(fd)
            fd = -1
            final = self.store.publish(self.tmp, self.header)
            self.info = self._encoder.info(final)
        except _Aborted:
            pass
        except (OSError, StorageError) as exc:
            self._writer_error = f"cannot write {self.tmp}: {exc}"
            self._failed.set()
        finally:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
            if self._failed.is_set():
                _remove(self.tmp)
            self._finished.set()


class _Aborted(Exception):
    pass


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc)
