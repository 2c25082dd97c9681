"""The peer wire format: Raft messages, forwards and snapshot chunks to bytes and back.

Pure: no sockets, no clock, no pickle, no eval. A frame is one msgpack array
with positional fields (msgpack: ``use_bin_type=True``, strings are UTF-8)::

    MESSAGE        [1, 0, type, term, src, dst, index, log_term, entries,
                    commit, reject, reject_hint, context]
    FORWARD        [1, 1, fwd_id, request]
    FORWARD_REPLY  [1, 2, fwd_id, reply]
    SNAP_CHUNK     [1, 3, term, index, snap_term, offset, total, data, last]
    SNAP_ACK       [1, 4, term, index, snap_term, offset, status]

The first element is ``WIRE_VERSION``, the second the frame kind. ``entries``
is a flat array of four values per entry: ``[term, index, kind, data, term,
index, kind, data, ...]`` (flat rather than nested: fewer containers to pack,
unpack and check). Integers are unsigned and below 2**63 so that any peer
language can hold them in a signed 64-bit integer; ``reject`` is a msgpack
bool; ``src``/``dst`` are strings; ``context``, ``data``, ``request`` and
``reply`` are msgpack bin. The snapshot frames' rules are in ``snapframes``.

``decode`` trusts nothing: every frame that fails a check raises
``DecodeError`` whose ``reason`` is one of ``REASONS`` (a stable label for a
drop counter). It never raises anything else. The values besides ``Message``
(``Forward``, ``ForwardReply``, ``SnapChunk``, ``SnapAck``) and the limits
live in ``wire.py`` and are re-exported here.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections import deque
from collections.abc import Iterable
from itertools import repeat
from typing import Any

import msgpack

from zraft.core.messages import Entry, EntryKind, Message, MsgType
from zraft.transport.snapframes import KIND_SNAP_ACK, KIND_SNAP_CHUNK, decode_snap
from zraft.transport.wire import (
    DEFAULT_LIMITS,
    REASONS,
    DecodeError,
    Forward,
    ForwardReply,
    Limits,
    SnapAck,
    SnapChunk,
    SnapStatus,
)

__all__ = [
    "DEFAULT_LIMITS",
    "REASONS",
    "WIRE_VERSION",
    "DecodeError",
    "Forward",
    "Frame",
    "ForwardReply",
    "Limits",
    "SnapAck",
    "SnapChunk",
    "SnapStatus",
    "decode",
    "encode",
]

WIRE_VERSION = 1
"""Bumped on any incompatible change of the frame layout."""

Frame = Message | Forward | ForwardReply | SnapChunk | SnapAck
"""Every value a peer frame carries."""

_KIND_MESSAGE = 0
_KIND_FORWARD = 1
_KIND_FORWARD_REPLY = 2

_MESSAGE_LEN = 13  # version, kind and the 11 Message fields
_FORWARD_LEN = 4  # version, kind, fwd_id, payload

_U63 = 1 << 63  # exclusive upper bound of every integer on the wire

# ---------------------------------------------------------------------------
# encode


_tls = threading.local()  # msgpack.Packer keeps a buffer: one per thread


def _packer() -> msgpack.Packer:
    try:
        return _tls.packer
    except AttributeError:
        # Reusing a Packer halves the cost of packb, which builds one per call.
        _tls.packer = msgpack.Packer(use_bin_type=True, autoreset=True)
        return _tls.packer


def encode(obj: Frame) -> bytes:
    """Return the wire frame for ``obj``.

    ``obj`` is trusted (built locally); its field types are not checked
    beyond what msgpack needs. Raises TypeError for any other type.
    """
    cls = type(obj)
    if cls is Message:
        m: Message = obj  # type: ignore[assignment]
        entries = m.entries
        # A comprehension beats attrgetter + chain.from_iterable here.
        flat = [x for e in entries for x in (e.term, e.index, e.kind, e.data)]
        return _packer().pack(
            [
                WIRE_VERSION,
                _KIND_MESSAGE,
                m.type,
                m.term,
                m.src,
                m.dst,
                m.index,
                m.log_term,
                flat,
                m.commit,
                # bool() so that a truthy int built by mistake still decodes.
                bool(m.reject),
                m.reject_hint,
                m.context,
            ]
        )
    if cls is Forward:
        return _packer().pack([WIRE_VERSION, _KIND_FORWARD, obj.fwd_id, obj.request])
    if cls is ForwardReply:
        return _packer().pack([WIRE_VERSION, _KIND_FORWARD_REPLY, obj.fwd_id, obj.reply])
    if cls is SnapChunk:
        c: SnapChunk = obj  # type: ignore[assignment]
        return _packer().pack(
            [WIRE_VERSION, KIND_SNAP_CHUNK, c.term, c.index, c.snap_term, c.offset, c.total,
             c.data, bool(c.last)]
        )  # fmt: skip
    if cls is SnapAck:
        a: SnapAck = obj  # type: ignore[assignment]
        return _packer().pack(
            [WIRE_VERSION, KIND_SNAP_ACK, a.term, a.index, a.snap_term, a.offset, int(a.status)]
        )
    raise TypeError(f"cannot encode {cls.__name__}")


# ---------------------------------------------------------------------------
# decode


_MSG_TYPES: dict[int, MsgType] = {t.value: t for t in MsgType}
_ENTRY_KINDS: dict[int, EntryKind] = {k.value: k for k in EntryKind}
_ENTRY_KIND_VALUES = frozenset(_ENTRY_KINDS)
_ID = re.compile(r"[A-Za-z0-9_.-]+")
_valid_ids: set[str] = set()  # ids that matched _ID (length is checked per Limits)
_MAX_CACHED_IDS = 1024

_MESSAGE_FIELDS = (
    "type",
    "term",
    "src",
    "dst",
    "index",
    "log_term",
    "entries",
    "commit",
    "reject",
    "reject_hint",
    "context",
)
_ENTRY_FIELD_NAMES = ("term", "index", "kind", "data")


def _can_skip_init(cls: type, names: tuple[str, ...]) -> bool:
    # The fast builders below set slots directly; that is only equivalent to
    # calling the constructor while the class is exactly the plain slotted
    # dataclass they were written for.
    return (
        tuple(f.name for f in dataclasses.fields(cls)) == names
        and getattr(cls, "__slots__", None) == names
        and not hasattr(cls, "__post_init__")
    )


# A frozen dataclass's __init__ goes through object.__setattr__ per field and
# costs about 1 us per Entry here, most of an APPEND's decode budget. Setting
# the slot descriptors directly from C-level map() loops costs under half.
_FAST_MESSAGE = _can_skip_init(Message, _MESSAGE_FIELDS)
_FAST_ENTRY = _can_skip_init(Entry, _ENTRY_FIELD_NAMES)
_new = object.__new__
if _FAST_MESSAGE:
    (
        _m_type,
        _m_term,
        _m_src,
        _m_dst,
        _m_index,
        _m_log_term,
        _m_entries,
        _m_commit,
        _m_reject,
        _m_reject_hint,
        _m_context,
    ) = (getattr(Message, n).__set__ for n in _MESSAGE_FIELDS)
if _FAST_ENTRY:
    _e_term, _e_index, _e_kind, _e_data = (getattr(Entry, n).__set__ for n in _ENTRY_FIELD_NAMES)


def _build_message(
    type_: MsgType,
    term: int,
    src: str,
    dst: str,
    index: int,
    log_term: int,
    entries: tuple[Entry, ...],
    commit: int,
    reject: bool,
    reject_hint: int,
    context: bytes,
) -> Message:
    if not _FAST_MESSAGE:
        return Message(
            type_, term, src, dst, index, log_term, entries, commit, reject, reject_hint, context
        )
    m = _new(Message)
    _m_type(m, type_)
    _m_term(m, term)
    _m_src(m, src)
    _m_dst(m, dst)
    _m_index(m, index)
    _m_log_term(m, log_term)
    _m_entries(m, entries)
    _m_commit(m, commit)
    _m_reject(m, reject)
    _m_reject_hint(m, reject_hint)
    _m_context(m, context)
    return m


def _build_entries(
    terms: list, indexes: list, kinds: list, kind_set: set, datas: list
) -> tuple[Entry, ...]:
    if len(kind_set) == 1:  # the common case: a batch of NORMAL entries
        kind_values: Iterable[EntryKind] = repeat(_ENTRY_KINDS[kinds[0]])
    else:
        kind_values = map(_ENTRY_KINDS.__getitem__, kinds)
    if not _FAST_ENTRY:
        return tuple(map(Entry, terms, indexes, kind_values, datas))
    entries = tuple(map(_new, repeat(Entry, len(terms))))
    consume = deque(maxlen=0).extend
    consume(map(_e_term, entries, terms))
    consume(map(_e_index, entries, indexes))
    consume(map(_e_kind, entries, kind_values))
    consume(map(_e_data, entries, datas))
    return entries


def _unpack_options(limits: Limits) -> dict[str, Any]:
    global _cached_options
    cached_limits, options = _cached_options
    # Identity, not equality: hashing a dataclass costs more than unpacking a
    # heartbeat. One entry is enough, as a node decodes with one Limits.
    if cached_limits is limits:
        return options
    options = _options_for(limits)
    _cached_options = (limits, options)
    return options


def _options_for(limits: Limits) -> dict[str, Any]:
    return {
        "raw": False,
        "use_list": True,
        "strict_map_key": True,
        # An id is at most max_id_len characters of at most 4 UTF-8 bytes; any
        # longer string cannot be valid, so msgpack need not even build it.
        "max_str_len": 4 * limits.max_id_len,
        # Forward payloads may use the whole frame; entry data and context
        # are held to their own limits after unpacking.
        "max_bin_len": limits.max_frame_bytes,
        "max_array_len": max(_MESSAGE_LEN, 4 * limits.max_entries),
        # Maps and extension types are never valid; small limits keep them
        # cheap, and the shape checks reject them with a precise reason.
        "max_map_len": 16,
        "max_ext_len": 16,
    }


_cached_options: tuple[Limits, dict[str, Any]] = (DEFAULT_LIMITS, _options_for(DEFAULT_LIMITS))
_SMALL_FRAME = 256
_unpackb = msgpack.unpackb


def decode(frame: bytes, limits: Limits = DEFAULT_LIMITS) -> Frame:
    """Return the value a peer's frame carries, after validating every field.

    Raises DecodeError (and nothing else) when the frame is too large, not
    msgpack, or any field has the wrong type, range or size; an APPEND's
    entries must also be a valid log suffix: contiguous from ``index + 1``,
    terms non-decreasing and at most the message term. Only an APPEND may
    carry entries. Fields a message type does not use are not checked
    against their defaults. The caller still checks that ``src`` is the
    peer the frame came from. Snapshot frames follow ``snapframes``' rules.
    """
    try:
        return _decode(frame, limits)
    except DecodeError:
        raise
    except Exception as exc:  # a gap in the checks must cost one frame, not the node
        raise DecodeError("internal", f"{type(exc).__name__}: {exc}") from exc


def _decode(frame: bytes, limits: Limits) -> Frame:
    if type(frame) is not bytes:
        if not isinstance(frame, bytearray | memoryview):
            raise DecodeError("not_msgpack", f"frame is {type(frame).__name__}, not bytes")
        size = frame.nbytes if isinstance(frame, memoryview) else len(frame)
        if size > limits.max_frame_bytes:
            raise DecodeError("too_large", f"frame > {limits.max_frame_bytes} bytes")
        frame = bytes(frame)
    size = len(frame)
    # Size first: never hand msgpack more than the limit.
    if size > limits.max_frame_bytes:
        raise DecodeError("too_large", f"frame of {size} bytes > {limits.max_frame_bytes}")
    try:
        if size <= _SMALL_FRAME:
            # msgpack bounds every length by the frame's own size when not
            # told otherwise; for a frame this small that is tighter than
            # the limits and saves a third of a heartbeat's decode.
            obj = _unpackb(frame, raw=False, strict_map_key=True)
        else:
            obj = _unpackb(frame, **_unpack_options(limits))
    except ValueError as exc:  # msgpack's errors (and UnicodeDecodeError) are ValueErrors
        if "exceeds max_" in str(exc):
            raise DecodeError("too_large", str(exc)) from None
        raise DecodeError("not_msgpack", f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:  # e.g. TypeError for an unhashable map key
        raise DecodeError("not_msgpack", f"{type(exc).__name__}: {exc}") from None

    if type(obj) is not list or len(obj) < 2:
        raise DecodeError("bad_shape", "frame is not an array of at least 2 fields")
    version, kind = obj[0], obj[1]
    if type(version) is not int or version != WIRE_VERSION:
        raise DecodeError("bad_version", f"wire version {version!r} != {WIRE_VERSION}")
    if type(kind) is not int:
        raise DecodeError("bad_kind", f"frame kind {kind!r} is not an int")
    if kind == _KIND_MESSAGE:
        return _decode_message(obj, limits)
    if kind == _KIND_FORWARD or kind == _KIND_FORWARD_REPLY:
        return _decode_forward(obj, kind)
    if kind == KIND_SNAP_CHUNK or kind == KIND_SNAP_ACK:
        return decode_snap(obj, kind, limits)
    raise DecodeError("bad_kind", f"unknown frame kind {kind}")


def _decode_forward(obj: list, kind: int) -> Forward | ForwardReply:
    if len(obj) != _FORWARD_LEN:
        raise DecodeError("bad_shape", f"forward frame has {len(obj)} fields, not {_FORWARD_LEN}")
    fwd_id, payload = obj[2], obj[3]
    if type(fwd_id) is not int or not 0 <= fwd_id < _U63:
        raise DecodeError("bad_field", f"fwd_id {fwd_id!r} is not an int in [0, 2**63)")
    if type(payload) is not bytes:
        raise DecodeError("bad_field", f"forward payload is {type(payload).__name__}, not bytes")
    if kind == _KIND_FORWARD:
        return Forward(fwd_id, payload)
    return ForwardReply(fwd_id, payload)


def _decode_message(obj: list, limits: Limits) -> Message:
    if len(obj) != _MESSAGE_LEN:
        raise DecodeError("bad_shape", f"message has {len(obj)} fields, not {_MESSAGE_LEN}")
    (_, _, t, term, src, dst, index, log_term, flat, commit, reject, reject_hint, context) = obj

    msg_type = _MSG_TYPES.get(t) if type(t) is int else None
    if msg_type is None:
        raise DecodeError("bad_type", f"unknown message type {t!r}")
    # One combined test on the hot path; the slow path names the culprit.
    if not (
        type(term) is int is type(index) is type(log_term) is type(commit) is type(reject_hint)
        and 0 <= term < _U63
        and 0 <= index < _U63
        and 0 <= log_term < _U63
        and 0 <= commit < _U63
        and 0 <= reject_hint < _U63
    ):
        _raise_bad_int(
            term=term, index=index, log_term=log_term, commit=commit, reject_hint=reject_hint
        )
    if not (
        type(src) is str is type(dst)
        and src in _valid_ids
        and dst in _valid_ids
        and len(src) <= limits.max_id_len
        and len(dst) <= limits.max_id_len
    ):
        _check_id("src", src, limits)
        _check_id("dst", dst, limits)
    if type(reject) is not bool:
        raise DecodeError("bad_field", f"reject {reject!r} is not a bool")
    if type(context) is not bytes:
        raise DecodeError("bad_field", f"context is {type(context).__name__}, not bytes")
    if len(context) > limits.max_context_bytes:
        raise DecodeError(
            "bad_field", f"context of {len(context)} bytes > {limits.max_context_bytes}"
        )
    if type(flat) is not list:
        raise DecodeError("bad_entries", f"entries is {type(flat).__name__}, not an array")
    entries = _decode_entries(flat, msg_type, term, index, limits) if flat else ()
    return _build_message(
        msg_type, term, src, dst, index, log_term, entries, commit, reject, reject_hint, context
    )


def _raise_bad_int(**fields: Any) -> None:
    for name, value in fields.items():
        if type(value) is not int or not 0 <= value < _U63:
            raise DecodeError("bad_field", f"{name} {value!r} is not an int in [0, 2**63)")


def _check_id(name: str, value: Any, limits: Limits) -> None:
    if type(value) is not str:
        raise DecodeError("bad_id", f"{name} is {type(value).__name__}, not a string")
    if not 0 < len(value) <= limits.max_id_len or _ID.fullmatch(value) is None:
        raise DecodeError("bad_id", f"{name} {value[:80]!r} is not a node id")
    # A cluster has a handful of ids; remembering them skips the regex on
    # every later message. Bounded so that a peer cycling ids cannot grow it.
    if len(_valid_ids) < _MAX_CACHED_IDS:
        _valid_ids.add(value)


def _decode_entries(
    flat: list, msg_type: MsgType, term: int, index: int, limits: Limits
) -> tuple[Entry, ...]:
    if msg_type is not MsgType.APPEND:
        raise DecodeError("bad_entries", f"{msg_type.name} carries entries")
    count, rest = divmod(len(flat), 4)
    if rest:
        raise DecodeError("bad_entries", f"entries array of {len(flat)} values, not 4 per entry")
    if count > limits.max_entries:
        raise DecodeError("bad_entries", f"{count} entries > {limits.max_entries}")
    # Column slices let C loops (set, map, ==, sorted) do the per-entry work.
    terms, indexes, kinds, datas = flat[0::4], flat[1::4], flat[2::4], flat[3::4]
    # Exact types (a bool is not a term): counting in a list of types is
    # cheaper than building sets. With every data slot bytes, 3 * count ints
    # means every other slot is an int.
    types = list(map(type, flat))
    if types[3::4].count(bytes) != count:
        raise DecodeError("bad_entries", "an entry's data is not bytes")
    if types.count(int) != 3 * count:
        raise DecodeError("bad_entries", "an entry's term, index or kind is not an int")
    kind_set = set(kinds)
    if not kind_set <= _ENTRY_KIND_VALUES:
        raise DecodeError("bad_entries", f"unknown entry kind in {sorted(kind_set)[:8]}")
    biggest = max(map(len, datas))
    if biggest > limits.max_entry_bytes:
        raise DecodeError(
            "bad_entries", f"entry data of {biggest} bytes > {limits.max_entry_bytes}"
        )
    # Raft §5.3: the entries follow the prev entry at `index`, one per index.
    first = index + 1
    if first + count > _U63:
        raise DecodeError("bad_entries", "entry index reaches 2**63")
    if indexes != list(range(first, first + count)):
        raise DecodeError("bad_entries", f"entry indexes not contiguous from {first}")
    # Raft §5.3/§5.4: terms along a log never decrease, and a leader only
    # sends entries from terms up to its own.
    if terms[0] < 0 or terms[-1] > term or terms != sorted(terms):
        raise DecodeError(
            "bad_entries", f"entry terms not non-decreasing within [0, {term}]: {terms[:8]}"
        )
    return _build_entries(terms, indexes, kinds, kind_set, datas)
