"""The directory of snapshot files: atomic publish, pruning, partial files.

A published snapshot is named ``<index:016x>-<term:016x>.snap`` (names sort by
index, then term). A file being written (taken locally or received from the
leader) is ``<tag>.partial`` until ``publish`` renames it; partial files left by
a crash are removed at start-up by ``remove_partials``. Single-threaded: the
driver thread is the only caller. Every method raises StorageError on an I/O
failure.
"""

from __future__ import annotations

import os
import re
from contextlib import suppress
from pathlib import Path

from zraft.snapshot.format import SnapshotHeader
from zraft.storage import StorageError
from zraft.storage.snapshot import fsync_dir, fsync_path

KEEP = 2  # snapshots kept on disk: the newest and the one before it
PARTIAL = ".partial"
_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")
_TAG = re.compile(r"^[a-z0-9-]+$")


def file_name(index: int, term: int) -> str:
    """Return the name of the snapshot file for ``index`` and ``term``."""
    return f"{index:016x}-{term:016x}.snap"


class SnapshotStore:
    """The snapshot files of one node, in directory ``dir`` (created if missing).

    ``publish`` is atomic: a snapshot file is either absent or whole under its
    final name, and is durable once ``publish`` returns; only then may the WAL
    be compacted up to it. The newest ``KEEP`` snapshots are kept.
    """

    def __init__(self, dir: str | Path) -> None:
        self.dir = Path(dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {self.dir}: {exc}") from exc

    def _names(self) -> list[str]:
        try:
            return os.listdir(self.dir)
        except OSError as exc:
            raise StorageError(f"cannot list {self.dir}: {exc}") from exc

    def files(self) -> list[tuple[int, int, Path]]:
        """Return ``(index, term, path)`` of every snapshot file, oldest first (by name)."""
        found = []
        for name in sorted(self._names()):
            m = _NAME.match(name)
            if m:
                found.append((int(m.group(1), 16), int(m.group(2), 16), self.dir / name))
        return found

    def newest(self) -> tuple[int, int, Path] | None:
        """Return ``(index, term, path)`` of the newest snapshot file, or None if none."""
        files = self.files()
        return files[-1] if files else None

    def temp_path(self, tag: str) -> Path:
        """Return the path a snapshot in the making is written to: ``dir/<tag>.partial``.

        ``tag`` is made of ``[a-z0-9-]`` (ValueError otherwise), e.g. "incoming".
        """
        if not _TAG.match(tag):
            raise ValueError(f"snapshot temp tag {tag!r} is not [a-z0-9-]+")
        return self.dir / f"{tag}{PARTIAL}"

    def publish(self, tmp: Path, header: SnapshotHeader) -> Path:
        """Make the complete snapshot file ``tmp`` (in this directory) durable under its
        final name, and return that name.

        Order: fsync ``tmp``, rename it, fsync the directory; then delete all but
        the newest ``KEEP`` snapshots (never the one just published). On a failure
        before the rename, ``tmp`` is removed (best effort). Raises StorageError;
        older snapshots are then intact. The caller has verified ``tmp``.
        """
        tmp = Path(tmp)
        if tmp.parent.resolve() != self.dir.resolve():
            raise ValueError(f"{tmp} is not in the snapshot directory {self.dir}")
        final = self.dir / file_name(header.index, header.term)
        try:
            fsync_path(tmp)
            os.replace(tmp, final)
        except OSError as exc:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot publish snapshot {final}: {exc}") from exc
        # The rename must be durable before an older snapshot goes: the WAL may
        # be compacted past the older ones only once this one is safe.
        fsync_dir(self.dir)
        self._prune(KEEP, keep_also=final)
        return final

    def prune(self, keep: int = KEEP) -> None:
        """Delete all but the newest ``keep`` (at least 1) snapshot files."""
        if keep < 1:
            raise ValueError(f"keep must be at least 1, not {keep}")
        self._prune(keep)

    def _prune(self, keep: int, keep_also: Path | None = None) -> None:
        stale = [path for _, _, path in self.files()[:-keep] if path != keep_also]
        self._remove(stale, "old snapshot")

    def remove_partials(self) -> int:
        """Delete every ``*.partial`` file (left by a crash); return how many there were.

        Call it at start-up, before any snapshot is being written or received.
        """
        partials = [self.dir / n for n in self._names() if n.endswith(PARTIAL)]
        self._remove(partials, "partial snapshot")
        return len(partials)

    def _remove(self, paths: list[Path], what: str) -> None:
        if not paths:
            return
        for path in paths:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot remove {what} {path}: {exc}") from exc
        fsync_dir(self.dir)
