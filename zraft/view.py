"""What a node tells about itself, as one frozen value: ``NodeView``.

The node publishes a new view every tick (and builds a fresh one for a
``status`` request). Everything that reports on the node reads a view, never
the node's live state: the ``status`` reply, ``/health`` and ``/ready`` (on
the HTTP server's thread: swapping one reference is atomic), systemd's
``STATUS=`` line, and later the web monitor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zraft import __version__
from zraft.core import RaftStatus, Role


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node's state at one moment (``at``: its monotonic clock, seconds)."""

    at: float
    raft: RaftStatus
    applied: int  # what the state machines hold (may run ahead of raft.applied mid-Ready)
    ensemble: str
    client: str  # this node's client endpoint
    leader_client: str | None
    uptime_s: float
    running: bool
    stopping: bool
    loop_turned_at: float  # monotonic time of the last loop round
    loop_limit_s: float  # /health fails when the loop has not turned for this long
    pending_writes: int = 0
    sessions: int = 0
    last_contact_s: dict[str, float] = field(default_factory=dict)  # peer -> s (-1: never)
    payloads: dict[str, Any] = field(default_factory=dict)
    snapshot_index: int = 0  # the newest snapshot on disk (0: none)
    snapshot_failing: bool = False  # the last snapshot attempt failed

    def status(self) -> dict[str, Any]:
        """Return the ``status`` reply's result (documented in README.md)."""
        st = self.raft.to_dict()
        st.update(
            ensemble=self.ensemble,
            version=__version__,
            client=self.client,
            uptime_s=round(self.uptime_s, 3),
            pending_writes=self.pending_writes,
            last_contact_s=self.last_contact_s,
            payloads=self.payloads,
            sessions=self.sessions,
            leader_client=self.leader_client,
            snapshot_index=self.snapshot_index,
            snapshot_failing=self.snapshot_failing,
        )
        return st

    def status_line(self) -> str:
        """Return the one-line state systemd shows in ``systemctl status`` (STATUS=)."""
        r = self.raft
        if r.role is Role.LEADER:
            who = f"leader of term {r.term}"
        else:
            who = f"{r.role.value} in term {r.term}, leader {r.leader_id or 'unknown'}"
        return f"{who}; commit {r.commit}, applied {self.applied}"

    def health(self, now: float) -> tuple[bool, dict[str, Any]]:
        """Tell whether the event loop is turning (``/health``)."""
        age = now - self.loop_turned_at
        ok = self.running and age < self.loop_limit_s
        return ok, {"node": self.raft.id, "running": self.running, "loop_age_s": round(age, 3)}

    def ready(self, now: float) -> tuple[bool, dict[str, Any]]:
        """Tell whether this node can serve linearizable requests now (``/ready``)."""
        healthy, facts = self.health(now)
        leader = self.raft.leader_id
        ok = healthy and bool(leader) and not self.stopping
        return ok, {**facts, "role": self.raft.role.value, "leader": leader or None}
