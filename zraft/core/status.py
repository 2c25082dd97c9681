"""A typed, read-only snapshot of one node's Raft state (``Raft.status()``).

The shell reads every fact it needs about the core from here (roles, log
cursors, the leader's view of each follower, Raft §5.3 nextIndex/matchIndex)
instead of reaching into the core's internals. Cheap enough to build each tick.
"""

from __future__ import annotations

from dataclasses import dataclass

from zraft.core.messages import NO_NODE, NodeId, Role


@dataclass(frozen=True, slots=True)
class PeerProgress:
    """What the leader knows about one follower's log (Raft §5.3)."""

    id: NodeId
    match_index: int  # highest index known stored on the follower (0: not known yet)
    next_index: int  # the next index the leader will send it
    state: str  # "probe" (finding the match) or "replicate" (pipelining appends)
    recent_active: bool  # heard from within the last election timeout (CheckQuorum)


@dataclass(frozen=True, slots=True)
class RaftStatus:
    """One node's Raft state at one moment. ``progress`` is empty unless leader."""

    id: NodeId
    role: Role
    term: int
    leader_id: NodeId  # NO_NODE when unknown
    commit: int
    applied: int
    first_index: int
    last_index: int
    committed_in_term: bool  # the entry at commit is of the current term (thesis §6.4)
    lead_transferee: NodeId  # NO_NODE unless a leadership transfer is under way
    voters: tuple[NodeId, ...]
    progress: tuple[PeerProgress, ...]  # leader only: every voter but itself, in voter order
    election_ticks: int  # the election timeout, in ticks

    def peer(self, peer_id: NodeId) -> PeerProgress | None:
        """Return the leader's progress for ``peer_id`` (None if unknown or not leader)."""
        for p in self.progress:
            if p.id == peer_id:
                return p
        return None

    def to_dict(self) -> dict[str, object]:
        """Return the JSON-ready form used in status replies.

        Keys: id, role (its value), term, leader (None if unknown), commit,
        applied, last_index, first_index; on a leader also progress:
        {peer: {"match", "next", "state"}} for each follower.
        """
        out: dict[str, object] = {
            "id": self.id,
            "role": self.role.value,
            "term": self.term,
            "leader": self.leader_id if self.leader_id != NO_NODE else None,
            "commit": self.commit,
            "applied": self.applied,
            "last_index": self.last_index,
            "first_index": self.first_index,
        }
        if self.role is Role.LEADER:
            out["progress"] = {
                p.id: {"match": p.match_index, "next": p.next_index, "state": p.state}
                for p in self.progress
            }
        return out
