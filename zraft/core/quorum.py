"""Majority arithmetic, in one place (Raft §5.2, §5.3; thesis §4 for later changes).

Every count the core makes against "a majority of the voters" goes through a
``MajorityConfig``: the commit index (Raft §5.3, §5.4.2), election results
(§5.2, PreVote in thesis §9.6), CheckQuorum contact (thesis §6.2) and ReadIndex
confirmation (thesis §6.4). A membership change (thesis §4.1, one server at a
time) then only has to swap the config.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from zraft.core.messages import NodeId


class VoteResult(enum.Enum):
    """The outcome of an election poll so far."""

    PENDING = "pending"  # neither a majority of grants nor of rejections yet
    WON = "won"  # a majority granted
    LOST = "lost"  # a majority rejected: the round cannot be won


@dataclass(frozen=True, slots=True)
class MajorityConfig:
    """A set of voters decided by simple majority. Ids outside ``voters`` never count."""

    voters: frozenset[NodeId]

    def __post_init__(self) -> None:
        if not self.voters:
            raise ValueError("a configuration needs at least one voter")

    def quorum(self) -> int:
        """Return how many voters make a majority (at least 1)."""
        return len(self.voters) // 2 + 1

    def committed_index(self, match: Mapping[NodeId, int]) -> int:
        """Return the highest index stored on a quorum, given each voter's match index.

        A voter missing from ``match`` counts as 0. The caller still applies
        Raft §5.4.2 (only an entry of the current term commits by counting).
        """
        return self._quorum_value(match)

    def quorum_contact(self, last_heard: Mapping[NodeId, int]) -> int:
        """Return the latest tick by which a quorum had been heard from (thesis §6.2).

        ``last_heard`` maps each voter to the tick it was last heard from (the
        leader itself: now). A voter missing from it counts as tick 0.
        """
        return self._quorum_value(last_heard)

    def vote_result(self, votes: Mapping[NodeId, bool]) -> VoteResult:
        """Tell whether ``votes`` (voter -> granted) won, lost or is still open (§5.2)."""
        granted = rejected = 0
        for voter, vote in votes.items():
            if voter in self.voters:
                if vote:
                    granted += 1
                else:
                    rejected += 1
        q = self.quorum()
        if granted >= q:
            return VoteResult.WON
        if rejected >= q:
            return VoteResult.LOST
        return VoteResult.PENDING

    def has_quorum(self, ids: Collection[NodeId]) -> bool:
        """Tell whether ``ids`` include a majority of the voters (e.g. ReadIndex acks)."""
        return sum(1 for i in ids if i in self.voters) >= self.quorum()

    def _quorum_value(self, values: Mapping[NodeId, int]) -> int:
        # The quorum()-th largest value: a majority holds at least this much.
        ranked = sorted((values.get(v, 0) for v in self.voters), reverse=True)
        return ranked[self.quorum() - 1]
