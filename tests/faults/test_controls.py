"""Negative controls: each test-only switch that breaks safety must make its scenario fail.

A fault suite that never sees a violation would pass a broken zraft too. Each
switch of ``zraft/unsafe.py`` removes one protection; here it is turned on for
the scenario built to expose it, and the run must show the specific figure the
switch breaks (not just any error). A scenario that depends on a race gets a
few seeds; the first that shows the violation ends the test. The same
scenarios without the switch pass in ``test_faults.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.faults.test_faults import explain, run_and_report


def lost(res: dict[str, Any]) -> bool:
    return bool(res.get("lost"))


def not_linearizable(res: dict[str, Any]) -> bool:
    return res.get("verdict") == "not linearizable"


def diverged(res: dict[str, Any]) -> bool:
    return bool(res.get("prefix_mismatch")) or res.get("hashes") in ("differ", "not-converged")


def node_lost(res: dict[str, Any]) -> bool:
    """A node could not start again from what it left on disk (and never answered)."""
    return res.get("hashes") == "unreachable"


# (switches, scenario, nodes, first seed, what must be seen, attempts)
CONTROLS: list[tuple[str, str, int, int, Callable[[dict[str, Any]], bool], int]] = [
    # Power loss without fsync: acknowledged writes vanish with the page cache.
    ("skip_fsync", "power-loss", 3, 201, lost, 2),
    # An isolated old leader answers reads from its stale state.
    ("local_reads", "isolate-leader", 3, 202, not_linearizable, 2),
    # Writes acknowledged by a leader that never commits them (cut off, then overwritten).
    ("ack_before_commit", "overwrite-suffix", 3, 203, lost, 2),
    # The deposed leader keeps part of its stale suffix under the new leader's entries.
    ("skip_prev_log_check", "overwrite-suffix", 3, 204, diverged, 2),
    # A lagging node is elected and overwrites committed entries.
    ("vote_on_term_only", "stale-candidate", 5, 205, lambda r: lost(r) or diverged(r), 2),
    # Compaction before the snapshot is durable: killed while writing it, a node
    # finds a log that no snapshot covers and refuses to start.
    ("compact_unsnapshotted", "snapshot-kill-writer", 3, 206, node_lost, 2),
    # A transfer corrupted in transit is published and switched in unchecked: the
    # restore fails after the log is gone, and the follower never starts again.
    ("skip_snapshot_verify", "snapshot-corrupt-transfer", 3, 207, node_lost, 2),
    # A follower that drops its log when a snapshot starts to arrive, killed mid-receive,
    # is left with a torn snapshot and no log: it refuses to start.
    ("snapshot_in_place", "snapshot-kill-install", 3, 208, node_lost, 2),
]


@pytest.mark.integration
@pytest.mark.timeout(420)
@pytest.mark.parametrize(
    ("switches", "scenario", "nodes", "seed", "expect", "attempts"),
    CONTROLS,
    ids=[c[0] for c in CONTROLS],
)
def test_unsafe_switch_makes_its_scenario_fail(
    switches: str,
    scenario: str,
    nodes: int,
    seed: int,
    expect: Callable[[dict[str, Any]], bool],
    attempts: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    results = []
    for attempt in range(attempts):
        res = run_and_report(
            capsys,
            tmp_path / f"attempt{attempt}",
            scenario=scenario,
            nodes=nodes,
            seed=seed + 1000 * attempt,
            unsafe=switches,
        )
        results.append(res)
        if expect(res):
            assert not res["passed"]
            return
    pytest.fail(
        f"{switches} did not break {scenario} in {attempts} runs:\n"
        + "\n\n".join(explain(r) for r in results)
    )
