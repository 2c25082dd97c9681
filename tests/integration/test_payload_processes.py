"""Payloads with real node processes: fenced, never overlapping, never stalling Raft.

The fencing runs (``tests/faults/fencing.py``) put every node in its own
network namespace when the machine allows it (root, ``unshare``); without
that they run the process faults on loopback and skip isolation.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults import fencing
from tests.faults.net import netns_unavailable
from tests.support.ensemble import Ensemble

pytestmark = pytest.mark.integration


def _net() -> tuple[str, list[str], str]:
    why = netns_unavailable()
    if why is None:
        return "netns", list(fencing.FAULTS), ""
    return "loopback", ["kill", "stop", "term"], f" [loopback, no isolation: {why}]"


@pytest.mark.timeout(240)
def test_leader_payloads_never_overlap_under_kill_stop_isolation_and_sigterm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 5: the start/stop times of leader payloads on all nodes never overlap
    under leader SIGKILL, SIGSTOP, isolation and graceful stop; the gaps are printed."""
    kind, faults, note = _net()
    res = fencing.spawn(faults, rounds=2, nodes=3, workdir=tmp_path / "run", net_kind=kind)
    with capsys.disabled():
        print(f"\n{res.get('summary')}{note}\n  gaps (s): {res.get('gaps_s')}")
    assert res["passed"], json.dumps(res, indent=2)
    assert res["runs"] >= 2 * len(faults) + 1
    assert res["overlaps"] == [] and min(res["gaps_s"]) > 0


@pytest.mark.timeout(120)
def test_negative_control_unfenced_payloads_overlap_when_the_leader_freezes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Switch the fence off (payloads follow the believed role, like role-change
    scripts): a frozen leader's payload keeps running while the next one starts."""
    res = fencing.spawn(
        ["stop"],
        rounds=1,
        nodes=3,
        workdir=tmp_path / "run",
        net_kind="loopback",
        unsafe="unfenced_payloads",
    )
    with capsys.disabled():
        print(f"\n{res.get('summary')}")
    assert not res["passed"]
    assert res["overlaps"], json.dumps(res, indent=2)


HANGING_PLUGIN = """
import time
from zraft.hookspecs import hookimpl

@hookimpl
def zraft_node_start(ctx):
    time.sleep(10)          # far past payload.timeout_ms

@hookimpl
def zraft_became_leader(ctx):
    time.sleep(10)          # ignores ctx.wait(): a payload that hangs

@hookimpl
def zraft_committed(index, term):
    raise RuntimeError("observer bug")
"""


def _metric(cluster: Ensemble, nid: str, name: str, **labels: str) -> float:
    """Sum the samples of ``name`` on node ``nid`` whose labels include ``labels``."""
    text = urllib.request.urlopen(f"http://{cluster.metrics[nid]}/metrics", timeout=5).read()
    total = 0.0
    for line in text.decode().splitlines():
        m = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            total += float(m.group(2))
    return total


@pytest.mark.timeout(90)
def test_a_payload_that_hangs_for_10s_never_costs_the_ensemble_its_leader(
    tmp_path: Path, make_ensemble: Callable[..., Ensemble], capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 5: payload hooks run off the driver thread with a timeout; one that
    sleeps 10 s (or raises) is logged and counted while the leader keeps leading
    and writes keep committing."""
    plugin = tmp_path / "hang.py"
    plugin.write_text(HANGING_PLUGIN)
    cluster = make_ensemble(
        extra_toml=f'[plugins]\nfiles = ["{plugin}"]\n[payload]\ntimeout_ms = 1000\n',
    )
    try:
        cluster.start()
        lead = cluster.wait_leader()
        term = cluster.statuses()[lead]["term"]
        client = cluster.client_for(timeout=2.0)
        worst, writes = 0.0, 0
        end = time.monotonic() + 11.0
        while time.monotonic() < end:
            t0 = time.monotonic()
            client.set(f"k{writes}", writes)
            worst = max(worst, time.monotonic() - t0)
            writes += 1
            time.sleep(0.05)
        st = cluster.statuses()
        assert st[lead]["role"] == "leader" and st[lead]["term"] == term
        assert all(s and s["term"] == term for s in st.values())
        timeouts = {
            hook: sum(
                _metric(cluster, n, "zraft_payload_timeouts_total", hook=hook) for n in cluster.ids
            )
            for hook in ("zraft_node_start", "zraft_became_leader")
        }
        errors = sum(
            _metric(cluster, n, "zraft_payload_runs_total", hook="zraft_committed", result="error")
            for n in cluster.ids
        )
        with capsys.disabled():
            print(
                f"\nhanging payloads: leader {lead} kept term {term} for 11 s; {writes} writes, "
                f"slowest {worst * 1000:.0f} ms; timeouts {timeouts}; observer errors {errors:.0f}"
            )
        assert timeouts["zraft_node_start"] == 3  # one per node, counted once
        assert errors >= 3
        assert worst < 1.0
        assert "is still running" in cluster.log_text(lead)
    finally:
        cluster.stop_all()
    # A hung payload does not stop the node from stopping cleanly.
    assert all(p.returncode == 0 for p in cluster.procs.values())


@pytest.mark.timeout(90)
def test_follower_script_runs_on_every_follower_with_its_environment(
    tmp_path: Path, make_ensemble: Callable[..., Ensemble]
) -> None:
    out = tmp_path / "followers"
    script = f'echo "$ZRAFT_NODE_ID $ZRAFT_ROLE $ZRAFT_TERM $ZRAFT_LEADER_ID $$" >> {out}'
    argv = json.dumps(["sh", "-c", script + "; exec sleep 600"])
    cluster = make_ensemble(extra_toml=f"[payload]\nfollower = {argv}\n")
    try:
        cluster.start()
        lead = cluster.wait_leader()
        end = time.monotonic() + 20
        while not (out.exists() and len(out.read_text().splitlines()) >= 2):
            assert time.monotonic() < end, "follower payloads did not start"
            time.sleep(0.05)
        lines = [line.split() for line in out.read_text().splitlines()]
        assert sorted(nid for nid, *_ in lines) == sorted(n for n in cluster.ids if n != lead)
        assert all(role == "follower" and lid == lead for _, role, _, lid, _ in lines)
        st = cluster.statuses()
        assert all(st[n]["payloads"]["follower"] == ["script-follower"] for n in st if n != lead)
        pids = [int(line[4]) for line in lines]
    finally:
        cluster.stop_all()
    for pid in pids:  # the node's graceful stop ended its payload
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
