"""Step 4 of every Ready, and the counting around it: the node's metrics and peer facts.

``Observer`` turns what the loop sees (messages, replies, role changes, the
shell's counters, the core's status) into metric updates and a few facts the
``NodeView`` shows (last contact with each peer). Metric children are
created once, so the hot path only increments. Driver thread only; nothing
here changes the node's behaviour.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from zraft.api.book import RequestBook
from zraft.core import RaftStatus, Role, SoftState
from zraft.metrics import Metrics
from zraft.replica import Replica

log = logging.getLogger("zraft.node")

UNKNOWN_PEER_LOG_INTERVAL_S = 10.0


class Observer:
    """Metrics and peer facts of one node (see the module docstring)."""

    def __init__(self, metrics: Metrics, peers: list[str], election_s: float) -> None:
        m = self.metrics = metrics
        self.peers = peers
        self.election_s = election_s
        self.sent = {p: m.messages_sent.labels(p) for p in peers}
        self.received = {p: m.messages_received.labels(p) for p in peers}
        self._rtt = {p: m.peer_rtt.labels(p) for p in peers}
        self._lag = {p: m.follower_lag.labels(p) for p in peers}
        self._duration = {k: m.client_request_duration.labels(k) for k in ("local", "relayed")}
        self._requests: dict[tuple[str, str], Any] = {}
        self._counted = (0, 0, 0)  # replica errors, lost writes, timed-out writes
        self.last_heard: dict[str, float] = {}  # peer -> monotonic time of its last message
        self._heartbeat_sent: dict[str, float] = {}  # peer -> when the oldest open one left
        self._unknown_logged, self._unknown_suppressed = -UNKNOWN_PEER_LOG_INTERVAL_S, 0

    # -- peers ----------------------------------------------------------------

    def heard(self, peer: str, now: float, heartbeat_reply: bool) -> None:
        """A valid message from ``peer``; a heartbeat reply closes a round trip."""
        self.received[peer].inc()
        self.last_heard[peer] = now
        if heartbeat_reply:
            sent = self._heartbeat_sent.pop(peer, None)
            if sent is not None:
                self._rtt[peer].observe(now - sent)

    def heartbeat_sent(self, peer: str, now: float) -> None:
        """Time the oldest unanswered heartbeat, so a follower that stalls shows its stall
        (unless the open one is older than an election timeout: that peer was away)."""
        sent_at = self._heartbeat_sent.get(peer)
        if sent_at is None or now - sent_at > self.election_s:
            self._heartbeat_sent[peer] = now

    def last_contact(self, now: float) -> dict[str, float]:
        """Seconds since this node last heard from each peer (-1: never)."""
        heard = self.last_heard
        return {p: round(now - heard[p], 3) if p in heard else -1.0 for p in self.peers}

    def mesh_event(self, event: str, who: str) -> None:
        """Count what the mesh dropped (``PeerMesh``'s ``on_event``)."""
        if event == "dropped":
            self.metrics.messages_dropped.labels(who).inc()
        elif event == "unknown_peer":
            self.metrics.unknown_peer.inc()
            # After a peer reconnects (e.g. SIGSTOP/SIGCONT), frames still queued on its
            # old connection arrive under a generated identity: warn once per interval.
            now = time.monotonic()
            self._unknown_suppressed += 1
            if now - self._unknown_logged >= UNKNOWN_PEER_LOG_INTERVAL_S:
                log.warning(
                    "dropped %d frame(s) from unknown peer identities (last: %s)",
                    self._unknown_suppressed,
                    who,
                )
                self._unknown_logged, self._unknown_suppressed = now, 0
        else:
            self.metrics.decode_errors.labels(who, event).inc()

    # -- requests -------------------------------------------------------------

    def replied(
        self, command: str | None, result: str, waited_s: float | None, relayed: bool
    ) -> None:
        """Count one reply (``command`` is a declared name or "?", never client text;
        None: not counted here) and time it when it was local."""
        if command is not None:
            key = (command, result)
            child = self._requests.get(key)
            if child is None:
                child = self._requests[key] = self.metrics.client_requests.labels(*key)
            child.inc()
        if waited_s is not None:
            self._duration["relayed" if relayed else "local"].observe(waited_s)

    # -- state ------------------------------------------------------------------

    def role_changed(self, soft: SoftState, previous: SoftState) -> None:
        """Gauges of role, term and leader; a deposed leader's lag gauges go to 0."""
        m = self.metrics
        if previous.role is Role.LEADER and soft.role is not Role.LEADER:
            for gauge in self._lag.values():
                gauge.set(0)
        m.term.set(soft.term)
        m.is_leader.set(1 if soft.role is Role.LEADER else 0)
        m.has_leader.set(1 if soft.leader_id else 0)
        if soft.leader_id and soft.leader_id != previous.leader_id:
            m.leader_changes.inc()

    def tick(self, st: RaftStatus, replica: Replica, book: RequestBook) -> None:
        """Once per tick: indexes, pending work, follower lag, the shell's failure counters."""
        m = self.metrics
        m.commit_index.set(st.commit)
        m.applied_index.set(st.applied)
        m.last_index.set(st.last_index)
        writes, reads = book.counts()
        m.proposals_pending.set(writes)
        m.reads_pending.set(reads)
        counts = (replica.errors, book.lost, book.timed_out)
        errors, lost, late = (a - b for a, b in zip(counts, self._counted, strict=True))
        if errors:
            m.apply_errors.inc(errors)
        if lost:
            m.proposals_failed.labels("lost").inc(lost)
        if late:
            m.proposals_failed.labels("timeout").inc(late)
        self._counted = counts
        if st.role is Role.LEADER:
            for pr in st.progress:
                gauge = self._lag.get(pr.id)
                if gauge is not None and (pr.match_index or pr.state != "probe"):
                    # A new leader knows a follower's match only once it has answered:
                    # until then the gauge keeps its last value rather than the whole log.
                    gauge.set(max(0, st.last_index - pr.match_index))

    def applied(self, count: int) -> None:
        """Count entries committed and applied here."""
        self.metrics.proposals_committed.inc(count)
        self.metrics.proposals_applied.inc(count)
