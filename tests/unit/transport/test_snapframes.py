"""The SNAP_CHUNK / SNAP_ACK frames: round trips, one test per rule, and a seeded fuzz."""

from __future__ import annotations

import random

import msgpack
import pytest

from tests.unit.transport.test_codec import mutate_bytes
from zraft.transport.codec import (
    DEFAULT_LIMITS,
    REASONS,
    WIRE_VERSION,
    DecodeError,
    Limits,
    SnapAck,
    SnapChunk,
    SnapStatus,
    decode,
    encode,
)
from zraft.transport.wire import SNAP_CHUNK_OVERHEAD

U63 = 2**63
MAX_DATA = DEFAULT_LIMITS.max_frame_bytes - SNAP_CHUNK_OVERHEAD

CHUNKS = [
    SnapChunk(5, 100, 4, 0, 1000, b"a" * 400, False),
    SnapChunk(5, 100, 4, 400, 1000, b"b" * 600, True),
    SnapChunk(5, 100, 5, 1000, 1000, b"", True),  # an empty last chunk at the end
    SnapChunk(1, 0, 0, 0, 0, b"", True),
    SnapChunk(U63 - 1, U63 - 1, U63 - 1, U63 - 2, U63 - 1, b"x", True),
    SnapChunk(7, 9, 7, 0, MAX_DATA + 1, b"\xff" * MAX_DATA, False),  # the biggest chunk
]
ACKS = [
    SnapAck(5, 100, 4, 0),
    SnapAck(5, 100, 4, 1000, SnapStatus.OK),
    SnapAck(5, 100, 4, 400, SnapStatus.ABORT),
    SnapAck(U63 - 1, U63 - 1, U63 - 1, U63 - 1, SnapStatus.ABORT),
]
CHUNK = CHUNKS[0]
ACK = ACKS[0]
CHUNK_FIELDS = ["version", "kind", "term", "index", "snap_term", "offset", "total", "data", "last"]
ACK_FIELDS = ["version", "kind", "term", "index", "snap_term", "offset", "status"]


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def fields_of(value: SnapChunk | SnapAck) -> list:
    return msgpack.unpackb(encode(value))


def variant(value: SnapChunk | SnapAck, **changes: object) -> bytes:
    """Return the frame of ``value`` with named positional fields replaced."""
    names = CHUNK_FIELDS if type(value) is SnapChunk else ACK_FIELDS
    fields = fields_of(value)
    for name, new in changes.items():
        fields[names.index(name)] = new
    return pack(fields)


def assert_rejected(frame: object, reason: str, limits: Limits = DEFAULT_LIMITS) -> None:
    with pytest.raises(DecodeError) as info:
        decode(frame, limits)  # type: ignore[arg-type]
    assert info.value.reason == reason, str(info.value)
    assert reason in REASONS


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("value", CHUNKS + ACKS, ids=repr)
def test_round_trip(value: SnapChunk | SnapAck) -> None:
    out = decode(encode(value))
    assert out == value and type(out) is type(value)
    if type(out) is SnapAck:
        assert type(out.status) is SnapStatus


def test_frame_layout_is_a_positional_array() -> None:
    assert fields_of(CHUNK) == [WIRE_VERSION, 3, 5, 100, 4, 0, 1000, b"a" * 400, False]
    abort = SnapAck(5, 100, 4, 400, SnapStatus.ABORT)
    assert fields_of(abort) == [WIRE_VERSION, 4, 5, 100, 4, 400, 1]


def test_encode_coerces_a_truthy_last_to_bool() -> None:
    chunk = SnapChunk(1, 1, 1, 0, 1, b"x", 1)  # type: ignore[arg-type]
    assert decode(encode(chunk)).last is True  # type: ignore[union-attr]


def test_repr_leaves_the_data_out() -> None:
    assert "aaaa" not in repr(CHUNK) and "offset=0" in repr(CHUNK)


def test_max_chunk_follows_the_frame_limit() -> None:
    assert DEFAULT_LIMITS.max_snap_chunk_bytes == MAX_DATA
    assert Limits(max_frame_bytes=100).max_snap_chunk_bytes == 0
    small = Limits(max_frame_bytes=SNAP_CHUNK_OVERHEAD + 10)
    fits = SnapChunk(1, 1, 1, 0, 10, b"x" * 10, True)
    assert decode(encode(fits), small) == fits


# ---------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    "fields",
    [[1, 3], [1, 4], [1, 3, 5, 100, 4, 0, 1000, b"x"], fields_of(CHUNK) + [0],
     fields_of(ACK)[:-1], fields_of(ACK) + [0], fields_of(ACK)[:2] + fields_of(CHUNK)[2:],
     fields_of(CHUNK)[:2] + fields_of(ACK)[2:]],
    ids=lambda v: repr(v)[:40],
)  # fmt: skip
def test_bad_shape(fields: list) -> None:
    assert_rejected(pack(fields), "bad_shape")


BAD_INTS = [-1, U63, 2**64 - 1, True, False, 1.5, None, "1", b"1", [], {}]


@pytest.mark.parametrize("name", ["term", "index", "snap_term", "offset", "total"])
@pytest.mark.parametrize("value", BAD_INTS, ids=repr)
def test_bad_chunk_int(name: str, value: object) -> None:
    assert_rejected(variant(CHUNK, **{name: value}), "bad_field")


@pytest.mark.parametrize("name", ["term", "index", "snap_term", "offset"])
@pytest.mark.parametrize("value", BAD_INTS, ids=repr)
def test_bad_ack_int(name: str, value: object) -> None:
    assert_rejected(variant(ACK, **{name: value}), "bad_field")


@pytest.mark.parametrize("value", ["data", None, 0, True, [b"x"]], ids=repr)
def test_data_must_be_bytes(value: object) -> None:
    assert_rejected(variant(CHUNK, data=value), "bad_field")


def test_data_size_limit() -> None:
    limits = Limits(max_frame_bytes=SNAP_CHUNK_OVERHEAD + 10)
    chunk = SnapChunk(1, 1, 1, 0, 11, b"x" * 11, True)
    assert_rejected(encode(chunk), "bad_field", limits)
    too_big = SnapChunk(1, 1, 1, 0, MAX_DATA + 1, b"x" * (MAX_DATA + 1), True)
    assert_rejected(encode(too_big), "bad_field")


@pytest.mark.parametrize("value", [0, 1, None, "true", b"", []], ids=repr)
def test_last_must_be_a_bool(value: object) -> None:
    assert_rejected(variant(CHUNK, last=value), "bad_field")


@pytest.mark.parametrize(
    ("offset", "total", "data", "last"),
    [
        (0, 1000, b"x" * 400, True),  # last, but bytes remain
        (600, 1000, b"x" * 400, False),  # ends at total, but not last
        (601, 1000, b"x" * 400, True),  # past the end
        (0, 3, b"x" * 4, False),
        (U63 - 1, U63 - 1, b"xx", True),  # the end overflows 2**63: still past total
        (1000, 999, b"", True),
    ],
)
def test_chunk_must_lie_inside_the_file(offset: int, total: int, data: bytes, last: bool) -> None:
    assert_rejected(variant(CHUNK, offset=offset, total=total, data=data, last=last), "bad_field")


@pytest.mark.parametrize("value", [CHUNK, ACK], ids=["chunk", "ack"])
def test_snapshot_term_is_at_most_the_term(value: SnapChunk | SnapAck) -> None:
    # Raft §5.4: a leader of term T holds no entry of a term above T.
    assert_rejected(variant(value, term=4, snap_term=5), "bad_field")
    assert decode(variant(value, term=5, snap_term=5)).snap_term == 5  # type: ignore[union-attr]


@pytest.mark.parametrize("value", [2, -1, 255, True, False, 0.0, "OK", None, b"\x00"], ids=repr)
def test_bad_status(value: object) -> None:
    assert_rejected(variant(ACK, status=value), "bad_field")


# ---------------------------------------------------------------- fuzz

NASTY = [
    None, True, False, 0, 1, -1, 3, 4, 400, 1000, U63 - 1, U63, 2**64 - 1, -(2**63), 0.5,
    float("nan"), "", "x", b"", b"x", b"x" * 2000, [], [0], {}, {"a": 1},
    msgpack.ExtType(5, b"ext"),
]  # fmt: skip


def mutate(rng: random.Random, fields: list) -> list:
    fields = list(fields)
    roll = rng.random()
    if roll < 0.7:
        fields[rng.randrange(len(fields))] = rng.choice(NASTY)
    elif roll < 0.85:
        del fields[rng.randrange(len(fields))]
    else:
        fields.insert(rng.randrange(len(fields) + 1), rng.choice(NASTY))
    return fields


def assert_valid(value: object) -> None:
    """A snapshot frame decode returns is well typed, consistent and round-trips."""
    assert type(value) in (SnapChunk, SnapAck), type(value)
    assert decode(encode(value)) == value  # type: ignore[arg-type]
    ints = [value.term, value.index, value.snap_term, value.offset]  # type: ignore[union-attr]
    assert all(type(i) is int and 0 <= i < U63 for i in ints)
    assert value.snap_term <= value.term  # type: ignore[union-attr]
    if type(value) is SnapChunk:
        end = value.offset + len(value.data)
        assert type(value.data) is bytes and type(value.last) is bool
        assert end <= value.total and value.last == (end == value.total)
    else:
        assert type(value.status) is SnapStatus  # type: ignore[union-attr]


@pytest.mark.parametrize("seed", range(5))
def test_fuzz_only_decode_error_or_a_valid_value(seed: int) -> None:
    rng = random.Random(seed)
    small = [v for v in CHUNKS + ACKS if type(v) is SnapAck or len(v.data) < 5000]
    corpus = [encode(v) for v in small]
    structures = [msgpack.unpackb(f) for f in corpus]
    limits_choices = [DEFAULT_LIMITS, Limits(max_frame_bytes=SNAP_CHUNK_OVERHEAD + 500)]
    outcomes = {"ok": 0}
    for _ in range(1000):  # 5 seeds x 1,000 = 5,000 cases
        if rng.random() < 0.4:
            frame = mutate_bytes(rng, rng.choice(corpus))
        else:
            frame = msgpack.packb(mutate(rng, rng.choice(structures)), use_bin_type=True)
        try:
            value = decode(frame, rng.choice(limits_choices))
        except DecodeError as exc:
            assert exc.reason in REASONS and exc.reason != "internal", str(exc)
            outcomes[exc.reason] = outcomes.get(exc.reason, 0) + 1
        except Exception as exc:  # pragma: no cover - the point of the test
            raise AssertionError(f"{frame!r} raised {exc!r}") from exc
        else:
            if type(value) in (SnapChunk, SnapAck):
                assert_valid(value)
            outcomes["ok"] += 1
    assert outcomes["ok"] > 0 and outcomes.get("bad_field", 0) > 0, outcomes
    assert outcomes.get("bad_shape", 0) > 0, outcomes
