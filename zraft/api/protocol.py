"""The client wire protocol: one JSON object per request and per reply.

A plain ZeroMQ REQ socket speaks it: send one frame holding a UTF-8 JSON
object, receive one frame holding the reply. DEALER clients send an empty
delimiter frame first (as REQ does) or nothing, and may pipeline requests,
matching replies by the ``id`` they chose. Documented in README.md
("Client protocol"); pure functions, no sockets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

ENVELOPE_KEYS = frozenset({"cmd", "id", "client", "seq", "stale", "forward", "fence"})
MAX_ID_LEN = 128


class RequestError(Exception):
    """A request that cannot be served; ``code`` is the stable error name clients switch on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# Error codes. Retryable ones say so in README.md.
BAD_REQUEST = "BAD_REQUEST"  # malformed JSON, wrong types, unknown command or argument
TOO_LARGE = "TOO_LARGE"  # request above client.max_request_bytes
NO_LEADER = "NO_LEADER"  # retryable: no leader known within the request timeout
NOT_LEADER = "NOT_LEADER"  # retryable: "forward": false was asked, or leadership was lost
TIMEOUT = "TIMEOUT"  # retryable with the same client/seq: the outcome is unknown
OVERLOADED = "OVERLOADED"  # retryable: too many requests pending on this node
SESSION_EXPIRED = "SESSION_EXPIRED"  # the (client, seq) is older than the session remembers
INTERNAL = "INTERNAL"  # a plugin raised something other than CommandError
SHUTTING_DOWN = "SHUTTING_DOWN"  # retryable elsewhere: the node is stopping
FENCED = "FENCED"  # a write fenced to a term whose leadership is over: never applied


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed client request: the command plus its envelope fields."""

    command: dict[str, Any]  # {"cmd": name, **args}, not yet validated against the table
    id: Any = None  # echoed back untouched (str or int)
    client: str = ""  # session id for exactly-once writes ("" = no session)
    seq: int = 0  # session sequence number, > 0 when client is set
    stale: bool = False  # serve a read from local state without ReadIndex
    forward: bool = True  # a follower forwards writes to the leader (else NOT_LEADER)
    # A write is proposed only by the leader of this term, else FENCED (0: no fence).
    # Ignored on reads. A leader payload's ctx.client() sets it to its term.
    fence: int = 0


def parse_request(frame: bytes, max_bytes: int) -> Request:
    """Parse and check the envelope of one request frame; raise RequestError."""
    if len(frame) > max_bytes:
        raise RequestError(TOO_LARGE, f"request is {len(frame)} bytes; the limit is {max_bytes}")
    try:
        obj = json.loads(frame)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(BAD_REQUEST, f"request is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RequestError(BAD_REQUEST, "request must be a JSON object")
    cmd = obj.get("cmd")
    if not isinstance(cmd, str) or not cmd:
        raise RequestError(BAD_REQUEST, 'request needs "cmd": a command name (string)')
    rid = obj.get("id")
    if rid is not None and not (
        (isinstance(rid, str) and len(rid) <= MAX_ID_LEN)
        or (isinstance(rid, int) and not isinstance(rid, bool))
    ):
        raise RequestError(BAD_REQUEST, '"id" must be an integer or a string of <= 128 chars')
    client = obj.get("client", "")
    seq = obj.get("seq", 0)
    if not isinstance(client, str) or len(client) > MAX_ID_LEN:
        raise RequestError(BAD_REQUEST, '"client" must be a string of <= 128 chars')
    if client:
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq < 2**63:
            raise RequestError(BAD_REQUEST, '"seq" must be a positive integer with "client"')
    elif "seq" in obj:
        raise RequestError(BAD_REQUEST, '"seq" needs "client" (a session id)')
    stale = obj.get("stale", False)
    forward = obj.get("forward", True)
    if not isinstance(stale, bool) or not isinstance(forward, bool):
        raise RequestError(BAD_REQUEST, '"stale" and "forward" must be booleans')
    fence = obj.get("fence", 0)
    if not isinstance(fence, int) or isinstance(fence, bool) or not 0 <= fence < 2**63:
        raise RequestError(BAD_REQUEST, '"fence" must be a term: a non-negative integer')
    command = {k: v for k, v in obj.items() if k not in ENVELOPE_KEYS or k == "cmd"}
    return Request(command, rid, client, seq if client else 0, stale, forward, fence)


def reply_ok(result: Any, rid: Any, node: str, leader: str | None) -> bytes:
    """Encode a success reply."""
    return _dump({"ok": True, "result": result, "id": rid, "node": node, "leader": leader})


def reply_error(
    code: str, message: str, rid: Any, node: str, leader: str | None, **extra: Any
) -> bytes:
    """Encode an error reply; ``extra`` adds fields such as ``leader_client``."""
    body = {"ok": False, "error": code, "message": message, "id": rid, "node": node}
    body["leader"] = leader
    body.update(extra)
    return _dump(body)


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
