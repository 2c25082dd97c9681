"""Leader behaviour: replication (Raft §5.3), commitment (§5.4.2), CheckQuorum
(thesis §6.2), heartbeats that confirm reads (thesis §6.4) and leadership
transfer (thesis §3.10).

Functions here take the ``RaftState`` as their first argument; ``Raft`` calls
them while its role is LEADER (its step handler is ``step`` below). The
ReadIndex flow itself lives in ``zraft.core.reads``.
"""

from __future__ import annotations

import zraft.core.reads as reads
from zraft.core.messages import (
    NO_NODE,
    Entry,
    EntryKind,
    Message,
    MsgType,
    NodeId,
)
from zraft.core.progress import Progress, ProgressState
from zraft.core.state import RaftState


def init(r: RaftState) -> None:
    """Set up a new leader: fresh progress, then a no-op entry of its term (§5.4.2)."""
    nxt = r.log.last_index() + 1
    for peer in r.voters:
        r.progress[peer] = Progress(nxt, r.cfg.max_inflight)
    r.last_active = {peer: r.now for peer in r.voters}  # a full election timeout of grace
    r.progress[r.id].match_index = r.log.stable_index
    r.progress[r.id].become_replicate()
    # The no-op lets the leader commit entries of earlier terms by counting its
    # own (Raft §5.4.2) and learn the commit index it needs for reads (thesis §6.4).
    r.log.append([_entry(r, EntryKind.NOOP, b"")])
    r.append_pending = True


def _entry(r: RaftState, kind: EntryKind, data: bytes) -> Entry:
    return Entry(r.term, r.log.last_index() + 1, kind, data)


def tick(r: RaftState) -> None:
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


def quorum_contact_tick(r: RaftState) -> int:
    """Return the latest tick at which a quorum (self included) had been heard from."""
    r.last_active[r.id] = r.now  # the leader always hears itself
    return r.majority.quorum_contact(r.last_active)


def has_quorum_contact(r: RaftState) -> bool:
    """Tell whether a quorum was heard from within the last election timeout."""
    return r.now - quorum_contact_tick(r) < r.cfg.election_ticks


def step(r: RaftState, m: Message) -> None:
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
        reads.heartbeat_acked(r, m.src, m.context)
    elif t is MsgType.READ_INDEX:
        reads.handle_read_request(r, m)


def _mark_active(r: RaftState, peer: NodeId) -> None:
    r.last_active[peer] = r.now


def _handle_append_response(r: RaftState, m: Message, pr: Progress) -> None:
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
    elif pr.state is ProgressState.SNAPSHOT and pr.match_index >= pr.pending_snapshot:
        # The follower installed a snapshot (it answers with the snapshot's index).
        pr.become_replicate()
    if maybe_commit(r):
        broadcast_append(r, send_empty=True)
    elif was_paused:
        send_append(r, m.src)
    while send_append(r, m.src, send_empty=False):
        pass  # fill the pipeline up to max_inflight
    if m.src == r.lead_transferee and pr.match_index == r.log.last_index():
        r.send(MsgType.TIMEOUT_NOW, m.src)


def maybe_commit(r: RaftState) -> bool:
    """Advance commit to the highest index stored on a quorum, if of this term (§5.4.2)."""
    candidate = r.majority.committed_index({p: pr.match_index for p, pr in r.progress.items()})
    if candidate <= r.log.committed or r.log.term(candidate) != r.term:
        # Raft §5.4.2: never commit an earlier term's entry by counting replicas.
        return False
    r.log.commit_to(candidate)
    reads.release_awaiting_commit(r)
    return True


def self_persisted(r: RaftState) -> None:
    """Count the leader's own entries once they are durable (thesis §10.2.1)."""
    pr = r.progress[r.id]
    if pr.maybe_update(r.log.stable_index) and maybe_commit(r):
        broadcast_append(r, send_empty=True)


def send_append(r: RaftState, to: NodeId, send_empty: bool = True) -> bool:
    """Send ``to`` the entries it lacks, within budgets; return whether a message went."""
    pr = r.progress[to]
    if pr.is_paused():
        return False
    prev = pr.next_index - 1
    prev_term = r.log.term(prev)
    if prev_term is None:
        # The follower needs entries that were compacted away: only a snapshot
        # helps (Raft §7). The driver streams its newest one; appends pause.
        pr.become_snapshot(r.log.snapshot_index)
        r.send(MsgType.SNAPSHOT, to, index=r.log.snapshot_index, log_term=r.log.snapshot_term)
        return True
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


def snapshot_reported(r: RaftState, peer: NodeId, index: int, ok: bool) -> None:
    """Take the driver's word on a snapshot sent to ``peer`` (etcd's ReportSnapshot).

    On success, probe from just after ``index`` (the follower's answer to the
    install may be lost); on failure, probe from the match index, which asks
    for a snapshot again once the driver is ready to send one.
    """
    pr = r.progress.get(peer)
    if pr is None or pr.state is not ProgressState.SNAPSHOT:
        return
    pr.pending_snapshot = index if ok else 0
    pr.become_probe()
    send_append(r, peer)


def broadcast_append(r: RaftState, send_empty: bool) -> None:
    """Send appends to every follower (with the current commit index)."""
    for peer in r.voters:
        if peer != r.id:
            send_append(r, peer, send_empty)


def broadcast_heartbeat(r: RaftState, read_seq: int) -> None:
    """Send heartbeats; ``read_seq`` tags them for ReadIndex confirmation (0 = none)."""
    ctx = read_seq.to_bytes(8, "big") if read_seq else b""
    for peer in r.voters:
        if peer != r.id:
            # Never tell a follower to commit beyond what it is known to hold.
            commit = min(r.progress[peer].match_index, r.log.committed)
            r.send(MsgType.HEARTBEAT, peer, commit=commit, context=ctx)


def flush(r: RaftState) -> None:
    """Send what batched inputs left pending: new entries and read confirmations."""
    if r.append_pending:
        r.append_pending = False
        broadcast_append(r, send_empty=False)
        if len(r.voters) == 1:
            self_persisted(r)
    if r.read_heartbeat_pending:
        r.read_heartbeat_pending = False
        broadcast_heartbeat(r, r.reads.last_seq())


def transfer(r: RaftState, target: NodeId) -> None:
    """Start moving leadership to ``target`` (thesis §3.10)."""
    if target == r.id or target not in r.progress:
        raise ValueError(f"cannot transfer leadership to {target!r}")
    r.lead_transferee = target
    r.election_elapsed = 0  # the transfer must finish within one election timeout
    if r.progress[target].match_index == r.log.last_index():
        r.send(MsgType.TIMEOUT_NOW, target)
    else:
        send_append(r, target)


def transfer_target(r: RaftState) -> NodeId:
    """Return the voter other than self with the highest match index (NO_NODE if none)."""
    best, best_match = NO_NODE, -1
    for peer in r.voters:
        pr = r.progress.get(peer)
        if peer != r.id and pr is not None and pr.match_index > best_match:
            best, best_match = peer, pr.match_index
    return best
