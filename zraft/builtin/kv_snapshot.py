"""The kv store's snapshot stream: its format, and the copy-on-write view it reads (pure).

A snapshot is a concatenation of msgpack objects, cut into chunks anywhere:
first ``{"format": "zraft.kv", "version": 2, "keys": n}``, then ``n`` rows
``[key, value, deadline or nil]`` in the store's dict order. ``chunks``
cuts after ROWS_PER_CHUNK rows or CHUNK_BYTES bytes; ``read`` does not care
where the cuts are (the snapshot file may split or join them).
``zraft.builtin.kv.KVStore`` registers a ``Cow`` per open capture and fills
its ``saved`` before changing a key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgpack

SNAPSHOT_FORMAT = "zraft.kv"
SNAPSHOT_VERSION = 2
ROWS_PER_CHUNK = 4096  # a chunk ends after this many rows...
CHUNK_BYTES = 1 << 20  # ...or once it holds this many bytes, whichever comes first
# msgpack's bound on the unread bytes (one chunk plus a row) and on any length
# while restoring: far above a row (a value fits a client request), and the
# file's checksums already vouch for the bytes.
MAX_RESTORE_BUFFER = 256 << 20
INT_MAX = 2**63 - 1

# Checks a key and value read from a snapshot: returns them canonical or raises ValueError.
Check = Callable[[Any, Any], tuple[str, Any]]


class _Corrupt(ValueError):
    """What ``read`` found wrong (other errors come from msgpack)."""


class Cow:
    """One open capture: the keys when it started, the dicts it reads, what changed since.

    ``saved`` maps a key changed since the start to its (value, deadline) at
    the start; a key absent from it is unchanged, so the live dicts answer.
    """

    __slots__ = ("keys", "data", "deadlines", "saved")

    def __init__(self, data: dict[str, Any], deadlines: dict[str, int]) -> None:
        self.keys = list(data)  # references only: C speed, 8 bytes a key
        self.data = data
        self.deadlines = deadlines
        self.saved: dict[str, tuple[Any, int | None]] = {}


def chunks(cow: Cow) -> Iterator[bytes]:
    """Yield the snapshot of ``cow``'s view: the header, then its rows, chunked."""
    yield msgpack.packb(
        {"format": SNAPSHOT_FORMAT, "version": SNAPSHOT_VERSION, "keys": len(cow.keys)}
    )
    packer = msgpack.Packer()
    data, deadlines, saved = cow.data, cow.deadlines, cow.saved
    parts: list[bytes] = []
    size = 0
    for key in cow.keys:
        old = saved.get(key)
        if old is None:
            row = packer.pack([key, data[key], deadlines.get(key)])
        else:
            row = packer.pack([key, old[0], old[1]])
        parts.append(row)
        size += len(row)
        if len(parts) >= ROWS_PER_CHUNK or size >= CHUNK_BYTES:
            yield b"".join(parts)
            parts, size = [], 0
    if parts:
        yield b"".join(parts)


def read(chunks: Iterable[bytes], check: Check) -> tuple[dict[str, Any], dict[str, int]]:
    """Parse a whole snapshot into (data, deadlines), keys in the snapshot's order.

    Raises ValueError naming the problem: not msgpack, wrong format or
    version, a bad row, a key twice, a truncated row, or a key count other
    than the header's.
    """
    data: dict[str, Any] = {}
    deadlines: dict[str, int] = {}
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=MAX_RESTORE_BUFFER)
    expected: int | None = None
    fed = 0
    try:
        for chunk in chunks:
            unpacker.feed(chunk)
            fed += len(chunk)
            for obj in unpacker:
                if expected is None:
                    expected = _restore_header(obj)
                else:
                    _restore_row(obj, data, deadlines, check)
                    if len(data) > expected:
                        raise _Corrupt(f"kv snapshot: more than the {expected} keys announced")
    except _Corrupt:
        raise
    except Exception as exc:  # msgpack's errors, a chunk that is not bytes
        raise ValueError(f"kv snapshot is not valid msgpack: {type(exc).__name__}: {exc}") from exc
    if expected is None:
        raise ValueError("kv snapshot: empty")
    if unpacker.tell() != fed:
        raise ValueError(f"kv snapshot: truncated ({fed - unpacker.tell()} bytes of a row)")
    if len(data) != expected:
        raise ValueError(f"kv snapshot: {len(data)} keys, {expected} announced")
    return data, deadlines


def _restore_header(obj: Any) -> int:
    """Check a snapshot's first object; return the number of keys it announces."""
    if not isinstance(obj, dict) or obj.get("format") != SNAPSHOT_FORMAT:
        raise _Corrupt("kv snapshot: missing or wrong 'format'")
    if obj.get("version") != SNAPSHOT_VERSION:
        raise _Corrupt(f"kv snapshot: unsupported version {obj.get('version')!r}")
    n = obj.get("keys")
    if type(n) is not int or n < 0:
        raise _Corrupt(f"kv snapshot: bad key count {n!r}")
    return n


def _restore_row(obj: Any, data: dict[str, Any], deadlines: dict[str, int], check: Check) -> None:
    """Check one ``[key, value, deadline or nil]`` row and add it to ``data``/``deadlines``."""
    if not isinstance(obj, list) or len(obj) != 3:
        raise _Corrupt(f"kv snapshot: a row is not [key, value, deadline]: {obj!r:.80}")
    try:
        key, value = check(obj[0], obj[1])
    except ValueError as exc:
        raise _Corrupt(f"kv snapshot: bad entry: {exc}") from exc
    deadline = obj[2]
    if key in data:
        raise _Corrupt(f"kv snapshot: key {key!r} appears twice")
    if deadline is not None:
        if type(deadline) is not int or not 0 <= deadline <= INT_MAX:
            raise _Corrupt(f"kv snapshot: bad deadline for key {key!r}")
        deadlines[key] = deadline
    data[key] = value
