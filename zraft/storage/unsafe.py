"""A WAL with the test-only switches of ``zraft.unsafe``. Not for production.

``lazy_writes`` makes this process play the page cache: records are kept in
memory until fsync, so a SIGKILL loses exactly what a power loss would (what
was written but not fsynced). ``skip_fsync`` drops the fsync itself; with
``lazy_writes`` the records then reach the file only on a clean close, so a
SIGKILL loses every acknowledged write that a real fsync would have saved.
"""

from __future__ import annotations

import os
from pathlib import Path

from zraft.storage import StorageError
from zraft.storage.wal import WalStorage


class UnsafeWalStorage(WalStorage):
    """``WalStorage`` with ``lazy_writes`` and/or ``skip_fsync`` (see the module docstring)."""

    def __init__(
        self,
        dir: str | Path,
        segment_bytes: int = 64 * 1024 * 1024,
        *,
        lazy_writes: bool = False,
        skip_fsync: bool = False,
    ) -> None:
        super().__init__(dir, segment_bytes)
        self.lazy_writes = lazy_writes
        self.skip_fsync = skip_fsync
        self._page_cache: list[bytes] = []  # lazy_writes: written, not yet on the file

    def _write(self, blob: bytes, first_index: int) -> None:
        if not self.lazy_writes:
            super()._write(blob, first_index)
            return
        if self._segments[-1].size >= self.segment_bytes:
            self._rotate(first_index)
        self._page_cache.append(blob)
        self._segments[-1].size += len(blob)
        self.stats.bytes_written += len(blob)
        self._dirty = True

    def _fsync(self) -> None:
        if self.skip_fsync:
            self._dirty = False  # the page cache keeps it; nothing is made durable
            return
        self._flush_page_cache()
        super()._fsync()

    def _rotate(self, first_index: int) -> None:
        self._flush_page_cache()  # a segment is closed only once its records are on it
        super()._rotate(first_index)

    def close(self) -> None:
        """A clean stop: the kernel would write the page cache back eventually."""
        if self._fd is not None:
            self._flush_page_cache()
        super().close()

    def _flush_page_cache(self) -> None:
        if not self._page_cache:
            return
        blob, self._page_cache = b"".join(self._page_cache), []
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(self._fd, view) :]  # type: ignore[arg-type]
        except OSError as exc:
            self._failed = True
            raise StorageError(f"write to {self._segments[-1].path} failed: {exc}") from exc


def open_wal(data_dir: Path, segment_bytes: int, unsafe: frozenset[str]) -> WalStorage:
    """Open a node's WAL: ``WalStorage``, or this double when a test switch asks for it."""
    if unsafe & {"lazy_writes", "skip_fsync"}:
        return UnsafeWalStorage(
            data_dir,
            segment_bytes=segment_bytes,
            lazy_writes="lazy_writes" in unsafe,
            skip_fsync="skip_fsync" in unsafe,
        )
    return WalStorage(data_dir, segment_bytes=segment_bytes)
