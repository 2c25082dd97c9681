"""What a schedule is made of: its options, its fault mix, its report and its failure.

A schedule is fully named by ``SimConfig`` (seed, node count, step count,
negative controls, enforced invariants); ``Profile`` is drawn from the seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from tests.sim.clients import ClientStats
from tests.sim.invariants import ALL_CHECKS
from tests.sim.snapshots import SnapshotStats
from zraft.unsafe import CORE_SWITCHES

DRIVER_SWITCHES = frozenset(
    {"skip_fsync", "local_reads", "ack_before_commit", "compact_unsnapshotted"}
)
SWITCHES = CORE_SWITCHES | DRIVER_SWITCHES
"""Negative controls the simulation understands (see zraft/unsafe.py).

``compact_unsnapshotted`` (the driver compacts the log when a snapshot starts,
before it is durable) is the simulation's own (``tests.sim.snapshots``).
"""

TRACE_TAIL = 30  # events quoted in a failure


@dataclass(frozen=True)
class Profile:
    """The fault mix and core options of one schedule, drawn from its seed.

    Weights are relative to a running node's tick weight (3) and to the
    delivery weight (3 per message in flight), so faults come at a rate per
    unit of simulated time, and a larger backlog is drained faster.
    """

    pre_vote: bool  # core PreVote (thesis §9.6); on in every deployment by default
    check_quorum: bool  # core CheckQuorum and leader lease (thesis §6.2, §4.2.3); likewise
    heartbeat_ticks: int  # core heartbeat interval, in ticks
    election_ticks: int  # core election timeout, in ticks
    max_inflight: int  # core append window per follower
    max_entries: int  # core entries per append (1 makes every suffix travel in pieces)
    drop: float  # a message is dropped instead of delivered with about this odds
    duplicate: float  # ... or duplicated
    reorder: float  # odds that a delivery ignores the per-link FIFO order
    defer_ready: float  # chance a node's Ready waits for a later step (group commit)
    partition: float  # weight of a partition (new, or replacing the current one), all nodes up
    crash: float  # weight of a crash, per node up
    pause: float  # weight of a pause (a stopped process: no ticks, no input), per node up
    skew: float  # weight of a clock-rate change of one node, per node up
    clients: float  # weight of a client write (reads the same, cas a third)
    transfer: float  # weight of a leadership transfer
    outage: float  # odds that a crash or partition lasts long (tests.sim.events.OUTAGE_STEPS)
    snapshot_every: int  # a node snapshots after this many applied entries
    snapshot_trailing: int  # entries kept below the newest snapshot when compacting
    snapshot_pace: float  # weight of reading one chunk of a snapshot under way, per node
    install_crash: float  # odds that a follower crashes as a snapshot it received goes in

    @classmethod
    def draw(cls, rng: random.Random) -> Profile:
        """Return a random profile: calm, moderate or (mostly) stormy."""
        mood = rng.choice(("calm", "moderate", "stormy", "stormy"))
        scale = {"calm": 0.3, "moderate": 1.0, "stormy": 3.0}[mood]
        heartbeat, election = rng.choice(((1, 5), (1, 6), (2, 10)))
        # Safety may not depend on the liveness options: switch them off now and then.
        pre_vote, check_quorum = rng.choice(((True, True),) * 5 + ((False, True), (True, False)))
        if rng.random() < 0.05:
            pre_vote = check_quorum = False
        return cls(
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            heartbeat_ticks=heartbeat,
            election_ticks=election,
            max_inflight=rng.choice((2, 8, 64)),
            max_entries=rng.choice((1, 3, 1024)),
            drop=rng.choice((0.0, 0.02, 0.08)) * scale,
            duplicate=rng.choice((0.0, 0.02, 0.05)),
            reorder=rng.choice((0.05, 0.2, 0.5)),
            defer_ready=rng.choice((0.0, 0.2, 0.5)),
            partition=0.1 * scale,
            crash=0.02 * scale,
            pause=rng.choice((0.0, 0.01)) * scale,
            skew=rng.choice((0.0, 0.01)) * scale,
            clients=rng.choice((3.0, 6.0, 10.0)),
            transfer=rng.choice((0.0, 0.05)),
            outage=rng.choice((0.05, 0.2, 0.5)),
            snapshot_every=rng.choice((1, 2, 3, 5, 8, 13, 30)),
            snapshot_trailing=rng.choice((0, 0, 1, 2, 5, 10)),
            snapshot_pace=rng.choice((1.0, 3.0, 10.0)),
            install_crash=rng.choice((0.05, 0.2, 0.5)),
        )


@dataclass(frozen=True)
class SimConfig:
    """Parameters of one schedule. Everything else follows from them deterministically."""

    seed: int
    nodes: int = 3
    steps: int = 3000
    unsafe: frozenset[str] = frozenset()  # negative controls, a subset of SWITCHES
    checks: frozenset[str] = ALL_CHECKS  # which invariants fail the run
    verbose: bool = False  # print the trace while running
    record_trace: bool = False  # keep the whole trace in the report (for replay tests)

    def __post_init__(self) -> None:
        unknown = sorted(self.unsafe - SWITCHES)
        if unknown:
            raise ValueError(f"unknown unsafe switch(es): {', '.join(unknown)}")
        if self.nodes < 1:
            raise ValueError("need at least one node")

    def replay_command(self) -> str:
        """Return the shell command that replays this schedule with its trace."""
        cmd = f"python -m tests.sim --seed {self.seed} --nodes {self.nodes} --steps {self.steps}"
        for name in sorted(self.unsafe):
            cmd += f" --unsafe {name}"
        for name in sorted(ALL_CHECKS - self.checks):
            cmd += f" --skip-check {name}"
        return cmd + " --verbose"


@dataclass
class Report:
    """What one schedule did. ``trace`` is filled only with ``record_trace``."""

    seed: int
    nodes: int
    steps: int = 0
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    crashes: int = 0
    partitions: int = 0
    leaders: int = 0  # terms that had a leader
    commit: int = 0  # highest index committed
    clients: ClientStats = field(default_factory=ClientStats)
    snapshots: SnapshotStats = field(default_factory=SnapshotStats)
    undecided: bool = False  # the linearizability check ran out of budget
    trace: list[str] = field(default_factory=list)


class SimFailure(AssertionError):
    """A schedule broke an invariant. The message starts with
    ``seed=<n> nodes=<k> step=<i>: <invariant>: <details>``, then says how to
    replay it and quotes the last events of the trace."""

    def __init__(self, config: SimConfig, step: int, invariant: str, details: str, tail: str):
        self.config = config
        self.seed = config.seed
        self.nodes = config.nodes
        self.step = step
        self.invariant = invariant
        self.details = details
        unsafe = f" unsafe={','.join(sorted(config.unsafe))}" if config.unsafe else ""
        super().__init__(
            f"seed={config.seed} nodes={config.nodes} step={step}: {invariant}: {details}\n"
            f"replay: {config.replay_command()}{'' if not unsafe else '  #' + unsafe}\n"
            f"last {TRACE_TAIL} events:\n{tail}"
        )
