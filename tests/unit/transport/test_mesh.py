"""The peer mesh over real loopback TCP: delivery, drops, and clean shutdown."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import zmq

from zraft.transport.codec import Limits
from zraft.transport.mesh import PeerMesh

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

DEADLINE_S = 10.0


def free_ports(n: int) -> list[int]:
    """Return ``n`` distinct ports that were free on 127.0.0.1 a moment ago."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tcp(port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


class Recorder:
    """Collects on_event calls."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def __call__(self, event: str, peer: str) -> None:
        self.events.append((event, peer))


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def make_meshes(
    ctx: zmq.Context, ids: list[str], **kwargs: object
) -> tuple[dict[str, PeerMesh], dict[str, Recorder]]:
    """Start one mesh per id, all peers of each other; retry if a port was taken meanwhile."""
    for _ in range(5):
        endpoints = dict(zip(ids, map(tcp, free_ports(len(ids))), strict=True))
        meshes: dict[str, PeerMesh] = {}
        recorders = {i: Recorder() for i in ids}
        try:
            for i in ids:
                peers = {p: e for p, e in endpoints.items() if p != i}
                meshes[i] = PeerMesh(
                    ctx,
                    i,
                    endpoints[i],
                    peers,
                    on_event=recorders[i],
                    **kwargs,  # type: ignore[arg-type]
                )
            return meshes, recorders
        except zmq.ZMQError as exc:
            for m in meshes.values():
                m.close()
            if exc.errno != zmq.EADDRINUSE:
                raise
    raise RuntimeError("no free ports")


def pump(
    meshes: dict[str, PeerMesh],
    done: Callable[[list[tuple[str, str, bytes]]], bool],
    each_round: Callable[[], None] = lambda: None,
) -> list[tuple[str, str, bytes]]:
    """Poll and drain every mesh until ``done(received)``; received is (receiver, sender, frame)."""
    poller = zmq.Poller()
    owner = {}
    for node, mesh in meshes.items():
        poller.register(mesh.socket, zmq.POLLIN)
        owner[mesh.socket] = node
    received: list[tuple[str, str, bytes]] = []
    deadline = time.monotonic() + DEADLINE_S
    while not done(received):
        assert time.monotonic() < deadline, f"timed out; received {received[:10]}"
        each_round()
        for sock, _ in poller.poll(20):
            node = owner[sock]
            received.extend((node, src, frame) for src, frame in meshes[node].recv())
    return received


def test_three_meshes_exchange_frames_both_ways(ctx: zmq.Context) -> None:
    ids = ["n1", "n2", "n3"]
    meshes, recorders = make_meshes(ctx, ids)
    pairs = {(a, b) for a in ids for b in ids if a != b}

    def send_all() -> None:
        for a, b in pairs:
            meshes[a].send(b, f"{a}->{b}".encode())

    def all_delivered(received: list[tuple[str, str, bytes]]) -> bool:
        return {(src, dst) for dst, src, _ in received} == pairs

    received = pump(meshes, all_delivered, send_all)
    for dst, src, frame in received:
        assert frame == f"{src}->{dst}".encode()  # tagged with the true sender
    assert not [e for r in recorders.values() for e in r.events if e[0] != "dropped"]
    for m in meshes.values():
        m.close()


def test_unknown_peer_and_multipart_are_dropped_and_reported(ctx: zmq.Context) -> None:
    meshes, recorders = make_meshes(ctx, ["n1", "n2"])
    meshes["n2"].close()  # its DEALER would hand over to the impostor below anyway
    n1 = {"n1": meshes["n1"]}
    raw = []
    for routing_id in (b"intruder", None, b"n2"):
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        if routing_id is not None:
            dealer.setsockopt(zmq.ROUTING_ID, routing_id)
        dealer.connect(meshes["n1"].endpoint)
        raw.append(dealer)
    intruder, anonymous, impostor = raw
    events = recorders["n1"].events

    def send_junk() -> None:
        intruder.send(b"hello")
        anonymous.send(b"hello")
        impostor.send_multipart([b"two", b"frames"])

    def reported(_: object) -> bool:
        kinds = {e for e, _ in events}
        return {"unknown_peer", "bad_frame"} <= kinds and len(
            {p for e, p in events if e == "unknown_peer"}
        ) == 2

    received = pump(n1, reported, send_junk)
    assert received == []
    unknown = {p for e, p in events if e == "unknown_peer"}
    assert "intruder" in unknown
    assert [p for p in unknown if p != "intruder"][0].startswith("0x")  # libzmq's binary id
    assert {p for e, p in events if e == "bad_frame"} == {"n2"}

    # A single frame from the same id is a frame from peer n2.
    received = pump(n1, lambda r: bool(r), lambda: impostor.send(b"one"))
    assert received[0] == ("n1", "n2", b"one")
    for s in raw:
        s.close()
    meshes["n1"].close()


def test_oversized_frame_is_dropped_by_libzmq(ctx: zmq.Context) -> None:
    meshes, _ = make_meshes(ctx, ["a", "b"], limits=Limits(max_frame_bytes=1024))
    a, b = meshes["a"], meshes["b"]
    only_a = {"a": a}
    pump(only_a, lambda r: bool(r), lambda: b.send("a", b"hello"))  # connected

    assert b.send("a", b"x" * 2000)  # queued: libzmq on a's side refuses it
    # The ROUTER drops the connection with the oversized frame; b reconnects
    # and later frames get through.
    received = pump(
        only_a, lambda r: any(f == b"after" for _, _, f in r), lambda: b.send("a", b"after")
    )
    assert all(len(f) <= 1024 for _, _, f in received)
    a.close()
    b.close()


def test_send_to_a_peer_that_is_down_drops_without_blocking(ctx: zmq.Context) -> None:
    recorder = Recorder()
    (mine, down) = free_ports(2)
    mesh = PeerMesh(ctx, "n1", tcp(mine), {"n2": tcp(down)}, on_event=recorder)
    start = time.monotonic()
    results = [mesh.send("n2", b"append") for _ in range(1000)]
    elapsed = time.monotonic() - start
    assert not any(results)
    assert elapsed < 1.0
    assert recorder.events == [("dropped", "n2")] * 1000
    assert mesh.send("nobody", b"x") is False
    assert recorder.events[-1] == ("dropped", "nobody")
    mesh.close()


def test_fault_hook_drops_in_and_out(ctx: zmq.Context) -> None:
    meshes, recorders = make_meshes(ctx, ["n1", "n2", "n3"])
    n1 = {"n1": meshes["n1"]}
    # Test-only hook: n1 loses everything it sends to n2 and hears nothing from n3.
    meshes["n1"].fault = lambda direction, peer: (direction, peer) in {("out", "n2"), ("in", "n3")}

    def send() -> None:
        meshes["n2"].send("n1", b"from n2")
        meshes["n3"].send("n1", b"from n3")
        assert meshes["n1"].send("n2", b"lost")  # loss is silent to the sender

    received = pump(n1, lambda r: len(r) >= 3, send)
    assert {src for _, src, _ in received} == {"n2"}
    drained = meshes["n2"].recv()
    assert drained == []
    assert ("dropped", "n2") not in recorders["n1"].events
    for m in meshes.values():
        m.close()


def test_close_does_not_hang_with_frames_in_flight() -> None:
    ctx = zmq.Context()
    meshes, _ = make_meshes(ctx, ["a", "b"], sndhwm=100000)
    a, b = meshes["a"], meshes["b"]
    pump({"a": a}, lambda r: bool(r), lambda: b.send("a", b"hello"))
    for _ in range(20000):  # a never reads: the frames sit in queues
        b.send("a", b"y" * 1000)

    def shut_down() -> None:
        a.close()
        b.close()
        a.close()  # idempotent
        ctx.term()

    t = threading.Thread(target=shut_down, daemon=True)
    t.start()
    t.join(timeout=5)
    assert not t.is_alive(), "close() or ctx.term() hung"
    assert b.send("a", b"late") is False
    assert a.recv() == []


@pytest.mark.parametrize(
    ("node_id", "peers"),
    [("", {}), ("n 1", {}), ("n1", {"n1": "tcp://127.0.0.1:1"}), ("n1", {"bad/id": "x"})],
)
def test_bad_ids_are_refused(ctx: zmq.Context, node_id: str, peers: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        PeerMesh(ctx, node_id, "tcp://127.0.0.1:*", peers)


def test_bind_failure_leaves_no_socket_open(ctx: zmq.Context) -> None:
    first = PeerMesh(ctx, "n1", "tcp://127.0.0.1:*", {})
    with pytest.raises(zmq.ZMQError):
        PeerMesh(ctx, "n2", first.endpoint, {"n1": first.endpoint})
    first.close()
    # ctx.term() would block on a socket left open: run it with a bound.
    t = threading.Thread(target=ctx.term, daemon=True)
    t.start()
    t.join(timeout=5)
    assert not t.is_alive()
