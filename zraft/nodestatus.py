"""What a node tells about itself: ``status``, ``/health``, ``/ready``, systemd's STATUS=.

A mixin of ``Node`` (``zraft/node.py``): it only reads the driver's state.
``status`` runs on the driver thread (a client request); ``health`` and
``ready`` run on the metrics server's thread and read single attributes.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

from zraft import __version__
from zraft.core import Role

if TYPE_CHECKING:
    from zraft.node import Node


class NodeStatus:
    """``Node``'s self-description (see the module docstring)."""

    def _status_line(self: Node) -> str:
        """Return the one-line state systemd shows in ``systemctl status`` (STATUS=)."""
        r = self.raft
        who = (
            f"leader of term {r.term}"
            if r.role is Role.LEADER
            else (f"{r.role.value} in term {r.term}, leader {r.leader_id or 'unknown'}")
        )
        return f"{who}; commit {r.log.committed}, applied {self.applied_index}"

    def health(self: Node) -> tuple[bool, dict[str, Any]]:
        """Tell whether the event loop is turning (``/health``); thread-safe reads only."""
        age = time.monotonic() - self.loop_turned_at
        limit = max(5.0, 3 * self.config.raft.election_timeout_ms / 1000.0)
        ok = self.running and age < limit
        return ok, {"node": self.id, "running": self.running, "loop_age_s": round(age, 3)}

    def ready(self: Node) -> tuple[bool, dict[str, Any]]:
        """Tell whether this node can serve linearizable requests now (``/ready``)."""
        healthy, facts = self.health()
        leader = self.raft.leader_id
        ok = healthy and bool(leader) and not self._stop_requested
        return ok, {**facts, "role": self.raft.role.value, "leader": leader or None}

    def status(self: Node, state_hash: bool = False) -> dict[str, Any]:
        """Return this node's status: Raft state plus ensemble and process facts.

        With ``state_hash``, also ``state_hash``: a SHA-256 of the replicated state
        (every state machine's snapshot and the session table) at ``applied``, so
        that nodes at the same applied index can be compared.
        """
        st = self.raft.status()
        if state_hash:
            h = hashlib.sha256()
            # Each state-machine plugin's snapshot, keyed by its name.
            impls = self.pm.hook.zraft_snapshot.get_hookimpls()
            for impl in sorted(impls, key=lambda i: i.plugin_name):
                blob = impl.function()
                name = impl.plugin_name.encode()
                h.update(len(name).to_bytes(8, "big") + name + len(blob).to_bytes(8, "big") + blob)
            h.update(self.sessions.dump())
            st["state_hash"] = h.hexdigest()
            st["applied"] = self.applied_index
        st.update(
            ensemble=self.config.name,
            version=__version__,
            client=self.me.client,
            uptime_s=round(time.time() - self.started, 3),
            pending_writes=len(self.pending_writes),
            last_contact_s=self._last_contact(),
            payloads=self.payloads.status(time.monotonic()),
            sessions=len(self.sessions),
            leader_client=self.config.node(self.raft.leader_id).client
            if self.raft.leader_id
            else None,
        )
        return st

    def _last_contact(self: Node) -> dict[str, float]:
        """Seconds since this node last heard from each peer (-1: never)."""
        now = time.monotonic()
        return {
            p: round(now - self.last_heard[p], 3) if p in self.last_heard else -1.0
            for p in self.config.peers_of(self.id)
        }
