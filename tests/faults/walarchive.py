"""Hard links to every WAL segment a node ever had, so that compaction hides nothing.

A node deletes the WAL segments its snapshots cover, and with them the
entries the judge looks for acknowledged writes in. ``WalArchive`` polls each
node's ``wal/`` directory every ``interval`` seconds (a thread of the runner)
and hard-links every segment it has not seen into
``<workdir>/wal-archive/<node>/``: the link shares the segment's inode, so it
holds whatever the node wrote to it (and loses what a torn tail loses), and it
survives the node's unlink. A segment lives for at least two snapshots, far
longer than the interval. ``verify.read_wal`` reads the archive like a WAL
directory (segments in sequence order, INSTALL and compaction marks replayed).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

ARCHIVE = "wal-archive"


class WalArchive:
    """Archives the WAL segments of nodes ``ids`` under ``workdir`` (module docstring)."""

    def __init__(self, workdir: Path, ids: list[str], interval: float = 0.02) -> None:
        self.workdir = Path(workdir)
        self.ids = list(ids)
        self.interval = interval
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-archive", daemon=True)

    def dir(self, nid: str) -> Path:
        """Where node ``nid``'s segments are archived (its ``wal/`` is one level down)."""
        return self.workdir / ARCHIVE / nid

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop polling and take a last sweep (call it after the nodes stopped)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        self.sweep()

    def sweep(self) -> None:
        """Link every segment not yet archived; note a name reused by another file."""
        for nid in self.ids:
            src = self.workdir / nid / "wal"
            dst = self.dir(nid) / "wal"
            try:
                names = [n for n in os.listdir(src) if n.endswith(".wal")]
            except OSError:
                continue
            dst.mkdir(parents=True, exist_ok=True)
            for name in names:
                try:
                    here = os.stat(src / name).st_ino
                    try:
                        if os.stat(dst / name).st_ino != here:
                            self._error(f"{nid}: segment {name} was replaced by another file")
                        continue
                    except FileNotFoundError:
                        os.link(src / name, dst / name)
                except FileNotFoundError:
                    continue  # deleted before it was linked: the judge sees entries missing
                except OSError as exc:
                    self._error(f"{nid}: cannot archive {name}: {exc}")

    def _error(self, what: str) -> None:
        if what not in self.errors:
            self.errors.append(what)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sweep()
