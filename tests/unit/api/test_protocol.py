"""The native JSON protocol and the forward codec: every request checked, every reply encodable."""

from __future__ import annotations

import json

import pytest

from zraft.api import codes, forwarding, protocol
from zraft.api.protocol import RequestError, encode_reply, parse_request
from zraft.api.routes import Reply, Request, Route
from zraft.statemachine import Outcome


def refused(frame: bytes, limit: int = 1 << 20) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse_request(frame, limit)
    return info.value


def test_a_request_parses_into_its_command_and_envelope() -> None:
    req = parse_request(
        b'{"cmd":"set","key":"k","value":[1,2],"id":"a","client":"c","seq":3,"fence":2}', 1000
    )
    assert req == Request({"cmd": "set", "key": "k", "value": [1, 2]}, "a", "c", 3, False, True, 2)


@pytest.mark.parametrize(
    ("frame", "code", "words"),
    [
        (b"x" * 11, codes.TOO_LARGE, "limit is 10"),
        (b"\xff{}", codes.BAD_REQUEST, "UTF-8 JSON"),
        (b"[1]", codes.BAD_REQUEST, "JSON object"),
        (b'{"key":"k"}', codes.BAD_REQUEST, '"cmd"'),
        (b'{"cmd":"get","id":true}', codes.BAD_REQUEST, '"id"'),
        (b'{"cmd":"set","seq":1}', codes.BAD_REQUEST, '"seq" needs "client"'),
        (b'{"cmd":"set","client":"c","seq":0}', codes.BAD_REQUEST, '"seq" must be'),
        (b'{"cmd":"get","stale":1}', codes.BAD_REQUEST, "booleans"),
        (b'{"cmd":"set","fence":-1}', codes.BAD_REQUEST, '"fence"'),
    ],
)
def test_malformed_requests_get_a_precise_error(frame: bytes, code: str, words: str) -> None:
    limit = 10 if code == codes.TOO_LARGE else 1000
    exc = refused(frame, limit)
    assert exc.code == code and words in exc.message


def test_a_lone_surrogate_anywhere_is_refused_naming_the_field() -> None:
    # Security finding: this 29-byte request used to kill the node (the reply
    # could not be encoded, and neither could the error reply).
    assert refused(rb'{"cmd":"ping","id":"\ud800"}').message == '"id": text holds a lone surrogate'
    exc = refused(rb'{"cmd":"set","key":"k","value":{"a":["\udfff"]}}')
    assert exc.code == codes.BAD_REQUEST and '"value"' in exc.message
    # A valid surrogate pair is one character and passes.
    assert parse_request(rb'{"cmd":"get","key":"\ud83d\ude00"}', 100).command["key"] == "\U0001f600"


def test_integers_beyond_64_bits_and_deep_nesting_are_refused() -> None:
    assert "out of range" in refused(b'{"cmd":"set","key":"k","value":%d}' % 2**64).message
    assert parse_request(b'{"cmd":"set","value":%d}' % (2**64 - 1), 100)
    deep = b'{"cmd":"set","key":"k","value":' + b"[" * 65 + b"]" * 65 + b"}"
    assert "deeper than 64" in refused(deep).message
    very_deep = b'{"cmd":"get","v":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert refused(very_deep).code == codes.BAD_REQUEST  # never a RecursionError


def test_every_reply_can_be_encoded_even_with_text_utf8_cannot_hold() -> None:
    route = Route(rid="r")
    body = json.loads(encode_reply(Reply(route, Outcome.success("\ud800")), "n1", None))
    assert body == {"ok": True, "result": "\ud800", "id": "r", "node": "n1", "leader": None}
    odd = json.loads(encode_reply(Reply(route, Outcome.success({1, 2})), "n1", "n2"))
    assert odd["ok"] is False and odd["error"] == codes.INTERNAL and odd["leader"] == "n2"


def test_a_relayed_reply_names_the_leader_that_served_it() -> None:
    reply = Reply(Route(rid=4), Outcome.error(codes.NOT_LEADER, "m"), {"leader_client": "x"}, "n1")
    body = json.loads(encode_reply(reply, "n2", "n1"))
    assert body["served_by"] == "n1" and body["node"] == "n2" and body["leader_client"] == "x"


def test_forwards_round_trip_and_refuse_garbage() -> None:
    req = Request({"cmd": "set", "key": "k", "value": None}, 5, "c", 9, False, True, 4)
    back = forwarding.decode_request(forwarding.encode_request(req))
    assert back == Request(req.command, 5, "c", 9, False, False, 4)  # the leader never forwards
    data = forwarding.encode_reply(Outcome.error("X", "y"), {"leader_client": "x"}, "n1")
    assert forwarding.decode_reply(data) == (Outcome.error("X", "y"), {"leader_client": "x"}, "n1")
    for bad in (b"", b"\xc1", forwarding.encode_reply(Outcome.success(1), {}, "n1")[:-1]):
        with pytest.raises(forwarding.ForwardError):
            forwarding.decode_request(bad)
        with pytest.raises(forwarding.ForwardError):
            forwarding.decode_reply(bad)
    import msgpack

    wrong = msgpack.packb([1, {"cmd": 3}, None, "", 0, False, 0])
    with pytest.raises(forwarding.ForwardError, match="wrong type"):
        forwarding.decode_request(wrong)


def test_dump_never_raises() -> None:
    assert json.loads(protocol.dump({"ok": True, "result": float("nan")}))  # NaN is tolerated
    assert json.loads(protocol.dump({"id": b"x", "result": object()}))["error"] == codes.INTERNAL


def test_encoded_surrogates_in_raw_bytes_are_refused_too() -> None:
    # Review finding: json.loads(bytes) let CESU-style surrogate bytes through, and a
    # parked write holding one crashed the node when it was retried.
    frame = b'{"cmd":"set","key":"k","value":"\xed\xa0\x80"}'
    assert refused(frame).code == codes.BAD_REQUEST


def test_a_reply_too_deep_for_json_becomes_an_error_not_a_crash() -> None:
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    body = json.loads(encode_reply(Reply(Route(rid=1), Outcome.success(deep)), "n1", None))
    assert body["error"] == codes.INTERNAL and body["id"] == 1


def test_a_forwarded_reply_may_not_overwrite_the_replys_own_fields() -> None:
    data = forwarding.encode_reply(Outcome.success(1), {"node": "evil", "id": "forged"}, "n1")
    with pytest.raises(forwarding.ForwardError, match="may not have"):
        forwarding.decode_reply(data)
