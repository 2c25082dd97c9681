"""Snapshots on real processes: automatic snapshots, compaction, restart, InstallSnapshot.

An ensemble snapshotting every 200 entries takes writes; the log is
compacted behind the snapshots, a restarted node starts from its snapshot
and the log after it, and a follower that was down while the leader
compacted past its log catches up by InstallSnapshot. Every node ends with
the same state hash.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.support.ensemble import Ensemble
from zraft.api.fanout import pipelined_load
from zraft.snapshot.format import verify

RAFT = "snapshot_entries = 200\nsnapshot_trailing_entries = 50\n"
STORAGE = "[storage]\nsegment_bytes = 16384\n"


def _load(ens: Ensemble, nid: str, total: int, keys: int = 50, tag: str = "v") -> None:
    res = pipelined_load(
        ens.client[nid],
        lambda n: {"cmd": "set", "key": f"k{n % keys}", "value": f"{tag}{n}"},
        total,
        conns=4,
        depth=16,
        deadline_s=60,
    )
    assert len(res.latencies) == total, (res.errors, res.unanswered)


def _wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _converged(ens: Ensemble, nids: list[str]) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def same() -> bool:
        nonlocal last
        last = ens.statuses(nids, timeout=2.0, state_hash=True)
        rows = list(last.values())
        return all(rows) and len({(r["applied"], r["state_hash"]) for r in rows}) == 1

    try:
        _wait(same, 30, "equal state hashes")
    except AssertionError:
        raise AssertionError(f"no equal state hashes: {_brief(last)}") from None
    return last


def _brief(rows: dict[str, Any]) -> dict[str, Any]:
    keys = ("role", "applied", "commit", "first_index", "snapshot_index", "state_hash")
    return {n: r and {k: r.get(k) for k in keys} for n, r in rows.items()}


def test_snapshots_compact_the_log_and_a_restart_starts_from_one(tmp_path: Path) -> None:
    with Ensemble(tmp_path, raft_toml=RAFT, extra_toml=STORAGE) as ens:
        ens.start()
        lead = ens.wait_leader()
        _load(ens, lead, 1500)
        rows = _converged(ens, ens.ids)
        for nid, st in rows.items():
            assert st["snapshot_index"] >= 1000, (nid, st)
            assert st["first_index"] > 500, (nid, st)  # compacted
            snaps = sorted((tmp_path / nid / "snap").glob("*.snap"))
            assert 1 <= len(snaps) <= 2
            info = verify(snaps[-1])
            assert info.header.index == st["snapshot_index"]
            assert [s.name for s in info.sections][0] == "@sessions"
            segments = list((tmp_path / nid / "wal").glob("*.wal"))
            assert len(segments) < 12, f"{nid}: old segments not deleted: {len(segments)}"
        follower = next(n for n in ens.ids if n != lead)
        ens.kill(follower)
        ens.start(follower)
        after = _converged(ens, ens.ids)
        assert after[follower]["first_index"] > 500
        assert "restored snapshot" in ens.log_text(follower)


def test_a_follower_behind_the_compacted_log_catches_up_by_snapshot(tmp_path: Path) -> None:
    with Ensemble(tmp_path, raft_toml=RAFT, extra_toml=STORAGE, metrics=True) as ens:
        ens.start()
        lead = ens.wait_leader()
        _load(ens, lead, 100)
        behind = next(n for n in ens.ids if n != lead)
        ens.kill(behind)
        _load(ens, lead, 1500, tag="w")
        first = ens.statuses([lead])[lead]["first_index"]  # type: ignore[index]
        assert first > 200  # the entries the stopped follower lacks are gone
        ens.start(behind)
        rows = _converged(ens, ens.ids)
        assert rows[behind]["snapshot_index"] >= first
        assert "installed snapshot" in ens.log_text(behind)
        assert "snapshot" in ens.log_text(lead) and f"sent to {behind}" in ens.log_text(lead)
        # Writes go on after the install, and the follower applies them.
        _load(ens, lead, 50, tag="x")
        _converged(ens, ens.ids)


def test_a_wiped_follower_is_rebuilt_from_the_leaders_snapshot(tmp_path: Path) -> None:
    with Ensemble(tmp_path, raft_toml=RAFT, extra_toml=STORAGE) as ens:
        ens.start()
        lead = ens.wait_leader()
        _load(ens, lead, 1200)
        _converged(ens, ens.ids)
        victim = next(n for n in ens.ids if n != lead)
        ens.kill(victim)
        import shutil

        shutil.rmtree(tmp_path / victim)
        ens.start(victim)
        _load(ens, lead, 20, tag="y")  # its rejection of an append starts the probe
        rows = _converged(ens, ens.ids)
        assert rows[victim]["snapshot_index"] > 0
