"""ReadIndex, the flow (Raft thesis §6.4): register, confirm, answer, forward, fail.

The leader registers a read at its commit index once an entry of its own
term is committed, confirms with one heartbeat round that a quorum still
follows it, then answers with that index (``ReadState`` for its own reads,
READ_INDEX_RESP for a follower's). A follower forwards its reads to the
leader (thesis §6.4.1). On the wire the requester's tag is an encoded
``ReadContext``; a READ_INDEX or READ_INDEX_RESP whose context does not
decode is ignored.
"""

from __future__ import annotations

from zraft.core.messages import Message, MsgType, NodeId, ReadContext, ReadState
from zraft.core.state import RaftState


def handle_read(r: RaftState, requester: NodeId, ctx: ReadContext) -> None:
    """Leader: register a ReadIndex request from ``requester`` (thesis §6.4)."""
    if r.log.term(r.log.committed) != r.term:
        # Until an entry of our term commits we do not know the commit index.
        r.reads_awaiting_commit.append((requester, ctx))
        return
    _register(r, requester, ctx)


def handle_read_request(r: RaftState, m: Message) -> None:
    """Leader: a follower forwarded a read (READ_INDEX)."""
    ctx = ReadContext.decode(m.context)
    if ctx is not None:
        handle_read(r, m.src, ctx)


def _register(r: RaftState, requester: NodeId, ctx: ReadContext) -> None:
    if r.majority.has_quorum((r.id,)):
        _answer(r, requester, r.log.committed, ctx)  # a quorum of one: nothing to confirm
        return
    r.reads.add(r.log.committed, requester, ctx, r.id)
    r.read_heartbeat_pending = True  # one heartbeat round confirms all reads of this batch


def release_awaiting_commit(r: RaftState) -> None:
    """Leader: register the reads that waited for the first commit of its term."""
    if r.reads_awaiting_commit and r.log.term(r.log.committed) == r.term:
        waiting, r.reads_awaiting_commit = r.reads_awaiting_commit, []
        for requester, ctx in waiting:
            _register(r, requester, ctx)


def heartbeat_acked(r: RaftState, voter: NodeId, context: bytes) -> None:
    """Leader: ``voter`` echoed a heartbeat tagged ``context``; answer reads now confirmed."""
    if context:
        seq = int.from_bytes(context, "big")
        for read in r.reads.ack(seq, voter, r.majority):
            _answer(r, read.requester, read.index, read.context)


def _answer(r: RaftState, requester: NodeId, index: int, ctx: ReadContext) -> None:
    if requester == r.id:
        r.read_states.append(ReadState(index, ctx))
    else:
        r.send(MsgType.READ_INDEX_RESP, requester, index=index, context=ctx.encode())


def fail_all(r: RaftState) -> None:
    """Reject every read a leader was holding (it may no longer be leader)."""
    pending = [(p.requester, p.context) for p in r.reads.drain()]
    pending += r.reads_awaiting_commit
    r.reads_awaiting_commit = []
    for requester, ctx in pending:
        if requester == r.id:
            r.read_states.append(ReadState(0, ctx, rejected=True))
        else:
            r.send(MsgType.READ_INDEX_RESP, requester, context=ctx.encode(), reject=True)


def forward(r: RaftState, ctx: ReadContext) -> None:
    """Follower: ask the known leader for a read index (thesis §6.4.1)."""
    r.forwarded_reads[ctx] = None
    r.send(MsgType.READ_INDEX, r.leader_id, context=ctx.encode())


def forwarded_answer(r: RaftState, m: Message) -> None:
    """Follower: the leader answered a forwarded read (READ_INDEX_RESP)."""
    ctx = ReadContext.decode(m.context)
    if ctx is not None and ctx in r.forwarded_reads:
        del r.forwarded_reads[ctx]
        r.read_states.append(ReadState(m.index, ctx, rejected=m.reject))


def refuse(r: RaftState, m: Message) -> None:
    """Not the leader: refuse a forwarded read so the asker fails fast and retries."""
    if ReadContext.decode(m.context) is not None:
        r.send(MsgType.READ_INDEX_RESP, m.src, context=m.context, reject=True)
