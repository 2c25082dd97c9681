"""Deterministic simulation of the Raft core: seeded random schedules, invariants after every step.

Each schedule drives 3 or 5 in-memory nodes (core + MemoryStorage + a KV state
machine) through the core's one door while a seeded scheduler reorders,
delays, drops and duplicates messages, partitions the network (two-way,
isolated node, one-way), crashes nodes (keeping only what was fsynced, some
of them half-way through a Ready or an install) and restarts them, pauses
them, skews their clocks and moves leadership, and clients write, cas and
read. Nodes take snapshots copy-on-write while they apply, compact their
logs, stream snapshots to followers that fell behind and install them, and
restart from their newest durable snapshot (``tests.sim.snapshots``). Raft's
safety properties (Raft Figure 3; ``tests.sim.invariants``) are checked after
every step, with the snapshot ones: a snapshot, and a node restored from one,
equals the committed log applied up to its index, and no durable log starts
after its newest durable snapshot. The cluster must converge once healed,
and the client history must be linearizable (``zraft.check``).

A failure names its seed and replays exactly::

    python -m tests.sim --seed N --nodes K --steps S --verbose

Soak for as long as you like (exit status 1 at the first violation)::

    python -m tests.sim --schedules 20000

The negative controls at the end prove the simulation can see what it is
meant to see: each switch of ``zraft/unsafe.py`` that the simulation models
must be caught, by the invariant named next to it, within a bounded number of
seeds; so must a KV store whose snapshot capture forgets copy-on-write.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from tests import ROOT
from tests.sim import ALL_CHECKS, SimConfig, SimFailure, run_schedule
from tests.sim.invariants import (
    ACKED_WRITES,
    COMMIT_DURABLE,
    CONVERGENCE,
    ELECTION_SAFETY,
    FINAL_STATE,
    LEADER_COMPLETENESS,
    LINEARIZABILITY,
    LOG_MATCHING,
    SNAPSHOT_COVERAGE,
    SNAPSHOT_STATE,
    STATE_MACHINE_SAFETY,
)
from tests.sim.soak import Totals, nodes_for
from zraft.builtin import kv_snapshot

CI_SCHEDULES = 500  # seeds 0..499; even seeds run 3 nodes, odd seeds 5
CI_STEPS = 3000  # random steps per schedule, before the heal-and-converge phase
CHUNK = 50  # schedules per test case, so that a failure does not hide the other chunks
CONTROL_SEEDS = 200  # a negative control must be caught among this many seeds


@pytest.mark.timeout(600)
@pytest.mark.parametrize("first", range(0, CI_SCHEDULES, CHUNK))
def test_random_schedules_keep_every_invariant(first: int) -> None:
    """Raft Figure 3 (Election Safety, Log Matching, Leader Completeness, State Machine
    Safety), commit durability, acknowledged writes and linearizability hold under
    every fault the scheduler throws; the healed cluster converges."""
    totals = Totals()
    for seed in range(first, first + CHUNK):
        totals.add(run_schedule(SimConfig(seed=seed, nodes=nodes_for(seed, None), steps=CI_STEPS)))
    # The schedules must have exercised what they claim to (thresholds are about a
    # third of what seeds 0..499 actually do), or a green run would mean little.
    assert totals.steps >= CHUNK * CI_STEPS, totals.summary()
    assert totals.acked >= 10 * CHUNK, totals.summary()
    assert totals.reads_served >= 10 * CHUNK, totals.summary()
    assert totals.crashes >= CHUNK, totals.summary()
    assert totals.partitions >= CHUNK, totals.summary()
    assert totals.dropped >= 20 * CHUNK and totals.duplicated >= 5 * CHUNK, totals.summary()
    assert totals.unknown > 0, totals.summary()
    snaps = totals.snapshots  # per 50 seeds: ~1,000-1,400 written, 200-500 restarts, 20-30 installs
    assert snaps.taken >= 6 * CHUNK and snaps.compactions >= 5 * CHUNK, totals.summary()
    assert snaps.restarts >= CHUNK and snaps.lost > 0, totals.summary()
    assert snaps.installs >= 5 and snaps.streams > snaps.installs, totals.summary()


def test_same_seed_replays_the_identical_trace() -> None:
    """Determinism: one seed, one schedule, event for event."""
    for seed, nodes in ((11, 3), (12, 5)):
        config = SimConfig(seed=seed, nodes=nodes, steps=600, record_trace=True)
        first, second = run_schedule(config), run_schedule(config)
        assert len(first.trace) > 600
        assert first.trace == second.trace
        assert first == second  # every counter too


def test_different_seeds_give_different_schedules() -> None:
    a = run_schedule(SimConfig(seed=1, nodes=3, steps=300, record_trace=True))
    b = run_schedule(SimConfig(seed=2, nodes=3, steps=300, record_trace=True))
    assert a.trace != b.trace


def test_replay_command_reproduces_the_trace_in_another_process() -> None:
    """``python -m tests.sim --seed N --verbose`` prints the very trace a test saw, even
    under another hash seed (nothing in the run may depend on set or dict-of-str order)."""
    config = SimConfig(seed=21, nodes=5, steps=500, record_trace=True)
    expected = run_schedule(config).trace
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    out = subprocess.run(
        [sys.executable, "-m", "tests.sim", "--seed", "21", "--nodes", "5"]
        + ["--steps", "500", "--verbose"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.splitlines()
    assert out[:-1] == expected
    assert out[-1].startswith("OK in ") and "violations=0" in out[-1]


def first_failure(unsafe: str, checks: frozenset[str] = ALL_CHECKS) -> SimFailure:
    """Run seeds 0.. with ``unsafe`` on until one fails; fail the test if none does."""
    for seed in range(CONTROL_SEEDS):
        config = SimConfig(
            seed=seed,
            nodes=nodes_for(seed, None),
            steps=CI_STEPS,
            unsafe=frozenset({unsafe}),
            checks=checks,
        )
        try:
            run_schedule(config)
        except SimFailure as failure:
            return failure
    pytest.fail(f"{unsafe}: no violation among seeds 0..{CONTROL_SEEDS - 1}")


# Each control, the invariants it may first be caught by, and why. When this was
# written (with snapshots in every schedule), the first failing seeds were:
# skip_prev_log_check 13 (log_matching; 17 of seeds 0..199 fail),
# vote_on_term_only 0 (leader_completeness; 71 of 200), skip_fsync 0
# (commit_durable; all), and 0 again without that check (election_safety; 56 of
# 200), local_reads 0 (linearizability; 189 of 200), ack_before_commit 0
# (acked_writes; 193 of 200), and 0 again without that check (final_state; 190
# of 200), compact_unsnapshotted 0 (commit_durable; snapshot_coverage or
# commit_durable in 186 of 200), and 7 without those two checks
# (state_machine_safety; snapshot_state or state_machine_safety in 83 of 200).
# Replay: python -m tests.sim --seed N --unsafe X --verbose.
NEGATIVE_CONTROLS = [
    pytest.param(
        # Raft §5.3: a follower that appends after a mismatched prev entry holds an
        # (index, term) whose predecessor differs from the leader's copy; or, given
        # an empty append, it commits its own stale entry at that index.
        "skip_prev_log_check",
        ALL_CHECKS,
        {LOG_MATCHING, STATE_MACHINE_SAFETY},
        id="skip_prev_log_check-log_matching",
    ),
    pytest.param(
        # Raft §5.4.1: a node with a stale log wins an election and lacks a committed
        # entry; or it already overwrote that entry on a follower's disk, so that the
        # entry is no longer durable on a quorum.
        "vote_on_term_only",
        ALL_CHECKS,
        {LEADER_COMPLETENESS, COMMIT_DURABLE},
        id="vote_on_term_only-leader_completeness",
    ),
    pytest.param(
        # Figure 2, thesis §10.2.1: a committed entry is durable nowhere; or, before
        # anything commits, a restarted node forgot its vote and voted twice.
        "skip_fsync",
        ALL_CHECKS,
        {COMMIT_DURABLE, ELECTION_SAFETY},
        id="skip_fsync-commit_durable",
    ),
    pytest.param(
        # The same bug seen only through its consequences once crashes lose the data:
        # a restarted node forgets its vote (two leaders in one term) or its log (a
        # leader without committed entries, a committed index applied twice over).
        "skip_fsync",
        ALL_CHECKS - {COMMIT_DURABLE},
        {ELECTION_SAFETY, LEADER_COMPLETENESS, STATE_MACHINE_SAFETY, LOG_MATCHING, CONVERGENCE},
        id="skip_fsync-after_crash",
    ),
    pytest.param(
        # Thesis §6.4: a lagging follower or a deposed leader answers with stale data.
        "local_reads",
        ALL_CHECKS,
        {LINEARIZABILITY},
        id="local_reads-linearizability",
    ),
    pytest.param(
        # ARCHITECTURE.md: a write is answered only after it is committed and applied.
        "ack_before_commit",
        ALL_CHECKS,
        {ACKED_WRITES},
        id="ack_before_commit-acked_writes",
    ),
    pytest.param(
        # The same bug seen by its clients: an acknowledged write is lost when its
        # leader is deposed, so the final state or a later read contradicts the ack.
        "ack_before_commit",
        ALL_CHECKS - {ACKED_WRITES},
        {LINEARIZABILITY, FINAL_STATE},
        id="ack_before_commit-history",
    ),
    pytest.param(
        # ARCHITECTURE.md: compaction never removes an entry that is not inside a
        # durable snapshot. Compacting when a snapshot starts leaves a durable log
        # that starts after the newest durable snapshot, and committed entries that
        # a crash now would lose.
        "compact_unsnapshotted",
        ALL_CHECKS,
        {SNAPSHOT_COVERAGE, COMMIT_DURABLE},
        id="compact_unsnapshotted-snapshot_coverage",
    ),
    pytest.param(
        # The same bug seen only once a crash strikes while the snapshot is being
        # written: the node restarts with a log whose start no snapshot holds (a real
        # node refuses to start; here it comes up empty at the log's start), so its
        # state differs from the committed log's, or its record of applied terms does.
        "compact_unsnapshotted",
        ALL_CHECKS - {SNAPSHOT_COVERAGE, COMMIT_DURABLE},
        {SNAPSHOT_STATE, STATE_MACHINE_SAFETY, FINAL_STATE},
        id="compact_unsnapshotted-after_crash",
    ),
]


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("unsafe", "checks", "expected"), NEGATIVE_CONTROLS)
def test_negative_control_is_caught(
    unsafe: str, checks: frozenset[str], expected: set[str]
) -> None:
    """A suite that never fails would pass a broken zraft: each safety switch turned
    off must make the simulation fail, naming the property that broke."""
    failure = first_failure(unsafe, checks)
    assert failure.invariant in expected, str(failure)
    text = str(failure)
    assert text.startswith(f"seed={failure.seed} nodes={failure.nodes} step={failure.step}: ")
    assert f"--seed {failure.seed} --nodes {failure.nodes}" in text
    assert f"--unsafe {unsafe}" in text


def test_a_failure_replays_from_its_seed() -> None:
    """The replay command printed with a failure fails again, at the same step, the same way."""
    failure = first_failure("vote_on_term_only")
    config = failure.config
    again = pytest.raises(SimFailure, run_schedule, config).value
    assert str(again) == str(failure)
    cmd = [sys.executable, "-m", "tests.sim", "--seed", str(config.seed)]
    cmd += ["--nodes", str(config.nodes), "--steps", str(config.steps)]
    cmd += ["--unsafe", "vote_on_term_only"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[0] == str(failure).splitlines()[0]


class _Forgetful(dict):  # type: ignore[type-arg]
    """A copy-on-write table that never saves the old value of a changed key."""

    def __setitem__(self, key: object, value: object) -> None:
        pass


@pytest.mark.timeout(600)
def test_capture_without_copy_on_write_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Snapshots are read over several steps while entries apply: a KV capture that reads
    the live values instead of those of its index writes a snapshot of no committed state."""
    cow_init = kv_snapshot.Cow.__init__

    def forgetful(self: kv_snapshot.Cow, data: dict[str, Any], deadlines: dict[str, int]) -> None:
        cow_init(self, data, deadlines)
        self.saved = _Forgetful()

    monkeypatch.setattr(kv_snapshot.Cow, "__init__", forgetful)
    for seed in range(CONTROL_SEEDS):
        try:
            run_schedule(SimConfig(seed=seed, nodes=nodes_for(seed, None), steps=CI_STEPS))
        except SimFailure as failure:
            assert failure.invariant == SNAPSHOT_STATE, str(failure)
            assert "differs from the committed log" in failure.details
            return
    pytest.fail(f"no violation among seeds 0..{CONTROL_SEEDS - 1}")
