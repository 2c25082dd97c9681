"""Backup and restore from the command line, on real processes (README "Backup and restore").

An ensemble takes writes; ``zraft snapshot take`` and ``save`` get snapshots
from it; ``inspect`` counts the keys of the saved file; a NEW ensemble of the
same name is seeded with ``restore`` on every node and serves the same keys,
every node with the same state hash. Restore refuses a data directory that is
not empty, a file of another ensemble and a damaged file, touching nothing;
``snapshot_read`` refuses any name but a published snapshot's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.integration.test_cli import zraft
from tests.support.ensemble import Ensemble
from zraft.api.client import Client, ZraftError
from zraft.api.fanout import pipelined_load

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

RAFT = "snapshot_entries = 150\nsnapshot_trailing_entries = 20\n"
KEYS = 300


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes."""
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def converged(ens: Ensemble, timeout: float = 30.0) -> dict[str, dict]:
    """Wait until every node answers with the same applied index and state hash."""
    deadline = time.monotonic() + timeout
    rows: dict = {}
    while time.monotonic() < deadline:
        rows = ens.statuses(ens.ids, timeout=2.0, state_hash=True)
        if (
            all(rows.values())
            and len({(r["applied"], r["state_hash"]) for r in rows.values()}) == 1
        ):
            return rows
        time.sleep(0.1)
    raise AssertionError(f"no equal state hashes within {timeout}s: {rows}")


def test_save_inspect_and_restore_a_new_ensemble(tmp_path: Path) -> None:
    backup = tmp_path / "backup.snap"
    (tmp_path / "old").mkdir()
    with Ensemble(tmp_path / "old", name="prod", raft_toml=RAFT) as old:
        old.start()
        lead = old.wait_leader()
        res = pipelined_load(
            old.client[lead],
            lambda n: {"cmd": "set", "key": f"k{n % KEYS:03d}", "value": n},
            2 * KEYS,
            conns=1,  # one connection: the writes of a key are applied in the order sent
            depth=16,
        )
        assert len(res.latencies) == 2 * KEYS, (res.errors, res.unanswered)
        cfg = ["-c", str(old.config)]

        taken = zraft("snapshot", "take", *cfg, check=True).stdout
        assert f"{lead} took snapshot" in taken
        index = int(next(ln.split()[1] for ln in taken.splitlines() if ln.startswith("index")))
        assert index >= 2 * KEYS  # every acknowledged write is in it
        other = next(n for n in old.ids if n != lead)
        via = zraft("snapshot", "take", "-e", old.client[other], check=True).stdout  # the leader
        assert via.startswith(f"{lead} took snapshot"), via
        asked = zraft("snapshot", "take", *cfg, "--node", other, "-w", "json", check=True)
        on_other = json.loads(asked.stdout)
        assert on_other["node"] == other
        assert on_other["name"] == f"{on_other['index']:016x}-{on_other['term']:016x}.snap"

        with Client(old.client[lead], timeout=2.0, retry_for=0) as c:
            for name in ("../ensemble.toml", "../../old/ensemble.toml", "/etc/passwd", "wal"):
                with pytest.raises(ZraftError) as err:
                    c.call("snapshot_read", name=name, offset=0, length=100)
                assert err.value.code == "NO_SNAPSHOT", name

        saved = json.loads(
            zraft("snapshot", "save", str(backup), *cfg, "-w", "json", check=True).stdout
        )
        assert saved["node"] == lead and saved["index"] >= index
        assert saved["size"] == backup.stat().st_size and not Path(f"{backup}.tmp").exists()
        expected = {
            f"k{i:03d}": max(n for n in range(1, 2 * KEYS + 1) if n % KEYS == i)
            for i in range(KEYS)
        }
        with old.client_for(timeout=2.0) as c:
            assert dict(zip(expected, c.mget(list(expected)), strict=True)) == expected
        source = next(iter(converged(old).values()))  # nothing applied after the save

    facts = json.loads(zraft("snapshot", "inspect", str(backup), "-w", "json", check=True).stdout)
    assert (facts["index"], facts["sha256"], facts["ensemble"]) == (
        saved["index"],
        saved["sha256"],
        "prod",
    )
    assert [s["keys"] for s in facts["sections"] if s["name"] == "kv"] == [KEYS]
    assert "kv" in zraft("snapshot", "inspect", str(backup), check=True).stdout

    # A new ensemble of the same name, on other ports and empty data directories.
    (tmp_path / "new").mkdir()
    with Ensemble(tmp_path / "new", name="prod") as new:
        for nid in new.ids:
            out = zraft("snapshot", "restore", str(backup), "--node", nid, "-c", str(new.config))
            assert out.returncode == 0, out.stderr
            assert f"restored {backup} into" in out.stdout
        new.start()
        new.wait_leader()
        rows = converged(new)
        assert all(r["snapshot_index"] == saved["index"] for r in rows.values()), rows
        assert {r["state_hash"] for r in rows.values()} == {source["state_hash"]}
        assert all(r["first_index"] == saved["index"] + 1 for r in rows.values()), rows
        with new.client_for(timeout=2.0) as c:
            assert dict(zip(expected, c.mget(list(expected)), strict=True)) == expected
            c.set("after-restore", 1)
        converged(new)


def test_restore_refuses_and_touches_nothing(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    backup = tmp_path / "backup.snap"
    with Ensemble(tmp_path / "src", name="prod") as src:
        src.start()
        src.wait_leader()
        with src.client_for(timeout=2.0) as c:
            c.set("a", 1)
        zraft("snapshot", "save", str(backup), "-c", str(src.config), check=True)
    damaged = tmp_path / "damaged.snap"
    raw = bytearray(backup.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    damaged.write_bytes(bytes(raw))

    (tmp_path / "prod").mkdir()
    (tmp_path / "staging").mkdir()
    prod = Ensemble(tmp_path / "prod", name="prod")
    staging = Ensemble(tmp_path / "staging", name="staging")
    (tmp_path / "prod" / "n1").mkdir()
    (tmp_path / "prod" / "n1" / "keep.txt").write_text("an operator's file")
    before = tree(tmp_path)

    def refused(file: Path, ens: Ensemble, nid: str) -> str:
        out = zraft("snapshot", "restore", str(file), "--node", nid, "-c", str(ens.config))
        assert out.returncode == 1, out.stdout + out.stderr
        return out.stderr

    assert "is not empty" in refused(backup, prod, "n1")
    assert "ensemble 'prod', not 'staging'" in refused(backup, staging, "n1")
    err = refused(damaged, prod, "n2")
    assert "damaged snapshot" in err and str(damaged) in err and "offset" in err
    assert tree(tmp_path) == before
    assert not (tmp_path / "prod" / "n2").exists() and not (tmp_path / "staging" / "n1").exists()
    prod.close()
    staging.close()
