"""Random fault scenarios, one after another: ``python -m tests.faults.soak``.

    python -m tests.faults.soak --rounds 40                # 3 or 5 nodes, any scenario
    python -m tests.faults.soak --rounds 10 --nodes 5 --scenario split --seed 42
    python -m tests.faults.soak --minutes 30 --unsafe local_reads   # hunt with a control

Each round draws a scenario, an ensemble size, a seed and the scenario's
parameters from the soak's own seed (printed first, so a soak replays), runs
it in its own namespaces (``run.spawn``) and prints its summary line. At the
end it prints the totals and every failed round's seed and work directory;
it exits 1 if any round failed. A passed round's data directories are
deleted; logs, history and result.json stay under ``--workdir``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

from tests.faults.net import netns_unavailable
from tests.faults.run import spawn
from tests.faults.scenarios import SCENARIOS

ROUNDS_PARAM = {
    "kill-leader",
    "kill-follower",
    "kill-all",
    "power-loss",
    "stop-cont-leader",
    "isolate-leader",
    "split",
}


def draw(rng: random.Random, args: argparse.Namespace, names: list[str]) -> tuple[Any, ...]:
    """Return (scenario, nodes, seed, params) for one round."""
    name = args.scenario or rng.choice(names)
    nodes = args.nodes or rng.choice([3, 5])
    params: dict[str, Any] = {}
    if name in ROUNDS_PARAM:
        params["rounds"] = rng.randint(1, 3)
    if name == "lagging-follower":
        params["entries"] = rng.choice([2000, 4000, 8000])
    if name == "overwrite-suffix":
        params["suffix"] = rng.choice([500, 2000, 4000])
    return name, nodes, rng.randrange(1, 10**6), params


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.faults.soak", description=__doc__)
    ap.add_argument("--rounds", type=int, default=None, help="number of scenarios (default 20)")
    ap.add_argument("--minutes", type=float, default=None, help="or: run for this long")
    ap.add_argument("--nodes", type=int, choices=(3, 5), default=None)
    ap.add_argument("--scenario", choices=sorted(SCENARIOS), default=None)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--unsafe", default="", help="negative-control switches for every round")
    ap.add_argument("--net", choices=("netns", "loopback"), default=None)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/faults/soak"))
    ap.add_argument("--stop-on-failure", action="store_true")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    rng = random.Random(seed)
    net = args.net or ("netns" if netns_unavailable() is None else "loopback")
    names = sorted(n for n, s in SCENARIOS.items() if net == "netns" or not s.partitions)
    if args.scenario and args.scenario not in names:
        ap.error(f"scenario {args.scenario} needs network namespaces")
    rounds = args.rounds if args.rounds is not None else (None if args.minutes else 20)
    until = time.monotonic() + 60 * args.minutes if args.minutes else None
    print(f"soak seed={seed} net={net}" + (f" unsafe={args.unsafe}" if args.unsafe else ""))
    sys.stdout.flush()
    started = time.monotonic()
    totals = {"ops": 0, "acked": 0, "info": 0, "faults": 0}
    failed: list[dict[str, Any]] = []
    done = 0
    while (rounds is None or done < rounds) and (until is None or time.monotonic() < until):
        name, nodes, sc_seed, params = draw(rng, args, names)
        workdir = args.workdir / f"{seed}" / f"{done:03d}-{name}-{nodes}-{sc_seed}"
        res = spawn(name, nodes, sc_seed, workdir, args.unsafe, net, params)
        done += 1
        for k in totals:
            totals[k] += res.get(k) or 0
        print(f"[{done}] {res['summary']}" + (f" params={params}" if params else ""))
        if not res.get("passed"):
            failed.append(res)
            for err in res.get("errors", [])[:3]:
                print(f"    error: {err[:300]}")
        sys.stdout.flush()
        if failed and args.stop_on_failure:
            break
    elapsed = time.monotonic() - started
    print(
        f"soak seed={seed}: {done} scenarios, {done - len(failed)} passed, {len(failed)} failed; "
        f"ops={totals['ops']} acked={totals['acked']} info={totals['info']} "
        f"faults={totals['faults']} ({elapsed / 60:.1f} min)"
    )
    for res in failed:
        print(
            f"  FAILED {res['scenario']} nodes={res['nodes']} seed={res['seed']}: "
            f"{res.get('workdir', '')}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
