"""Run one fault scenario and judge it: ``python -m tests.faults.run --scenario NAME``.

    python -m tests.faults.run --scenario isolate-leader --nodes 5 --seed 7
    python -m tests.faults.run --scenario kill-all --unsafe lazy_writes,skip_fsync

With ``--net netns`` (the default) the command re-executes itself under
``unshare --net --mount`` (root needed); ``--net loopback`` runs the
process-level scenarios on 127.0.0.1 without privileges. It prints one summary
line, writes ``result.json`` (every figure, the fault timeline, the violations)
and ``history.jsonl`` (for ``zraft check-history``) into the work directory,
and exits 0 when the run passed, 1 on a violation, 2 when it could not run.

From Python, ``spawn()`` runs a scenario in its own namespaces and returns the
result dict.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests import ROOT
from tests.faults import verify
from tests.faults.ensemble import FaultEnsemble, die_with_parent
from tests.faults.net import HOST_NS_ENV, host_namespaces, make_network
from tests.faults.scenarios import SCENARIOS, Ctx
from tests.faults.walarchive import ARCHIVE, WalArchive
from tests.faults.workload import Workload
from zraft.check import check_history, pair_events

CHECK_BUDGET_S = 60.0


def _merge_unsafe(*parts: str) -> str:
    names = sorted({n.strip() for p in parts for n in p.split(",") if n.strip()})
    return ",".join(names)


def run_scenario(
    name: str,
    nodes: int,
    seed: int,
    workdir: Path,
    unsafe: str = "",
    net_kind: str = "netns",
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run scenario ``name`` in this process (already in private namespaces for netns)."""
    sc = SCENARIOS[name]
    unsafe = _merge_unsafe(sc.unsafe, unsafe)
    started = time.monotonic()
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    net = make_network(net_kind)
    if sc.partitions and not net.partitions:
        raise ValueError(f"scenario {name} needs partitions; the {net_kind} network has none")
    res: dict[str, Any] = {
        "scenario": name,
        "nodes": nodes,
        "seed": seed,
        "unsafe": unsafe,
        "net": net_kind,
        "workdir": str(workdir),
        "errors": [],
    }
    ens: FaultEnsemble | None = None
    archive: WalArchive | None = None
    load: Workload | None = None
    ctx: Ctx | None = None
    statuses: dict[str, Any] = {}
    leader = None
    try:
        ens = FaultEnsemble(
            workdir, net, nodes, unsafe=unsafe, raft_toml=sc.raft_toml, extra_toml=sc.extra_toml
        )
        archive = WalArchive(workdir, ens.ids)
        archive.start()
        ens.start()
        ens.leader(timeout=30.0)
        load = Workload(ens.client, seed)
        ctx = Ctx(ens, net, load, rng, params=dict(params or {}))
        load.start()
        ctx.pause(2 * ens.election_s)
        try:
            sc.run(ctx)
        except TimeoutError as exc:  # e.g. no leader within the bound: a liveness failure
            res["errors"].append(f"during the scenario: {exc}")
        ctx.heal_all()
        healed = time.monotonic()
        # Keep the load on until writes are acknowledged again after healing (bounded).
        deadline = healed + 20.0
        while time.monotonic() < deadline and not (
            load.history.stats.last_ack > healed + 0.5 and time.monotonic() > healed + 1.5
        ):
            time.sleep(0.05)
        if load.history.stats.last_ack <= healed:
            res["errors"].append("no write was acknowledged within 20 s of healing")
        load.stop()
        res["errors"] += load.errors
        try:
            leader = ens.leader(timeout=20.0)
        except TimeoutError as exc:
            res["errors"].append(f"after healing: {exc}")
        order = ([leader] if leader else []) + [n for n in ens.ids if n != leader]
        missing = load.final_reads([ens.client[n] for n in order])
        if missing:
            res["errors"].append(f"{missing} keys could not be read after healing")
        statuses = ens.converge(timeout=40.0)
        exits = ens.stop_all()
        res["node_exits"] = exits
        bad_exits = {n: c for n, c in exits.items() if c not in (0, None)}
        if bad_exits:
            res["errors"].append(f"nodes exited with errors on SIGTERM: {bad_exits}")
    except Exception as exc:
        res["errors"].append(f"runner: {type(exc).__name__}: {exc}")
    finally:
        if load is not None:
            load.stop(timeout=5.0)
            load.close()
        if ens is not None:
            ens.close()
        if archive is not None:
            archive.stop()
            res["errors"] += archive.errors
        net.teardown()

    res["faults"] = len(ctx.faults) if ctx else 0
    res["fault_log"] = ctx.faults if ctx else []
    res["figures"] = ctx.figures if ctx else {}
    _judge(res, ens, archive, load, statuses)
    res["elapsed_s"] = round(time.monotonic() - started, 2)
    res["summary"] = summary_line(res)
    (workdir / "result.json").write_text(json.dumps(res, indent=2, default=str))
    return res


def _judge(
    res: dict[str, Any],
    ens: FaultEnsemble | None,
    archive: WalArchive | None,
    load: Workload | None,
    statuses: dict[str, Any],
) -> None:
    """Fill in the verdict, lost writes, hashes, leaders per term and votes."""
    res.update(
        ops=0, acked=0, info=0, verdict="none", lost=None, hashes="unknown", leaders_max=None
    )
    if load is None or ens is None or archive is None:
        res["passed"] = False
        return
    h = load.history
    if h.stats.malformed:
        res["errors"].append(f"{h.stats.malformed} ok replies had a malformed result")
    res.update(
        ops=h.stats.ops,
        acked=h.stats.acked_writes + h.stats.bulk_acked,
        bulk=h.stats.bulk_acked,
        info=h.stats.info,
    )
    wd = ens.workdir
    (wd / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in h.to_jsonl()))
    # 1. the checker's verdict on the recorded history (final reads included)
    try:
        result = check_history(pair_events(list(h.events)), "kv", budget_s=CHECK_BUDGET_S)
        res["verdict"] = result.verdict.value
        res["explanation"] = result.explanation
        res["check_s"] = round(result.elapsed_s, 2)
    except Exception as exc:
        res["verdict"] = "error"
        res["errors"].append(f"checker: {type(exc).__name__}: {exc}")
    # 2. the applied state of every node
    good = {n: s for n, s in statuses.items() if s}
    applied = {n: s["applied"] for n, s in good.items()}
    res["applied"] = applied
    # Equal keys and values as clients read them, and equal hashes of the whole
    # replicated state (sessions, every snapshot section) as the nodes compute them.
    hashes = {(s.get("state_hash"), s.get("node_hash")) for s in good.values()}
    res["state_hashes"] = {
        n: (s.get("state_hash") or "")[:16] + "/" + (s.get("node_hash") or "")[:16]
        for n, s in good.items()
    }
    if len(good) < len(ens.ids):
        res["hashes"] = "unreachable"
    elif len(set(applied.values())) > 1 or any(None in h for h in hashes):
        res["hashes"] = "not-converged"
    else:
        res["hashes"] = "equal" if len(hashes) == 1 else "differ"
    # 3. the logs and WALs the nodes left behind
    logs = {n: ens.log_path(n).read_text(errors="replace") for n in ens.ids}
    res["tracebacks"] = {n: t.count("Traceback") for n, t in logs.items() if "Traceback" in t}
    leaders = verify.leaders_by_term(logs)
    res["terms"] = max(leaders, default=0)
    res["leaders_max"] = max((len(v) for v in leaders.values()), default=0)
    res["leader_violations"] = {t: sorted(v) for t, v in leaders.items() if len(v) > 1}
    # Every segment each node ever had: compaction deletes them (walarchive).
    wals = {n: verify.read_wal(archive.dir(n)) for n in ens.ids}
    res["installed"] = {n: w.installed for n, w in wals.items() if w.installed}
    res["double_votes"] = {
        n: p for n, w in wals.items() if (p := verify.double_votes(w.hard_states))
    }
    upto = min(applied.values()) if applied else 0
    res["prefix_mismatch"] = verify.committed_prefixes_agree(wals, upto) if upto else []
    # An acknowledged write must be in every node's committed log (its applied
    # index; the last persisted commit index for a node that did not answer),
    # below a snapshot it installed in the log of the nodes that hold it.
    lost_by_node = {}
    for n, w in wals.items():
        upto = applied.get(n, w.hard_states[-1][1] if w.hard_states else 0)
        log = verify.committed_log(wals, n, upto)
        lost_by_node[n] = verify.lost_writes(h.acked, verify.committed_commands(log, upto))
    worst = max(lost_by_node, key=lambda n: len(lost_by_node[n]))
    res["lost"] = len(lost_by_node[worst])
    res["lost_by_node"] = {n: len(v) for n, v in lost_by_node.items()}
    res["lost_examples"] = [f"{worst}: {x}" for x in lost_by_node[worst][:5]]
    res["passed"] = (
        res["verdict"] == "linearizable"
        and res["lost"] == 0
        and res["hashes"] == "equal"
        and res["leaders_max"] <= 1
        and not res["double_votes"]
        and not res["prefix_mismatch"]
        and not res["tracebacks"]
        and not res["errors"]
    )


def summary_line(res: dict[str, Any]) -> str:
    """One line with the figures the issue asks for (and the seed to replay it)."""
    unsafe = f" unsafe={res['unsafe']}" if res.get("unsafe") else ""
    leaders = res.get("leaders_max")
    per_term = "<=1" if leaders is not None and leaders <= 1 else f"={leaders}"
    votes = "ok" if not res.get("double_votes") else "DOUBLE"
    extra = ""
    if res.get("prefix_mismatch"):
        extra += " logs=DIVERGE"
    if res.get("errors"):
        extra += f" errors={len(res['errors'])}"
    return (
        f"fault {res['scenario']} nodes={res['nodes']} seed={res['seed']}{unsafe} "
        f"ops={res.get('ops', 0)} acked={res.get('acked', 0)} info={res.get('info', 0)} "
        f"faults={res.get('faults', 0)} verdict={res.get('verdict')} lost={res.get('lost')} "
        f"hashes={res.get('hashes')} leaders/term{per_term} "
        f"votes={votes}{extra} ({res.get('elapsed_s', 0):.1f} s)"
        f"{'' if res.get('passed') else ' FAILED'}"
    )


# -- running in private namespaces ---------------------------------------------


def spawn_module(
    module: str, args: list[str], workdir: Path, net_kind: str, timeout: float
) -> int | None:
    """Run ``python -m module ... --inside`` in its own namespaces; return its exit code.

    None when it outlived ``timeout`` and was killed by pid (its nodes die with
    it: PR_SET_PDEATHSIG). Output goes to ``workdir/runner.log``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", module, *args]
    cmd += ["--workdir", str(workdir), "--net", net_kind, "--inside", "--quiet"]
    if net_kind == "netns":
        cmd = ["unshare", "--net", "--mount", "--"] + cmd
    cmd = die_with_parent() + cmd
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env[HOST_NS_ENV] = host_namespaces()
    env.pop("ZRAFT_UNSAFE_TEST_ONLY", None)
    with open(workdir / "runner.log", "ab") as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            return None
        except BaseException:  # e.g. pytest-timeout: never leave the runner behind
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            raise


def spawn(
    scenario: str,
    nodes: int,
    seed: int,
    workdir: Path,
    unsafe: str = "",
    net_kind: str = "netns",
    params: dict[str, Any] | None = None,
    timeout: float = 240.0,
    keep_data: bool = False,
) -> dict[str, Any]:
    """Run a scenario in a child process (under ``unshare --net --mount`` for netns).

    Returns the result dict; on a crash or timeout of the runner, a result with
    ``passed`` False and the reason in ``errors``. The child is killed by pid
    if it outlives ``timeout`` (its nodes die with it: PR_SET_PDEATHSIG).
    """
    args = ["--scenario", scenario, "--nodes", str(nodes), "--seed", str(seed)]
    if unsafe:
        args += ["--unsafe", unsafe]
    if params:
        args += ["--params", json.dumps(params)]
    if keep_data:
        args.append("--keep-data")
    code = spawn_module("tests.faults.run", args, workdir, net_kind, timeout)
    path = workdir / "result.json"
    if path.exists():
        return json.loads(path.read_text())
    tail = (workdir / "runner.log").read_text(errors="replace")[-2000:]
    return {
        "scenario": scenario,
        "nodes": nodes,
        "seed": seed,
        "unsafe": unsafe,
        "passed": False,
        "errors": [f"runner exited with {code} without a result; log tail:\n{tail}"],
        "summary": f"fault {scenario} nodes={nodes} seed={seed} RUNNER FAILED (exit {code})",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.faults.run", description=__doc__)
    ap.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument(
        "--unsafe", default="", help="ZRAFT_UNSAFE_TEST_ONLY switches (negative controls)"
    )
    ap.add_argument("--net", choices=("netns", "loopback"), default="netns")
    ap.add_argument("--params", default="", help="scenario parameters as a JSON object")
    ap.add_argument("--keep-data", action="store_true", help="keep the nodes' data directories")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    workdir = args.workdir or Path(f"/tmp/faults/{args.scenario}-{args.nodes}-{seed}")
    params = json.loads(args.params) if args.params else None
    if SCENARIOS[args.scenario].partitions and args.net != "netns":
        print(f"scenario {args.scenario} cuts links: it needs --net netns", file=sys.stderr)
        return 2
    if not args.inside:
        res = spawn(
            args.scenario,
            args.nodes,
            seed,
            workdir,
            args.unsafe,
            args.net,
            params,
            keep_data=args.keep_data,
        )
    else:
        res = run_scenario(args.scenario, args.nodes, seed, workdir, args.unsafe, args.net, params)
    if not args.keep_data and res.get("passed"):
        for nid in range(1, args.nodes + 1):
            shutil.rmtree(workdir / f"n{nid}", ignore_errors=True)
        shutil.rmtree(workdir / ARCHIVE, ignore_errors=True)
    if not args.quiet or not args.inside:
        print(res["summary"])
        for err in res.get("errors", []):
            print(f"  error: {err}")
        if res.get("verdict") not in (None, "linearizable") and res.get("explanation"):
            print(f"  checker: {res['explanation']}")
        for ex in res.get("lost_examples", []):
            print(f"  lost: {ex}")
    return 0 if res.get("passed") else 1


if __name__ == "__main__":
    sys.exit(main())
