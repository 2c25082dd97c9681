"""The command line: replay one schedule, or soak-test many (``python -m tests.sim --help``).

Replay a failure exactly (the failure message prints this command)::

    python -m tests.sim --seed 1234 --nodes 5 --steps 3000 --verbose

Soak (exit status 1 at the first violation, with its seed and replay command)::

    python -m tests.sim --schedules 20000 [--nodes 3|5] [--first-seed N] [--steps N] [--jobs N]

Without ``--nodes`` a soak alternates 3 nodes (even seeds) and 5 nodes (odd
seeds), as the CI test does. ``--unsafe NAME`` turns on a negative control
(zraft/unsafe.py): the run is then expected to fail.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from tests.sim.config import SWITCHES, Report, SimConfig, SimFailure
from tests.sim.invariants import ALL_CHECKS
from tests.sim.schedule import run_schedule
from tests.sim.snapshots import SnapshotStats

DEFAULT_STEPS = 3000  # as in CI (tests/sim/test_simulation.py)


def nodes_for(seed: int, nodes: int | None) -> int:
    """Return the cluster size of ``seed``: ``nodes`` if given, else 3 for even seeds, 5 odd."""
    if nodes is not None:
        return nodes
    return 3 if seed % 2 == 0 else 5


@dataclass
class Totals:
    """Sums over the schedules of a soak, for the summary line."""

    schedules: int = 0
    steps: int = 0
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    crashes: int = 0
    partitions: int = 0
    proposals: int = 0
    acked: int = 0
    reads_served: int = 0
    unknown: int = 0
    undecided: int = 0
    violations: int = 0
    snapshots: SnapshotStats = field(default_factory=SnapshotStats)

    def add(self, r: Report) -> None:
        """Count one finished schedule."""
        self.schedules += 1
        self.steps += r.steps
        self.delivered += r.delivered
        self.dropped += r.dropped
        self.duplicated += r.duplicated
        self.crashes += r.crashes
        self.partitions += r.partitions
        self.proposals += r.clients.proposals
        self.acked += r.clients.acked
        self.reads_served += r.clients.reads_served
        self.unknown += r.clients.unknown
        self.undecided += r.undecided
        self.snapshots.add(r.snapshots)

    def summary(self) -> str:
        """Return the one-line summary."""
        s = self.snapshots
        return (
            f"schedules={self.schedules} steps={self.steps} delivered={self.delivered} "
            f"dropped={self.dropped} duplicated={self.duplicated} crashes={self.crashes} "
            f"partitions={self.partitions} proposals={self.proposals} acked={self.acked} "
            f"reads_served={self.reads_served} unknown_outcomes={self.unknown} "
            f"histories_undecided={self.undecided} violations={self.violations} "
            f"snapshots={s.taken} snapshots_lost_in_crash={s.lost} compactions={s.compactions} "
            f"streams={s.streams} streams_lost={s.streams_lost} installs={s.installs} "
            f"installs_over_a_longer_log={s.divergent} "
            f"restarts_from_snapshot={s.restarts} installs_finished_at_start={s.finished_installs}"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.sim", description="Deterministic simulation of the zraft core."
    )
    p.add_argument("--seed", type=int, help="replay this one schedule")
    p.add_argument("--schedules", type=int, default=1, help="soak: how many schedules to run")
    p.add_argument("--first-seed", type=int, default=0, help="soak: the first seed")
    p.add_argument("--nodes", type=int, choices=(3, 5), help="cluster size (default: mixed)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="random steps per schedule")
    p.add_argument(
        "--unsafe", action="append", default=[], choices=sorted(SWITCHES), help="negative control"
    )
    p.add_argument(
        "--skip-check",
        action="append",
        default=[],
        choices=sorted(ALL_CHECKS),
        help="do not enforce this invariant",
    )
    p.add_argument("--verbose", action="store_true", help="print the trace of every step")
    p.add_argument("--jobs", type=int, default=1, help="soak: worker processes (default 1)")
    args = p.parse_args(argv)
    if args.jobs < 1 or (args.jobs > 1 and args.verbose):
        p.error("--jobs must be >= 1, and 1 with --verbose")
    return args


def _run(config: SimConfig) -> Report | str:
    """Run one schedule; return its report, or the failure's message (picklable)."""
    try:
        return run_schedule(config)
    except SimFailure as failure:
        return str(failure)


def _outcomes(configs: list[SimConfig], jobs: int) -> Iterator[Report | str]:
    """Yield each schedule's outcome in seed order, from ``jobs`` processes."""
    if jobs == 1:
        for config in configs:
            yield _run(config)
        return
    with multiprocessing.Pool(jobs) as pool:
        yield from pool.imap(_run, configs, chunksize=4)


def main(argv: list[str] | None = None) -> int:
    """Run the schedules; return 0 if all passed, 1 at the first violation."""
    args = parse_args(argv)
    first = args.seed if args.seed is not None else args.first_seed
    count = 1 if args.seed is not None else args.schedules
    totals = Totals()
    started = last_progress = time.monotonic()
    configs = [
        SimConfig(
            seed=seed,
            nodes=nodes_for(seed, args.nodes),
            steps=args.steps,
            unsafe=frozenset(args.unsafe),
            checks=ALL_CHECKS - frozenset(args.skip_check),
            verbose=args.verbose,
        )
        for seed in range(first, first + count)
    ]
    outcomes = _outcomes(configs, args.jobs)
    for seed, outcome in zip(range(first, first + count), outcomes, strict=True):
        if isinstance(outcome, str):
            totals.violations += 1
            print(outcome, flush=True)
            print(f"FAILED after {time.monotonic() - started:.1f}s: {totals.summary()}")
            return 1
        totals.add(outcome)
        now = time.monotonic()
        if count > 1 and (now - last_progress >= 10 or seed == first + count - 1):
            last_progress = now
            print(
                f"[{now - started:7.1f}s] {totals.schedules}/{count} schedules "
                f"(seeds {first}..{seed}), {totals.steps} steps, {totals.acked} acked, "
                f"0 violations",
                flush=True,
            )
    print(f"OK in {time.monotonic() - started:.1f}s: {totals.summary()}")
    return 0
