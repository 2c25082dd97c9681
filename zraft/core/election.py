"""Elections: vote requests, the candidate's step handler and its poll (Raft §5.2, §5.4.1).

PreVote (thesis §9.6) runs the same poll as a trial round that changes no
term and records no vote; only a pre-candidate that wins it starts the real
election. A campaign started by TIMEOUT_NOW (leadership transfer, thesis
§3.10) skips PreVote and overrides the receivers' leader lease.
"""

from __future__ import annotations

import zraft.core.follower as follower
import zraft.core.reads as reads
from zraft.core.messages import NO_NODE, Message, MsgType, NodeId, Role
from zraft.core.quorum import VoteResult
from zraft.core.state import RaftState

TRANSFER_CONTEXT = b"transfer"  # marks a campaign started by TIMEOUT_NOW (thesis §3.10)

VOTE_REQUESTS = (MsgType.VOTE, MsgType.PRE_VOTE)
LEADER_MESSAGES = (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT)


def start_election(r: RaftState, pre_vote: bool, forced: bool) -> None:
    """Become (pre-)candidate and ask every other voter for its vote (§5.2, thesis §9.6)."""
    if pre_vote:
        r.become_pre_candidate()
        vote_type, vote_term = MsgType.PRE_VOTE, r.term + 1
    else:
        r.become_candidate()
        vote_type, vote_term = MsgType.VOTE, r.term
    if _poll(r, r.id, True) is VoteResult.WON:
        _won_round(r)
        return
    context = TRANSFER_CONTEXT if forced else b""
    for peer in r.voters:
        if peer != r.id:
            r.msgs.append(
                Message(
                    vote_type,
                    vote_term,
                    r.id,
                    peer,
                    index=r.log.last_index(),
                    log_term=r.log.last_term(),
                    context=context,
                )
            )


def handle_vote_request(r: RaftState, m: Message) -> None:
    """Answer a VOTE or PRE_VOTE that passed the term rules (Raft §5.2, §5.4.1)."""
    can_vote = (
        r.voted_for == m.src
        or (r.voted_for == NO_NODE and r.leader_id == NO_NODE)
        or (m.type is MsgType.PRE_VOTE and m.term > r.term)
    )
    resp = MsgType.VOTE_RESP if m.type is MsgType.VOTE else MsgType.PRE_VOTE_RESP
    # Raft §5.4.1: grant only to a candidate whose log is at least as up to date.
    fresh = r.log.is_up_to_date(m.index, m.log_term) or "vote_on_term_only" in r.cfg.unsafe
    if can_vote and fresh:
        # A grant carries the candidate's term, so a pre-candidate can count it.
        r.msgs.append(Message(resp, m.term, r.id, m.src))
        if m.type is MsgType.VOTE:
            r.election_elapsed = 0
            r.voted_for = m.src  # durable before the reply leaves (Ready order)
    else:
        r.send(resp, m.src, reject=True)


def step_candidate(r: RaftState, m: Message) -> None:
    """Handle a current-term message as pre-candidate or candidate."""
    t = m.type
    if t in LEADER_MESSAGES:
        # Raft §5.2: a current-term leader exists; defer to it.
        r.become_follower(r.term, m.src)
        follower.step(r, m)
    elif (t is MsgType.PRE_VOTE_RESP and r.role is Role.PRE_CANDIDATE) or (
        t is MsgType.VOTE_RESP and r.role is Role.CANDIDATE
    ):
        result = _poll(r, m.src, not m.reject)
        if result is VoteResult.WON:
            _won_round(r)
        elif result is VoteResult.LOST:
            r.become_follower(r.term, NO_NODE)
    elif t is MsgType.READ_INDEX:
        reads.refuse(r, m)


def _poll(r: RaftState, voter: NodeId, granted: bool) -> VoteResult:
    r.votes.setdefault(voter, granted)  # a voter's first answer counts
    return r.majority.vote_result(r.votes)


def _won_round(r: RaftState) -> None:
    if r.role is Role.PRE_CANDIDATE:
        # The real election, without a second PreVote, and not forced: a
        # PreVote grant may be stale, so receivers still honour their lease.
        start_election(r, pre_vote=False, forced=False)
    else:
        r.become_leader()
