"""A Python client for a zraft ensemble.

It speaks the documented JSON protocol over a DEALER socket, so it can
pipeline; it retries retryable errors on the same or another node, and tags
every request with a session (client id, sequence number) so that a retried
write is applied exactly once.

    >>> c = Client(["tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002"])
    >>> c.set("greeting", "hello")
    True
    >>> c.get("greeting")
    'hello'
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import zmq

from zraft.transport.sockets import connect_dealer, shared_context

RETRYABLE = frozenset({"NO_LEADER", "NOT_LEADER", "TIMEOUT", "OVERLOADED", "SHUTTING_DOWN"})
SNAPSHOT_READ_MAX = 1 << 20  # the most bytes one snapshot_read may ask for


def send_request(sock: zmq.Socket, body: dict[str, Any], flags: int = 0) -> None:
    """Send one request on a DEALER: an empty delimiter frame, then the JSON body.

    The body must carry the fields the protocol wants (``cmd``, and ``id``
    to match the reply). Raises zmq.Again with ``zmq.NOBLOCK`` in ``flags``.
    """
    sock.send_multipart([b"", json.dumps(body).encode()], flags)


def recv_reply(sock: zmq.Socket, flags: int = 0) -> dict[str, Any] | None:
    """Receive one reply from a DEALER; None when its body is not a JSON object.

    Raises zmq.Again with ``zmq.NOBLOCK`` in ``flags`` and nothing waiting.
    """
    frames = sock.recv_multipart(flags)
    try:
        reply = json.loads(frames[-1])
    except ValueError:
        return None
    return reply if isinstance(reply, dict) else None


class ZraftError(Exception):
    """An error reply: ``code`` is the protocol's error name, ``reply`` the whole reply."""

    def __init__(self, code: str, message: str, reply: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.reply = reply or {}


class Client:
    """A blocking client bound to one node at a time; fails over between ``endpoints``.

    Not thread-safe: use one per thread. ``timeout`` bounds one attempt;
    ``retry_for`` bounds all attempts of one call (retryable errors and
    unanswered requests move to the next endpoint).
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        timeout: float = 5.0,
        retry_for: float = 15.0,
        client_id: str | None = None,
        context: zmq.Context | None = None,
        fence: int = 0,
    ) -> None:
        self.endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not self.endpoints:
            raise ValueError("no endpoints given")
        self.timeout = timeout
        self.retry_for = retry_for
        self.client_id = client_id or f"{uuid.uuid4().hex[:16]}-{os.getpid()}"
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)
        self._ctx = context or shared_context()
        self._current = 0
        self._sock: zmq.Socket | None = None
        self.last_reply: dict[str, Any] = {}
        self.fence = fence  # when set, every request carries it: writes only in that term

    # -- plumbing ------------------------------------------------------------

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            self._sock = connect_dealer(self._ctx, self.endpoints[self._current])
        return self._sock

    def _rotate(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        self._current = (self._current + 1) % len(self.endpoints)

    def close(self) -> None:
        """Close the socket (the ZeroMQ context is left alone)."""
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """Send one request (adding id, client, seq), retrying; return the raw reply."""
        body = dict(body)
        body.setdefault("client", self.client_id)
        body.setdefault("seq", next(self._seq))
        if self.fence:
            body.setdefault("fence", self.fence)
        deadline = time.monotonic() + self.retry_for
        backoff = 0.02
        while True:
            (reply,) = self._roundtrip([body])
            if reply is not None and not (not reply.get("ok") and reply.get("error") in RETRYABLE):
                self.last_reply = reply
                return reply
            if time.monotonic() >= deadline:
                if reply is None:
                    raise ZraftError(
                        "TIMEOUT", f"no reply from {self.endpoints} in {self.retry_for}s"
                    )
                self.last_reply = reply
                return reply
            self._failover(reply)
            time.sleep(backoff)
            backoff = min(backoff * 2, 0.5)

    def _failover(self, reply: dict[str, Any] | None) -> None:
        leader_client = (reply or {}).get("leader_client")
        if leader_client and leader_client in self.endpoints:
            self.close()
            self._current = self.endpoints.index(leader_client)
        elif reply is None or reply.get("error") in ("SHUTTING_DOWN", "NO_LEADER"):
            self._rotate()

    def _roundtrip(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        """Send ``bodies`` pipelined on one socket; collect replies by id until timeout."""
        sock = self._socket()
        want: dict[int, int] = {}
        for pos, body in enumerate(bodies):
            rid = next(self._ids)
            want[rid] = pos
            send_request(sock, {**body, "id": rid})
        out: list[dict[str, Any] | None] = [None] * len(bodies)
        deadline = time.monotonic() + self.timeout
        while want:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(left * 1000):
                self._rotate()  # unanswered: the socket may hold stale replies now
                break
            reply = recv_reply(sock)
            if reply is None:
                continue
            pos = want.pop(reply.get("id"), None)  # type: ignore[arg-type]
            if pos is not None:
                out[pos] = reply
        return out

    def pipeline(self, bodies: Iterable[dict[str, Any]]) -> list[dict[str, Any] | None]:
        """Send many requests at once without retries; return replies in order (None = none)."""
        tagged = [{"client": self.client_id, "seq": next(self._seq), **b} for b in bodies]
        return self._roundtrip(tagged)

    def call(self, cmd: str, **args: Any) -> Any:
        """Run one command; return its result or raise ZraftError."""
        stale = args.pop("stale", False)
        body: dict[str, Any] = {"cmd": cmd, **args}  # null optional args count as absent
        if stale:
            body["stale"] = True
        reply = self.request(body)
        if not reply.get("ok"):
            raise ZraftError(reply.get("error", "?"), reply.get("message", ""), reply)
        return reply.get("result")

    # -- the built-in KV commands ---------------------------------------------
    # One method per CommandSpec in zraft.builtin.kv.COMMANDS, named after the
    # command ("del" is ``delete``), with the spec's arguments in order and
    # ``stale`` for reads; tests/unit/cli/test_kv_surface.py keeps the two in step.

    def get(self, key: str, stale: bool = False) -> Any:
        return self.call("get", key=key, stale=stale)

    def set(self, key: str, value: Any, ttl_ms: int | None = None) -> bool:
        return self.call("set", key=key, value=value, ttl_ms=ttl_ms)

    def delete(self, key: str) -> bool:
        return self.call("del", key=key)

    def exists(self, key: str, stale: bool = False) -> bool:
        return self.call("exists", key=key, stale=stale)

    def expire(self, key: str, ttl_ms: int) -> bool:
        return self.call("expire", key=key, ttl_ms=ttl_ms)

    def ttl(self, key: str, stale: bool = False) -> int:
        return self.call("ttl", key=key, stale=stale)

    def incr(self, key: str, by: int = 1) -> int:
        return self.call("incr", key=key, by=by)

    def cas(self, key: str, expected: Any, value: Any, ttl_ms: int | None = None) -> dict[str, Any]:
        return self.call("cas", key=key, expected=expected, value=value, ttl_ms=ttl_ms)

    def mget(self, keys: list[str], stale: bool = False) -> list[Any]:
        return self.call("mget", keys=keys, stale=stale)

    def keys(self, prefix: str = "", limit: int | None = None, stale: bool = False) -> list[str]:
        return self.call("keys", prefix=prefix, limit=limit, stale=stale)

    def status(self) -> dict[str, Any]:
        return self.call("status")

    # -- node-local snapshot commands ------------------------------------------
    # Answered by the node this client talks to, never forwarded: a snapshot
    # file lives on one node, so these want a client of one endpoint.

    def snapshot_take(self) -> dict[str, Any]:
        """Ask the node to snapshot its applied state now; return once it is durable.

        Returns ``{"index", "term", "size", "sha256", "name"}`` (``sha256``: the
        file's own checksum, recorded in its END record). ``timeout`` must cover
        the writing of the snapshot. Raises ZraftError (``SNAPSHOT_FAILED``,
        ``SHUTTING_DOWN``, ...).
        """
        return self.call("snapshot_take")

    def snapshot_read(
        self, name: str, offset: int = 0, length: int = SNAPSHOT_READ_MAX
    ) -> tuple[bytes, int]:
        """Return ``(data, file size)``: up to ``length`` bytes at ``offset`` of the node's
        snapshot file ``name`` (empty at or past the end). Raises ZraftError
        (``NO_SNAPSHOT`` when the node holds no such file)."""
        result = self.call("snapshot_read", name=name, offset=offset, length=length)
        try:
            return base64.b64decode(result["data"], validate=True), int(result["size"])
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise ZraftError("BAD_REPLY", f"snapshot_read: malformed result: {exc}") from None

    def snapshot_download(self, name: str, dest: str | Path) -> int:
        """Copy the node's snapshot file ``name`` to ``dest`` (created or truncated) and
        fsync it; return its size. Checks nothing inside the file: verify it with
        ``zraft.snapshot.format.verify``. Raises ValueError for a client of several
        endpoints (the pieces must come from one node), ZraftError, OSError.
        """
        if len(self.endpoints) != 1:
            raise ValueError("snapshot_download needs a client of exactly one endpoint")
        with open(dest, "wb") as f:
            offset, size = 0, -1
            while offset != size:
                data, size = self.snapshot_read(name, offset)
                if not data and offset < size:
                    raise ZraftError("BAD_REPLY", f"snapshot_read: no data at {offset} of {size}")
                if offset + len(data) > size:
                    raise ZraftError("BAD_REPLY", f"snapshot_read: {name} grew past {size} bytes")
                f.write(data)
                offset += len(data)
            f.flush()
            os.fsync(f.fileno())
        return size
