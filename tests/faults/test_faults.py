"""Real-process fault injection: zraft ensembles under load, faults, heal, verdicts.

Each scenario runs in its own network and mount namespaces (this directory
has the machinery; ``python -m tests.faults.run --scenario NAME`` runs one by
hand, ``python -m tests.faults.soak`` many at random). A run passes when the
checker finds the history linearizable, no acknowledged write is missing from
any node's committed log, every node holds the same state at the same applied
index, the nodes' logs name at most one leader per term, no node's WAL shows
two votes in one term, and the committed logs agree entry by entry.

Without root or network namespaces the process-level scenarios run on
loopback and the partition scenarios are skipped. The helpers' unit tests at
the end run everywhere and never sleep.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.faults import verify
from tests.faults.net import Netns, netns_unavailable
from tests.faults.run import spawn, summary_line
from tests.faults.scenarios import SCENARIOS
from tests.support.ensemble import Ensemble
from zraft.core.messages import Entry, EntryKind, HardState
from zraft.replica import entries
from zraft.storage.wal import WalStorage

# The CI slice: (scenario, nodes, seed). Every scenario of the issue on 3 nodes,
# the quorum-shaped ones again on 5, the §5.3/§5.4.1 shapes, and power loss.
CI_SLICE = [
    ("kill-leader", 3, 101),
    ("kill-follower", 3, 102),
    ("kill-all", 3, 103),
    ("stop-cont-leader", 3, 104),
    ("isolate-leader", 3, 105),
    ("split", 3, 106),
    ("one-way", 3, 107),
    ("loss", 3, 108),
    ("lagging-follower", 3, 109),
    ("overwrite-suffix", 3, 110),
    ("power-loss", 3, 111),
    ("split", 5, 121),
    ("kill-leader", 5, 122),
    ("isolate-leader", 5, 123),
    ("stale-candidate", 5, 124),
    # Snapshots every 200 entries (tests/faults/snapfaults.py).
    ("snapshot-kill-writer", 3, 131),
    ("snapshot-kill-install", 3, 132),
    ("snapshot-lagging-follower", 3, 133),
    ("snapshot-power-loss", 3, 134),
    ("snapshot-corrupt-transfer", 3, 135),
]
# What each snapshot scenario must show besides the verdicts: that its fault landed.
LANDED: dict[str, Callable[[dict[str, Any]], bool]] = {
    "snapshot-kill-writer": lambda f: f["mid_write_kills"] >= 1,
    "snapshot-kill-install": lambda f: f["mid_install_kills"] >= 1 and f["installs"] >= 1,
    "snapshot-lagging-follower": lambda f: f["compacted_past"] and f["installs"] >= 1,
    "snapshot-power-loss": lambda f: len(f["power_losses"]) == 2,
    "snapshot-corrupt-transfer": lambda f: f["refused"] >= 1 and f["installs"] >= 1,
}
MUST_ELECT = {
    "kill-leader",
    "kill-all",
    "power-loss",
    "stop-cont-leader",
    "isolate-leader",
    "split",
    "one-way",
    "overwrite-suffix",
    "stale-candidate",
    "snapshot-kill-writer",
    "snapshot-power-loss",
}


@functools.cache
def network_for(scenario: str) -> tuple[str | None, str]:
    """Return (network kind or None to skip, reason) for a scenario on this machine.

    ``ZFAULT_NET=loopback`` in the environment forces the fallback (to try it
    where namespaces work).
    """
    forced = os.environ.get("ZFAULT_NET") == "loopback"
    why = "ZFAULT_NET=loopback" if forced else netns_unavailable()
    if why is None:
        return "netns", ""
    if SCENARIOS[scenario].partitions:
        return None, f"partition scenario needs network namespaces: {why}"
    return "loopback", why


def explain(res: dict[str, Any]) -> str:
    lines = [res.get("summary", ""), f"workdir: {res.get('workdir')}"]
    lines += [f"error: {e}" for e in res.get("errors", [])]
    if res.get("explanation"):
        lines.append(f"checker: {res['explanation']}")
    lines += [f"lost: {x}" for x in res.get("lost_examples", [])]
    keys = ("leader_violations", "double_votes", "prefix_mismatch", "tracebacks", "applied")
    for key in (*keys, "installed", "figures"):
        if res.get(key):
            lines.append(f"{key}: {res[key]}")
    lines += [f"fault: {f}" for f in res.get("fault_log", [])]
    return "\n".join(lines)


def run_and_report(capsys: pytest.CaptureFixture[str], tmp_path: Path, **kw: Any) -> dict:
    kind, why = network_for(kw["scenario"])
    if kind is None:
        pytest.skip(why)
    res = spawn(workdir=tmp_path / "run", net_kind=kind, timeout=150.0, **kw)
    with capsys.disabled():
        print(f"\n{res['summary']}" + (f" [loopback: {why}]" if kind == "loopback" else ""))
    return res


@pytest.mark.integration
@pytest.mark.timeout(200)
@pytest.mark.parametrize(
    ("scenario", "nodes", "seed"), CI_SLICE, ids=[f"{s}-{n}" for s, n, _ in CI_SLICE]
)
def test_fault_scenario_keeps_safety(
    scenario: str, nodes: int, seed: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    res = run_and_report(capsys, tmp_path, scenario=scenario, nodes=nodes, seed=seed)
    assert res["passed"], explain(res)
    # The fault must have bitten: these scenarios cannot pass without a new election.
    assert res["faults"] >= 1 and res["acked"] > 0
    if scenario in MUST_ELECT:
        assert res["terms"] >= 2, explain(res)
    if scenario == "lagging-follower":
        assert res["figures"]["behind"] >= 2000, explain(res)
    if scenario in LANDED:
        assert LANDED[scenario](res["figures"]), explain(res)


# -- a zraft bug found by this suite ---------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_status_with_state_hash_answers_and_the_node_survives(ensemble: Ensemble) -> None:
    # Regression: Node.status(state_hash=True) iterated over the bytes of the
    # firstresult zraft_snapshot hook and the TypeError killed the node process.
    lead = ensemble.wait_leader()
    s = ensemble.ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 3000)
    s.connect(ensemble.client[lead])
    try:
        s.send(b'{"cmd": "status", "hash": true}')
        try:
            reply = json.loads(s.recv())
        except zmq.Again:
            reply = {}
    finally:
        s.close()
    assert ensemble.alive(lead), "the node died answering status with hash"
    assert reply.get("ok") and len(reply["result"]["state_hash"]) == 64, reply


# -- the helpers (pure; no processes, no sleeping) -----------------------------------


def _cmd(client: str, seq: int, key: str, value: object) -> bytes:
    return entries.encode_command(0, client, seq, {"cmd": "set", "key": key, "value": value})


def test_read_wal_replays_overwrites_and_keeps_every_hard_state(tmp_path: Path) -> None:
    w = WalStorage(tmp_path)
    w.open()
    w.append(HardState(1, "n1", 0), [Entry(1, 1, EntryKind.NOOP)], sync=True)
    w.append(None, [Entry(1, 2, data=_cmd("c", 1, "a", 1)), Entry(1, 3, data=b"x")], sync=True)
    w.append(HardState(2, "n2", 1), [Entry(2, 3, data=_cmd("c", 2, "a", 2))], sync=True)
    w.close()
    with open(w.segment_paths[-1], "ab") as f:
        f.write(b"\x05\x00\x00")  # a torn tail: never acknowledged, ignored
    wal = verify.read_wal(tmp_path)
    assert sorted(wal.log) == [1, 2, 3] and wal.log[3][0] == 2  # entry 3 was overwritten
    assert wal.hard_states == [(1, 0, "n1"), (2, 1, "n2")]
    assert wal.tail_bytes == 3
    committed = verify.committed_commands(wal, 3)
    assert committed == {
        ("c", 1): {"cmd": "set", "key": "a", "value": 1},
        ("c", 2): {"cmd": "set", "key": "a", "value": 2},
    }


def test_double_votes_flags_a_second_vote_in_a_term_and_a_term_going_back() -> None:
    assert verify.double_votes([(1, 0, ""), (1, 0, "n1"), (1, 3, "n1"), (2, 3, "n2")]) == []
    assert verify.double_votes([(3, 0, "n1"), (3, 0, "n2")]) == [
        "term 3: voted for n1 and then for n2"
    ]
    assert verify.double_votes([(4, 0, "n1"), (2, 0, "")]) == ["term went back from 4 to 2"]


def test_leaders_by_term_reads_every_nodes_log() -> None:
    logs = {
        "n1": "x INFO zraft.node: term 2: leader is n1 (this node)\n",
        "n2": "x INFO zraft.node: term 2: leader is n1\nterm 3: leader is n2 (this node)\n",
        "n3": "x INFO zraft.node: term 3: leader is n3 (this node)\nterm 3: no leader\n",
    }
    assert verify.leaders_by_term(logs) == {2: {"n1"}, 3: {"n2", "n3"}}


def test_lost_writes_are_acked_commands_missing_or_different_in_the_log() -> None:
    acked = {("c", 1): {"cmd": "set", "key": "a", "value": 1}, ("c", 2): {"cmd": "del"}}
    committed = {("c", 1): {"cmd": "set", "key": "a", "value": 1}}
    assert len(verify.lost_writes(acked, committed)) == 1
    assert verify.lost_writes(acked, {**committed, ("c", 2): {"cmd": "del"}}) == []
    changed = {("c", 1): {"cmd": "set", "key": "a", "value": 9}, ("c", 2): {"cmd": "del"}}
    assert "committed as" in verify.lost_writes(acked, changed)[0]


def test_committed_prefixes_agree_compares_entries_up_to_the_applied_index() -> None:
    a, b = verify.Wal(), verify.Wal()
    a.log = {1: (1, b"x"), 2: (1, b"y"), 3: (2, b"z")}
    b.log = {1: (1, b"x"), 2: (1, b"y"), 3: (3, b"w")}
    assert verify.committed_prefixes_agree({"n1": a, "n2": b}, 2) == []
    assert "entry 3 differs" in verify.committed_prefixes_agree({"n1": a, "n2": b}, 3)[0]


def test_netns_rules_cut_one_direction_at_the_raft_port() -> None:
    net = Netns()
    net.ids = ["n1", "n2", "n3"]
    rules = net.ruleset("n2", {("n1", "n2"), ("n2", "n3")}, 0)
    assert "ip saddr 10.213.0.1 tcp dport 7100 drop" in rules
    assert "reject with tcp reset" in rules
    assert "10.213.0.3" not in rules  # n2 -> n3 is dropped in n3's namespace, not here
    assert "numgen" not in rules
    lossy = net.ruleset("n1", (), 20)
    assert "ip saddr { 10.213.0.2, 10.213.0.3 } numgen random mod 100 < 20 drop" in lossy
    assert lossy.startswith("table inet zfault {}\nflush table inet zfault\n")


def test_summary_line_has_every_figure_and_the_seed() -> None:
    res = {
        "scenario": "split",
        "nodes": 5,
        "seed": 7,
        "ops": 10,
        "acked": 4,
        "info": 1,
        "faults": 2,
        "verdict": "linearizable",
        "lost": 0,
        "hashes": "equal",
        "leaders_max": 1,
        "double_votes": {},
        "elapsed_s": 3.25,
        "passed": True,
    }
    assert summary_line(res) == (
        "fault split nodes=5 seed=7 ops=10 acked=4 info=1 faults=2 verdict=linearizable "
        "lost=0 hashes=equal leaders/term<=1 votes=ok (3.2 s)"
    )
    res.update(leaders_max=2, passed=False)
    assert "leaders/term=2" in summary_line(res) and summary_line(res).endswith("FAILED")
