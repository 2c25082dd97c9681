"""Fan-out requests (``status_all``, ``pipelined_load``) against a stand-in node.

The stand-in is a ROUTER on loopback answering the JSON protocol from a
thread: enough to check what is sent, counted and closed, without a Raft.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from zraft.api.fanout import pipelined_load, status_all
from zraft.transport.sockets import bind_router, context

pytestmark = pytest.mark.timeout(30)


class StandIn:
    """Answers every request: ``status`` with its name, anything else ok unless ``fail(id)``."""

    def __init__(self, name: str, fail: Any = lambda rid: False) -> None:
        self.ctx = context()
        self.sock = bind_router(self.ctx, "tcp://127.0.0.1:*")
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.name, self.fail = name, fail
        self.seen: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stop.is_set():
            if not self.sock.poll(20):
                continue
            *route, body = self.sock.recv_multipart()
            req = json.loads(body)
            self.seen.append(req)
            if req["cmd"] == "status":
                reply = {"ok": True, "result": {"id": self.name, "hash": req["hash"]}}
            elif self.fail(req["id"]):
                reply = {"ok": False, "error": "BAD_ARG", "message": "no"}
            else:
                reply = {"ok": True, "result": True}
            self.sock.send_multipart([*route, json.dumps({**reply, "id": req["id"]}).encode()])

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close(linger=0)
        self.ctx.term()


@pytest.fixture
def node() -> Iterator[StandIn]:
    n = StandIn("n1", fail=lambda rid: rid % 10 == 0)
    yield n
    n.close()


def test_status_all_keeps_endpoint_order_and_marks_the_silent(node: StandIn) -> None:
    dead = "tcp://127.0.0.1:9"  # discard port: nothing answers
    rows = status_all([dead, node.endpoint], timeout=0.3, state_hash=True)
    assert rows == [
        {"endpoint": dead, "status": None},
        {"endpoint": node.endpoint, "status": {"id": "n1", "hash": True}},
    ]


def test_pipelined_load_answers_every_request_once_and_counts_errors(node: StandIn) -> None:
    res = pipelined_load(node.endpoint, lambda n: {"cmd": "set", "key": f"k{n}"}, 100, 3, 4)
    assert len(res.latencies) == 90 and res.errors == 10 and res.unanswered == 0
    assert res.elapsed > 0 and all(t >= 0 for t in res.latencies)
    ids = sorted(r["id"] for r in node.seen)
    assert ids == list(range(1, 101))
    assert {r["client"] for r in node.seen} == {node.seen[0]["client"]}
    assert all(r["seq"] == r["id"] and r["key"] == f"k{r['id']}" for r in node.seen)


def test_pipelined_load_counts_what_is_unanswered_at_the_deadline() -> None:
    res = pipelined_load("tcp://127.0.0.1:9", lambda n: {"cmd": "get"}, 5, 1, 2, deadline_s=0.2)
    assert res.latencies == [] and res.errors == 0 and res.unanswered == 5
