"""The driver (zraft/node.py) fed messages by hand: no peers, no waiting.

A follower ``Node`` on in-memory storage; the test plays its leader by stepping
messages into the core and handling every Ready the way the loop does.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zraft.api import entries as payloads
from zraft.api.routes import PendingRequest, Route
from zraft.config import parse_config
from zraft.core import Entry, EntryKind, Message, MsgType
from zraft.node import Node
from zraft.storage.memory import MemoryStorage


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def follower(tmp_path: Path) -> Iterator[tuple[Node, list[dict]]]:
    toml = '[ensemble]\nname = "t"\n'
    for i in (1, 2, 3):
        toml += (
            f'[[node]]\nid = "n{i}"\nraft = "tcp://127.0.0.1:{_port()}"\n'
            f'client = "tcp://127.0.0.1:{_port()}"\ndata_dir = "{tmp_path / str(i)}"\n'
        )
    node = Node(parse_config(toml, "t.toml"), "n2", storage=MemoryStorage())
    replies: list[dict] = []
    node._send_to = lambda route, body, relayed=False: replies.append(json.loads(body))
    try:
        yield node, replies
    finally:
        node._shutdown()


def handle_all(node: Node) -> None:
    while node.raft.has_ready():
        node._handle_ready(node.raft.ready())


def replicate_a_write(node: Node) -> None:
    """The term-1 leader n1 sends its no-op and one set; only the no-op is committed."""
    cmd = {"cmd": "set", "key": "k", "value": "v"}
    data = payloads.encode_command(int(time.time() * 1000), "c1", 1, cmd)
    entries = (Entry(1, 1, EntryKind.NOOP), Entry(1, 2, EntryKind.NORMAL, data))
    node.raft.step(Message(MsgType.APPEND, 1, "n1", "n2", index=0, log_term=0, commit=1,
                           entries=entries))  # fmt: skip
    handle_all(node)


def start_read(node: Node, deadline_s: float = 1.0) -> bytes:
    """A linearizable get arrives; the follower asks the leader for a read index."""
    cmd = node.commands.validate({"cmd": "get", "key": "k"})
    now = time.monotonic()
    node.batch_reads.append(PendingRequest(Route(frames=[b"id"], started=now), b"",
                                           now + deadline_s, cmd))  # fmt: skip
    node._flush_reads()
    handle_all(node)
    (ctx,) = node.reads
    return ctx


def test_read_index_answer_in_the_same_ready_as_its_commit_is_served(follower) -> None:
    # Thesis §6.4: serve once applied >= read index. The commit that reaches the read
    # index and the read index itself arrive in one drain: the entries applied in
    # that Ready count (regression: the read was parked for ever on an idle ensemble).
    node, replies = follower
    replicate_a_write(node)
    ctx = start_read(node)
    node.raft.step(Message(MsgType.APPEND, 1, "n1", "n2", index=2, log_term=1, commit=2))
    node.raft.step(Message(MsgType.READ_INDEX_RESP, 1, "n1", "n2", index=2, context=ctx))
    handle_all(node)
    assert [(r["ok"], r["result"]) for r in replies] == [(True, "v")]
    assert node.parked_reads == []


def test_read_waits_for_apply_and_never_before(follower) -> None:
    node, replies = follower
    replicate_a_write(node)
    ctx = start_read(node)
    node.raft.step(Message(MsgType.READ_INDEX_RESP, 1, "n1", "n2", index=2, context=ctx))
    handle_all(node)
    assert replies == []  # index 2 is not applied here yet: answering now could be stale
    node.raft.step(Message(MsgType.HEARTBEAT, 1, "n1", "n2", commit=2))
    handle_all(node)
    assert [(r["ok"], r["result"]) for r in replies] == [(True, "v")]


def test_a_parked_read_past_its_deadline_gets_a_timeout_reply(follower) -> None:
    node, replies = follower
    replicate_a_write(node)
    ctx = start_read(node, deadline_s=0.5)
    node.raft.step(Message(MsgType.READ_INDEX_RESP, 1, "n1", "n2", index=2, context=ctx))
    handle_all(node)
    assert replies == [] and len(node.parked_reads) == 1
    node._expire(time.monotonic() + 1.0)
    assert [r["error"] for r in replies] == ["TIMEOUT"]
    assert node.parked_reads == []


def become_leader(node: Node) -> None:
    """n2 campaigns and n1 grants its PreVote and its vote (a quorum of 3)."""
    node.raft.campaign()
    handle_all(node)
    term = node.raft.term + 1
    node.raft.step(Message(MsgType.PRE_VOTE_RESP, term, "n1", "n2"))
    handle_all(node)
    node.raft.step(Message(MsgType.VOTE_RESP, node.raft.term, "n1", "n2"))
    handle_all(node)
    assert node.raft.leader_id == "n2"


def test_writes_refused_during_a_failed_transfer_are_proposed_when_it_ends(follower) -> None:
    # Proposals are dropped while leadership moves (thesis §3.10); if the transfer
    # times out and this node keeps leading, the parked writes must go in then,
    # not wait for a leader change that never comes (regression: found by review).
    node, replies = follower
    become_leader(node)
    node.raft.transfer_leader("n3")
    body = json.dumps({"cmd": "set", "key": "k", "value": 1}).encode()
    node._handle_request(Route(frames=[b"id"], started=time.monotonic()), body, forwarded=False)
    assert node.pending_writes == {} and len(node.waiting_for_leader) == 1
    for _ in range(2 * node.raft.cfg.election_ticks):
        node.raft.tick()
        # n1 keeps answering (CheckQuorum holds); n3 never takes over
        node.raft.step(Message(MsgType.HEARTBEAT_RESP, node.raft.term, "n1", "n2"))
        handle_all(node)
    assert node.raft.leader_id == "n2" and not node.raft.lead_transferee
    node._on_tick(time.monotonic())
    assert node.waiting_for_leader == [] and len(node.pending_writes) == 1
    assert replies == []


def test_a_bug_while_serving_a_request_fails_that_request_not_the_node(follower) -> None:
    node, replies = follower

    def broken(state_hash: bool = False) -> dict:
        raise TypeError("a bug")

    node.status = broken  # type: ignore[method-assign]
    node._handle_request(Route(frames=[b"id"], started=time.monotonic()), b'{"cmd":"status"}')
    assert [r["error"] for r in replies] == ["INTERNAL"]


def test_status_hash_is_the_same_for_the_same_state(follower) -> None:
    node, _ = follower
    replicate_a_write(node)
    first = node.status(state_hash=True)["state_hash"]
    assert node.status(state_hash=True)["state_hash"] == first and len(first) == 64
    node.raft.step(Message(MsgType.HEARTBEAT, 1, "n1", "n2", commit=2))
    handle_all(node)  # the set is applied: the state changes, and so does the hash
    assert node.status(state_hash=True)["state_hash"] != first


def test_frames_from_unknown_peers_are_counted_and_the_warning_rate_limited(
    follower, caplog: pytest.LogCaptureFixture
) -> None:
    node, _ = follower
    with caplog.at_level("WARNING", logger="zraft.node"):
        for _ in range(1000):
            node._on_mesh_event("unknown_peer", "0x006b8b4567")
    warnings = [r for r in caplog.records if "unknown peer" in r.getMessage()]
    assert len(warnings) == 1
    value = node.metrics.registry.get_sample_value("zraft_network_unknown_peer_messages_total")
    assert value == 1000


def test_a_write_fenced_to_an_old_term_is_refused_and_never_proposed(follower) -> None:
    """A leader payload's writes carry its term: once another leader is elected they
    must fail (FENCED) instead of being ordered after that leader's writes."""
    node, replies = follower
    become_leader(node)
    term = node.raft.term

    def send(body: dict) -> None:
        node._handle_request(Route(frames=[b"id"], started=time.monotonic()),
                             json.dumps(body).encode(), forwarded=False)  # fmt: skip

    send({"cmd": "set", "key": "k", "value": 1, "fence": term})
    assert len(node.pending_writes) == 1 and replies == []
    last = node.raft.log.last_index()
    send({"cmd": "set", "key": "k", "value": 2, "fence": term + 1})  # not this leader's
    assert [r["error"] for r in replies] == ["FENCED"]
    assert f"fenced to term {term + 1}" in replies[0]["message"]
    assert node.raft.log.last_index() == last and len(node.pending_writes) == 1
    send({"cmd": "set", "key": "k", "value": 3, "fence": "7"})
    assert replies[-1]["error"] == "BAD_REQUEST" and "fence" in replies[-1]["message"]


@pytest.mark.parametrize("ticks_first", [True, False])
def test_ticks_owed_by_a_stalled_loop_run_before_the_messages_that_arrived(
    follower, monkeypatch: pytest.MonkeyPatch, ticks_first: bool
) -> None:
    """A follower whose loop was blocked for 9 ticks then handles a heartbeat: the
    heartbeat must restart its election timer *after* the owed ticks, or the lease
    it just acknowledged (which fences the leader's payload) is cut short by the
    stall (found by review). Control: draining first leaves the timer 9 ticks old."""
    node, _ = follower
    replicate_a_write(node)  # n1 leads term 1
    heartbeat = Message(MsgType.HEARTBEAT, 1, "n1", "n2", commit=1)
    monkeypatch.setattr(node, "_drain_peers", lambda: node.raft.step(heartbeat))
    stalled_since = time.monotonic() - 9.5 * node.tick_s
    events = {node.mesh.socket: 1}
    if ticks_first:
        node._loop_round(events, stalled_since)
    else:  # the old order: drain, then the owed ticks
        node._drain_peers()
        node._loop_round({}, stalled_since)
    elapsed = node.raft.election_elapsed
    assert elapsed == 0 if ticks_first else elapsed >= 9


def test_health_fails_when_the_loop_stops_turning_and_ready_needs_a_leader(follower) -> None:
    node, _ = follower
    node.running = True
    node.loop_turned_at = time.monotonic()
    assert node.health()[0] and not node.ready()[0]  # healthy, but no leader known yet
    replicate_a_write(node)
    assert node.ready() == (True, node.ready()[1]) and node.ready()[1]["leader"] == "n1"
    node.loop_turned_at = time.monotonic() - 60  # stuck in a 60 s fsync, say
    ok, facts = node.health()
    assert not ok and facts["loop_age_s"] >= 60 and not node.ready()[0]


def test_the_leader_reports_how_far_each_follower_lags(follower) -> None:
    node, _ = follower
    sample = node.metrics.registry.get_sample_value
    node._observe_followers()
    assert sample("zraft_server_follower_lag_entries", {"peer": "n1"}) == 0  # not leader
    become_leader(node)
    node._observe_followers()
    last = node.raft.log.last_index()
    # A new leader does not know n3's match until it answers: no jump to the whole log.
    assert last >= 1 and sample("zraft_server_follower_lag_entries", {"peer": "n3"}) == 0
    node.raft.step(Message(MsgType.APPEND_RESP, node.raft.term, "n3", "n2", index=last))
    handle_all(node)  # n3 answered: it has everything so far
    for _ in range(3):
        node.raft.propose(payloads.encode_clock(1))
    handle_all(node)
    node._observe_followers()
    assert sample("zraft_server_follower_lag_entries", {"peer": "n3"}) == 3
    last = node.raft.log.last_index()
    node.raft.step(Message(MsgType.APPEND_RESP, node.raft.term, "n3", "n2", index=last))
    handle_all(node)
    node._observe_followers()
    assert sample("zraft_server_follower_lag_entries", {"peer": "n3"}) == 0


def test_peer_round_trip_times_the_oldest_unanswered_heartbeat(
    follower, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower that stalls while heartbeats pile up must show its stall, not the
    gap to the newest heartbeat (found by review: the metric hid slow followers)."""
    from zraft.transport.codec import encode

    node, _ = follower
    become_leader(node)
    monkeypatch.setattr(node.mesh, "send", lambda dst, frame: True)
    hb = Message(MsgType.HEARTBEAT, node.raft.term, "n2", "n3")
    node._send_all((hb,))
    first = node._heartbeat_sent["n3"]
    node._heartbeat_sent["n3"] = first - 0.5  # the first heartbeat left 0.5 s ago
    node._send_all((hb,))  # later heartbeats do not reset the clock
    assert node._heartbeat_sent["n3"] == first - 0.5
    resp = Message(MsgType.HEARTBEAT_RESP, node.raft.term, "n3", "n2")
    monkeypatch.setattr(node.mesh, "recv", lambda: [("n3", encode(resp))])
    node._drain_peers()
    count = node.metrics.registry.get_sample_value
    labels = {"peer": "n3"}
    assert count("zraft_network_peer_round_trip_time_seconds_count", labels) == 1
    assert count("zraft_network_peer_round_trip_time_seconds_sum", labels) >= 0.5
