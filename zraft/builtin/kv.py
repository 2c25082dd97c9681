"""The built-in replicated key-value state machine (plugin ``kv``).

Keys are non-empty strings of at most 1024 characters; values are any JSON
value. A key may carry a deadline in leader time (ms since the epoch): from the
moment the logical time reaches it, the key is absent for every command, and the
next ``zraft_tick`` at or after it removes the key from the state. The logical
time is always ``ctx.timestamp_ms`` (stamped into the entry by the leader, or
the last applied entry's stamp for reads), never this node's clock: every
replica must expire the same keys at the same log index.

Snapshots stream (``zraft_snapshot_stream``): a capture lists the keys when
it starts and then reads the live dicts, and every change to a key while a
capture is open first saves the key's old value and deadline for it
(copy-on-write), so the node keeps applying writes while the snapshot is
written and memory grows only by the values changed meanwhile. Values are
never changed in place: every write stores a new object.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Callable, Iterator
from typing import Any

import msgpack

from zraft.api import codes
from zraft.builtin import kv_snapshot
from zraft.hookspecs import hookimpl
from zraft.statemachine import ApplyContext, Arg, CommandError, CommandSpec, QueryContext

MAX_KEY_CHARS = 1024
MAX_KEYS_LIMIT = 100_000
MAX_MGET_KEYS = 100_000
# A TTL must keep the deadline a 64-bit integer (msgpack, other languages'
# clients); a century is more than any lease or cache entry needs.
MAX_TTL_MS = 100 * 365 * 24 * 3600 * 1000
MAX_DEPTH = 64
INT_MIN, INT_MAX = -(2**63), 2**63 - 1

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        "set",
        "write",
        (Arg("key"), Arg("value", "any"), Arg("ttl_ms", "int", False)),
        "Set key to value, expiring after ttl_ms if given (else no expiry); return true.",
    ),
    CommandSpec("del", "write", (Arg("key"),), "Delete key; return whether it existed."),
    CommandSpec(
        "expire",
        "write",
        (Arg("key"), Arg("ttl_ms", "int")),
        "Make an existing key expire after ttl_ms; return whether it existed.",
    ),
    CommandSpec(
        "incr",
        "write",
        (Arg("key"), Arg("by", "int", False)),
        "Add by (default 1) to the integer at key (missing = 0); return the new value.",
    ),
    CommandSpec(
        "cas",
        "write",
        (Arg("key"), Arg("expected", "any"), Arg("value", "any"), Arg("ttl_ms", "int", False)),
        "Set key to value if it holds expected (null: if absent); return {ok, value}.",
    ),
    CommandSpec("get", "read", (Arg("key"),), "Return the value at key, or null."),
    CommandSpec("exists", "read", (Arg("key"),), "Return whether key exists."),
    CommandSpec(
        "ttl",
        "read",
        (Arg("key"),),
        "Return the ms left before key expires; -1 without expiry, -2 if missing.",
    ),
    CommandSpec("mget", "read", (Arg("keys", "list[str]"),), "Return the values at keys."),
    CommandSpec(
        "keys",
        "read",
        (Arg("prefix", "str", False), Arg("limit", "int", False)),
        "Return up to limit (default 1000) sorted keys starting with prefix.",
    ),
)


def _bad(message: str) -> CommandError:
    return CommandError(codes.BAD_ARG, message)


def _key(value: Any, name: str = "key") -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_KEY_CHARS:
        raise _bad(f"{name!r} must be a non-empty string of at most {MAX_KEY_CHARS} characters")
    return value


def _int(command: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    """Return the integer argument ``name`` (``default`` when absent or null), in [lo, hi]."""
    value = command.get(name)
    if value is None:
        return default
    return _check_int(name, value, lo, hi)


def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if type(value) is not int:
        raise _bad(f"{name!r} must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise _bad(f"{name!r} must be between {lo} and {hi}, got {value}")
    return value


def _ttl(command: dict[str, Any]) -> int | None:
    value = command.get("ttl_ms")
    return None if value is None else _check_int("ttl_ms", value, 1, MAX_TTL_MS)


def _required(command: dict[str, Any], name: str) -> Any:
    if name not in command:
        raise _bad(f"{name!r} is required")
    return _normalize(command[name], name)


def _normalize(value: Any, name: str = "value", depth: int = 0) -> Any:
    """Return a canonical copy of a JSON value (object keys sorted) or raise BAD_ARG.

    Canonical copies make snapshots byte-identical on every replica and keep the
    stored value independent of the caller's objects.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise _bad(f"{name!r} holds an integer outside the signed 64-bit range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _bad(f"{name!r} holds a non-finite number")
        return value
    if depth >= MAX_DEPTH:
        raise _bad(f"{name!r} is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, list | tuple):
        return [_normalize(item, name, depth + 1) for item in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise _bad(f"{name!r} holds an object with a non-string key")
        return {k: _normalize(value[k], name, depth + 1) for k in sorted(value)}
    raise _bad(f"{name!r} holds a {type(value).__name__}, which is not a JSON value")


def _json_equal(a: Any, b: Any) -> bool:
    """Compare two canonical JSON values; unlike ``==``, ``true`` never equals ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _restored_entry(key: Any, value: Any) -> tuple[str, Any]:
    """Check a key and value read from a snapshot; ValueError when a write would refuse them."""
    try:
        key = _key(key)
        return key, _normalize(value, key)
    except CommandError as exc:
        raise ValueError(exc.message) from exc


class KVStore:
    """The key-value state machine: one instance per node, all state on the instance.

    Every hook follows ``zraft.hookspecs``: writes and ticks run on the driver
    thread in log order, validate every argument before changing anything
    (raising ``CommandError`` with the state untouched), and read time only
    from their context.
    """

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}
        self._deadlines: dict[str, int] = {}
        # (deadline, key) pairs; an entry is stale unless _deadlines[key] still
        # equals its deadline. Stale entries are dropped when they reach the top.
        self._heap: list[tuple[int, str]] = []
        self._captures: list[kv_snapshot.Cow] = []  # open snapshot streams (copy-on-write)
        self._writes: dict[str, Callable[[dict[str, Any], int], Any]] = {
            "set": self._set,
            "del": self._del,
            "expire": self._expire,
            "incr": self._incr,
            "cas": self._cas,
        }
        self._reads: dict[str, Callable[[dict[str, Any], int], Any]] = {
            "get": self._get,
            "exists": self._exists,
            "ttl": self._ttl_left,
            "mget": self._mget,
            "keys": self._keys,
        }

    # -- hooks -------------------------------------------------------------

    @hookimpl
    def zraft_commands(self) -> list[CommandSpec]:
        """Return the kv commands: set, del, expire, incr, cas, get, exists, ttl, mget, keys."""
        return list(COMMANDS)

    @hookimpl
    def zraft_apply(self, command: dict[str, Any], ctx: ApplyContext) -> Any:
        """Apply a kv write at leader time ``ctx.timestamp_ms``; return None for other commands."""
        name = command.get("cmd")
        handler = self._writes.get(name) if isinstance(name, str) else None
        return None if handler is None else handler(command, ctx.timestamp_ms)

    @hookimpl
    def zraft_query(self, command: dict[str, Any], ctx: QueryContext) -> Any:
        """Answer a kv read at leader time ``ctx.timestamp_ms`` without changing the state.

        A null answer (``get`` of a missing key) is indistinguishable from "not
        my command" under ``firstresult``; both reach the client as null.
        """
        name = command.get("cmd")
        handler = self._reads.get(name) if isinstance(name, str) else None
        return None if handler is None else handler(command, ctx.timestamp_ms)

    @hookimpl
    def zraft_tick(self, ctx: ApplyContext) -> None:
        """Delete every key whose deadline is at or before ``ctx.timestamp_ms``."""
        now = ctx.timestamp_ms
        while self._heap and self._heap[0][0] <= now:
            deadline, key = heapq.heappop(self._heap)
            if self._deadlines.get(key) == deadline:
                self._drop(key)

    @hookimpl
    def zraft_next_deadline(self) -> int | None:
        """Return the earliest deadline of any stored key, or None; amortized O(log n)."""
        heap = self._heap
        while heap and self._deadlines.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    @hookimpl
    def zraft_snapshot_stream(self) -> Iterator[bytes]:
        """Return the state as of this call, in chunks, while later writes go on.

        Chunk 0 is msgpack ``{"format", "version", "keys": n}``; then come the
        ``n`` rows ``[key, value, deadline or nil]`` in dict order (the same
        history gives the same order; ``zraft_restore_stream`` keeps it), each
        one msgpack array, up to ROWS_PER_CHUNK rows or CHUNK_BYTES a chunk.
        Costs a list of the keys up front; closing the iterator early ends the
        copy-on-write bookkeeping.
        """
        stream = self._stream()
        next(stream)  # run to the first yield: the view is fixed and registered now
        return stream

    def _stream(self) -> Iterator[bytes]:
        cow = kv_snapshot.Cow(self._data, self._deadlines)
        self._captures.append(cow)
        try:
            yield b""  # taken by zraft_snapshot_stream, so that `finally` always runs
            yield from kv_snapshot.chunks(cow)
        finally:
            if cow in self._captures:  # a restore detaches the open captures
                self._captures.remove(cow)

    @hookimpl
    def zraft_restore_stream(self, chunks: Iterator[bytes]) -> None:
        """Replace the whole state with a ``zraft_snapshot_stream``'s chunks, in their order.

        Reads every chunk. Raises ValueError, leaving the state unchanged, if
        they are not exactly one well-formed kv snapshot of a supported
        version. Open captures keep reading the state they started from.
        """
        data, deadlines = kv_snapshot.read(chunks, _restored_entry)
        self._captures = []  # they hold the old dicts, which no write touches again
        self._data, self._deadlines = data, deadlines
        self._heap = sorted((d, k) for k, d in deadlines.items())  # sorted is a heap

    def digest(self) -> str:
        """Return a sha256 hex digest of the contents, keys sorted (tests, tools).

        Equal on stores with equal keys, values and deadlines, whatever the
        order the keys were written in (unlike the snapshot, which keeps it).
        """
        blob = msgpack.packb(
            [[k, self._data[k], self._deadlines.get(k)] for k in sorted(self._data)]
        )
        return hashlib.sha256(blob).hexdigest()

    # -- state helpers -------------------------------------------------------

    def _live(self, key: str, now: int) -> bool:
        if key not in self._data:
            return False
        deadline = self._deadlines.get(key)
        return deadline is None or deadline > now

    def _save(self, key: str) -> None:
        """Before ``key`` changes: give each open capture its old value, once.

        Only a key present now can be one a capture lists and has not saved:
        removing a key saves it first. A key added after a capture started may
        be saved too; the capture never reads it.
        """
        if key not in self._data:
            return
        old = (self._data[key], self._deadlines.get(key))
        for cow in self._captures:
            if key not in cow.saved:
                cow.saved[key] = old

    def _drop(self, key: str) -> None:
        if self._captures:
            self._save(key)
        self._data.pop(key, None)
        self._deadlines.pop(key, None)  # its heap entries turn stale

    def _store(self, key: str, value: Any, deadline: int | None) -> None:
        if self._captures:
            self._save(key)
        self._data[key] = value
        if deadline is None:
            self._deadlines.pop(key, None)
        else:
            self._set_deadline(key, deadline)

    def _set_deadline(self, key: str, deadline: int) -> None:
        if self._captures:
            self._save(key)
        self._deadlines[key] = deadline
        heapq.heappush(self._heap, (deadline, key))
        # Rewriting TTLs leaves stale entries behind; rebuild before they dominate.
        if len(self._heap) > 64 and len(self._heap) > 2 * len(self._deadlines):
            self._heap = sorted((d, k) for k, d in self._deadlines.items())

    # -- writes: validate everything, then mutate ----------------------------

    def _set(self, command: dict[str, Any], now: int) -> bool:
        key = _key(command.get("key"))
        value = _required(command, "value")
        ttl = _ttl(command)
        self._store(key, value, None if ttl is None else now + ttl)
        return True

    def _del(self, command: dict[str, Any], now: int) -> bool:
        key = _key(command.get("key"))
        existed = self._live(key, now)
        self._drop(key)
        return existed

    def _expire(self, command: dict[str, Any], now: int) -> bool:
        key = _key(command.get("key"))
        ttl = command.get("ttl_ms")
        if ttl is None:
            raise _bad("'ttl_ms' is required")
        ttl = _check_int("ttl_ms", ttl, 1, MAX_TTL_MS)
        if not self._live(key, now):
            self._drop(key)  # purge an expired, not yet ticked key
            return False
        self._set_deadline(key, now + ttl)
        return True

    def _incr(self, command: dict[str, Any], now: int) -> int:
        key = _key(command.get("key"))
        by = _int(command, "by", 1, INT_MIN, INT_MAX)
        live = self._live(key, now)
        current = self._data[key] if live else 0
        if type(current) is not int:
            raise CommandError(codes.WRONG_TYPE, f"value at {key!r} is not an integer")
        new = current + by
        if not INT_MIN <= new <= INT_MAX:
            raise CommandError(codes.OVERFLOW, f"incr of {key!r} leaves the signed 64-bit range")
        if not live:
            self._drop(key)  # an expired key comes back without its old deadline
        elif self._captures:
            self._save(key)
        self._data[key] = new  # a live key keeps its deadline, as in Redis
        return new

    def _cas(self, command: dict[str, Any], now: int) -> dict[str, Any]:
        key = _key(command.get("key"))
        expected = _required(command, "expected")
        value = _required(command, "value")
        ttl = _ttl(command)
        live = self._live(key, now)
        if expected is None:
            ok = not live
        else:
            ok = live and _json_equal(self._data[key], expected)
        if ok:
            self._store(key, value, None if ttl is None else now + ttl)
            return {"ok": True, "value": value}
        return {"ok": False, "value": self._data[key] if live else None}

    # -- reads: never mutate -------------------------------------------------

    def _get(self, command: dict[str, Any], now: int) -> Any:
        key = _key(command.get("key"))
        return self._data[key] if self._live(key, now) else None

    def _exists(self, command: dict[str, Any], now: int) -> bool:
        return self._live(_key(command.get("key")), now)

    def _ttl_left(self, command: dict[str, Any], now: int) -> int:
        key = _key(command.get("key"))
        if not self._live(key, now):
            return -2
        deadline = self._deadlines.get(key)
        return -1 if deadline is None else deadline - now

    def _mget(self, command: dict[str, Any], now: int) -> list[Any]:
        keys = command.get("keys")
        if not isinstance(keys, list) or len(keys) > MAX_MGET_KEYS:
            raise _bad(f"'keys' must be a list of at most {MAX_MGET_KEYS} keys")
        keys = [_key(k, "keys") for k in keys]
        return [self._data[k] if self._live(k, now) else None for k in keys]

    def _keys(self, command: dict[str, Any], now: int) -> list[str]:
        prefix = command.get("prefix")
        prefix = "" if prefix is None else prefix
        if not isinstance(prefix, str) or len(prefix) > MAX_KEY_CHARS:
            raise _bad(f"'prefix' must be a string of at most {MAX_KEY_CHARS} characters")
        limit = _int(command, "limit", 1000, 1, MAX_KEYS_LIMIT)
        # O(n log limit): a scan is fine at the sizes zraft targets; a sorted
        # index would make prefix scans O(log n + limit).
        matches = (k for k in self._data if k.startswith(prefix) and self._live(k, now))
        return heapq.nsmallest(limit, matches)
