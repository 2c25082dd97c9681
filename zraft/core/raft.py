"""The pure Raft state machine and its one door.

``Raft`` does no I/O: time enters only as ``tick()``, randomness only as the
injected ``random.Random``, and everything the node must do comes back from
``ready()`` as a value (see ``zraft.core.messages.Ready``). Leader-only
behaviour lives in ``zraft.core.leader``; roles swap their step handler in
``become_*`` (etcd's stepLeader/stepCandidate/stepFollower).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from zraft.core import leader
from zraft.core.log import RaftLog
from zraft.core.messages import (
    NO_NODE,
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    NodeId,
    ReadState,
    Ready,
    Role,
    SoftState,
)
from zraft.core.progress import Progress
from zraft.core.readindex import ReadIndexQueue

TRANSFER_CONTEXT = b"transfer"  # marks a campaign started by TIMEOUT_NOW (thesis §3.10)

_LEADER_MESSAGES = (MsgType.APPEND, MsgType.HEARTBEAT)
_VOTE_REQUESTS = (MsgType.VOTE, MsgType.PRE_VOTE)


class NotLeader(Exception):
    """The request needs the leader; ``leader_id`` is who this node thinks leads."""

    def __init__(self, leader_id: NodeId) -> None:
        super().__init__(f"not the leader (leader: {leader_id or 'unknown'})")
        self.leader_id = leader_id


class ProposalDropped(Exception):
    """The leader cannot take proposals now (e.g. a leadership transfer is under way)."""


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Parameters of one node's core. Timings are in ticks."""

    id: NodeId
    voters: tuple[NodeId, ...]
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_entries_per_msg: int = 1024
    max_bytes_per_msg: int = 1 << 20
    max_inflight: int = 64
    # With check_quorum, refuse non-forced votes for one election timeout after
    # start: this node may have acknowledged a leader's lease just before it
    # stopped. Off only in unit tests that elect nodes at tick 0.
    boot_lease: bool = True
    # Test-only negative controls that break safety on purpose (zraft/unsafe.py):
    # "skip_prev_log_check", "vote_on_term_only". Empty in every real deployment.
    unsafe: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.id not in self.voters:
            raise ValueError(f"node {self.id!r} is not among the voters {self.voters}")
        if self.heartbeat_ticks < 1 or self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("need 1 <= heartbeat_ticks < election_ticks")


class Raft:
    """One node's Raft state. Single-threaded: the driver is the only caller.

    The door: ``tick``, ``step``, ``propose``, ``read_index``, ``campaign``,
    ``transfer_leader`` go in; ``has_ready``/``ready``/``advance`` come out.
    Between ``ready()`` and ``advance()`` the caller must not call anything
    else: it persists, sends and applies what the Ready says, then advances.
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
        self.voters = tuple(sorted(set(config.voters)))
        self.quorum = len(self.voters) // 2 + 1
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
        self.reads_awaiting_commit: list[tuple[NodeId, bytes]] = []
        self.forwarded_reads: set[bytes] = set()
        self.append_pending = False
        self.read_heartbeat_pending = False
        self._prev_hard = HardState(self.term, self.voted_for, self.log.committed)
        self._prev_soft = SoftState(NO_NODE, Role.FOLLOWER, self.term)
        self._step = self._step_follower
        self.become_follower(self.term, NO_NODE)

    # ------------------------------------------------------------------
    # the door: inputs
    # ------------------------------------------------------------------

    def tick(self) -> None:
        """Advance logical time by one tick."""
        self.now += 1
        if self.role is Role.LEADER:
            leader.tick(self)
            return
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_timeout:
            self.election_elapsed = 0
            self.campaign()

    def step(self, m: Message) -> None:
        """Handle one message from a peer, applying the shared term rules first (Raft §5.1)."""
        if m.src not in self.voters or m.dst != self.id or m.src == self.id:
            return  # the driver counts these; the core only refuses them
        if m.term > self.term:
            if m.type in _VOTE_REQUESTS:
                forced = m.context == TRANSFER_CONTEXT
                in_lease = (
                    self.cfg.check_quorum
                    and self.election_elapsed < self.cfg.election_ticks
                    # A node that has just started may have acknowledged a leader
                    # before it stopped: it honours that lease for one election
                    # timeout from start, which is what lets a leader fence its
                    # payloads by lease (zraft/payload/fencing.py).
                    and (
                        self.leader_id != NO_NODE
                        or (self.cfg.boot_lease and self.now < self.cfg.election_ticks)
                        or self.now < self.own_lease_until
                    )
                )
                if in_lease and not forced:
                    # Thesis §4.2.3: a node that hears from a current leader
                    # ignores candidates, so a rejoining node cannot depose it.
                    return
            if m.type is MsgType.PRE_VOTE or (m.type is MsgType.PRE_VOTE_RESP and not m.reject):
                pass  # PreVote never changes terms (thesis §9.6)
            elif m.type in (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT):
                self.become_follower(m.term, m.src)
            else:
                if self.role is Role.LEADER and m.type not in _VOTE_REQUESTS:
                    # Deposed by a higher term in a reply: this node counted itself in
                    # its own lease quorum, so it keeps refusing votes until that
                    # lease is over, as its followers do (zraft/payload/fencing.py).
                    self.own_lease_until = self.now + self.cfg.election_ticks
                self.become_follower(m.term, NO_NODE)
        elif m.term < self.term:
            if m.type in _LEADER_MESSAGES and (self.cfg.check_quorum or self.cfg.pre_vote):
                # A stale leader learns the new term from our reply and steps down;
                # without this, PreVote could leave it stranded (etcd raft.go).
                self.send(MsgType.APPEND_RESP, m.src)
            elif m.type is MsgType.PRE_VOTE:
                self.send(MsgType.PRE_VOTE_RESP, m.src, reject=True)
            return
        if m.type in _VOTE_REQUESTS:
            self._handle_vote_request(m)
            return
        self._step(m)

    def propose(self, data: bytes, kind: EntryKind = EntryKind.NORMAL) -> tuple[int, int]:
        """Append ``data`` to the leader's log; return its (index, term).

        The entry is committed once a quorum stores it; the caller learns the
        outcome when an entry at that index is applied: the same term means
        this proposal, another term means it was lost. Raises NotLeader or
        ProposalDropped.
        """
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader_id)
        if self.lead_transferee != NO_NODE:
            raise ProposalDropped(f"leadership is moving to {self.lead_transferee}")
        index = self.log.last_index() + 1
        self.log.append([Entry(self.term, index, kind, data)])
        self.append_pending = True  # one broadcast per Ready carries them all
        return index, self.term

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read point (thesis §6.4).

        The answer arrives as a ``ReadState`` with the same ``context`` in a
        later Ready (``rejected`` when leadership was lost). A follower forwards
        the request to the leader. Raises NotLeader when no leader is known.
        """
        if self.role is Role.LEADER:
            leader.handle_read(self, self.id, context)
        elif self.leader_id != NO_NODE:
            self.forwarded_reads.add(context)
            self.send(MsgType.READ_INDEX, self.leader_id, context=context)
        else:
            raise NotLeader(NO_NODE)

    def campaign(self, transfer: bool = False) -> None:
        """Start an election now: PreVote first unless disabled or a transfer (§5.2, §9.6).

        ``transfer`` (a TIMEOUT_NOW from the leader, thesis §3.10) also makes the
        vote requests override the receivers' leader lease.
        """
        if self.role is Role.LEADER:
            return
        self._start_election(pre_vote=self.cfg.pre_vote and not transfer, forced=transfer)

    def _start_election(self, pre_vote: bool, forced: bool) -> None:
        if pre_vote:
            self._become_pre_candidate()
            vote_type, vote_term = MsgType.PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            vote_type, vote_term = MsgType.VOTE, self.term
        if self._poll(self.id, True) >= self.quorum:
            self._won_round()
            return
        context = TRANSFER_CONTEXT if forced else b""
        for peer in self.voters:
            if peer != self.id:
                self.msgs.append(
                    Message(
                        vote_type,
                        vote_term,
                        self.id,
                        peer,
                        index=self.log.last_index(),
                        log_term=self.log.last_term(),
                        context=context,
                    )
                )

    def transfer_leader(self, target: NodeId) -> None:
        """Hand leadership to ``target`` once its log is caught up (thesis §3.10)."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader_id)
        leader.transfer(self, target)

    # ------------------------------------------------------------------
    # the door: outputs
    # ------------------------------------------------------------------

    def has_ready(self) -> bool:
        """Tell whether ``ready()`` would have anything to do."""
        return bool(
            self.msgs
            or self.read_states
            or self.append_pending
            or self.read_heartbeat_pending
            or self.log.stable_index < self.log.last_index()
            or self.log.committed > self.log.applied
            or self._soft() != self._prev_soft
            or self._hard() != self._prev_hard
        )

    def ready(self) -> Ready:
        """Collect everything the driver must do now (see ``Ready`` for the order)."""
        if self.role is Role.LEADER:
            leader.flush(self)
        soft, hard = self._soft(), self._hard()
        hard_changed = hard != self._prev_hard
        vote_changed = (hard.term, hard.voted_for) != (
            self._prev_hard.term,
            self._prev_hard.voted_for,
        )
        entries = self.log.unstable_entries()
        msgs, self.msgs = self.msgs, []
        early: list[Message] = []
        if self.role is Role.LEADER and not vote_changed:
            late = []
            for m in msgs:
                (early if m.type in _LEADER_MESSAGES else late).append(m)
            msgs = late
        reads, self.read_states = self.read_states, []
        return Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hard if hard_changed else None,
            entries=entries,
            messages=tuple(msgs),
            committed_entries=self.log.next_committed(),
            read_states=tuple(reads),
            must_sync=bool(entries) or vote_changed,
            early_messages=tuple(early),
        )

    def advance(self, rd: Ready) -> None:
        """Record that ``rd`` was persisted, sent and applied."""
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
            if self.role is Role.LEADER:
                leader.self_persisted(self)
        if rd.committed_entries:
            self.log.applied_to(rd.committed_entries[-1].index)

    def status(self) -> dict[str, object]:
        """Return a plain snapshot of the node's Raft state for status displays."""
        out: dict[str, object] = {
            "id": self.id,
            "role": self.role.value,
            "term": self.term,
            "leader": self.leader_id or None,
            "commit": self.log.committed,
            "applied": self.log.applied,
            "last_index": self.log.last_index(),
            "first_index": self.log.first_index(),
        }
        if self.role is Role.LEADER:
            out["progress"] = {
                peer: {"match": pr.match_index, "next": pr.next_index, "state": pr.state.value}
                for peer, pr in self.progress.items()
            }
        return out

    # ------------------------------------------------------------------
    # roles
    # ------------------------------------------------------------------

    def become_follower(self, term: int, leader_id: NodeId) -> None:
        """Become a follower in ``term`` of ``leader_id`` (NO_NODE when unknown)."""
        self._reset(term)
        self._set_leader(leader_id)
        self.role = Role.FOLLOWER
        self._step = self._step_follower

    def _become_pre_candidate(self) -> None:
        # Thesis §9.6: no term bump and no vote, so a failed PreVote leaves no trace.
        self._fail_reads()
        self.votes = {}
        self._set_leader(NO_NODE)
        self.role = Role.PRE_CANDIDATE
        self._step = self._step_candidate

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.voted_for = self.id
        self._set_leader(NO_NODE)
        self.role = Role.CANDIDATE
        self._step = self._step_candidate

    def become_leader(self) -> None:
        """Take leadership: reset progress and append a no-op (Raft §5.4.2, thesis §6.4)."""
        self._reset(self.term)
        self.role = Role.LEADER
        self._set_leader(self.id)
        self._step = self._step_leader
        leader.init(self)

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.voted_for = NO_NODE
        self._fail_reads()
        self.votes = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = self.cfg.election_ticks + self.rng.randrange(
            self.cfg.election_ticks
        )
        self.lead_transferee = NO_NODE
        self.progress = {}
        self.append_pending = False
        self.read_heartbeat_pending = False

    def _set_leader(self, leader_id: NodeId) -> None:
        if leader_id != self.leader_id and self.forwarded_reads:
            # Reads forwarded to the old leader will never be answered: fail them now.
            for ctx in self.forwarded_reads:
                self.read_states.append(ReadState(0, ctx, rejected=True))
            self.forwarded_reads.clear()
        self.leader_id = leader_id

    def _fail_reads(self) -> None:
        """Reject every read a leader was holding (it may no longer be leader)."""
        pending = [(r.requester, r.context) for r in self.reads.drain()]
        pending += self.reads_awaiting_commit
        self.reads_awaiting_commit = []
        for requester, ctx in pending:
            if requester == self.id:
                self.read_states.append(ReadState(0, ctx, rejected=True))
            else:
                self.send(MsgType.READ_INDEX_RESP, requester, context=ctx, reject=True)

    # ------------------------------------------------------------------
    # step handlers
    # ------------------------------------------------------------------

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (
            self.voted_for == m.src
            or (self.voted_for == NO_NODE and self.leader_id == NO_NODE)
            or (m.type is MsgType.PRE_VOTE and m.term > self.term)
        )
        resp = MsgType.VOTE_RESP if m.type is MsgType.VOTE else MsgType.PRE_VOTE_RESP
        # Raft §5.4.1: grant only to a candidate whose log is at least as up to date.
        fresh = (
            self.log.is_up_to_date(m.index, m.log_term) or "vote_on_term_only" in self.cfg.unsafe
        )
        if can_vote and fresh:
            # A grant carries the candidate's term, so a pre-candidate can count it.
            self.msgs.append(Message(resp, m.term, self.id, m.src))
            if m.type is MsgType.VOTE:
                self.election_elapsed = 0
                self.voted_for = m.src  # durable before the reply leaves (Ready order)
        else:
            self.send(resp, m.src, reject=True)

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t is MsgType.APPEND:
            self.election_elapsed = 0
            self._set_leader(m.src)
            self._handle_append(m)
        elif t is MsgType.HEARTBEAT:
            self.election_elapsed = 0
            self._set_leader(m.src)
            self.log.commit_to(min(m.commit, self.log.last_index()))
            self.send(MsgType.HEARTBEAT_RESP, m.src, context=m.context)
        elif t is MsgType.TIMEOUT_NOW:
            self.campaign(transfer=True)
        elif t is MsgType.READ_INDEX_RESP:
            if m.context in self.forwarded_reads:
                self.forwarded_reads.discard(m.context)
                self.read_states.append(ReadState(m.index, m.context, rejected=m.reject))
        elif t is MsgType.READ_INDEX:
            # We are not the leader; let the asker fail fast and retry elsewhere.
            self.send(MsgType.READ_INDEX_RESP, m.src, context=m.context, reject=True)

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t in _LEADER_MESSAGES:
            # Raft §5.2: a current-term leader exists; defer to it.
            self.become_follower(self.term, m.src)
            self._step_follower(m)
        elif (t is MsgType.PRE_VOTE_RESP and self.role is Role.PRE_CANDIDATE) or (
            t is MsgType.VOTE_RESP and self.role is Role.CANDIDATE
        ):
            granted = self._poll(m.src, not m.reject)
            rejected = len(self.votes) - granted
            if granted >= self.quorum:
                self._won_round()
            elif rejected >= self.quorum:
                self.become_follower(self.term, NO_NODE)
        elif t is MsgType.READ_INDEX:
            self.send(MsgType.READ_INDEX_RESP, m.src, context=m.context, reject=True)

    def _step_leader(self, m: Message) -> None:
        leader.step(self, m)

    def _poll(self, voter: NodeId, granted: bool) -> int:
        self.votes.setdefault(voter, granted)
        return sum(1 for v in self.votes.values() if v)

    def _won_round(self) -> None:
        if self.role is Role.PRE_CANDIDATE:
            # The real election, without a second PreVote, and not forced: a
            # PreVote grant may be stale, so receivers still honour their lease.
            self._start_election(pre_vote=False, forced=False)
        else:
            self.become_leader()

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            # Everything up to commit is already settled; tell the leader so.
            self.send(MsgType.APPEND_RESP, m.src, index=log.committed)
            return
        prev_term = m.log_term
        if "skip_prev_log_check" in self.cfg.unsafe and m.index <= log.last_index():
            prev_term = log.term(m.index) or 0  # negative control: pretend the prev entry matches
        last_new = log.maybe_append(m.index, prev_term, m.commit, m.entries)
        if last_new is not None:
            self.send(MsgType.APPEND_RESP, m.src, index=last_new)
            return
        # Raft §5.3: the consistency check failed. Hint the leader past whole
        # terms that cannot match (thesis §3.5 optimisation, etcd style).
        hint_index, hint_term = log.find_conflict_by_term(
            min(m.index, log.last_index()), m.log_term
        )
        self.send(
            MsgType.APPEND_RESP,
            m.src,
            index=m.index,
            reject=True,
            reject_hint=hint_index,
            log_term=hint_term,
        )

    # ------------------------------------------------------------------
    # helpers
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

    def _soft(self) -> SoftState:
        return SoftState(self.leader_id, self.role, self.term)

    def _hard(self) -> HardState:
        return HardState(self.term, self.voted_for, self.log.committed)
