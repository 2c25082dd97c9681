"""The peer mesh: one ROUTER in, one DEALER out per peer, over ZeroMQ.

Each node binds a ROUTER on its raft endpoint and connects one DEALER to
every peer's ROUTER, with the DEALER's routing id set to its own node id.
So every frame arrives on a ROUTER tagged with the sender's id, and nothing
is ever sent on a ROUTER (a ROUTER reply would need the peer's connection to
us, which may not exist yet; DEALERs connect and reconnect on their own).

The mesh moves opaque frames; it does not decode them. Raft tolerates loss,
duplicates and reordering, and this transport prefers to drop: a send that
cannot go out at once is dropped, never queued behind a dead peer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import zmq

from zraft.transport import sockets
from zraft.transport.wire import DEFAULT_LIMITS, Limits

__all__ = ["PeerMesh"]

RECONNECT_IVL_MS = 100
RECONNECT_IVL_MAX_MS = 1000

_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class PeerMesh:
    """Frames to and from the other nodes of an ensemble.

    Not thread-safe: one thread (the driver) owns it, polls ``socket`` for
    POLLIN, calls ``recv``/``send`` and finally ``close``. The context
    belongs to the caller, who terminates it after ``close``.

    ``on_event(event, peer)`` is called synchronously, must not raise, and
    reports drops the driver may count:

    * ``"dropped"``: ``send`` could not hand a frame to libzmq (peer not
      connected, its queue full, unknown or closed);
    * ``"unknown_peer"``: a frame came from a routing id that is not a peer
      (the second argument is a printable, truncated form of that id);
    * ``"bad_frame"``: a peer sent a multipart message, not one frame.
    """

    RECV_BATCH = 10000
    """Most frames one ``recv`` returns, so that one busy peer cannot starve a round."""

    def __init__(
        self,
        ctx: zmq.Context,
        node_id: str,
        bind: str,
        peers: Mapping[str, str],
        *,
        limits: Limits = DEFAULT_LIMITS,
        sndhwm: int = 10000,
        on_event: Callable[[str, str], None] | None = None,
    ) -> None:
        """Bind the ROUTER on ``bind`` and start connecting a DEALER to each peer.

        ``peers`` maps each other node's id to its raft endpoint (it must not
        contain ``node_id``). Connections complete in the background; until
        one does, ``send`` to that peer drops. Raises ValueError for a bad id
        and zmq.ZMQError if ``bind`` fails (no socket is left open then).
        """
        for name in (node_id, *peers):
            if not isinstance(name, str) or _ID.fullmatch(name) is None:
                raise ValueError(f"not a node id: {name!r}")
        if node_id in peers:
            raise ValueError(f"peers must not contain the node itself ({node_id!r})")
        self.node_id = node_id
        self.fault: Callable[[str, str], bool] | None = None
        """Test-only fault injection: ``fault("out", dst)`` before a send and
        ``fault("in", src)`` for each received frame; True drops the frame
        silently, as a lossy network would. None (the default) in production."""
        self._on_event = on_event
        self._peer_by_routing_id = {peer.encode(): peer for peer in peers}
        self._dealers: dict[str, zmq.Socket] = {}
        self._closed = False

        # A restarted peer reconnects with the same id before its old
        # connection times out; without handover its frames would wait on the
        # dead connection until the heartbeat timeout.
        self._router = sockets.bind_router(
            ctx,
            bind,
            max_msg_bytes=limits.max_frame_bytes,
            rcvhwm=sndhwm,
            handover=True,
            heartbeats=True,
        )
        try:
            self.endpoint: str = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
            """The bound endpoint (with the real port when ``bind`` asked for ``*``)."""
            for peer, endpoint in peers.items():
                # IMMEDIATE: queue only to a live connection; a frame for a peer
                # that is down is dropped now (EAGAIN), not delivered stale later.
                self._dealers[peer] = sockets.connect_dealer(
                    ctx,
                    endpoint,
                    routing_id=node_id.encode(),
                    immediate=True,
                    sndhwm=sndhwm,
                    reconnect_ivl_ms=RECONNECT_IVL_MS,
                    reconnect_ivl_max_ms=RECONNECT_IVL_MAX_MS,
                    heartbeats=True,
                )
        except BaseException:
            self.close()
            raise

    @property
    def socket(self) -> zmq.Socket:
        """The ROUTER that receives every peer's frames; register it for POLLIN."""
        return self._router

    def send(self, dst: str, frame: bytes) -> bool:
        """Hand ``frame`` to libzmq for peer ``dst`` without blocking.

        Returns True when queued (delivery is still not guaranteed) and False
        after reporting ``on_event("dropped", dst)`` when the peer is unknown,
        not connected, its queue is full, or the mesh is closed.
        """
        dealer = self._dealers.get(dst)
        if dealer is None or self._closed:
            self._report("dropped", dst)
            return False
        if self.fault is not None and self.fault("out", dst):
            return True  # lost "on the wire": the sender cannot tell
        try:
            # copy=False: pyzmq still copies small frames, and large APPENDs
            # go out without a copy (frames are immutable bytes).
            dealer.send(frame, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self._report("dropped", dst)
            return False
        return True

    def recv(self) -> list[tuple[str, bytes]]:
        """Return the frames available now as (peer_id, frame), never blocking.

        Returns at most ``RECV_BATCH`` frames; the ROUTER stays readable when
        more wait. Frames from unknown routing ids and multipart messages are
        dropped and reported. Frames are not decoded: the caller decodes them
        and checks that the message's ``src`` is ``peer_id``.
        """
        if self._closed:
            return []
        out: list[tuple[str, bytes]] = []
        router = self._router
        peers = self._peer_by_routing_id
        fault = self.fault
        for _ in range(self.RECV_BATCH):
            try:
                parts = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            routing_id = parts[0]
            peer = peers.get(routing_id)
            if peer is None:
                self._report("unknown_peer", _printable(routing_id))
                continue
            if len(parts) != 2:
                self._report("bad_frame", peer)
                continue
            if fault is not None and fault("in", peer):
                continue
            out.append((peer, parts[1]))
        return out

    def close(self) -> None:
        """Close every socket at once (LINGER=0 drops unsent frames); idempotent."""
        self._closed = True
        for dealer in self._dealers.values():
            dealer.close(linger=0)
        self._router.close(linger=0)

    def _report(self, event: str, peer: str) -> None:
        if self._on_event is not None:
            self._on_event(event, peer)


def _printable(routing_id: bytes) -> str:
    # The id may be a metric label or a log field: keep it short and printable.
    text = routing_id[:64].decode("ascii", "replace")
    if _ID.fullmatch(text) is None:
        return "0x" + routing_id[:32].hex()
    return text
