"""The fencing rules of leader payloads, driven by hand-fed times (no clock, no sleep)."""

from __future__ import annotations

import math

import pytest

from zraft.payload.fencing import Fence, Kind, LeaderLease, RoleGate, lease_seconds

GRACE, HYST = 0.2, 0.2


def test_lease_is_the_election_timeout_minus_a_tick_shrunk_by_the_drift_bound() -> None:
    """Voters refuse votes for (election ticks - 1) ticks of real time at least."""
    assert lease_seconds(1000, 10, 0) == pytest.approx(0.99)
    assert lease_seconds(1000, 10, 10_000) == pytest.approx(0.99 * 0.99)
    assert lease_seconds(500, 10, 500_000) == pytest.approx(0.245)


def test_lease_counts_from_when_the_round_was_issued_and_only_in_its_term() -> None:
    """Thesis §6.4.1: the lease starts when the heartbeats were sent, not answered."""
    lease = LeaderLease(1.0)
    lease.restart(term=3)
    lease.confirmed(term=3, issued_at=10.0)
    assert lease.until == 11.0
    lease.confirmed(term=3, issued_at=9.5)  # an older round never shortens it
    assert lease.until == 11.0
    lease.confirmed(term=2, issued_at=10.5)  # an answer from another term buys nothing
    assert lease.until == 11.0
    lease.restart(term=4)
    assert lease.until == -math.inf


def test_a_fence_that_lapsed_never_comes_back() -> None:
    """Once a payload had to stop, a later renewal must not revive that same run."""
    fence = Fence(term=1, stop_at=5.0)
    fence.extend(6.0, now=4.0)
    assert fence.valid(5.5) and fence.stop_at == 6.0
    fence.extend(9.0, now=6.0)  # lapsed at 6.0: no extension
    assert not fence.valid(6.5) and fence.stop_at == 6.0
    fence.revoke()
    assert not fence.valid(-1e9)


class Leader:
    """A node's facts as the driver feeds them to the gate."""

    def __init__(self, gate: RoleGate) -> None:
        self.gate = gate
        self.lease = LeaderLease(1.0)
        self.term = 0

    def elect(self, term: int) -> None:
        self.term = term
        self.lease.restart(term)

    def update(self, now: float, *, leader: bool = True, committed: bool = True, lid: str = "n1"):
        return self.gate.update(
            now,
            is_leader=leader,
            term=self.term,
            leader_id=lid if leader else lid,
            committed_in_term=committed,
            lease=self.lease,
        )


def test_leader_payload_waits_for_commit_in_term_lease_and_hysteresis() -> None:
    node = Leader(RoleGate(HYST, GRACE))
    node.elect(2)
    assert node.update(0.0, committed=False).kind is Kind.NONE
    assert node.update(0.1, committed=True).kind is Kind.NONE  # no lease yet
    node.lease.confirmed(2, issued_at=0.1)  # lease until 1.1, stop at 0.9
    assert node.update(0.15).kind is Kind.NONE  # hysteresis starts now
    assert node.update(0.3).kind is Kind.NONE
    d = node.update(0.36)
    assert d.kind is Kind.LEADER and d.term == 2
    assert d.fence is not None and d.fence.stop_at == pytest.approx(0.9)


def test_leader_payload_stops_grace_before_the_lease_ends_and_restarts_as_a_new_run() -> None:
    node = Leader(RoleGate(0.0, GRACE))
    node.elect(1)
    node.lease.confirmed(1, issued_at=0.0)
    run = node.update(0.0)
    assert run.kind is Kind.LEADER
    node.lease.confirmed(1, issued_at=0.5)  # renewed: stop at 1.3
    assert node.update(0.6) is run and run.fence.stop_at == pytest.approx(1.3)
    # No quorum answers any more: the run must stop grace before the lease ends.
    assert node.update(1.29) is run
    stopped = node.update(1.3)
    assert stopped.kind is Kind.NONE and not run.fence.valid(1.3)
    # Late answers revive nothing: the old fence stays dead, a new run starts.
    node.lease.confirmed(1, issued_at=1.35)
    again = node.update(1.4)
    assert again.kind is Kind.LEADER and again.gen > run.gen
    assert not run.fence.valid(1.4) and again.fence.valid(1.4)


def test_step_down_stops_the_leader_payload_at_once() -> None:
    node = Leader(RoleGate(0.0, GRACE))
    node.elect(1)
    node.lease.confirmed(1, issued_at=0.0)
    run = node.update(0.1)
    assert node.update(0.2, leader=False, lid="n2").kind is Kind.NONE
    assert not run.fence.valid(0.2)


def test_flapping_leadership_shorter_than_the_hysteresis_never_starts_the_payload() -> None:
    node = Leader(RoleGate(0.5, GRACE))
    starts = 0
    now = 0.0
    for term in range(1, 6):  # leader for 0.3 s, then follower for 0.1 s, again and again
        node.elect(term)
        for _ in range(3):
            node.lease.confirmed(term, issued_at=now)
            if node.update(now).kind is Kind.LEADER:
                starts += 1
            now += 0.1
        node.update(now, leader=False, lid="n2")
        now += 0.1
    assert starts == 0
    # A leadership that holds longer than the hysteresis does start it.
    node.elect(9)
    kinds = []
    for _ in range(7):
        node.lease.confirmed(9, issued_at=now)
        kinds.append(node.update(now).kind)
        now += 0.1
    assert kinds[-1] is Kind.LEADER and kinds[:5] == [Kind.NONE] * 5


def test_follower_payload_survives_short_elections_and_stops_on_leadership() -> None:
    gate = RoleGate(0.5, GRACE)
    node = Leader(gate)
    node.elect(1)
    assert node.update(0.0, leader=False, lid="n2").kind is Kind.NONE
    run = node.update(0.5, leader=False, lid="n2")
    assert run.kind is Kind.FOLLOWER and run.leader_id == "n2"
    assert node.update(0.6, leader=False, lid="").kind is Kind.FOLLOWER  # election going on
    assert node.update(0.9, leader=False, lid="n3") is run  # same run, new leader
    assert node.update(1.0, leader=False, lid="").kind is Kind.FOLLOWER
    assert node.update(1.5, leader=False, lid="").kind is Kind.NONE  # no leader for 0.5 s
    run = [node.update(t, leader=False, lid="n3") for t in (1.6, 2.1)][-1]
    assert run.kind is Kind.FOLLOWER
    node.elect(2)
    assert node.update(2.2, committed=False).kind is Kind.NONE  # leader now: follower stops


def test_revoke_stops_everything_for_good() -> None:
    node = Leader(RoleGate(0.0, GRACE))
    node.elect(1)
    node.lease.confirmed(1, issued_at=0.0)
    run = node.update(0.1)
    assert node.gate.revoke().kind is Kind.NONE and not run.fence.valid(0.1)
    node.lease.confirmed(1, issued_at=0.2)
    assert node.update(0.3).kind is Kind.NONE


def test_a_lapse_seen_by_a_payload_is_final_even_for_a_driver_with_an_older_now() -> None:
    """The payload thread saw the fence run out and returned; the driver, holding a
    ``now`` taken a little earlier, must not revive it (found by review)."""
    fence = Fence(term=1, stop_at=5.0)
    assert not fence.valid(5.001)  # the payload thread's clock
    fence.extend(9.0, now=4.99)  # the driver's older clock
    assert fence.lapsed and not fence.valid(4.99) and fence.stop_at == 5.0


def test_the_gate_starts_a_new_run_when_the_payload_saw_its_fence_lapse() -> None:
    """Otherwise the node keeps leading, renewing a fence nobody runs under, and the
    leader payload never comes back (found by review)."""
    node = Leader(RoleGate(0.0, GRACE))
    node.elect(1)
    node.lease.confirmed(1, issued_at=0.0)
    run = node.update(0.1)
    assert run.kind is Kind.LEADER
    run.fence.valid(run.fence.stop_at)  # the keeper or the payload saw the end first
    node.lease.confirmed(1, issued_at=0.7)
    assert node.update(0.75).kind is Kind.NONE
    again = node.update(0.76)
    assert again.kind is Kind.LEADER and again.gen > run.gen and again.fence.valid(0.76)
