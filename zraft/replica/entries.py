"""What the driver puts in an entry's opaque ``data``: pure encode/decode.

Every NORMAL entry carries the leader's timestamp, so that time-based state
changes by the log and never by the applying node's clock:

* a command:  msgpack ``[1, ts_ms, client, seq, command]``
* a clock tick: msgpack ``[2, ts_ms]`` (lets TTLs expire; see ``zraft_tick``)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

COMMAND = 1
CLOCK = 2


@dataclass(frozen=True, slots=True)
class EntryPayload:
    """A decoded entry payload. ``command`` is None for a clock tick."""

    kind: int
    timestamp_ms: int
    client: str = ""
    seq: int = 0
    command: dict[str, Any] | None = None


def encode_command(ts_ms: int, client: str, seq: int, command: dict[str, Any]) -> bytes:
    """Encode a client command stamped with the leader's time."""
    return msgpack.packb([COMMAND, ts_ms, client, seq, command], use_bin_type=True)


def encode_clock(ts_ms: int) -> bytes:
    """Encode a clock tick stamped with the leader's time."""
    return msgpack.packb([CLOCK, ts_ms], use_bin_type=True)


def decode(data: bytes) -> EntryPayload:
    """Decode an entry payload; raise ValueError when it is not one we wrote."""
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ValueError(f"entry payload is not msgpack: {exc}") from None
    if not isinstance(obj, list) or not obj:
        raise ValueError("entry payload is not a list")
    if obj[0] == COMMAND and len(obj) == 5 and isinstance(obj[4], dict):
        return EntryPayload(COMMAND, int(obj[1]), str(obj[2]), int(obj[3]), obj[4])
    if obj[0] == CLOCK and len(obj) == 2:
        return EntryPayload(CLOCK, int(obj[1]))
    raise ValueError(f"unknown entry payload kind {obj[0]!r}")
