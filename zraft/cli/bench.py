"""``zraft bench``: drive a running ensemble and print throughput and latency.

Phases (each prints ops/s, p50, p99, errors):

* write, 1 synchronous client: one ``set`` at a time (durable: answered after
  commit on a quorum's disks and apply);
* write, concurrent: ``--clients`` DEALER connections, each keeping
  ``--depth`` requests in flight;
* read, 1 synchronous client and concurrent: linearizable ``get`` (ReadIndex).

A measurement, not a test: run it beside ../shared/bench/ for comparisons.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from zraft.api.fanout import pipelined_load, status_all
from zraft.cli.common import add_target, endpoints


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to ``p``."""
    p.add_argument("--sync-ops", type=int, default=2000, help="ops for the synchronous phases")
    p.add_argument("--ops", type=int, default=30000, help="ops for each concurrent phase")
    p.add_argument("--clients", type=int, default=8, help="concurrent connections")
    p.add_argument("--depth", type=int, default=32, help="requests in flight per connection")
    p.add_argument("--value-size", type=int, default=100, help="bytes per value")
    p.add_argument(
        "--target",
        choices=["leader", "follower"],
        default="leader",
        help="send load to the leader (default) or to a follower (forwarded)",
    )
    p.add_argument(
        "--phases",
        default="write_sync,write_conc,read_sync,read_conc",
        help="comma-separated subset of write_sync,write_conc,read_sync,read_conc",
    )
    p.add_argument("--out", help="also write the figures as JSON to this file")


def _pct(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    return sorted_vals[min(len(sorted_vals) - 1, int(q * len(sorted_vals)))]


def _summary(name: str, n_ok: int, errors: int, elapsed: float, lat: list[float]) -> dict[str, Any]:
    lat.sort()
    return {
        "phase": name,
        "ops": n_ok,
        "errors": errors,
        "seconds": round(elapsed, 3),
        "ops_per_s": round(n_ok / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": round(_pct(lat, 0.50) * 1000, 3),
        "p99_ms": round(_pct(lat, 0.99) * 1000, 3),
        "mean_ms": round(statistics.fmean(lat) * 1000, 3) if lat else float("nan"),
    }


def run_phase(
    endpoint: str, name: str, make: Any, total: int, conns: int, depth: int
) -> dict[str, Any]:
    """Keep ``conns`` x ``depth`` requests in flight until ``total`` are answered."""
    res = pipelined_load(endpoint, make, total, conns, depth)
    return _summary(
        name, len(res.latencies), res.errors + res.unanswered, res.elapsed, res.latencies
    )


def find_target(candidates: list[str], target: str) -> str:
    """Return the client endpoint of the leader (or of a follower)."""
    for _ in range(100):
        rows = status_all(candidates, timeout=1.0)
        up = [r for r in rows if r["status"]]
        for r in up:
            role = r["status"]["role"]
            if (target == "leader") == (role == "leader") and r["status"].get("leader"):
                return r["endpoint"]
        time.sleep(0.1)
    raise SystemExit("bench: no leader found; is the ensemble running? (zraft status)")


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the selected phases and print one line per phase; 1 when a phase had errors."""
    endpoint = find_target(endpoints(args), args.target)
    value = "x" * args.value_size
    nkeys = 10000

    def write(rid: int) -> dict[str, Any]:
        return {"cmd": "set", "key": f"bench:{rid % nkeys:08d}", "value": value}

    def read(rid: int) -> dict[str, Any]:
        return {"cmd": "get", "key": f"bench:{rid % nkeys:08d}"}

    phases = {
        "write_sync": (write, args.sync_ops, 1, 1),
        "write_conc": (write, args.ops, args.clients, args.depth),
        "read_sync": (read, args.sync_ops, 1, 1),
        "read_conc": (read, args.ops, args.clients, args.depth),
    }
    print(
        f"zraft bench: target {endpoint} ({args.target}), value {args.value_size} B, "
        f"concurrent = {args.clients} conns x {args.depth} in flight"
    )
    results = []
    for name in args.phases.split(","):
        make, total, conns, depth = phases[name.strip()]
        res = run_phase(endpoint, name, make, total, conns, depth)
        results.append(res)
        print(
            f"  {name:<11} {res['ops_per_s']:>9.1f} ops/s   p50 {res['p50_ms']:>8.3f} ms   "
            f"p99 {res['p99_ms']:>8.3f} ms   ops {res['ops']}   errors {res['errors']}",
            flush=True,
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"target": endpoint, "results": results}, f, indent=2)
    return 0 if all(r["errors"] == 0 for r in results) else 1


def add_parsers(sub: Any) -> None:
    """Add ``bench`` to the ``zraft`` subparsers."""
    p = sub.add_parser("bench", help="benchmark a running ensemble: writes/s, reads/s, p50/p99")
    add_target(p)
    add_arguments(p)
    p.set_defaults(func=cmd_bench)
