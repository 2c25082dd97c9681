"""The shell (zraft/node/shell.py) fed messages by hand: no sockets, no clock, no waiting.

A follower n2 of a 3-node ensemble; the test plays its leader n1 by stepping
messages into the shell, and collects what the shell asks of the world.
"""

from __future__ import annotations

import random

import pytest

from tests.support.kv import kv_replica
from zraft.api import codes
from zraft.api.book import RequestBook
from zraft.api.routes import Reply, Request, Route
from zraft.core import (
    CoreConfig,
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    Raft,
    ReadPurpose,
    ReadState,
    Role,
    SoftState,
)
from zraft.node.shell import Shell
from zraft.replica import entries

ELECTION_TICKS = 10


class Recorder:
    """The shell's Io: records what it is asked to do."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.sent: list[Message] = []
        self.persisted: list[tuple[HardState | None, tuple[Entry, ...], bool]] = []
        self.forwards: list[tuple[str, int, bytes]] = []
        self.leases: list[ReadState] = []
        self.roles: list[SoftState] = []
        self.forward_ok = True

    def persist(self, hard_state, entries, sync) -> None:
        self.persisted.append((hard_state, entries, sync))

    def send(self, messages) -> None:
        self.sent.extend(messages)

    def forward(self, leader, fwd_id, data) -> bool:
        self.forwards.append((leader, fwd_id, data))
        return self.forward_ok

    def reply(self, reply) -> None:
        self.replies.append(reply)

    def on_applied(self, entries) -> None:
        pass

    def lease_read(self, rs) -> None:
        self.leases.append(rs)

    def observe(self, soft, previous) -> None:
        self.roles.append(soft)

    def outcomes(self) -> list[tuple[bool, object]]:
        out = [
            (r.outcome.ok, r.outcome.result if r.outcome.ok else r.outcome.code)
            for r in self.replies
        ]
        self.replies.clear()
        return out


@pytest.fixture
def node() -> tuple[Shell, Recorder]:
    cfg = CoreConfig(
        id="n2", voters=("n1", "n2", "n3"), election_ticks=ELECTION_TICKS, boot_lease=False
    )
    raft = Raft(cfg, random.Random(1))
    replica = kv_replica()
    book = RequestBook(replica.commands, replica, timeout_s=1.0, max_pending=100)
    io = Recorder()
    clients = {"n1": "tcp://n1", "n2": "tcp://n2", "n3": "tcp://n3"}
    return Shell(raft, replica, book, io, clients), io


def submit(shell: Shell, body: dict, now: float = 0.0, **envelope) -> Route:
    route = Route(address=[b"id"], started=now)
    shell.submit(route, Request(body, id=1, **envelope), now, 1_000)
    shell.process()
    return route


def replicate_a_write(shell: Shell) -> None:
    """The term-1 leader n1 sends its no-op and one set; only the no-op is committed."""
    data = entries.encode_command(1_000, "c1", 1, {"cmd": "set", "key": "k", "value": "v"})
    batch = (Entry(1, 1, EntryKind.NOOP), Entry(1, 2, EntryKind.NORMAL, data))
    shell.step(Message(MsgType.APPEND, 1, "n1", "n2", index=0, log_term=0, commit=1, entries=batch))
    shell.process()


def start_read(shell: Shell, io: Recorder, now: float = 0.0) -> bytes:
    """A linearizable get arrives; the follower asks the leader for a read index."""
    io.sent.clear()
    submit(shell, {"cmd": "get", "key": "k"}, now)
    (ask,) = [m for m in io.sent if m.type is MsgType.READ_INDEX]
    return ask.context


def become_leader(shell: Shell) -> None:
    """n2 campaigns and n1 grants its PreVote and its vote (a quorum of 3)."""
    shell.raft.campaign()
    shell.process()
    term = shell.raft.term + 1
    shell.step(Message(MsgType.PRE_VOTE_RESP, term, "n1", "n2"))
    shell.process()
    shell.step(Message(MsgType.VOTE_RESP, shell.raft.term, "n1", "n2"))
    shell.process()
    assert shell.status().role is Role.LEADER


def test_a_ready_is_handled_in_the_documented_order(node) -> None:
    shell, io = node
    order: list[str] = []
    io.persist = lambda *a: order.append("persist")  # type: ignore[method-assign]
    io.send = lambda msgs: order.append("send")  # type: ignore[method-assign]
    io.on_applied = lambda e: order.append("apply")  # type: ignore[method-assign]
    io.observe = lambda s, p: order.append("observe")  # type: ignore[method-assign]
    replicate_a_write(shell)
    # Raft Figure 2: the entries are durable before the acknowledgement leaves.
    assert order == ["persist", "send", "apply", "observe"]


def test_read_index_answer_in_the_same_ready_as_its_commit_is_served(node) -> None:
    # Thesis §6.4: serve once applied >= read index. The commit that reaches the read
    # index and the read index itself arrive in one round: the entries applied in
    # that Ready count (regression: the read was parked for ever on an idle ensemble).
    shell, io = node
    replicate_a_write(shell)
    ctx = start_read(shell, io)
    shell.step(Message(MsgType.APPEND, 1, "n1", "n2", index=2, log_term=1, commit=2))
    shell.step(Message(MsgType.READ_INDEX_RESP, 1, "n1", "n2", index=2, context=ctx))
    shell.process()
    assert io.outcomes() == [(True, "v")] and shell.book.parked == []


def test_read_waits_for_apply_and_never_before(node) -> None:
    shell, io = node
    replicate_a_write(shell)
    ctx = start_read(shell, io)
    shell.step(Message(MsgType.READ_INDEX_RESP, 1, "n1", "n2", index=2, context=ctx))
    shell.process()
    assert io.outcomes() == []  # index 2 is not applied here yet: answering now could be stale
    shell.step(Message(MsgType.HEARTBEAT, 1, "n1", "n2", commit=2))
    shell.process()
    assert io.outcomes() == [(True, "v")]


def test_a_parked_read_past_its_deadline_gets_a_timeout_reply(node) -> None:
    shell, io = node
    replicate_a_write(shell)
    ctx = start_read(shell, io)
    shell.step(Message(MsgType.READ_INDEX_RESP, 1, "n1", "n2", index=2, context=ctx))
    shell.process()
    assert io.outcomes() == [] and len(shell.book.parked) == 1
    shell.tick(0, now=1.0, wall_ms=2_000)
    assert io.outcomes() == [(False, codes.TIMEOUT)] and shell.book.parked == []


def test_a_follower_forwards_a_parsed_write_and_relays_the_answer(node) -> None:
    shell, io = node
    replicate_a_write(shell)
    submit(shell, {"cmd": "set", "key": "a", "value": 1}, client="c", seq=4)
    ((leader, fwd_id, data),) = io.forwards
    from zraft.api import forwarding
    from zraft.statemachine import Outcome

    assert leader == "n1" and forwarding.decode_request(data).command["key"] == "a"
    assert shell.forward_answered(fwd_id, forwarding.encode_reply(Outcome.success(True), {}, "n1"))
    (reply,) = io.replies
    assert reply.outcome.ok and reply.served_by == "n1" and reply.relayed
    assert not shell.forward_answered(fwd_id, b"garbage")  # counted by the node, never raised


def test_writes_refused_during_a_failed_transfer_are_proposed_when_it_ends(node) -> None:
    # Proposals are dropped while leadership moves (thesis §3.10); if the transfer
    # times out and this node keeps leading, the parked writes must go in then,
    # not wait for a leader change that never comes (regression: found by review).
    shell, io = node
    become_leader(shell)
    shell.transfer_leader("n3")
    submit(shell, {"cmd": "set", "key": "k", "value": 1})
    assert shell.book.writes == {} and len(shell.book.waiting) == 1
    for _ in range(2 * ELECTION_TICKS):
        shell.tick(1, now=0.0, wall_ms=1_000)
        # n1 keeps answering (CheckQuorum holds); n3 never takes over
        shell.step(Message(MsgType.HEARTBEAT_RESP, shell.raft.term, "n1", "n2"))
        shell.process()
    st = shell.status()
    assert st.leader_id == "n2" and not st.lead_transferee
    assert shell.book.waiting == [] and len(shell.book.writes) == 1 and io.replies == []


def test_a_write_fenced_to_an_old_term_is_refused_and_never_proposed(node) -> None:
    """A leader payload's writes carry its term: once another leader is elected they
    must fail (FENCED) instead of being ordered after that leader's writes."""
    shell, io = node
    become_leader(shell)
    term = shell.status().term
    submit(shell, {"cmd": "set", "key": "k", "value": 1}, fence=term)
    assert len(shell.book.writes) == 1 and io.replies == []
    last = shell.status().last_index
    submit(shell, {"cmd": "set", "key": "k", "value": 2}, fence=term + 1)  # not this leader's
    (reply,) = io.replies
    assert (
        reply.outcome.code == codes.FENCED and f"fenced to term {term + 1}" in reply.outcome.message
    )
    assert shell.status().last_index == last and len(shell.book.writes) == 1


def test_a_leader_answers_a_write_once_committed_and_applied(node) -> None:
    shell, io = node
    become_leader(shell)
    submit(shell, {"cmd": "set", "key": "k", "value": 1}, client="c", seq=1)
    assert io.replies == []
    last = shell.status().last_index
    shell.step(Message(MsgType.APPEND_RESP, shell.raft.term, "n1", "n2", index=last))
    shell.process()
    (reply,) = io.replies
    assert reply.outcome.ok and reply.index == last and shell.replica.applied_index == last


def test_lease_probes_go_to_the_payloads_and_client_reads_to_the_book(node) -> None:
    from zraft.core import ReadContext

    shell, io = node
    become_leader(shell)
    last = shell.status().last_index
    shell.step(Message(MsgType.APPEND_RESP, shell.raft.term, "n1", "n2", index=last))
    shell.process()
    assert shell.probe_lease(ReadContext(ReadPurpose.LEASE, 1))
    shell.process()
    (hb,) = [m for m in io.sent if m.type is MsgType.HEARTBEAT and m.dst == "n1"][-1:]
    shell.step(Message(MsgType.HEARTBEAT_RESP, shell.raft.term, "n1", "n2", context=hb.context))
    shell.process()
    assert [rs.context.purpose for rs in io.leases] == [ReadPurpose.LEASE] and io.replies == []


def test_the_status_value_is_all_the_node_needs(node) -> None:
    shell, _ = node
    replicate_a_write(shell)
    st = shell.status()
    assert (st.role, st.leader_id, st.commit, st.last_index) == (Role.FOLLOWER, "n1", 1, 2)
    assert st.to_dict()["leader"] == "n1" and st.committed_in_term
