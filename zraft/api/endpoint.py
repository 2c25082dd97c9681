"""The native client endpoint: a ZeroMQ ROUTER speaking the JSON protocol.

Frames in, ``(Route, Request)`` values out; ``Reply`` values in, frames out.
It knows the ROUTER envelope and (through ``protocol``) JSON, nothing of
Raft: the shell decides what a request means. Driver thread only.
"""

from __future__ import annotations

from collections.abc import Iterator

import zmq

from zraft.api import protocol
from zraft.api.routes import Reply, Request, Route
from zraft.statemachine import Outcome
from zraft.transport.sockets import bind_router

MAX_BATCH = 4096  # requests taken per loop round, so ticks are never starved
SNDMORE_NOBLOCK = zmq.SNDMORE | zmq.NOBLOCK


class NativeEndpoint:
    """The client ROUTER of one node (see the module docstring).

    ``max_request_bytes`` is the polite limit (a TOO_LARGE reply); libzmq
    drops frames far above it (``MAXMSGSIZE``) before they are buffered.
    """

    def __init__(self, ctx: zmq.Context, bind: str, max_request_bytes: int) -> None:
        self.max_request_bytes = max_request_bytes
        self.socket = bind_router(ctx, bind, max_msg_bytes=4 * max_request_bytes + 4096)

    def receive(self, now: float) -> Iterator[tuple[Route, Request | Reply]]:
        """Yield what arrived: a parsed request, or the error reply owed to a bad one."""
        sock = self.socket
        for _ in range(MAX_BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) < 2:
                continue  # a ROUTER always prepends the identity; nothing to answer
            route = Route(address=frames[:-1], started=now)
            try:
                yield route, protocol.parse_request(frames[-1], self.max_request_bytes)
            except protocol.RequestError as exc:
                yield route, Reply(route, Outcome.error(exc.code, exc.message))

    def send(self, reply: Reply, node: str, leader: str | None) -> None:
        """Send ``reply`` to its local client; a client that went away is skipped."""
        body = protocol.encode_reply(reply, node, leader)
        sock = self.socket
        try:
            # Frame by frame: send_multipart's per-frame checks cost 3x here.
            for frame in reply.route.address:
                sock.send(frame, SNDMORE_NOBLOCK)
            sock.send(body, zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # ROUTER drops what it cannot route

    def close(self) -> None:
        """Close the socket (the context belongs to the caller)."""
        self.socket.close(linger=0)
