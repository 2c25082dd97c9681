"""The node's I/O side (zraft/node/loop.py) fed messages by hand: no peers, no waiting.

A follower ``Node`` on in-memory storage with real sockets that nobody else
uses; the test plays its leader n1 by stepping messages into the shell.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zraft.api.routes import Request, Route
from zraft.config import parse_config
from zraft.core import Entry, EntryKind, Message, MsgType
from zraft.node import Node
from zraft.replica import entries
from zraft.storage.memory import MemoryStorage
from zraft.transport.codec import encode


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
    node.endpoint.send = lambda reply, me, leader: replies.append(  # type: ignore[method-assign]
        {"ok": reply.outcome.ok, "result": reply.outcome.result, "error": reply.outcome.code}
    )
    try:
        yield node, replies
    finally:
        if not node.endpoint.socket.closed:  # a test may have shut it down itself
            node._shutdown()


def replicate_a_write(node: Node) -> None:
    """The term-1 leader n1 sends its no-op and one set; only the no-op is committed."""
    data = entries.encode_command(int(time.time() * 1000), "c1", 1, {"cmd": "set", "key": "k"})
    batch = (Entry(1, 1, EntryKind.NOOP), Entry(1, 2, EntryKind.NORMAL, data))
    node.shell.step(Message(MsgType.APPEND, 1, "n1", "n2", index=0, log_term=0, commit=1,
                            entries=batch))  # fmt: skip
    node.shell.process()


def ask(node: Node, body: dict) -> None:
    frames = [b"id", b"", json.dumps(body).encode()]
    node.endpoint.receive = (
        lambda now: iter(  # type: ignore[method-assign]
            [(Route(address=frames[:-1], started=now), Request(body, id=1))]
        )
    )
    node._drain_clients(time.monotonic())


def test_a_bug_while_serving_a_request_fails_that_request_not_the_node(
    follower, monkeypatch
) -> None:
    node, replies = follower

    def broken(route, req) -> None:
        raise TypeError("a bug")

    monkeypatch.setattr(node, "_answer_node", broken)
    ask(node, {"cmd": "status"})
    assert [r["error"] for r in replies] == ["INTERNAL"]


def test_status_hash_is_the_same_for_the_same_state(follower) -> None:
    node, replies = follower
    replicate_a_write(node)
    ask(node, {"cmd": "status", "hash": True})
    ask(node, {"cmd": "status", "hash": True})
    first, second = (r["result"]["state_hash"] for r in replies)
    assert first == second and len(first) == 64
    node.shell.step(Message(MsgType.HEARTBEAT, 1, "n1", "n2", commit=2))
    node.shell.process()  # the set is applied: the state changes, and so does the hash
    ask(node, {"cmd": "status", "hash": True})
    assert replies[-1]["result"]["state_hash"] != first


def test_frames_from_unknown_peers_are_counted_and_the_warning_rate_limited(
    follower, caplog: pytest.LogCaptureFixture
) -> None:
    node, _ = follower
    with caplog.at_level("WARNING", logger="zraft.node"):
        for _ in range(1000):
            node.observer.mesh_event("unknown_peer", "0x006b8b4567")
    warnings = [r for r in caplog.records if "unknown peer" in r.getMessage()]
    assert len(warnings) == 1
    value = node.metrics.registry.get_sample_value("zraft_network_unknown_peer_messages_total")
    assert value == 1000


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
    monkeypatch.setattr(node, "_drain_peers", lambda now: node.shell.step(heartbeat))
    stalled_since = time.monotonic() - 9.5 * node.config.raft.tick_s
    events = {node.mesh.socket: 1}
    if ticks_first:
        node._loop_round(events, stalled_since)
    else:  # the old order: drain, then the owed ticks
        node._drain_peers(0.0)
        node._loop_round({}, stalled_since)
    elapsed = node.shell.raft.election_elapsed
    assert elapsed == 0 if ticks_first else elapsed >= 9


def test_health_fails_when_the_loop_stops_turning_and_ready_needs_a_leader(follower) -> None:
    node, _ = follower
    node.running = True
    node._on_tick(time.monotonic())
    assert node.health()[0] and not node.ready()[0]  # healthy, but no leader known yet
    replicate_a_write(node)
    node._on_tick(time.monotonic())
    assert node.ready()[0] and node.ready()[1]["leader"] == "n1"
    node.loop_turned_at = time.monotonic() - 60  # stuck in a 60 s fsync, say
    node._on_tick(time.monotonic())
    ok, facts = node.health()
    assert not ok and facts["loop_age_s"] >= 60 and not node.ready()[0]


def become_leader(node: Node) -> None:
    shell = node.shell
    shell.raft.campaign()
    shell.process()
    shell.step(Message(MsgType.PRE_VOTE_RESP, shell.raft.term + 1, "n1", "n2"))
    shell.process()
    shell.step(Message(MsgType.VOTE_RESP, shell.raft.term, "n1", "n2"))
    shell.process()
    assert shell.status().leader_id == "n2"


def test_the_leader_reports_how_far_each_follower_lags(follower) -> None:
    node, _ = follower
    sample = node.metrics.registry.get_sample_value
    node._on_tick(time.monotonic())
    assert sample("zraft_server_follower_lag_entries", {"peer": "n1"}) == 0  # not leader
    become_leader(node)
    node._on_tick(time.monotonic())
    last = node.shell.status().last_index
    # A new leader does not know n3's match until it answers: no jump to the whole log.
    assert last >= 1 and sample("zraft_server_follower_lag_entries", {"peer": "n3"}) == 0
    term = node.shell.status().term
    node.shell.step(Message(MsgType.APPEND_RESP, term, "n3", "n2", index=last))
    node.shell.process()  # n3 answered: it has everything so far
    for i in range(3):
        route = Route(address=[b"c"], started=time.monotonic())
        node.shell.submit(route, Request({"cmd": "set", "key": f"k{i}", "value": 1}), 0.0, 1)
    node.shell.process()
    node._on_tick(time.monotonic())
    assert sample("zraft_server_follower_lag_entries", {"peer": "n3"}) == 3
    last = node.shell.status().last_index
    node.shell.step(Message(MsgType.APPEND_RESP, term, "n3", "n2", index=last))
    node.shell.process()
    node._on_tick(time.monotonic())
    assert sample("zraft_server_follower_lag_entries", {"peer": "n3"}) == 0


def test_peer_round_trip_times_the_oldest_unanswered_heartbeat(
    follower, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower that stalls while heartbeats pile up must show its stall, not the
    gap to the newest heartbeat (found by review: the metric hid slow followers)."""
    node, _ = follower
    become_leader(node)
    monkeypatch.setattr(node.mesh, "send", lambda dst, frame: True)
    term = node.shell.status().term
    hb = Message(MsgType.HEARTBEAT, term, "n2", "n3")
    node.send((hb,))
    first = node.observer._heartbeat_sent["n3"]
    node.observer._heartbeat_sent["n3"] = first - 0.5  # the first heartbeat left 0.5 s ago
    node.send((hb,))  # later heartbeats do not reset the clock
    assert node.observer._heartbeat_sent["n3"] == first - 0.5
    resp = Message(MsgType.HEARTBEAT_RESP, term, "n3", "n2")
    monkeypatch.setattr(node.mesh, "recv", lambda: [("n3", encode(resp))])
    node._drain_peers(time.monotonic())
    count = node.metrics.registry.get_sample_value
    labels = {"peer": "n3"}
    assert count("zraft_network_peer_round_trip_time_seconds_count", labels) == 1
    assert count("zraft_network_peer_round_trip_time_seconds_sum", labels) >= 0.5


def test_only_declared_commands_become_metric_labels(follower) -> None:
    """Security finding: every unknown command name used to become a label value,
    growing /metrics without bound (and a surrogate in one broke every scrape)."""
    node, _ = follower
    for i in range(50):
        ask(node, {"cmd": f"nope{i}"})
    ask(node, {"cmd": "ping"})
    names = {
        s.labels["command"]
        for metric in node.metrics.registry.collect()
        for s in metric.samples
        if s.name == "zraft_client_requests_total"
    }
    assert names == {"?", "ping"}
