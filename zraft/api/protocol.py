"""The native client protocol: one JSON object per request and per reply. Pure.

A plain ZeroMQ REQ socket speaks it: send one frame holding a UTF-8 JSON
object, receive one frame holding the reply. DEALER clients send an empty
delimiter frame first (as REQ does) or nothing, and may pipeline requests,
matching replies by the ``id`` they chose. Documented in README.md
("Client protocol"). This module is the only one that knows the JSON form;
the request book works on ``Request`` and ``Reply`` values.

Every request is checked before anything else sees it: size, UTF-8, JSON,
envelope types, nesting depth, integer range and lone surrogates (which no
reply could carry back). A reply is always encodable: text that cannot be
written as UTF-8 is escaped, a result that is not JSON becomes an error.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from zraft.api.codes import BAD_REQUEST, INTERNAL, TOO_LARGE
from zraft.api.routes import Reply, Request

log = logging.getLogger("zraft.api")

ENVELOPE_KEYS = frozenset({"cmd", "id", "client", "seq", "stale", "forward", "fence"})
MAX_ID_LEN = 128
MAX_DEPTH = 64  # nesting of arrays and objects in one request
INT_MIN, INT_MAX = -(2**63), 2**64 - 1  # what msgpack (entries, forwards) can carry

# Only these can make the walk below find something, so most requests skip it.
_SUSPECT = re.compile(rb"\\u[dD][89a-fA-F]|\d{19}")


class RequestError(Exception):
    """A request that cannot be served; ``code`` is the stable error name clients switch on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_request(frame: bytes, max_bytes: int) -> Request:
    """Parse and check one request frame; raise RequestError."""
    if len(frame) > max_bytes:
        raise RequestError(TOO_LARGE, f"request is {len(frame)} bytes; the limit is {max_bytes}")
    try:
        # Strict UTF-8 first: json.loads(bytes) would let encoded surrogates through.
        obj = json.loads(frame.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(BAD_REQUEST, f"request is not valid UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise RequestError(BAD_REQUEST, f"request nests deeper than {MAX_DEPTH}") from None
    if not isinstance(obj, dict):
        raise RequestError(BAD_REQUEST, "request must be a JSON object")
    if _SUSPECT.search(frame) or frame.count(b"[") + frame.count(b"{") > MAX_DEPTH:
        for key, value in obj.items():
            _check_value(value, _field(key), 1)
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


def _field(key: Any) -> str:
    return json.dumps(key, ensure_ascii=True)


def _check_value(value: Any, where: str, depth: int) -> None:
    """Refuse what no entry or reply can carry: deep nesting, huge integers, lone surrogates."""
    if depth > MAX_DEPTH:
        raise RequestError(BAD_REQUEST, f"{where} nests deeper than {MAX_DEPTH}")
    if isinstance(value, str):
        _check_text(value, where)
    elif isinstance(value, int) and not isinstance(value, bool):
        if not INT_MIN <= value <= INT_MAX:
            raise RequestError(BAD_REQUEST, f"{where}: integer out of range (64 bits)")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_value(item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, where)
            _check_value(item, f"{where}.{_field(key)}", depth + 1)


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(BAD_REQUEST, f"{where}: text holds a lone surrogate") from None


def encode_reply(reply: Reply, node: str, leader: str | None) -> bytes:
    """Encode ``reply`` as sent by ``node``; never raises.

    A forwarded write names the leader that served it (``served_by``).
    """
    o = reply.outcome
    rid = reply.route.rid
    if o.ok:
        body: dict[str, Any] = {"ok": True, "result": o.result, "id": rid, "node": node}
    else:
        body = {"ok": False, "error": o.code, "message": o.message, "id": rid, "node": node}
    body["leader"] = leader
    if reply.served_by is not None:
        body["served_by"] = reply.served_by
    body.update(reply.extra)
    return dump(body)


def dump(body: dict[str, Any]) -> bytes:
    """Serialize a reply object; escape what UTF-8 cannot hold, refuse what JSON cannot."""
    try:
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        log.error("a reply could not be encoded as JSON: %s", exc)
        error = {"ok": False, "error": INTERNAL, "message": f"the result is not JSON: {exc}"}
        safe = {k: body.get(k) for k in ("id", "node", "leader") if _jsonable(body.get(k))}
        return json.dumps({**error, **safe}, separators=(",", ":"), ensure_ascii=True).encode()


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (str, int))
