"""The follower's step handler and AppendEntries handling (Raft §5.2, §5.3).

A follower answers its current leader's appends and heartbeats, resets its
election timer on each (§5.2), starts an election at once on TIMEOUT_NOW
(thesis §3.10), and relays ReadIndex answers for reads it forwarded
(thesis §6.4.1). Vote requests are handled before the role handler, in
``zraft.core.election``.
"""

from __future__ import annotations

import zraft.core.reads as reads
from zraft.core.messages import Message, MsgType, SnapshotMeta
from zraft.core.state import RaftState


def step(r: RaftState, m: Message) -> None:
    """Handle a current-term message as follower."""
    t = m.type
    if t is MsgType.APPEND:
        r.election_elapsed = 0
        r.set_leader(m.src)
        handle_append(r, m)
    elif t is MsgType.HEARTBEAT:
        r.election_elapsed = 0
        r.set_leader(m.src)
        r.log.commit_to(min(m.commit, r.log.last_index()))
        r.send(MsgType.HEARTBEAT_RESP, m.src, context=m.context)
    elif t is MsgType.SNAPSHOT:
        r.election_elapsed = 0
        r.set_leader(m.src)
        handle_snapshot(r, m)
    elif t is MsgType.TIMEOUT_NOW:
        r.campaign(transfer=True)
    elif t is MsgType.READ_INDEX_RESP:
        reads.forwarded_answer(r, m)
    elif t is MsgType.READ_INDEX:
        # We are not the leader; let the asker fail fast and retry elsewhere.
        reads.refuse(r, m)


def handle_append(r: RaftState, m: Message) -> None:
    """Apply an AppendEntries from the current leader and answer it (Raft §5.3)."""
    log = r.log
    if m.index < log.committed:
        # Everything up to commit is already settled; tell the leader so.
        r.send(MsgType.APPEND_RESP, m.src, index=log.committed)
        return
    prev_term = m.log_term
    if "skip_prev_log_check" in r.cfg.unsafe and m.index <= log.last_index():
        prev_term = log.term(m.index) or 0  # negative control: pretend the prev entry matches
    last_new = log.maybe_append(m.index, prev_term, m.commit, m.entries)
    if last_new is not None:
        r.send(MsgType.APPEND_RESP, m.src, index=last_new)
        return
    # Raft §5.3: the consistency check failed. Hint the leader past whole
    # terms that cannot match (thesis §3.5 optimisation, etcd style).
    hint_index, hint_term = log.find_conflict_by_term(min(m.index, log.last_index()), m.log_term)
    r.send(
        MsgType.APPEND_RESP,
        m.src,
        index=m.index,
        reject=True,
        reject_hint=hint_index,
        log_term=hint_term,
    )


def handle_snapshot(r: RaftState, m: Message) -> None:
    """Take a snapshot the leader streamed to us, now whole on disk (Raft §7, thesis §5.1).

    A snapshot at or below our commit index brings nothing. If our log holds
    its last entry (same index and term), the entries after it are kept and
    the commit index moves up to it. Otherwise the whole log goes and the
    driver switches the snapshot in (``Ready.snapshot``) before it answers.
    """
    log = r.log
    if m.index <= log.committed:
        r.send(MsgType.APPEND_RESP, m.src, index=log.committed)
        return
    if log.match_term(m.index, m.log_term):
        log.commit_to(m.index)
    else:
        stale = [e for e in log.entries if e.index > m.index]
        log.restore(m.index, m.log_term)
        if stale and "keep_tail_on_install" in r.cfg.unsafe:
            log.entries, log.stable_index = stale, stale[-1].index  # negative control
        r.pending_snapshot = SnapshotMeta(m.index, m.log_term, r.voters)
    r.send(MsgType.APPEND_RESP, m.src, index=m.index)
