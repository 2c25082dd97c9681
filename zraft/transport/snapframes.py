"""Validation of the snapshot transfer frames, split out of ``codec`` (which calls it).

Pure. The layouts (after ``[WIRE_VERSION, kind]``)::

    SNAP_CHUNK  [1, 3, term, index, snap_term, offset, total, data, last]
    SNAP_ACK    [1, 4, term, index, snap_term, offset, status]

Integers are unsigned and below 2**63, ``data`` is msgpack bin of at most
``Limits.max_snap_chunk_bytes``, ``last`` a msgpack bool and ``status`` a
``SnapStatus`` value. A snapshot's term never exceeds the term it is sent
in (a leader only holds entries of terms up to its own, Raft §5.4), and a
chunk lies inside the file: ``offset + len(data) <= total``, with ``last``
true exactly at the end.
"""

from __future__ import annotations

from typing import Any

from zraft.transport.wire import DecodeError, Limits, SnapAck, SnapChunk, SnapStatus

KIND_SNAP_CHUNK = 3
KIND_SNAP_ACK = 4
SNAP_CHUNK_LEN = 9  # version, kind and the 7 SnapChunk fields
SNAP_ACK_LEN = 7  # version, kind and the 5 SnapAck fields

_U63 = 1 << 63
_STATUSES: dict[int, SnapStatus] = {s.value: s for s in SnapStatus}


def decode_snap(obj: list, kind: int, limits: Limits) -> SnapChunk | SnapAck:
    """Return the ``SnapChunk``/``SnapAck`` that the unpacked frame ``obj`` holds.

    ``obj`` is a list whose version was checked and whose kind is ``kind``
    (``KIND_SNAP_CHUNK`` or ``KIND_SNAP_ACK``). Raises DecodeError naming the
    first bad field.
    """
    if kind == KIND_SNAP_CHUNK:
        return _decode_chunk(obj, limits)
    return _decode_ack(obj)


def _decode_chunk(obj: list, limits: Limits) -> SnapChunk:
    if len(obj) != SNAP_CHUNK_LEN:
        raise DecodeError("bad_shape", f"snap chunk has {len(obj)} fields, not {SNAP_CHUNK_LEN}")
    _, _, term, index, snap_term, offset, total, data, last = obj
    _check_ints(term=term, index=index, snap_term=snap_term, offset=offset, total=total)
    _check_snap_term(snap_term, term)
    if type(data) is not bytes:
        raise DecodeError("bad_field", f"snap chunk data is {type(data).__name__}, not bytes")
    if len(data) > limits.max_snap_chunk_bytes:
        raise DecodeError(
            "bad_field", f"snap chunk of {len(data)} bytes > {limits.max_snap_chunk_bytes}"
        )
    if type(last) is not bool:
        raise DecodeError("bad_field", f"last {last!r} is not a bool")
    end = offset + len(data)
    if end > total:
        raise DecodeError("bad_field", f"snap chunk ends at {end}, past the total {total}")
    if last != (end == total):
        raise DecodeError("bad_field", f"last is {last} for a chunk ending at {end} of {total}")
    return SnapChunk(term, index, snap_term, offset, total, data, last)


def _decode_ack(obj: list) -> SnapAck:
    if len(obj) != SNAP_ACK_LEN:
        raise DecodeError("bad_shape", f"snap ack has {len(obj)} fields, not {SNAP_ACK_LEN}")
    _, _, term, index, snap_term, offset, status = obj
    _check_ints(term=term, index=index, snap_term=snap_term, offset=offset)
    _check_snap_term(snap_term, term)
    value = _STATUSES.get(status) if type(status) is int else None
    if value is None:
        raise DecodeError("bad_field", f"snap ack status {status!r} is not a SnapStatus")
    return SnapAck(term, index, snap_term, offset, value)


def _check_ints(**fields: Any) -> None:
    for name, value in fields.items():
        if type(value) is not int or not 0 <= value < _U63:
            raise DecodeError("bad_field", f"{name} {value!r} is not an int in [0, 2**63)")


def _check_snap_term(snap_term: int, term: int) -> None:
    if snap_term > term:
        raise DecodeError("bad_field", f"snap_term {snap_term} > term {term}")
