"""When a payload may run: the leader's lease, its fence, and the role gate. Pure.

Nothing here reads a clock: every method takes ``now`` (seconds of the
host's ``CLOCK_MONOTONIC``, i.e. ``time.monotonic()``), so the rules are unit
tested by feeding times.

Why the lease is safe (ARCHITECTURE.md "Plugins"; thesis §6.4.1 uses the same
argument for lease reads):

* The leader issues a heartbeat round at time ``t`` (by its clock) and a
  quorum acknowledges it.
* Each of those voters heard from the leader after ``t``. With CheckQuorum, a
  voter refuses non-forced votes until one election timeout has passed
  since it last heard from its leader (``Raft.step``'s ``in_lease``). A voter
  that restarts refuses them for one election timeout from its start
  (``boot_lease``). The leader counts itself in that quorum: deposed by a
  higher term in a reply, it refuses votes for one election timeout too
  (``own_lease_until``).
* Ticks never run ahead of real time by more than one tick, and the ticks a
  stalled loop owes run before the messages that arrived meanwhile
  (``Node._loop_round``), so every such voter refuses votes until at least
  ``t + election_timeout - tick`` by its own clock.
* Any new leader needs one of those voters. So no other node can be leader
  before ``t + (election_timeout - tick) * (1 - drift)`` by this leader's
  clock, where ``drift`` bounds how much faster this clock may run than a
  voter's (``payload.clock_drift_ppm``).

Forced votes (leadership transfer) skip the voters' lease, so the driver
stops every leader payload before it hands leadership over. The payload is
sent SIGTERM ``stop_grace_ms + KILL_MARGIN_S`` before the lease ends and
SIGKILL ``KILL_MARGIN_S`` before it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

NEVER = -math.inf
# The keeper's SIGKILL lands this long before the lease ends, not at its last
# instant: room for the keeper to wake up and the kernel to end the processes.
KILL_MARGIN_S = 0.05


def lease_seconds(election_timeout_ms: int, tick_ms: int, clock_drift_ppm: int) -> float:
    """Return how long a quorum acknowledgement keeps other leaders out, in seconds."""
    return (election_timeout_ms - tick_ms) / 1000.0 * (1.0 - clock_drift_ppm / 1e6)


class RaftTiming(Protocol):
    """The ``[raft]`` settings the lease depends on (``zraft.config.RaftConfig`` has them)."""

    @property
    def tick_ms(self) -> int: ...
    @property
    def heartbeat_interval_ms(self) -> int: ...
    @property
    def election_timeout_ms(self) -> int: ...
    @property
    def check_quorum(self) -> bool: ...


class PayloadTiming(Protocol):
    """The ``[payload]`` settings the lease depends on (``zraft.config.PayloadConfig``)."""

    @property
    def stop_grace_ms(self) -> int: ...
    @property
    def clock_drift_ppm(self) -> int: ...


def lease_problem(raft: RaftTiming, payload: PayloadTiming) -> str | None:
    """Tell why leader payloads cannot be fenced with these timings, or None if they can.

    The lease must leave room for the payload's stop (SIGTERM, the grace,
    ``KILL_MARGIN_S``) and for two heartbeat rounds to renew it. Checked by
    the configuration when ``[payload] leader`` is set, and through
    ``fencing_problem`` when a plugin has a leader payload.
    """
    r, p = raft, payload
    lease_ms = 1000 * lease_seconds(r.election_timeout_ms, r.tick_ms, p.clock_drift_ppm)
    margin_ms = 1000 * KILL_MARGIN_S
    if p.stop_grace_ms + margin_ms + 2 * r.heartbeat_interval_ms < lease_ms:
        return None
    return (
        f"{p.stop_grace_ms} ms leaves no room to renew the leader lease of {lease_ms:.0f} ms "
        f"(payload.stop_grace_ms + {margin_ms:.0f} ms + 2 x raft.heartbeat_interval_ms must be "
        "below it; lower it or raise raft.election_timeout_ms)"
    )


def fencing_problem(
    raft: RaftTiming, payload: PayloadTiming, has_leader_payload: bool
) -> str | None:
    """Tell why a node's leader payloads cannot be fenced, or None if they can (or there are none).

    ``has_leader_payload``: some plugin implements ``zraft_became_leader``.
    The fence needs CheckQuorum (the followers' lease) and timings that
    leave room to renew the lease (``lease_problem``). The node refuses to
    start, and ``zraft check-config --node`` fails, with ``"a plugin has a
    leader payload, but " + problem``.
    """
    if not has_leader_payload:
        return None
    if not raft.check_quorum:
        return "raft.check_quorum is false: the fence relies on the followers' lease"
    return lease_problem(raft, payload)


class LeaderLease:
    """The time until which no other node can have become leader, as this leader sees it.

    Owned by the driver thread. ``restart(term)`` at every change of role or
    term; ``confirmed(term, issued_at)`` when a quorum acknowledged a
    heartbeat round issued at ``issued_at`` in ``term``.
    """

    def __init__(self, lease_s: float) -> None:
        self.lease_s = lease_s
        self.term = 0
        self.until = NEVER

    def restart(self, term: int) -> None:
        """Forget every acknowledgement: a new term (or role) starts with no lease."""
        self.term = term
        self.until = NEVER

    def confirmed(self, term: int, issued_at: float) -> None:
        """Extend the lease by a quorum acknowledgement of a round issued at ``issued_at``."""
        if term == self.term:
            self.until = max(self.until, issued_at + self.lease_s)


class Fence:
    """One payload run's right to act: valid until ``stop_at``, never again once lapsed.

    The driver thread extends it; payload threads (and, through renewals,
    the keeper process) read it. Once anyone has seen ``now >= stop_at`` the
    fence is dead for good (``lapsed``), even if the leader's lease is
    renewed later, possibly by a driver whose ``now`` is a little older: the
    payload stops, and the gate starts a new run with a new fence. Plain
    attribute reads and writes under the GIL need no lock; a race can only
    end a fence early, never revive one.
    """

    def __init__(self, term: int, stop_at: float) -> None:
        self.term = term
        self.stop_at = stop_at
        self.lapsed = False

    def valid(self, now: float) -> bool:
        """Tell whether the payload may still act at ``now``; marks the fence lapsed if not."""
        if self.lapsed:
            return False
        if now >= self.stop_at:
            self.lapsed = True
            return False
        return True

    def extend(self, stop_at: float, now: float) -> None:
        """Move ``stop_at`` later, unless the fence has already lapsed."""
        if self.valid(now) and stop_at > self.stop_at:
            self.stop_at = stop_at

    def revoke(self) -> None:
        """End the fence now (step-down, stop, handing leadership over, a lapse seen)."""
        self.lapsed = True
        self.stop_at = NEVER


class Kind(Enum):
    """Which role payload should run."""

    NONE = "none"
    LEADER = "leader"
    FOLLOWER = "follower"


@dataclass(frozen=True, slots=True)
class Desired:
    """The payload that should run now. ``gen`` changes whenever a new run must start."""

    kind: Kind
    gen: int
    term: int = 0
    leader_id: str = ""
    fence: Fence | None = field(default=None, compare=False)


class RoleGate:
    """Turn the node's role, commit and lease into the payload role that should run.

    * A leader payload runs only while the node is leader, has committed an
      entry of its own term, and holds a lease that ends more than
      ``grace_s`` from now (so a payload told to stop has ``grace_s`` to do so
      before any other node could be elected). It starts once that has held
      for ``hysteresis_s``, so a leadership that flaps never starts it. It is
      stopped at once when any condition fails.
    * A follower payload runs while the node follows a known leader; it starts
      once that has held for ``hysteresis_s`` and survives a gap (an election,
      a lost leader) shorter than ``hysteresis_s``. It stops at once when the
      node becomes leader.
    """

    def __init__(self, hysteresis_s: float, grace_s: float) -> None:
        self.hysteresis_s = hysteresis_s
        self.grace_s = grace_s
        self.desired = Desired(Kind.NONE, 0)
        self._leader_since: float | None = None
        self._follower_since: float | None = None
        self._follower_lost_at: float | None = None
        self._gen = 0

    def update(
        self,
        now: float,
        *,
        is_leader: bool,
        term: int,
        leader_id: str,
        committed_in_term: bool,
        lease: LeaderLease,
    ) -> Desired:
        """Return the payload that should run at ``now`` (a new ``gen`` means a new run)."""
        d = self.desired
        stop_at = lease.until - self.grace_s
        leader_ok = is_leader and committed_in_term and lease.term == term and now < stop_at
        if d.kind is Kind.LEADER:
            assert d.fence is not None
            d.fence.extend(stop_at, now)
            if leader_ok and d.term == term and d.fence.valid(now):
                return d
            d.fence.revoke()
            self._leader_since = None
            return self._set(Kind.NONE)
        if leader_ok:
            if self._leader_since is None:
                self._leader_since = now
            if now - self._leader_since >= self.hysteresis_s:
                self._follower_since = self._follower_lost_at = None
                return self._set(Kind.LEADER, term, leader_id, Fence(term, stop_at))
        else:
            self._leader_since = None

        following = not is_leader and bool(leader_id)
        if d.kind is Kind.FOLLOWER:
            if is_leader:
                return self._set(Kind.NONE)
            if following:
                self._follower_lost_at = None
                return d
            if self._follower_lost_at is None:
                self._follower_lost_at = now
            if now - self._follower_lost_at >= self.hysteresis_s:
                self._follower_lost_at = None
                return self._set(Kind.NONE)
            return d
        if following:
            if self._follower_since is None:
                self._follower_since = now
            if now - self._follower_since >= self.hysteresis_s:
                self._follower_since = None
                return self._set(Kind.FOLLOWER, term, leader_id)
        else:
            self._follower_since = None
        return d

    def revoke(self) -> Desired:
        """Stop whatever runs (the node is stopping); nothing starts again."""
        if self.desired.fence is not None:
            self.desired.fence.revoke()
        self.hysteresis_s = math.inf
        return self._set(Kind.NONE)

    def _set(self, kind: Kind, term: int = 0, leader_id: str = "", fence: Fence | None = None):
        if kind is Kind.NONE and self.desired.kind is Kind.NONE:
            return self.desired
        self._gen += 1
        self.desired = Desired(kind, self._gen, term, leader_id, fence)
        return self.desired
