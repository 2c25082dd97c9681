"""The driver's side of payloads: lease probes, the role gate, and the runner.

The node (``zraft/node/loop.py``) owns one ``Payloads`` and calls it from
its loop (driver thread only): ``on_tick`` every tick, ``on_read_state`` for
every lease probe's ReadIndex answer, ``on_soft_state`` on role changes,
``on_applied`` after applying. Nothing here blocks: hooks run on the
runner's threads, and nothing here calls the core.

The lease (``fencing.py``) is renewed by ReadIndex rounds of purpose
``LEASE``: ``on_tick`` returns a probe context once per heartbeat interval
while the node leads and some plugin has a leader payload; the node starts
the round and reports it with ``probe_issued``. The time a round is issued
is the start of the lease it buys (thesis §6.4.1), once a quorum has
answered it.
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import TYPE_CHECKING, Any

import pluggy

from zraft.core import RaftStatus, ReadContext, ReadPurpose, Role
from zraft.metrics import Metrics
from zraft.payload.context import NodeInfo
from zraft.payload.fencing import (
    KILL_MARGIN_S,
    NEVER,
    Kind,
    LeaderLease,
    RoleGate,
    fencing_problem,
    lease_seconds,
)
from zraft.payload.runner import PayloadRunner

if TYPE_CHECKING:
    from zraft.config import EnsembleConfig

log = logging.getLogger("zraft.payload")


class Payloads:
    """Decides which role payload runs, keeps the leader's lease, and feeds the runner."""

    def __init__(
        self,
        config: EnsembleConfig,
        node_id: str,
        pm: pluggy.PluginManager,
        metrics: Metrics,
        unsafe: frozenset[str] = frozenset(),
    ) -> None:
        p, r = config.payload, config.raft
        self.metrics = metrics
        self.lease = LeaderLease(lease_seconds(r.election_timeout_ms, r.tick_ms, p.clock_drift_ppm))
        self.gate = RoleGate(p.hysteresis_s, p.stop_grace_s + KILL_MARGIN_S)
        info = NodeInfo(
            node_id,
            config.name,
            config.node(node_id).client,
            config.path,
            p.stop_grace_s,
            p.timeout_s,
        )
        self.runner = PayloadRunner(
            pm,
            info,
            timeout_s=p.timeout_s,
            metrics=metrics,
            settings=config.plugins.settings,
        )
        self.has_leader_payload = self.runner.wants("zraft_became_leader")
        self.wants_applied = self.runner.wants("zraft_applied")
        self.wants_committed = self.runner.wants("zraft_committed")
        problem = fencing_problem(r, p, self.has_leader_payload)
        if problem:
            raise ValueError(f"a plugin has a leader payload, but {problem}")
        self.probe_every_s = r.heartbeat_interval_s
        self._probes: dict[int, tuple[int, float]] = {}  # probe seq -> (term, issued at)
        self._seq = itertools.count(1)
        self._last_probe = -1e18
        self._role: tuple[Role, int] = (Role.FOLLOWER, -1)
        self.stopping = False
        # Negative control (zraft/unsafe.py): no lease, no keeper deadline.
        self.unfenced = "unfenced_payloads" in unsafe

    def start(self) -> None:
        """Start the payload threads (``zraft_node_start`` first)."""
        self.runner.start()

    # -- inputs from the driver -------------------------------------------

    def on_soft_state(self, role: Role, term: int) -> None:
        """A role or term change: the lease starts over; a candidate's plugins are told."""
        if (role, term) == self._role:
            return
        if role is not Role.LEADER and self.gate.desired.fence is not None:
            self.gate.desired.fence.revoke()  # at once, not at the next tick
        self._role = (role, term)
        self.lease.restart(term if role is Role.LEADER else -1)
        self._probes.clear()
        if role is Role.CANDIDATE:
            self.runner.emit("zraft_became_candidate", role="candidate", term=term)

    def on_read_state(self, ctx: ReadContext, rejected: bool) -> None:
        """Take the answer to a lease probe (a ReadIndex round of purpose LEASE)."""
        probe = self._probes.pop(ctx.seq, None)
        if probe is not None and not rejected:
            had = self.lease.until
            self.lease.confirmed(*probe)
            if had == NEVER:
                log.debug("term %d: first lease, until +%.3fs", probe[0], self.lease.lease_s)

    def on_tick(self, now: float, st: RaftStatus) -> ReadContext | None:
        """Move the gate and look for hooks that overran; return a lease probe to start, if due.

        The caller starts the ReadIndex round for the returned context and
        reports it with ``probe_issued`` (or drops it when the core refuses).
        """
        if not self.runner.role_impls:  # no role payloads: no lease, no gate
            self.runner.check(now)
            return None
        leading = st.role is Role.LEADER
        probe = None
        if leading and self.has_leader_payload and not self.stopping:
            probe = self._due_probe(now)
        if self.stopping:
            self.runner.check(now)
            return probe
        if self.unfenced:
            self.lease.until = math.inf if leading else NEVER
        desired = self.gate.update(
            now,
            is_leader=leading,
            term=st.term,
            leader_id=st.leader_id,
            committed_in_term=st.committed_in_term,
            lease=self.lease,
        )
        if desired is not self._last_desired:
            d = desired
            log.debug("payload: %s (term %d, gen %d)", d.kind.value, d.term, d.gen)
            self._last_desired = desired
            self.runner.set_desired(desired, now)
        self.metrics.lease_remaining.set(max(0.0, self.lease.until - now) if leading else 0.0)
        self.runner.check(now)
        return probe

    _last_desired: Any = None

    def _due_probe(self, now: float) -> ReadContext | None:
        if now - self._last_probe < self.probe_every_s:
            return None
        # Drop probes too old to extend a lease that is still in the future.
        stale = [s for s, (_, t) in self._probes.items() if t + self.lease.lease_s < now]
        for s in stale:
            del self._probes[s]
        return ReadContext(ReadPurpose.LEASE, next(self._seq))

    def probe_issued(self, ctx: ReadContext, term: int, now: float) -> None:
        """Record that the lease probe ``ctx`` went out in ``term`` at ``now``."""
        self._probes[ctx.seq] = (term, now)
        self._last_probe = now

    def on_committed(self, index: int, term: int) -> None:
        """Tell ``zraft_committed`` observers (coalesced)."""
        if self.wants_committed:
            self.runner.emit("zraft_committed", index=index, term=term)

    def on_applied(self, entries: list[Any]) -> None:
        """Tell ``zraft_applied`` observers about a batch of applied commands."""
        if entries:
            self.runner.emit("zraft_applied", entries=entries)

    def status(self, now: float) -> dict[str, Any]:
        """Return which payloads run here and the lease left, for ``zraft status``."""
        return {
            "leader": self.runner.running(Kind.LEADER),
            "follower": self.runner.running(Kind.FOLLOWER),
            "lease_remaining_s": round(max(0.0, self.lease.until - now), 3),
        }

    # -- stopping -------------------------------------------------------------

    def revoke_leader(self, now: float) -> None:
        """Stop the leader payload now and start nothing more (before a hand-over)."""
        self.stopping = True
        self._last_desired = self.gate.revoke()
        self.runner.set_desired(self._last_desired, now)

    def leader_payload_running(self) -> list[str]:
        """Return the plugins whose leader payload has not returned yet."""
        return self.runner.running(Kind.LEADER)

    def shutdown(self, timeout_s: float) -> None:
        """Stop every payload and run ``zraft_node_stop``, waiting up to ``timeout_s``."""
        self.stopping = True
        self.runner.stop(self.gate.revoke(), timeout_s)
