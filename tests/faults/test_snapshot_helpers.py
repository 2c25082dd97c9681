"""The snapshot scenarios' helpers: the judge across snapshots, the WAL archive, the watcher.

No ensembles and no sleeping; one test starts a ``sleep`` process for the
watcher to kill (by its pid).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.faults import verify
from tests.faults.snapwatch import _matches, watch
from tests.faults.walarchive import WalArchive
from zraft.core.messages import Entry, HardState, SnapshotMeta
from zraft.replica import entries
from zraft.storage.wal import WalStorage


def _cmd(seq: int) -> bytes:
    return entries.encode_command(0, "c", seq, {"cmd": "set", "key": "k", "value": seq})


def _wal(path: Path, last: int, install: int = 0, mark: int = 0) -> verify.Wal:
    w = WalStorage(path)
    w.open()
    w.append(HardState(1, "n1", 0), [], sync=True)
    first = install + 1 if install else 1
    if install:
        w.append(None, [Entry(1, i, data=_cmd(i)) for i in range(1, 4)], sync=True)
        w.install(SnapshotMeta(install, 1, ("n1",)))
    w.append(None, [Entry(1, i, data=_cmd(i)) for i in range(first, last + 1)], sync=True)
    if mark:
        w.compact(SnapshotMeta(mark, 1, ("n1",)))
    w.close()
    return verify.read_wal(path)


def test_read_wal_replays_an_install_and_remembers_marks(tmp_path: Path) -> None:
    wal = _wal(tmp_path / "a", 12, install=10)
    assert sorted(wal.log) == [11, 12] and wal.installed == 10 and wal.mark == 10
    assert not wal.holds(5) and wal.holds(11) and wal.holds(13)
    marked = _wal(tmp_path / "b", 12, mark=6)
    assert sorted(marked.log) == list(range(1, 13)) and marked.mark == 6 and not marked.installed


def test_an_installed_node_is_judged_on_the_others_entries_below_its_snapshot(
    tmp_path: Path,
) -> None:
    wals = {"n1": _wal(tmp_path / "n1", 12, install=10), "n2": _wal(tmp_path / "n2", 12)}
    log = verify.committed_log(wals, "n1", 12)
    assert sorted(log) == list(range(1, 13))
    assert len(verify.committed_commands(log, 12)) == 12
    assert verify.committed_prefixes_agree(wals, 12) == []
    # A hole above what a node compacted or installed is still a difference.
    del wals["n1"].log[12]
    assert "entry 12 differs" in verify.committed_prefixes_agree(wals, 12)[0]


def test_the_archive_keeps_segments_the_node_deletes(tmp_path: Path) -> None:
    wal = tmp_path / "n1" / "wal"
    wal.mkdir(parents=True)
    (wal / "0000000000000001-0000000000000001.wal").write_bytes(b"one")
    archive = WalArchive(tmp_path, ["n1"])
    archive.sweep()
    (wal / "0000000000000001-0000000000000001.wal").unlink()
    (wal / "0000000000000002-0000000000000009.wal").write_bytes(b"two")
    archive.stop()  # never started: stop() takes the last sweep
    kept = archive.dir("n1") / "wal"
    assert sorted(p.read_bytes() for p in kept.iterdir()) == [b"one", b"two"]
    (wal / "0000000000000002-0000000000000009.wal").unlink()
    (wal / "0000000000000002-0000000000000009.wal").write_bytes(b"other")
    archive.sweep()
    assert archive.errors and "replaced" in archive.errors[0]


def test_the_watcher_matches_patterns_above_an_index_and_skips_ignored_names() -> None:
    snap = "0000000000000010-0000000000000001.snap"
    assert _matches("incoming.partial", ["incoming.partial", "*.snap"], set(), 100)
    assert _matches(snap, ["*.snap"], set(), 15) and not _matches(snap, ["*.snap"], set(), 16)
    assert not _matches(snap, ["*.snap"], {snap}, -1)
    assert not _matches("taking-1.partial", ["*.snap"], set(), -1)


def test_the_watcher_kills_once_the_file_holds_enough(tmp_path: Path) -> None:
    (tmp_path / "small.partial").write_bytes(b"x")
    (tmp_path / "taking-9.partial").write_bytes(b"x" * 100)
    victim = subprocess.Popen(["sleep", "60"])
    try:
        missed = watch(tmp_path, ["small.*"], [victim.pid], min_bytes=10, timeout=0.05)
        assert missed is None and victim.poll() is None
        hit = watch(tmp_path, ["taking-*.partial"], [victim.pid], min_bytes=10, timeout=5)
        assert hit is not None and hit.name == "taking-9.partial" and hit.size == 100
        assert victim.wait(timeout=5) == -9
    finally:
        if victim.poll() is None:
            os.kill(victim.pid, 9)
            victim.wait()
