"""What a follower sends its leader for a client's write, and what comes back. Pure.

A forward carries the *parsed* request (``Request``), not the client's
bytes, so the leader never re-reads a front end's wire form (JSON today,
RESP later); the answer is the outcome as a value, which the follower's own
front end encodes for its client. Both travel inside the transport codec's
``Forward``/``ForwardReply`` frames as msgpack, and both are checked field by
field on the way in: a peer is trusted to be a member, not to be correct.
"""

from __future__ import annotations

from typing import Any

import msgpack

from zraft.api.routes import Request
from zraft.statemachine import Outcome

VERSION = 1
EXTRA_KEYS = frozenset({"leader_client"})  # what a reply may add to its own fields


class ForwardError(ValueError):
    """A forwarded request or reply that is malformed."""


def encode_request(req: Request) -> bytes:
    """Encode a parsed request for the leader."""
    fields = [VERSION, req.command, req.id, req.client, req.seq, req.stale, req.fence]
    return msgpack.packb(fields, use_bin_type=True)


def decode_request(data: bytes) -> Request:
    """Decode ``encode_request``'s output; raise ForwardError when malformed."""
    obj = _unpack(data)
    if not (isinstance(obj, list) and len(obj) == 7 and obj[0] == VERSION):
        raise ForwardError("not a forwarded request")
    _, command, rid, client, seq, stale, fence = obj
    ok = (
        isinstance(command, dict)
        and isinstance(command.get("cmd"), str)
        and all(isinstance(k, str) for k in command)
        and (rid is None or isinstance(rid, (str, int)))
        and isinstance(client, str)
        and _is_int(seq)
        and isinstance(stale, bool)
        and _is_int(fence)
    )
    if not ok:
        raise ForwardError("a forwarded request has a field of the wrong type")
    return Request(command, rid, client, seq, stale, False, fence)


def encode_reply(outcome: Outcome, extra: dict[str, Any], served_by: str) -> bytes:
    """Encode the leader's answer to a forwarded request."""
    return msgpack.packb([VERSION, outcome.to_wire(), extra, served_by], use_bin_type=True)


def decode_reply(data: bytes) -> tuple[Outcome, dict[str, Any], str]:
    """Decode ``encode_reply``'s output; raise ForwardError when malformed."""
    obj = _unpack(data)
    if not (isinstance(obj, list) and len(obj) == 4 and obj[0] == VERSION):
        raise ForwardError("not a forwarded reply")
    _, wire, extra, served_by = obj
    if not isinstance(extra, dict) or not isinstance(served_by, str):
        raise ForwardError("a forwarded reply has a field of the wrong type")
    if set(extra) - EXTRA_KEYS or not all(v is None or isinstance(v, str) for v in extra.values()):
        raise ForwardError("a forwarded reply carries fields a reply may not have")
    try:
        outcome = Outcome.from_wire(wire)
    except ValueError as exc:
        raise ForwardError(str(exc)) from None
    return outcome, extra, served_by


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ForwardError(f"not msgpack: {exc}") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0
