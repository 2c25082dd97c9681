"""The values on the peer wire besides Raft messages, and the limits ``decode`` enforces.

``codec`` turns these (and ``zraft.core.messages.Message``) into frames and
back, and re-exports them; import them from either. Pure.

``SnapChunk``/``SnapAck`` carry a snapshot file from a leader to a follower
(InstallSnapshot, Raft §7); ``zraft.snapshot.transfer`` drives them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import IntEnum

__all__ = [
    "DEFAULT_LIMITS",
    "REASONS",
    "SNAP_CHUNK_OVERHEAD",
    "DecodeError",
    "Forward",
    "ForwardReply",
    "Limits",
    "SnapAck",
    "SnapChunk",
    "SnapStatus",
]

_MIB = 1 << 20

SNAP_CHUNK_OVERHEAD = 1024
"""Bytes of a SNAP_CHUNK frame reserved for its other fields: a chunk's data may
be at most ``Limits.max_frame_bytes - SNAP_CHUNK_OVERHEAD`` bytes."""

REASONS = frozenset(
    {
        "too_large",  # frame over max_frame_bytes, or a msgpack length over its limit
        "not_msgpack",  # not well-formed msgpack (truncated, trailing bytes, bad UTF-8)
        "bad_shape",  # not an array, or the wrong number of fields for its kind
        "bad_version",  # first field is not WIRE_VERSION
        "bad_kind",  # second field is not a known frame kind
        "bad_type",  # MsgType is not a known value
        "bad_field",  # an int/bool/bytes field has the wrong type, range or size
        "bad_entries",  # entries malformed, too many, too big, or not a valid log suffix
        "bad_id",  # src/dst is not a valid node id
        "internal",  # a validator bug: should never happen (the fuzz test checks)
    }
)
"""Every value ``DecodeError.reason`` can take; use them to pre-declare metric labels."""


@dataclass(frozen=True, slots=True)
class Forward:
    """A client request a follower forwards to the leader.

    ``fwd_id`` is chosen by the forwarding follower to match the reply;
    ``request`` is the client's request frame, opaque to the transport.
    """

    fwd_id: int
    request: bytes


@dataclass(frozen=True, slots=True)
class ForwardReply:
    """The leader's answer to a ``Forward``: ``reply`` goes back to the client as is."""

    fwd_id: int
    reply: bytes


class SnapStatus(IntEnum):
    """What a ``SnapAck`` reports."""

    OK = 0  # ``offset`` is the next byte the receiver expects
    ABORT = 1  # the receiver gave up on this transfer (disk full, bad file, stale...)


@dataclass(frozen=True, slots=True)
class SnapChunk:
    """One piece of a snapshot file, leader to follower.

    The transfer is named by (``term``, ``index``, ``snap_term``, ``total``)
    and the authenticated peer: ``term`` is the leader's current term,
    ``index``/``snap_term`` the last entry the snapshot covers, ``total`` the
    file's size. ``data`` holds the bytes at ``offset``; ``last`` is true
    exactly when ``offset + len(data) == total``. The data carries no checksum
    of its own: the file's records and its END sha256 are checked once whole.
    """

    term: int
    index: int
    snap_term: int
    offset: int
    total: int
    data: bytes = field(repr=False)
    last: bool


@dataclass(frozen=True, slots=True)
class SnapAck:
    """A follower's answer to a ``SnapChunk``, naming the same transfer.

    With ``SnapStatus.OK``, ``offset`` is the next byte expected (every byte
    before it is on the follower's disk); ``offset == total`` means the file
    arrived and was verified. With ``SnapStatus.ABORT`` the transfer is over.
    """

    term: int
    index: int
    snap_term: int
    offset: int
    status: SnapStatus = SnapStatus.OK


@dataclass(frozen=True, slots=True)
class Limits:
    """Upper bounds ``decode`` enforces on a frame from a peer.

    ``max_frame_bytes`` should equal the ROUTER's ZMQ_MAXMSGSIZE so that
    libzmq drops oversized frames before Python sees them.
    """

    max_frame_bytes: int = 16 * _MIB
    max_entries: int = 4096  # entries in one APPEND
    max_entry_bytes: int = 4 * _MIB  # data of one entry
    max_context_bytes: int = 1024  # ReadIndex / heartbeat context
    max_id_len: int = 64  # characters in a node id

    @property
    def max_snap_chunk_bytes(self) -> int:
        """The most data one SNAP_CHUNK may carry (0 for a frame limit under 1 KiB)."""
        return max(0, self.max_frame_bytes - SNAP_CHUNK_OVERHEAD)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if type(value) is not int or value < 1:
                raise ValueError(f"Limits.{f.name} must be a positive int, got {value!r}")


DEFAULT_LIMITS = Limits()


class DecodeError(ValueError):
    """A frame from a peer failed validation and must be dropped.

    ``reason`` is a short stable label from ``REASONS`` (fit for a Prometheus
    label value); ``str(error)`` is a human message naming the field.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
