"""The state every role reads and writes, and the role switches a role may ask for.

``RaftState`` holds Raft's persistent and volatile state (Raft §5, Figure 2)
plus the leader's and ReadIndex bookkeeping. The role modules
(``follower``, ``election``, ``leader``, ``reads``) are functions over a
``RaftState``; ``zraft.core.raft.Raft`` is the concrete class that implements
the role switches declared here. The roles therefore never import ``raft.py``,
and imports in the core point one way only.
"""

from __future__ import annotations

import abc
import random
from collections.abc import Sequence

from zraft.core.config import CoreConfig
from zraft.core.log import RaftLog
from zraft.core.messages import (
    NO_NODE,
    Entry,
    HardState,
    Message,
    MsgType,
    NodeId,
    ReadContext,
    ReadState,
    Role,
    SnapshotMeta,
)
from zraft.core.progress import Progress
from zraft.core.quorum import MajorityConfig
from zraft.core.readindex import ReadIndexQueue


class RaftState(abc.ABC):
    """One node's Raft state. Single-threaded: only the driver (through ``Raft``) calls in.

    Subclasses implement the role switches; a switch swaps the step handler
    (etcd's stepLeader/stepCandidate/stepFollower).
    """

    def __init__(
        self,
        config: CoreConfig,
        rng: random.Random,
        hard_state: HardState | None = None,
        log: RaftLog | None = None,
    ) -> None:
        hs = hard_state or HardState()
        self.cfg = config
        self.id = config.id
        self.voters = tuple(sorted(set(config.voters)))  # iteration order of broadcasts
        self.majority = MajorityConfig(frozenset(self.voters))  # every quorum count
        self.rng = rng
        self.log = log if log is not None else RaftLog()
        self.log.commit_to(min(hs.commit, self.log.last_index()))
        self.term = hs.term
        self.voted_for = hs.voted_for
        self.role = Role.FOLLOWER
        self.leader_id: NodeId = NO_NODE
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.progress: dict[NodeId, Progress] = {}
        self.last_active: dict[NodeId, int] = {}  # leader: tick each peer was last heard
        self.votes: dict[NodeId, bool] = {}
        self.now = 0  # ticks since start: a monotonic clock the core owns
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.own_lease_until = 0  # a deposed leader refuses votes until this tick
        self.randomized_timeout = config.election_ticks
        self.lead_transferee: NodeId = NO_NODE
        self.reads = ReadIndexQueue()
        self.reads_awaiting_commit: list[tuple[NodeId, ReadContext]] = []
        # Reads forwarded to the leader, oldest first (a dict used as an ordered set).
        self.forwarded_reads: dict[ReadContext, None] = {}
        self.append_pending = False
        self.read_heartbeat_pending = False
        self.pending_snapshot: SnapshotMeta | None = None  # follower: install it (Ready)

    # ------------------------------------------------------------------
    # role switches (implemented by Raft)
    # ------------------------------------------------------------------

    @abc.abstractmethod
    def become_follower(self, term: int, leader_id: NodeId) -> None:
        """Become a follower in ``term`` of ``leader_id`` (NO_NODE when unknown)."""

    @abc.abstractmethod
    def become_pre_candidate(self) -> None:
        """Enter the PreVote phase: no term bump, no vote (thesis §9.6)."""

    @abc.abstractmethod
    def become_candidate(self) -> None:
        """Start a real election: next term, vote for self (Raft §5.2)."""

    @abc.abstractmethod
    def become_leader(self) -> None:
        """Take leadership: reset progress and append a no-op (Raft §5.4.2)."""

    @abc.abstractmethod
    def campaign(self, transfer: bool = False) -> None:
        """Start an election now (PreVote first unless a transfer, thesis §3.10, §9.6)."""

    # ------------------------------------------------------------------
    # helpers shared by every role
    # ------------------------------------------------------------------

    def send(
        self,
        type: MsgType,
        to: NodeId,
        *,
        index: int = 0,
        log_term: int = 0,
        entries: Sequence[Entry] = (),
        commit: int = 0,
        reject: bool = False,
        reject_hint: int = 0,
        context: bytes = b"",
    ) -> None:
        """Queue a message stamped with our current term."""
        self.msgs.append(
            Message(
                type,
                self.term,
                self.id,
                to,
                index=index,
                log_term=log_term,
                entries=tuple(entries),
                commit=commit,
                reject=reject,
                reject_hint=reject_hint,
                context=context,
            )
        )

    def set_leader(self, leader_id: NodeId) -> None:
        """Record who leads; reads forwarded to a previous leader fail now."""
        if leader_id != self.leader_id and self.forwarded_reads:
            # Reads forwarded to the old leader will never be answered: fail them now.
            for ctx in self.forwarded_reads:
                self.read_states.append(ReadState(0, ctx, rejected=True))
            self.forwarded_reads.clear()
        self.leader_id = leader_id
