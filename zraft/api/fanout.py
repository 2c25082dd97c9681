"""Many requests at once, without retries: every node's status, and pipelined load.

The two things ``Client`` does not do, because they are not one session's
calls: ``status_all`` asks every node of an ensemble in parallel (``zraft
status``, ``zraft up``, test harnesses), and ``pipelined_load`` keeps many
requests in flight on several connections to one node (``zraft bench``).
Both speak the same JSON protocol as ``Client`` (``send_request`` and
``recv_reply``), block the calling thread, and close their sockets before
they return.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq

from zraft.api.client import recv_reply, send_request
from zraft.transport.sockets import connect_dealer, shared_context

__all__ = ["LoadResult", "pipelined_load", "status_all"]


def status_all(
    endpoints: Sequence[str],
    timeout: float = 1.0,
    state_hash: bool = False,
    *,
    context: zmq.Context | None = None,
) -> list[dict[str, Any]]:
    """Query ``status`` on every endpoint in parallel; return one row per endpoint, in order.

    A row is ``{"endpoint": ep, "status": result}``; ``status`` is None when
    the node did not answer within ``timeout`` seconds or answered with an
    error. ``state_hash`` asks each node for a hash of its replicated state
    as well (``status["state_hash"]``).
    """
    ctx = context or shared_context()
    body = {"cmd": "status", "id": 1, "hash": state_hash}
    rows: dict[str, dict[str, Any]] = {ep: {"endpoint": ep, "status": None} for ep in endpoints}
    socks: dict[zmq.Socket, str] = {}
    poller = zmq.Poller()
    try:
        for ep in endpoints:
            s = connect_dealer(ctx, ep)
            socks[s] = ep
            send_request(s, body)
            poller.register(s, zmq.POLLIN)
        deadline = time.monotonic() + timeout
        pending = set(socks)
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for s, _ in poller.poll(left * 1000):
                reply = recv_reply(s)
                if reply is None:
                    continue
                if reply.get("ok"):
                    rows[socks[s]]["status"] = reply["result"]
                pending.discard(s)
    finally:
        for s in socks:
            s.close(linger=0)
    return [rows[ep] for ep in endpoints]


@dataclass
class LoadResult:
    """What ``pipelined_load`` measured."""

    latencies: list[float] = field(default_factory=list)
    """Seconds from send to reply of every successful request, in arrival order."""
    errors: int = 0
    """Error replies."""
    unanswered: int = 0
    """Requests not answered (or never sent) when the deadline passed."""
    elapsed: float = 0.0
    """Seconds from the first send until the last reply (or the deadline)."""


def pipelined_load(
    endpoint: str,
    make: Callable[[int], dict[str, Any]],
    total: int,
    conns: int,
    depth: int,
    *,
    deadline_s: float | None = None,
    client_id: str | None = None,
    context: zmq.Context | None = None,
) -> LoadResult:
    """Keep ``conns`` x ``depth`` requests in flight to ``endpoint`` until ``total`` are answered.

    ``make(n)`` returns the body of request ``n`` (1..total); each is sent
    with ``id`` and ``seq`` = n and one session ``client_id``, and the next
    request goes out on the connection that just got a reply. Nothing is
    retried. Stops after ``deadline_s`` seconds (default: 60, or longer for
    a large ``total``); what is unanswered by then is counted.
    """
    ctx = context or shared_context()
    client = client_id or f"bench-{os.getpid()}-{time.monotonic_ns()}"
    result = LoadResult()
    sent_at: dict[int, float] = {}
    next_id = 1
    done = 0
    socks: list[zmq.Socket] = []
    poller = zmq.Poller()

    def send(sock: zmq.Socket) -> None:
        nonlocal next_id
        rid = next_id
        next_id += 1
        body = make(rid)
        body.update(id=rid, client=client, seq=rid)
        sent_at[rid] = time.perf_counter()
        send_request(sock, body)

    try:
        for _ in range(conns):
            s = connect_dealer(ctx, endpoint)
            socks.append(s)
            poller.register(s, zmq.POLLIN)
        start = time.perf_counter()
        for s in socks:
            for _ in range(min(depth, total)):
                if next_id <= total:
                    send(s)
        deadline = time.monotonic() + (deadline_s or max(60.0, total / 100))
        while done < total and (left := deadline - time.monotonic()) > 0:
            for s, _ in poller.poll(min(left, 1.0) * 1000):
                while True:
                    try:
                        reply = recv_reply(s, zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if reply is None:
                        continue
                    t0 = sent_at.pop(reply.get("id"), None)  # type: ignore[arg-type]
                    if t0 is None:
                        continue
                    done += 1
                    if reply.get("ok"):
                        result.latencies.append(time.perf_counter() - t0)
                    else:
                        result.errors += 1
                    if next_id <= total:
                        send(s)
        result.elapsed = time.perf_counter() - start
    finally:
        for s in socks:
            s.close(linger=0)
    result.unanswered = total - done
    return result
