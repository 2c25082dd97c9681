"""Leader behaviour: replication, commitment, CheckQuorum, ReadIndex, transfer.

Functions here take the ``Raft`` as their first argument; ``Raft`` calls them
while its role is LEADER (its step handler is ``step`` below).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zraft.core.messages import (
    NO_NODE,
    Entry,
    EntryKind,
    Message,
    MsgType,
    NodeId,
    ReadState,
)
from zraft.core.progress import Progress, ProgressState

if TYPE_CHECKING:
    from zraft.core.raft import Raft


def init(r: Raft) -> None:
    """Set up a new leader: fresh progress, then a no-op entry of its term (§5.4.2)."""
    nxt = r.log.last_index() + 1
    for peer in r.voters:
        pr = Progress(nxt, r.cfg.max_inflight)
        pr.recent_active = True  # a full election timeout of grace before CheckQuorum
        r.progress[peer] = pr
    r.last_active = {peer: r.now for peer in r.voters}
    r.progress[r.id].match_index = r.log.stable_index
    r.progress[r.id].become_replicate()
    # The no-op lets the leader commit entries of earlier terms by counting its
    # own (Raft §5.4.2) and learn the commit index it needs for reads (thesis §6.4).
    r.log.append([_entry(r, EntryKind.NOOP, b"")])
    r.append_pending = True


def _entry(r: Raft, kind: EntryKind, data: bytes) -> Entry:
    return Entry(r.term, r.log.last_index() + 1, kind, data)


def tick(r: Raft) -> None:
    """Count one tick as leader: heartbeats, CheckQuorum, transfer timeout."""
    r.heartbeat_elapsed += 1
    r.election_elapsed += 1
    if r.cfg.check_quorum and not has_quorum_contact(r):
        # Thesis §6.2: a leader cut off from a quorum steps down within an
        # election timeout, so clients stop waiting on it.
        r.become_follower(r.term, NO_NODE)
        return
    if r.election_elapsed >= r.cfg.election_ticks:
        r.election_elapsed = 0
        if r.lead_transferee != NO_NODE:
            r.lead_transferee = NO_NODE  # the transfer did not finish in time: take writes again
    if r.heartbeat_elapsed >= r.cfg.heartbeat_ticks:
        r.heartbeat_elapsed = 0
        broadcast_heartbeat(r, r.reads.last_seq())


def quorum_contact_tick(r: Raft) -> int:
    """Return the latest tick at which a quorum (self included) had been heard from."""
    ticks = sorted((r.now if p == r.id else r.last_active[p] for p in r.voters), reverse=True)
    return ticks[r.quorum - 1]


def has_quorum_contact(r: Raft) -> bool:
    """Tell whether a quorum was heard from within the last election timeout."""
    return r.now - quorum_contact_tick(r) < r.cfg.election_ticks


def step(r: Raft, m: Message) -> None:
    """Handle a current-term message as leader."""
    t = m.type
    pr = r.progress.get(m.src)
    if pr is None:
        return
    if t is MsgType.APPEND_RESP:
        _mark_active(r, m.src)
        _handle_append_response(r, m, pr)
    elif t is MsgType.HEARTBEAT_RESP:
        _mark_active(r, m.src)
        pr.probe_sent = False
        pr.free_first_one()  # appends lost in a partition must not pause it forever
        if pr.match_index < r.log.last_index():
            send_append(r, m.src)
        if m.context:
            seq = int.from_bytes(m.context, "big")
            for read in r.reads.ack(seq, m.src, r.quorum):
                _answer_read(r, read.requester, read.index, read.context)
    elif t is MsgType.READ_INDEX:
        handle_read(r, m.src, m.context)


def _mark_active(r: Raft, peer: NodeId) -> None:
    r.progress[peer].recent_active = True
    r.last_active[peer] = r.now


def _handle_append_response(r: Raft, m: Message, pr: Progress) -> None:
    if m.reject:
        hint = m.reject_hint
        if m.log_term > 0:
            # Skip every entry whose term is above the follower's hint term.
            hint, _ = r.log.find_conflict_by_term(m.reject_hint, m.log_term)
        if pr.maybe_decrease_to(m.index, hint):
            if pr.state is ProgressState.REPLICATE:
                pr.become_probe()
            send_append(r, m.src)
        return
    was_paused = pr.is_paused()
    if not pr.maybe_update(m.index):
        return
    if pr.state is ProgressState.PROBE:
        pr.become_replicate()
    if maybe_commit(r):
        broadcast_append(r, send_empty=True)
    elif was_paused:
        send_append(r, m.src)
    while send_append(r, m.src, send_empty=False):
        pass  # fill the pipeline up to max_inflight
    if m.src == r.lead_transferee and pr.match_index == r.log.last_index():
        r.send(MsgType.TIMEOUT_NOW, m.src)


def maybe_commit(r: Raft) -> bool:
    """Advance commit to the highest index stored on a quorum, if of this term (§5.4.2)."""
    matches = sorted((pr.match_index for pr in r.progress.values()), reverse=True)
    candidate = matches[r.quorum - 1]
    if candidate <= r.log.committed or r.log.term(candidate) != r.term:
        # Raft §5.4.2: never commit an earlier term's entry by counting replicas.
        return False
    r.log.commit_to(candidate)
    _release_reads_awaiting_commit(r)
    return True


def self_persisted(r: Raft) -> None:
    """Count the leader's own entries once they are durable (thesis §10.2.1)."""
    pr = r.progress[r.id]
    if pr.maybe_update(r.log.stable_index) and maybe_commit(r):
        broadcast_append(r, send_empty=True)


def send_append(r: Raft, to: NodeId, send_empty: bool = True) -> bool:
    """Send ``to`` the entries it lacks, within budgets; return whether a message went."""
    pr = r.progress[to]
    if pr.is_paused():
        return False
    prev = pr.next_index - 1
    prev_term = r.log.term(prev)
    if prev_term is None:
        # The follower needs entries that were compacted away: it needs a
        # snapshot. Probe again from our first index until snapshots ship.
        pr.next_index = r.log.first_index()
        return False
    entries = r.log.slice(
        pr.next_index, r.log.last_index() + 1, r.cfg.max_bytes_per_msg, r.cfg.max_entries_per_msg
    )
    if not entries and not send_empty:
        return False
    r.send(
        MsgType.APPEND,
        to,
        index=prev,
        log_term=prev_term,
        entries=entries,
        commit=r.log.committed,
    )
    pr.sent(entries[-1].index if entries else prev, len(entries))
    return True


def broadcast_append(r: Raft, send_empty: bool) -> None:
    """Send appends to every follower (with the current commit index)."""
    for peer in r.voters:
        if peer != r.id:
            send_append(r, peer, send_empty)


def broadcast_heartbeat(r: Raft, read_seq: int) -> None:
    """Send heartbeats; ``read_seq`` tags them for ReadIndex confirmation (0 = none)."""
    ctx = read_seq.to_bytes(8, "big") if read_seq else b""
    for peer in r.voters:
        if peer != r.id:
            # Never tell a follower to commit beyond what it is known to hold.
            commit = min(r.progress[peer].match_index, r.log.committed)
            r.send(MsgType.HEARTBEAT, peer, commit=commit, context=ctx)


def flush(r: Raft) -> None:
    """Send what batched inputs left pending: new entries and read confirmations."""
    if r.append_pending:
        r.append_pending = False
        broadcast_append(r, send_empty=False)
        if len(r.voters) == 1:
            self_persisted(r)
    if r.read_heartbeat_pending:
        r.read_heartbeat_pending = False
        broadcast_heartbeat(r, r.reads.last_seq())


def handle_read(r: Raft, requester: NodeId, context: bytes) -> None:
    """Register a ReadIndex request from ``requester`` (thesis §6.4)."""
    if r.log.term(r.log.committed) != r.term:
        # Until an entry of our term commits we do not know the commit index.
        r.reads_awaiting_commit.append((requester, context))
        return
    _register_read(r, requester, context)


def _register_read(r: Raft, requester: NodeId, context: bytes) -> None:
    if r.quorum == 1:
        _answer_read(r, requester, r.log.committed, context)
        return
    r.reads.add(r.log.committed, requester, context, r.id)
    r.read_heartbeat_pending = True  # one heartbeat round confirms all reads of this batch


def _release_reads_awaiting_commit(r: Raft) -> None:
    if r.reads_awaiting_commit and r.log.term(r.log.committed) == r.term:
        waiting, r.reads_awaiting_commit = r.reads_awaiting_commit, []
        for requester, ctx in waiting:
            _register_read(r, requester, ctx)


def _answer_read(r: Raft, requester: NodeId, index: int, context: bytes) -> None:
    if requester == r.id:
        r.read_states.append(ReadState(index, context))
    else:
        r.send(MsgType.READ_INDEX_RESP, requester, index=index, context=context)


def transfer(r: Raft, target: NodeId) -> None:
    """Start moving leadership to ``target`` (thesis §3.10)."""
    if target == r.id or target not in r.progress:
        raise ValueError(f"cannot transfer leadership to {target!r}")
    r.lead_transferee = target
    r.election_elapsed = 0  # the transfer must finish within one election timeout
    if r.progress[target].match_index == r.log.last_index():
        r.send(MsgType.TIMEOUT_NOW, target)
    else:
        send_append(r, target)
