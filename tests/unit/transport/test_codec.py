"""The peer wire codec: round trips, one test per validation rule, and a seeded fuzz."""

from __future__ import annotations

import random

import msgpack
import pytest

from zraft.core.messages import Entry, EntryKind, Message, MsgType
from zraft.transport import codec
from zraft.transport.codec import (
    DEFAULT_LIMITS,
    REASONS,
    WIRE_VERSION,
    DecodeError,
    Forward,
    ForwardReply,
    Limits,
    decode,
    encode,
)

U63 = 2**63


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def entries(first: int, *terms: int, data: bytes = b"x") -> tuple[Entry, ...]:
    return tuple(Entry(t, first + i, EntryKind.NORMAL, data) for i, t in enumerate(terms))


SAMPLES: list[Message] = [
    # Raft §5.3: an empty append is a probe/heartbeat; a full one carries a log suffix.
    Message(MsgType.APPEND, 5, "n1", "n2", index=10, log_term=4, commit=9),
    Message(
        MsgType.APPEND,
        5,
        "n1",
        "n2",
        index=10,
        log_term=4,
        entries=(
            Entry(4, 11, EntryKind.NORMAL, b"set a 1"),
            Entry(5, 12, EntryKind.NOOP),
            Entry(5, 13, EntryKind.CONFIG, b"\x00\xff" * 8),
        ),
        commit=10,
    ),
    Message(MsgType.APPEND, 1, "n1", "n2", entries=(Entry(1, 1, EntryKind.NOOP),)),
    Message(MsgType.APPEND_RESP, 5, "n2", "n1", index=13),
    Message(MsgType.APPEND_RESP, 5, "n2", "n1", index=10, reject=True, reject_hint=7, log_term=3),
    Message(MsgType.VOTE, 6, "n3", "n1", index=13, log_term=5),
    Message(MsgType.VOTE_RESP, 6, "n1", "n3"),
    Message(MsgType.VOTE_RESP, 6, "n1", "n3", reject=True),
    Message(MsgType.PRE_VOTE, 7, "n3", "n1", index=13, log_term=5),
    Message(MsgType.PRE_VOTE_RESP, 6, "n1", "n3", reject=True),
    Message(MsgType.HEARTBEAT, 5, "n1", "n2", commit=13, context=b"read-42"),
    Message(MsgType.HEARTBEAT_RESP, 5, "n2", "n1", context=b"read-42"),
    Message(MsgType.READ_INDEX, 5, "n2", "n1", context=b"\x01" * 1024),
    Message(MsgType.READ_INDEX_RESP, 5, "n1", "n2", index=13, context=b"c"),
    Message(MsgType.READ_INDEX_RESP, 5, "n1", "n2", context=b"c", reject=True),
    Message(MsgType.TIMEOUT_NOW, 5, "n1", "n2"),
    Message(MsgType.SNAPSHOT, 5, "n1", "n2", index=100, log_term=4),
    Message(
        MsgType.APPEND_RESP,
        U63 - 1,
        "node-A_1.x",
        "b" * 64,
        index=U63 - 1,
        log_term=U63 - 1,
        commit=U63 - 1,
        reject_hint=U63 - 1,
    ),
]

FORWARDS = [
    Forward(0, b""),
    Forward(U63 - 1, b"\x00client request"),
    ForwardReply(7, b"reply"),
    ForwardReply(0, b"x" * 100_000),
]


def message_fields(msg: Message) -> list:
    """The positional frame fields of ``msg``, for crafting variants."""
    flat = [x for e in msg.entries for x in (e.term, e.index, int(e.kind), e.data)]
    return [
        WIRE_VERSION,
        0,
        int(msg.type),
        msg.term,
        msg.src,
        msg.dst,
        msg.index,
        msg.log_term,
        flat,
        msg.commit,
        msg.reject,
        msg.reject_hint,
        msg.context,
    ]


HEARTBEAT = Message(MsgType.HEARTBEAT, 5, "n1", "n2", commit=3, context=b"ctx")
APPEND = Message(MsgType.APPEND, 5, "n1", "n2", index=10, log_term=4, entries=entries(11, 4, 5, 5))
FIELD = {name: i for i, name in enumerate(
    ["version", "kind", "type", "term", "src", "dst", "index", "log_term", "entries",
     "commit", "reject", "reject_hint", "context"]
)}  # fmt: skip


def variant(base: Message, **changes: object) -> bytes:
    """Return the frame of ``base`` with named positional fields replaced."""
    fields = message_fields(base)
    for name, value in changes.items():
        fields[FIELD[name]] = value
    return pack(fields)


def assert_rejected(frame: object, reason: str, limits: Limits = DEFAULT_LIMITS) -> None:
    with pytest.raises(DecodeError) as info:
        decode(frame, limits)  # type: ignore[arg-type]
    assert info.value.reason == reason, str(info.value)
    assert reason in REASONS


# ---------------------------------------------------------------- round trips


def test_samples_cover_every_msg_type() -> None:
    assert {m.type for m in SAMPLES} == set(MsgType)
    assert {e.kind for m in SAMPLES for e in m.entries} == set(EntryKind)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.type.name)
def test_message_round_trip(msg: Message) -> None:
    decoded = decode(encode(msg))
    assert decoded == msg
    assert type(decoded) is Message
    assert type(decoded.type) is MsgType
    assert type(decoded.entries) is tuple
    assert all(type(e) is Entry and type(e.kind) is EntryKind for e in decoded.entries)


@pytest.mark.parametrize("obj", FORWARDS, ids=repr)
def test_forward_round_trip(obj: Forward | ForwardReply) -> None:
    decoded = decode(encode(obj))
    assert decoded == obj
    assert type(decoded) is type(obj)


def test_round_trip_without_fast_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    # The slot-setting fast path must build exactly what the constructors build.
    frames = [encode(m) for m in SAMPLES]
    fast = [decode(f) for f in frames]
    monkeypatch.setattr(codec, "_FAST_MESSAGE", False)
    monkeypatch.setattr(codec, "_FAST_ENTRY", False)
    slow = [decode(f) for f in frames]
    assert fast == slow == SAMPLES
    assert [hash(m) for m in fast] == [hash(m) for m in SAMPLES]


def test_frame_layout_is_a_positional_array() -> None:
    assert msgpack.unpackb(encode(APPEND)) == message_fields(APPEND)
    assert msgpack.unpackb(encode(Forward(3, b"r"))) == [WIRE_VERSION, 1, 3, b"r"]
    assert msgpack.unpackb(encode(ForwardReply(3, b"r"))) == [WIRE_VERSION, 2, 3, b"r"]


def test_encode_coerces_a_truthy_reject_to_bool() -> None:
    msg = Message(MsgType.VOTE_RESP, 1, "n1", "n2", reject=1)  # type: ignore[arg-type]
    assert decode(encode(msg)).reject is True


def test_encode_rejects_other_types() -> None:
    with pytest.raises(TypeError):
        encode(Entry(1, 1))  # type: ignore[arg-type]


def test_decode_accepts_bytearray_and_memoryview() -> None:
    frame = encode(APPEND)
    assert decode(bytearray(frame)) == APPEND
    assert decode(memoryview(frame)) == APPEND


def test_large_append_within_limits() -> None:
    msg = Message(
        MsgType.APPEND, 9, "n1", "n2", index=0, entries=entries(1, *[9] * 4096, data=b"d" * 100)
    )
    assert decode(encode(msg)) == msg
    big = Message(MsgType.APPEND, 9, "n1", "n2", entries=entries(1, 9, data=b"d" * 4 * 2**20))
    assert decode(encode(big)) == big


# ---------------------------------------------------------------- rejections


def test_too_large_is_checked_before_unpacking() -> None:
    limits = Limits(max_frame_bytes=100)
    assert_rejected(b"\xc1" * 101, "too_large", limits)  # not even msgpack
    assert_rejected(bytearray(101), "too_large", limits)
    assert_rejected(memoryview(bytes(101)), "too_large", limits)
    assert_rejected(variant(HEARTBEAT, context=b"x" * 200), "too_large", limits)
    assert decode(encode(HEARTBEAT), limits) == HEARTBEAT


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xc1",  # the one byte msgpack never uses
        encode(APPEND)[:-1],  # truncated
        encode(HEARTBEAT) + b"\x00",  # trailing data
        b"\x91\xa2\xff\xfe",  # a str that is not UTF-8
        b"\x81\x01\x02",  # a map with an int key (strict_map_key)
        b"\x81\x90\x02",  # a map with an unhashable key
        "not bytes",
        None,
        12,
    ],
    ids=repr,
)
def test_not_msgpack(frame: object) -> None:
    assert_rejected(frame, "not_msgpack")


def test_msgpack_length_limits() -> None:
    # Frames of 256 bytes and less get msgpack's own limits, bounded by their size.
    assert_rejected(b"\xdd\xff\xff\xff\xff", "too_large")  # promises 4 G items
    assert_rejected(pack([1, 0] + [0] * 300), "too_large", Limits(max_entries=4))
    assert_rejected(variant(HEARTBEAT, src="n" * 300), "too_large")  # longer than any id
    assert_rejected(pack([1, 0, {str(i): i for i in range(17)}, "x" * 250]), "too_large")
    assert_rejected(pack([1, 0, msgpack.ExtType(1, b"x" * 300)]), "too_large")


@pytest.mark.parametrize(
    "obj",
    [1, "x", b"x", {}, {"a": 1}, [], [1], [1, 0, 7], message_fields(HEARTBEAT)[:-1],
     message_fields(HEARTBEAT) + [0], [1, 1, 3], [1, 2, 3, b"x", 0]],
    ids=repr,
)  # fmt: skip
def test_bad_shape(obj: object) -> None:
    assert_rejected(pack(obj), "bad_shape")


@pytest.mark.parametrize("version", [0, 2, -1, True, 1.0, "1", None, b"\x01"], ids=repr)
def test_bad_version(version: object) -> None:
    assert_rejected(variant(HEARTBEAT, version=version), "bad_version")


@pytest.mark.parametrize("kind", [5, -1, 255, True, False, 0.0, "0", None], ids=repr)
def test_bad_kind(kind: object) -> None:
    assert_rejected(variant(HEARTBEAT, kind=kind), "bad_kind")


@pytest.mark.parametrize("msg_type", [0, 13, -1, 2**64 - 1, True, 1.0, "APPEND", None], ids=repr)
def test_bad_msg_type(msg_type: object) -> None:
    assert_rejected(variant(HEARTBEAT, type=msg_type), "bad_type")


@pytest.mark.parametrize("name", ["term", "index", "log_term", "commit", "reject_hint"])
@pytest.mark.parametrize(
    "value", [-1, U63, 2**64 - 1, True, False, 1.5, None, "1", b"1", []], ids=repr
)
def test_bad_int_field(name: str, value: object) -> None:
    assert_rejected(variant(HEARTBEAT, **{name: value}), "bad_field")


@pytest.mark.parametrize("value", [0, 1, None, "true", b"", []], ids=repr)
def test_reject_must_be_a_bool(value: object) -> None:
    assert_rejected(variant(HEARTBEAT, reject=value), "bad_field")


@pytest.mark.parametrize("value", ["ctx", 0, None, [], b"x" * 1025], ids=lambda v: repr(v)[:20])
def test_bad_context(value: object) -> None:
    assert_rejected(variant(HEARTBEAT, context=value), "bad_field")


def test_context_limit_is_configurable() -> None:
    limits = Limits(max_context_bytes=2)
    assert_rejected(encode(HEARTBEAT), "bad_field", limits)


@pytest.mark.parametrize(
    "fields",
    [[1, 1, -1, b"r"], [1, 1, U63, b"r"], [1, 1, True, b"r"], [1, 2, 1.0, b"r"],
     [1, 1, 1, "r"], [1, 2, 1, None], [1, 2, 1, [b"r"]]],
    ids=repr,
)  # fmt: skip
def test_bad_forward_field(fields: list) -> None:
    assert_rejected(pack(fields), "bad_field")


@pytest.mark.parametrize("field", ["src", "dst"])
@pytest.mark.parametrize(
    "value",
    ["", "a b", "n1\n", "n/1", "nœud", "x" * 65, 1, None, b"n1", True, ["n1"], {"n": 1}],
    ids=repr,
)
def test_bad_id(field: str, value: object) -> None:
    assert_rejected(variant(HEARTBEAT, **{field: value}), "bad_id")


def test_id_length_limit_is_configurable() -> None:
    frame = encode(Message(MsgType.HEARTBEAT, 1, "abcdef", "n2"))
    assert_rejected(frame, "bad_id", Limits(max_id_len=5))
    assert decode(frame, Limits(max_id_len=6)).src == "abcdef"


def flat(*entries_: tuple) -> list:
    return [x for e in entries_ for x in e]


@pytest.mark.parametrize(
    ("base", "value"),
    [
        (APPEND, {}),  # not an array
        (APPEND, 5),
        (APPEND, b""),
        (APPEND, [4, 11, 0]),  # not 4 values per entry
        (APPEND, [[4, 11, 0, b"x"]]),  # nested, not flat
        (HEARTBEAT, flat((5, 1, 0, b"x"))),  # only an APPEND carries entries
        (APPEND, flat((4, 11, 0, "x"))),  # data not bytes
        (APPEND, flat((4, 11, 0, None))),
        (APPEND, flat((True, 11, 0, b"x"))),  # a bool is not a term
        (APPEND, flat((4.0, 11, 0, b"x"))),
        (APPEND, flat((4, True, 0, b"x"))),
        (APPEND, flat((4, 11.0, 0, b"x"))),
        (APPEND, flat((4, 11, False, b"x"))),
        (APPEND, flat((4, 11, 3, b"x"))),  # unknown EntryKind
        (APPEND, flat((4, 11, -1, b"x"))),
        (APPEND, flat((4, 12, 0, b"x"))),  # Raft §5.3: first entry follows prev index
        (APPEND, flat((4, 10, 0, b"x"))),
        (APPEND, flat((4, 11, 0, b"x"), (4, 13, 0, b"x"))),  # gap
        (APPEND, flat((4, 11, 0, b"x"), (4, 11, 0, b"x"))),  # duplicate index
        (APPEND, flat((4, 12, 0, b"x"), (4, 11, 0, b"x"))),  # reordered
        (APPEND, flat((5, 11, 0, b"x"), (4, 12, 0, b"x"))),  # term decreases
        (APPEND, flat((6, 11, 0, b"x"))),  # term above the message term
        (APPEND, flat((-1, 11, 0, b"x"))),
    ],
    ids=repr,
)
def test_bad_entries(base: Message, value: object) -> None:
    assert_rejected(variant(base, entries=value), "bad_entries")


def test_entry_index_must_stay_below_2_63() -> None:
    frame = variant(APPEND, index=U63 - 2, entries=flat((4, U63 - 1, 0, b""), (4, U63, 0, b"")))
    assert_rejected(frame, "bad_entries")
    ok = Message(MsgType.APPEND, 4, "n1", "n2", index=U63 - 2, entries=entries(U63 - 1, 4))
    assert decode(encode(ok)) == ok


def test_entry_count_and_size_limits() -> None:
    assert_rejected(encode(APPEND), "bad_entries", Limits(max_entries=2))
    assert decode(encode(APPEND), Limits(max_entries=3)) == APPEND
    big = Message(MsgType.APPEND, 5, "n1", "n2", entries=entries(1, 5, 5, data=b"x" * 11))
    assert_rejected(encode(big), "bad_entries", Limits(max_entry_bytes=10))
    assert decode(encode(big), Limits(max_entry_bytes=11)) == big


def test_limits_must_be_positive_ints() -> None:
    with pytest.raises(ValueError):
        Limits(max_entries=0)
    with pytest.raises(ValueError):
        Limits(max_frame_bytes=True)


def test_decode_error_is_a_value_error_with_a_message() -> None:
    with pytest.raises(ValueError, match="bad_id: src"):
        decode(variant(HEARTBEAT, src=""))


# ---------------------------------------------------------------- fuzz

NASTY = [
    None, True, False, 0, 1, -1, 7, 12, U63 - 1, U63, 2**64 - 1, -(2**63), 0.5, float("nan"),
    "", "n1", "x" * 70, "\u00e9", b"", b"x", b"x" * 2000, [], [0], [1, 0], {}, {"a": 1},
    {b"k": [1]}, msgpack.ExtType(5, b"ext"), msgpack.Timestamp(1, 0),
]  # fmt: skip


def mutate_structure(rng: random.Random, fields: list) -> list:
    fields = list(fields)
    roll = rng.random()
    if roll < 0.6:
        fields[rng.randrange(len(fields))] = rng.choice(NASTY)
    elif roll < 0.8 and len(fields) == 13 and type(fields[8]) is list and fields[8]:
        entries_ = list(fields[8])
        entries_[rng.randrange(len(entries_))] = rng.choice(NASTY + [rng.randrange(20)])
        fields[8] = entries_
    elif roll < 0.9:
        del fields[rng.randrange(len(fields))]
    else:
        fields.insert(rng.randrange(len(fields) + 1), rng.choice(NASTY))
    return fields


def mutate_bytes(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        if op == 0 and data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 2:
            del data[rng.randrange(len(data) + 1) :]
        elif op == 3:
            pos = rng.randrange(len(data) + 1)
            data[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif data:
            pos = rng.randrange(len(data))
            del data[pos : pos + rng.randint(1, 8)]
    return bytes(data)


def assert_valid(value: object) -> None:
    """A value decode returns must be well typed and survive another round trip."""
    assert type(value) in (Message, Forward, ForwardReply)
    assert decode(encode(value)) == value  # type: ignore[arg-type]
    if type(value) is Message:
        ints = [value.term, value.index, value.log_term, value.commit, value.reject_hint]
        assert all(type(i) is int and 0 <= i < U63 for i in ints)
        assert type(value.reject) is bool and type(value.type) is MsgType
        for e in value.entries:
            assert type(e.kind) is EntryKind and type(e.data) is bytes and e.term <= value.term


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_fuzz_only_decode_error_or_a_valid_value(seed: int) -> None:
    rng = random.Random(seed)
    corpus = [encode(m) for m in SAMPLES] + [encode(f) for f in FORWARDS[:3]]
    structures = [msgpack.unpackb(f) for f in corpus]
    limits_choices = [DEFAULT_LIMITS, Limits(max_frame_bytes=64, max_entries=2, max_id_len=3)]
    outcomes = {"ok": 0}
    for _ in range(1000):  # 5 seeds x 1,000 = 5,000 cases
        roll = rng.random()
        if roll < 0.2:
            frame = rng.randbytes(rng.randint(0, 64))
        elif roll < 0.6:
            frame = mutate_bytes(rng, rng.choice(corpus))
        else:
            fields = mutate_structure(rng, rng.choice(structures))
            frame = msgpack.packb(fields, use_bin_type=rng.random() < 0.9)
        limits = rng.choice(limits_choices)
        try:
            value = decode(frame, limits)
        except DecodeError as exc:
            assert exc.reason in REASONS and exc.reason != "internal", str(exc)
            outcomes[exc.reason] = outcomes.get(exc.reason, 0) + 1
        else:
            assert_valid(value)
            outcomes["ok"] += 1
    # The fuzz must reach past the msgpack layer into the field checks.
    assert outcomes["ok"] > 0 and outcomes.get("bad_field", 0) > 0, outcomes
