"""A full disk under the snapshot directory: snapshots fail, the node serves on.

The node runs inside ``unshare --mount`` with a tmpfs of ``SNAP_FS`` bytes
mounted on its snapshot directory only, so that in its private mount
namespace the snapshots have a tiny file system of their own while its WAL
stays on the test's disk (a WAL that cannot write stops the node, by design;
this test is about snapshots). Nothing is mounted in the test's own
namespace: the test reaches the tmpfs through ``/proc/<pid>/root``, fills it
with a file, and later deletes that file.

Shown: while the snapshot file system is full the node keeps acknowledging
writes, logs the failure, counts it in ``zraft_snapshot_taken{result="failed"}``,
leaves its snapshots and its log as they were (no compaction, no partial
file), and once space is freed the next snapshot is written and the log
compacted behind it. Root only (a mount namespace and a tmpfs).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import urllib.request
from pathlib import Path

import pytest

from tests.integration.test_snapshots import _wait
from tests.support.ensemble import Ensemble
from zraft.api.fanout import pipelined_load
from zraft.snapshot.format import verify

pytestmark = pytest.mark.integration

SNAP_FS = 1 << 20  # the tmpfs under the snapshot directory: a few snapshots of KEYS keys
KEYS = 100
VALUE = "v" * 1000  # a snapshot of about 100 kB
RAFT = "snapshot_entries = 100\nsnapshot_trailing_entries = 20\n"
MOUNT = 'mount -t tmpfs -o size={size} zraft-snap "$1" && shift && exec "$@"'


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "a mount namespace and a tmpfs need root"
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    return None


class TinySnapFs(Ensemble):
    """An ensemble whose nodes each keep their snapshots on a private tmpfs of ``SNAP_FS``."""

    def snap_dir(self, nid: str) -> Path:
        return self.workdir / nid / "snap"

    def command(self, nid: str) -> list[str]:
        snap = self.snap_dir(nid)
        snap.mkdir(parents=True, exist_ok=True)
        script = MOUNT.format(size=SNAP_FS)
        wrap = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script]
        return wrap + ["sh", str(snap), *super().command(nid)]

    def seen(self, nid: str) -> Path:
        """The node's snapshot directory as the node sees it (its tmpfs)."""
        return Path(f"/proc/{self.procs[nid].pid}/root") / str(self.snap_dir(nid)).lstrip("/")


def _metric(ens: Ensemble, nid: str, name: str, labels: str = "") -> float:
    body = urllib.request.urlopen(f"http://{ens.metrics[nid]}/metrics", timeout=5).read().decode()
    pattern = re.escape(name + (f"{{{labels}}}" if labels else "")) + r" (\S+)"
    m = re.search(r"^" + pattern + r"$", body, re.M)
    assert m, f"{name}{{{labels}}} not exported"
    return float(m.group(1))


def _taken(ens: Ensemble, nid: str, result: str) -> float:
    return _metric(ens, nid, "zraft_snapshot_taken_total", f'result="{result}"')


def _write(ens: Ensemble, nid: str, total: int, tag: str) -> None:
    res = pipelined_load(
        ens.client[nid],
        lambda n: {"cmd": "set", "key": f"k{n % KEYS}", "value": f"{tag}{n}:{VALUE}"},
        total,
        conns=2,
        depth=8,
        deadline_s=30,
    )
    assert len(res.latencies) == total, (res.errors, res.unanswered)


def _fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` with one file; return it."""
    filler = directory / "filler"
    block = b"\0" * 65536
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        while True:  # the last few bytes too
            try:
                os.write(fd, b"\0")
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)
    return filler


def _snapshots(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.snap"))}


@pytest.mark.timeout(120)
def test_a_full_snapshot_disk_fails_snapshots_but_not_the_node(tmp_path: Path) -> None:
    why = _unavailable()
    if why:
        pytest.skip(why)
    with TinySnapFs(tmp_path, 1, metrics=True, raft_toml=RAFT) as ens:
        ens.start()
        nid = ens.wait_leader()
        snap = ens.seen(nid)
        assert os.statvfs(snap).f_blocks * os.statvfs(snap).f_frsize <= SNAP_FS
        _write(ens, nid, 250, "a")
        _wait(lambda: _taken(ens, nid, "ok") >= 2, 20, "two snapshots")
        assert not (ens.snap_dir(nid) / "filler").exists()  # not on the test's disk

        filler = _fill(snap)
        before = _snapshots(snap)
        st = ens.statuses([nid], timeout=2.0)[nid]
        assert st and before
        failed, ok = _taken(ens, nid, "failed"), _taken(ens, nid, "ok")

        # Full: every write is still acknowledged; the snapshots fail and say so.
        _write(ens, nid, 250, "b")
        _wait(lambda: _taken(ens, nid, "failed") >= failed + 1, 20, "a failed snapshot")
        assert _taken(ens, nid, "ok") == ok
        assert "snapshot failed, the old snapshots and the log are intact" in ens.log_text(nid)
        assert "No space left on device" in ens.log_text(nid)
        assert _snapshots(snap) == before  # the old snapshots, byte for byte
        for name in before:
            verify(snap / name)
        assert not list(snap.glob("*.partial"))
        during = ens.statuses([nid], timeout=2.0)[nid]
        assert during and during["first_index"] == st["first_index"]  # nothing compacted
        assert during["snapshot_failing"] is True
        assert during["applied"] >= st["applied"] + 250
        assert ens.alive(nid)

        # Space again: the next snapshot is written and the log compacted behind it.
        filler.unlink()
        _write(ens, nid, 250, "c")
        _wait(lambda: _taken(ens, nid, "ok") >= ok + 1, 20, "a snapshot after space was freed")
        after = ens.statuses([nid], timeout=2.0)[nid]
        assert after and after["snapshot_failing"] is False
        assert after["snapshot_index"] > during["snapshot_index"]
        assert after["first_index"] > st["first_index"]

        # The newest file is the one the node reports (once no snapshot is under way).
        def newest_reported() -> bool:
            newest = sorted(_snapshots(snap))[-1]
            now = ens.statuses([nid], timeout=2.0)[nid]
            return bool(now) and verify(snap / newest).header.index == now["snapshot_index"]

        _wait(newest_reported, 10, "the newest snapshot file to be the one reported")
        value = ens.client_for(nid).get("k7")
        assert isinstance(value, str) and value.startswith("c")
        assert ens.terminate(nid) == 0
