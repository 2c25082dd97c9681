"""Leader payloads never overlap: real nodes, a probe payload, and the leader hit hard.

    python -m tests.faults.fencing --fault stop --rounds 3
    python -m tests.faults.fencing --fault all --rounds 2 --nodes 5
    python -m tests.faults.fencing --fault stop --unsafe unfenced_payloads   # must FAIL

Every node's ``[payload] leader`` is ``payload_probe.py``, which logs its start
and stop on ``CLOCK_MONOTONIC``. Each round finds the leader and its running
payload, then hits that leader with one fault until another node's payload
has started:

* ``kill``: SIGKILL (the keeper sees its pipe close and stops the payload);
* ``stop``: SIGSTOP (the node cannot act; the keeper's deadline stops it);
* ``isolate``: nftables cut the leader off from every peer (its lease lapses);
* ``term``: SIGTERM, the graceful stop (payload stopped, then leadership
  handed over).

The fault is held for ``HOLD_S`` more, then the leader is brought back
(restart, SIGCONT, heal). At the end the
nodes stop with SIGTERM and the runner waits until every payload has logged
its stop. The verdict: every payload that started stopped, and sorted by
start no payload started before the previous one stopped. The gaps between
one stop and the next start are the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from tests.faults.ensemble import FaultEnsemble
from tests.faults.net import make_network, netns_unavailable
from tests.faults.run import spawn_module

PROBE = Path(__file__).with_name("payload_probe.py")
FAULTS = ("kill", "stop", "isolate", "term")
WAIT_S = 20.0
HOLD_S = 0.5  # keep the fault on after the heir's payload started: overlaps would grow


def read_runs(events: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Pair the probe's start and stop lines by pid; return the runs and any problems."""
    runs: dict[int, dict[str, Any]] = {}
    problems = []
    text = events.read_text() if events.exists() else ""
    for line in text.splitlines():
        kind, node, term, pid, ns = line.split()
        run = runs.setdefault(int(pid), {"node": node, "term": int(term), "pid": int(pid)})
        run[kind] = int(ns) / 1e9
    for run in runs.values():
        if "start" not in run:
            problems.append(f"pid {run['pid']} on {run['node']} stopped without a start line")
        elif "stop" not in run:
            problems.append(f"payload pid {run['pid']} on {run['node']} never logged its stop")
    return sorted((r for r in runs.values() if "start" in r), key=lambda r: r["start"]), problems


def judge(runs: list[dict[str, Any]]) -> tuple[list[str], list[float]]:
    """Return the overlaps found and the gaps (seconds) between consecutive runs."""
    overlaps, gaps = [], []
    for a, b in zip(runs, runs[1:], strict=False):
        stop = a.get("stop", float("inf"))
        if b["start"] < stop:
            overlaps.append(
                f"{b['node']} (term {b['term']}) started {stop - b['start']:.3f}s before "
                f"{a['node']} (term {a['term']}) stopped"
            )
        else:
            gaps.append(b["start"] - stop)
    return overlaps, gaps


def _running_on(events: Path, nid: str | None = None, not_on: str | None = None) -> str | None:
    runs, _ = read_runs(events)
    for r in runs:
        if "stop" not in r and (nid is None or r["node"] == nid) and r["node"] != not_on:
            return r["node"]
    return None


def _until(what: str, cond: Any, limit: float = WAIT_S) -> Any:
    end = time.monotonic() + limit
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > end:
            raise TimeoutError(f"{what} within {limit:.0f}s")
        time.sleep(0.02)


def run_fencing(
    faults: list[str], rounds: int, nodes: int, workdir: Path, net_kind: str, unsafe: str = ""
) -> dict[str, Any]:
    """Run the rounds in this process (already inside private namespaces for netns)."""
    workdir.mkdir(parents=True, exist_ok=True)
    events = workdir / "payload-events.log"
    events.unlink(missing_ok=True)
    net = make_network(net_kind)
    argv = json.dumps([sys.executable, str(PROBE), str(events)])
    ens = FaultEnsemble(
        workdir, net, nodes, unsafe=unsafe, extra_toml=f"[payload]\nleader = {argv}\n"
    )
    res: dict[str, Any] = {"faults": faults, "rounds": rounds, "nodes": nodes, "unsafe": unsafe}
    res["errors"], res["timeline"] = [], []
    t0 = time.monotonic()

    def note(what: str) -> None:
        res["timeline"].append(f"{time.monotonic() - t0:6.2f}s {what}")

    try:
        ens.start()
        for r in range(rounds):
            for fault in faults:
                lead = ens.leader(timeout=30.0)
                _until(f"a payload on leader {lead}", lambda n=lead: _running_on(events, n))
                note(f"round {r}: {fault} {lead}")
                if fault == "kill":
                    ens.kill(lead)
                elif fault == "term":
                    code = ens.terminate(lead)
                    if code != 0:
                        res["errors"].append(f"{lead} exited {code} on SIGTERM")
                elif fault == "stop":
                    ens.pause(lead)
                else:
                    others = [n for n in ens.ids if n != lead]
                    net.apply({(lead, o) for o in others} | {(o, lead) for o in others})
                heir = _until(
                    "another node's payload", lambda n=lead: _running_on(events, not_on=n)
                )
                note(f"payload now on {heir}")
                time.sleep(HOLD_S)
                if fault in ("kill", "term"):
                    ens.start(lead)
                elif fault == "stop":
                    ens.resume(lead)
                else:
                    net.heal()
                note(f"{lead} back")
                time.sleep(2 * ens.election_s)
    except Exception as exc:
        res["errors"].append(f"{type(exc).__name__}: {exc}")
    finally:
        exits = ens.stop_all()
        try:
            _until("every payload to log its stop", lambda: not read_runs(events)[1], 10.0)
        except TimeoutError:
            pass
        ens.close()
        net.teardown()
    runs, problems = read_runs(events)
    overlaps, gaps = judge(runs)
    res.update(
        runs=len(runs),
        overlaps=overlaps,
        problems=problems,
        gaps_s=[round(g, 3) for g in gaps],
        node_exits=exits,
    )
    res["passed"] = not (overlaps or problems or res["errors"]) and len(runs) > rounds
    g = sorted(gaps)
    res["summary"] = (
        f"fencing {','.join(faults)} nodes={nodes} rounds={rounds}"
        + (f" unsafe={unsafe}" if unsafe else "")
        + f": {len(runs)} leader payload runs, {len(overlaps)} overlaps"
        + (
            f", gap min {g[0]:.3f}s median {statistics.median(g):.3f}s max {g[-1]:.3f}s"
            if g
            else ""
        )
        + (" PASS" if res["passed"] else " FAIL")
    )
    (workdir / "fencing.json").write_text(json.dumps(res, indent=2, default=str))
    return res


def spawn(
    faults: list[str],
    rounds: int,
    nodes: int,
    workdir: Path,
    net_kind: str = "netns",
    unsafe: str = "",
    timeout: float = 240.0,
) -> dict[str, Any]:
    """Run in a child process (under ``unshare`` for netns) and return its result."""
    args = ["--fault", ",".join(faults), "--rounds", str(rounds), "--nodes", str(nodes)]
    if unsafe:
        args += ["--unsafe", unsafe]
    code = spawn_module("tests.faults.fencing", args, workdir, net_kind, timeout)
    path = workdir / "fencing.json"
    if path.exists():
        return json.loads(path.read_text())
    tail = (workdir / "runner.log").read_text(errors="replace")[-2000:]
    return {"passed": False, "errors": [f"runner exited {code}; log tail:\n{tail}"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.faults.fencing", description=__doc__)
    ap.add_argument("--fault", default="all", help="kill, stop, isolate, a list, or all")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--unsafe", default="")
    ap.add_argument("--net", choices=["netns", "loopback"], default="netns")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    faults = list(FAULTS) if args.fault == "all" else args.fault.split(",")
    if args.net == "loopback" and "isolate" in faults:
        ap.error("isolate needs --net netns")
    if args.net == "netns" and (why := netns_unavailable()):
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(f"/tmp/zraft-fencing-{int(time.time())}")
    if args.inside:
        res = run_fencing(faults, args.rounds, args.nodes, workdir, args.net, args.unsafe)
    else:
        res = spawn(faults, args.rounds, args.nodes, workdir, args.net, args.unsafe)
    if not args.quiet or not args.inside:
        print(res.get("summary", "fencing: no result"))
        for line in res.get("overlaps", []) + res.get("problems", []) + res.get("errors", []):
            print(f"  {line}")
        if not args.inside:
            print(f"  details: {workdir / 'fencing.json'}")
    return 0 if res.get("passed") else 1


if __name__ == "__main__":
    sys.exit(main())
