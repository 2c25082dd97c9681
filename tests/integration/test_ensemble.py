"""Real node processes over real ZeroMQ on loopback: election, replication, crashes, restarts."""

from __future__ import annotations

import json
import time

import pytest
import zmq

from tests.support.ensemble import Ensemble
from zraft.api.client import ZraftError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_election_one_leader_everyone_agrees(ensemble: Ensemble) -> None:
    lead = ensemble.wait_leader()
    st = ensemble.statuses()
    assert [n for n, s in st.items() if s["role"] == "leader"] == [lead]
    assert {s["term"] for s in st.values()} == {st[lead]["term"]}


def test_replication_every_node_applies_the_same_writes(ensemble: Ensemble) -> None:
    ensemble.wait_leader()
    c = ensemble.client_for()
    for i in range(50):
        assert c.set(f"k{i}", i) is True
    # Linearizable reads through each node see every acknowledged write.
    for nid in ensemble.ids:
        with ensemble.client_for(nid) as one:
            assert one.mget([f"k{i}" for i in range(50)]) == list(range(50))
    st = ensemble.statuses()
    assert len({s["applied"] for s in st.values()}) == 1


def test_write_through_a_follower_is_forwarded(ensemble: Ensemble) -> None:
    lead = ensemble.wait_leader()
    follower = next(n for n in ensemble.ids if n != lead)
    with ensemble.client_for(follower) as c:
        assert c.set("via", "follower") is True
        assert c.last_reply["node"] == follower and c.last_reply["leader"] == lead
        assert c.incr("ctr") == 1
    with ensemble.client_for(lead) as c:
        assert c.get("via") == "follower"


def test_follower_refuses_to_forward_when_asked_and_names_the_leader(ensemble: Ensemble) -> None:
    lead = ensemble.wait_leader()
    follower = next(n for n in ensemble.ids if n != lead)
    with ensemble.client_for(follower, retry_for=0) as c:
        reply = c.request({"cmd": "set", "key": "a", "value": 1, "forward": False})
    assert reply["error"] == "NOT_LEADER"
    assert reply["leader"] == lead and reply["leader_client"] == ensemble.client[lead]


def test_leader_sigkill_new_leader_within_two_election_timeouts_no_acked_write_lost(
    ensemble: Ensemble,
) -> None:
    lead = ensemble.wait_leader()
    c = ensemble.client_for(timeout=1.0, retry_for=20)
    acked = []
    for i in range(200):
        c.set(f"w{i}", i)
        acked.append(i)
    ensemble.kill(lead)
    t0 = time.monotonic()
    # Keep writing: the first acknowledged write after the kill marks recovery.
    c.set("after-kill", 1)
    recovered = time.monotonic() - t0
    new = ensemble.wait_leader(exclude=(lead,))
    assert new != lead
    budget = 2 * (2 * ensemble.election_s)  # randomized timeout is in [T, 2T)
    assert recovered < budget + 1.0, f"writes resumed after {recovered:.2f}s"
    assert c.mget([f"w{i}" for i in acked]) == acked
    assert c.get("after-kill") == 1


def test_sigkill_all_nodes_then_restart_keeps_every_acked_write(ensemble: Ensemble) -> None:
    ensemble.wait_leader()
    c = ensemble.client_for()
    for i in range(300):
        c.set(f"p{i}", {"v": i})
    c.close()
    for nid in ensemble.ids:
        ensemble.kill(nid)
    ensemble.start()
    ensemble.wait_leader()
    with ensemble.client_for() as c2:
        assert c2.mget([f"p{i}" for i in range(300)]) == [{"v": i} for i in range(300)]


def test_graceful_stop_of_the_leader_hands_over(ensemble: Ensemble) -> None:
    lead = ensemble.wait_leader()
    code = ensemble.terminate(lead)
    assert "handing leadership to" in ensemble.log_text(lead)
    assert code == 0
    ensemble.wait_leader(timeout=5)


def test_retried_write_with_same_session_applies_once(ensemble: Ensemble) -> None:
    ensemble.wait_leader()
    with ensemble.client_for() as c:
        body = {"cmd": "incr", "key": "once", "client": "retrier", "seq": 7}
        first = c.request(body)
        again = c.request(body)
        assert first["result"] == again["result"] == 1
        assert c.get("once") == 1


def test_stale_read_is_served_locally_only_when_asked(ensemble: Ensemble) -> None:
    lead = ensemble.wait_leader()
    with ensemble.client_for(lead) as c:
        c.set("s", "v")
    follower = next(n for n in ensemble.ids if n != lead)
    with ensemble.client_for(follower) as c:
        assert c.get("s") == "v"  # linearizable (ReadIndex through the leader)
        deadline = time.monotonic() + 5
        while c.get("s", stale=True) != "v" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert c.get("s", stale=True) == "v"


def test_ttl_expires_by_leader_time(ensemble: Ensemble) -> None:
    ensemble.wait_leader()
    with ensemble.client_for() as c:
        c.set("tmp", 1, ttl_ms=300)
        assert 0 < c.ttl("tmp") <= 300
        deadline = time.monotonic() + 5
        while c.exists("tmp") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.exists("tmp") is False and c.ttl("tmp") == -2


def test_bad_requests_get_clear_errors_not_hangs(ensemble: Ensemble) -> None:
    lead = ensemble.wait_leader()
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.REQ)  # a plain REQ socket, as any language would use
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 5000)
    s.connect(ensemble.client[lead])
    cases = [
        (b"not json", "BAD_REQUEST"),
        (b"[1,2]", "BAD_REQUEST"),
        (b'{"cmd":"nope"}', "UNKNOWN_COMMAND"),
        (b'{"cmd":"set","key":"a"}', "BAD_REQUEST"),
        (b'{"cmd":"get","key":5}', "BAD_REQUEST"),
        (b'{"cmd":"set","key":"a","value":1,"bogus":2}', "BAD_REQUEST"),
        (b'{"cmd":"get","key":"a","seq":3}', "BAD_REQUEST"),
        (json.dumps({"cmd": "set", "key": "a", "value": "x" * 2_000_000}).encode(), "TOO_LARGE"),
    ]
    try:
        for raw, code in cases:
            s.send(raw)
            reply = json.loads(s.recv())
            assert reply["ok"] is False and reply["error"] == code, (raw[:40], reply)
            assert reply["message"] and reply["node"] == lead
        s.send(b'{"cmd":"ping","id":"x"}')
        assert json.loads(s.recv())["result"] == "pong"
    finally:
        s.close()


def test_command_errors_come_back_as_replies(ensemble: Ensemble) -> None:
    ensemble.wait_leader()
    with ensemble.client_for() as c:
        c.set("str", "abc")
        with pytest.raises(ZraftError) as info:
            c.incr("str")
        assert info.value.code == "WRONG_TYPE"
        assert c.cas("fresh", None, 1) == {"ok": True, "value": 1}
        assert c.cas("fresh", 0, 2)["ok"] is False


def test_reads_fail_clearly_without_a_quorum(ensemble: Ensemble) -> None:
    lead = ensemble.wait_leader()
    for nid in ensemble.ids:
        if nid != lead:
            ensemble.kill(nid)
    with ensemble.client_for(lead, timeout=8.0, retry_for=0) as cl:
        reply = cl.request({"cmd": "get", "key": "a"})
    assert reply["ok"] is False
    assert reply["error"] in ("NO_LEADER", "TIMEOUT", "NOT_LEADER")
