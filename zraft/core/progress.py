"""What a leader knows about each follower's log (Raft §5.3: nextIndex, matchIndex).

A follower is probed one append at a time until its match index is found,
then replicated to optimistically with up to ``max_inflight`` appends in
flight (etcd's Progress states PROBE and REPLICATE).
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.Enum):
    PROBE = "probe"  # one append per heartbeat interval until the match is found
    REPLICATE = "replicate"  # pipelined: several appends in flight
    SNAPSHOT = "snapshot"  # the follower needs compacted entries: a snapshot is on its way


class Progress:
    """Replication state of one follower, owned by the leader."""

    __slots__ = (
        "match_index",
        "next_index",
        "state",
        "probe_sent",
        "inflight",
        "max_inflight",
        "pending_snapshot",
    )

    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match_index = 0
        self.next_index = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflight: deque[int] = deque()  # last index of each append in flight
        self.max_inflight = max_inflight
        self.pending_snapshot = 0  # SNAPSHOT state: the least snapshot index that helps

    def is_paused(self) -> bool:
        """Tell whether no new append may be sent now."""
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.SNAPSHOT:
            return True  # nothing but the snapshot helps until it is installed
        return len(self.inflight) >= self.max_inflight

    def sent(self, last_index: int, n_entries: int) -> None:
        """Record an append ending at ``last_index`` that carried ``n_entries``."""
        if self.state is ProgressState.REPLICATE:
            if n_entries:
                self.next_index = last_index + 1
                self.inflight.append(last_index)
        else:
            self.probe_sent = True

    def free_first_one(self) -> None:
        """Forget the oldest append in flight if the window is full (etcd's FreeFirstOne).

        Called when the follower answers a heartbeat: it is alive, so if the window
        is full its appends were lost or are very slow. One more append may go; if
        the earlier ones were lost, the follower rejects it and the leader probes.
        """
        if self.state is ProgressState.REPLICATE and len(self.inflight) >= self.max_inflight:
            self.inflight.popleft()

    def maybe_update(self, index: int) -> bool:
        """Record that the follower matches up to ``index``; return whether it advanced."""
        updated = False
        if index > self.match_index:
            self.match_index = index
            updated = True
            self.probe_sent = False
        self.next_index = max(self.next_index, index + 1)
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        return updated

    def maybe_decrease_to(self, rejected: int, hint: int) -> bool:
        """Back ``next_index`` off after a rejected append; return False if stale.

        ``rejected`` is the prev index the follower refused; ``hint`` is the
        highest index the leader now believes may match (fast back-off).
        """
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match_index:
                return False  # a late reply to an older append
            self.next_index = self.match_index + 1
            return True
        if self.next_index - 1 != rejected:
            return False  # not a reply to the probe we are waiting for
        if hint < self.match_index:
            # The follower no longer holds entries it acknowledged: its data
            # directory was wiped or restored from an older copy. Probe below
            # its old match (commit never moves back), down to a snapshot if
            # need be, instead of re-sending the same probe forever.
            self.match_index = hint
        self.next_index = max(min(rejected, hint + 1), self.match_index + 1, 1)
        self.probe_sent = False
        return True

    def become_probe(self) -> None:
        """Fall back to probing from just after the match index (or the snapshot sent)."""
        next_index = max(self.match_index, self.pending_snapshot) + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflight.clear()
        self.pending_snapshot = 0
        self.next_index = next_index

    def become_snapshot(self, index: int) -> None:
        """Pause appends while a snapshot of at least ``index`` goes to the follower."""
        self.state = ProgressState.SNAPSHOT
        self.probe_sent = False
        self.inflight.clear()
        self.pending_snapshot = index

    def become_replicate(self) -> None:
        """Start pipelining appends after the match index."""
        self.state = ProgressState.REPLICATE
        self.probe_sent = False
        self.inflight.clear()
        self.pending_snapshot = 0
        self.next_index = self.match_index + 1
