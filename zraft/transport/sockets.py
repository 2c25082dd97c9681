"""The socket factory: the one place zraft creates ZeroMQ contexts and sockets.

Every socket leaves here with ``LINGER`` 0, so closing it (or terminating
its context) never waits for unsent frames, and with every option set before
it binds or connects; a socket whose options, bind or connect fail is closed
before the error is re-raised, so callers never own a half-made socket.
Transport security and limits (CURVE keys, message sizes) are configured
here and nowhere else: a test fails when a module outside this file calls
``zmq.Context`` or ``<context>.socket``.

Threading: a context may be shared by threads; each socket belongs to the
thread that uses it (pyzmq sockets are not thread-safe).
"""

from __future__ import annotations

from collections.abc import Callable

import zmq

__all__ = [
    "HEARTBEAT_IVL_MS",
    "HEARTBEAT_TIMEOUT_MS",
    "bind_router",
    "connect_dealer",
    "context",
    "shared_context",
]

# ZMTP heartbeats close a connection whose peer has gone silent (host down,
# cable cut), so that a DEALER with IMMEDIATE stops queueing frames to it.
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 3000


def context() -> zmq.Context:
    """Return a new context; the caller terminates it (``destroy(linger=0)``)."""
    return zmq.Context()


def shared_context() -> zmq.Context:
    """Return the process-wide context (``zmq.Context.instance()``) for client sockets.

    Never terminate it: other clients in the process may be using it.
    """
    return zmq.Context.instance()


def bind_router(
    ctx: zmq.Context,
    endpoint: str,
    *,
    max_msg_bytes: int | None = None,
    rcvhwm: int | None = None,
    handover: bool = False,
    heartbeats: bool = False,
    mandatory: int | None = None,
) -> zmq.Socket:
    """Return a ROUTER bound on ``endpoint``.

    ``max_msg_bytes`` sets ``MAXMSGSIZE`` (libzmq drops larger frames before
    they are buffered); ``rcvhwm`` the receive high-water mark; ``handover``
    sets ``ROUTER_HANDOVER`` (a peer that reconnects with a known routing id
    takes it over); ``heartbeats`` turns ZMTP heartbeats on; ``mandatory``
    sets ``ROUTER_MANDATORY`` (0: silently drop what cannot be routed).
    None leaves libzmq's default. Raises zmq.ZMQError when an option or the
    bind fails; the socket is closed then.
    """

    def configure(sock: zmq.Socket) -> None:
        if handover:
            sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        if mandatory is not None:
            sock.setsockopt(zmq.ROUTER_MANDATORY, mandatory)
        if max_msg_bytes is not None:
            sock.setsockopt(zmq.MAXMSGSIZE, max_msg_bytes)
        if rcvhwm is not None:
            sock.setsockopt(zmq.RCVHWM, rcvhwm)
        if heartbeats:
            _set_heartbeats(sock)
        sock.bind(endpoint)

    return _make(ctx, zmq.ROUTER, configure)


def connect_dealer(
    ctx: zmq.Context,
    endpoint: str,
    *,
    routing_id: bytes | None = None,
    immediate: bool = False,
    sndhwm: int | None = None,
    reconnect_ivl_ms: int | None = None,
    reconnect_ivl_max_ms: int | None = None,
    heartbeats: bool = False,
) -> zmq.Socket:
    """Return a DEALER connecting to ``endpoint`` (the connection completes in the background).

    ``routing_id`` is the identity the peer's ROUTER sees; ``immediate`` sets
    ``IMMEDIATE`` (queue only to a completed connection: a send to a peer
    that is down fails with EAGAIN instead of being delivered stale later);
    ``sndhwm`` the send high-water mark; ``reconnect_ivl_ms`` and
    ``reconnect_ivl_max_ms`` the reconnection back-off; ``heartbeats`` turns
    ZMTP heartbeats on. None leaves libzmq's default. Raises zmq.ZMQError
    when an option or the connect fails; the socket is closed then.
    """

    def configure(sock: zmq.Socket) -> None:
        if immediate:
            sock.setsockopt(zmq.IMMEDIATE, 1)
        if sndhwm is not None:
            sock.setsockopt(zmq.SNDHWM, sndhwm)
        if reconnect_ivl_ms is not None:
            sock.setsockopt(zmq.RECONNECT_IVL, reconnect_ivl_ms)
        if reconnect_ivl_max_ms is not None:
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, reconnect_ivl_max_ms)
        if routing_id is not None:
            sock.setsockopt(zmq.ROUTING_ID, routing_id)
        if heartbeats:
            _set_heartbeats(sock)
        sock.connect(endpoint)

    return _make(ctx, zmq.DEALER, configure)


def _make(ctx: zmq.Context, kind: int, configure: Callable[[zmq.Socket], None]) -> zmq.Socket:
    sock = ctx.socket(kind)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        configure(sock)
    except BaseException:
        sock.close(linger=0)
        raise
    return sock


def _set_heartbeats(sock: zmq.Socket) -> None:
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    sock.setsockopt(zmq.HEARTBEAT_TTL, HEARTBEAT_TIMEOUT_MS)
