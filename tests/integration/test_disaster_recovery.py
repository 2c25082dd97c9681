"""The README's disaster-recovery runbook, run on real processes.

Two of three hosts burn (their data directories are gone). The survivor is
forced into a one-node ensemble and serves again; later two new hosts are
seeded from its snapshot and the three-node ensemble is back, with every
write acknowledged before and after the disaster.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests import ROOT
from tests.support.ensemble import Ensemble

RAFT = "snapshot_entries = 100\nsnapshot_trailing_entries = 20\n"


def _zraft(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zraft", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def _only(config: Path, keep: str, out: Path) -> Path:
    """Write ``config`` with only node ``keep``'s [[node]] table to ``out``."""
    head, *nodes = config.read_text().split("[[node]]")
    mine = [t for t in nodes if f'id = "{keep}"' in t]
    out.write_text(head + "".join("[[node]]" + t for t in mine))
    return out


def _read_all(ens: Ensemble, nid: str, want: dict[str, int]) -> None:
    with ens.client_for(nid, timeout=3.0, retry_for=20) as c:
        for key, value in want.items():
            assert c.get(key) == value, key


def test_the_disaster_recovery_runbook(tmp_path: Path) -> None:
    with Ensemble(tmp_path, raft_toml=RAFT) as ens:
        full = ens.config
        ens.start()
        lead = ens.wait_leader()
        want: dict[str, int] = {}
        with ens.client_for(lead, timeout=3.0, retry_for=20) as c:
            for i in range(300):
                c.set(f"k{i}", i)
                want[f"k{i}"] = i
        # Two hosts burn, the third loses power.
        ens.kill(*ens.ids)
        for nid in ("n2", "n3"):
            shutil.rmtree(tmp_path / nid)

        # 1. Force the survivor into a one-node ensemble and run it alone.
        done = _zraft("recover", "--force-new-ensemble", "--node", "n1", "-c", str(full))
        assert done.returncode == 0, done.stderr
        assert "one-node ensemble" in done.stdout
        one = _only(full, "n1", tmp_path / "one.toml")
        ens.config = one
        ens.start("n1")
        assert ens.wait_leader() == "n1"
        _read_all(ens, "n1", want)
        with ens.client_for("n1", timeout=3.0, retry_for=20) as c:
            for i in range(300, 350):
                c.set(f"k{i}", i)
                want[f"k{i}"] = i

        # Recovering a running node is refused: it would rewrite a live WAL.
        busy = _zraft("recover", "--force-new-ensemble", "--node", "n1", "-c", str(one))
        assert busy.returncode == 1 and "stop it first" in busy.stderr

        # 2. New hosts: stop the survivor, take its state as a backup, seed them.
        assert ens.terminate("n1") == 0
        backup = tmp_path / "dr.snap"
        done = _zraft(
            "recover",
            "--force-new-ensemble",
            "--node",
            "n1",
            "-c",
            str(one),
            "--backup",
            str(backup),
        )
        assert done.returncode == 0, done.stderr
        for nid in ("n2", "n3"):
            seeded = _zraft("snapshot", "restore", str(backup), "--node", nid, "-c", str(full))
            assert seeded.returncode == 0, seeded.stderr

        # 3. The three-node ensemble is back with every acknowledged write.
        ens.config = full
        ens.start()
        lead = ens.wait_leader()
        for nid in ens.ids:
            _read_all(ens, nid, want)
        with ens.client_for(lead, timeout=3.0, retry_for=20) as c:
            c.set("after", 1)
        rows = ens.statuses(timeout=2.0, state_hash=True)
        assert all(rows.values())
