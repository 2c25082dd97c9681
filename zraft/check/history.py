"""Operation histories: events, their pairing into operations, and two file formats.

A history is a sequence of *events*, each one step of one client process: it
*invokes* an operation, then the operation completes with ``ok`` (it took
effect, with this result), ``fail`` (it definitely did not take effect; for a
``cas``: the compare was evaluated and did not match) or ``info`` (the outcome
is unknown: it may have taken effect at any moment after its invocation, or
never). An invocation with no completion at all is unknown too. A process has
at most one operation in flight; after an ``info`` it may invoke again.

``pair_events`` turns events into ``Operation`` records: an invocation time, a
completion time (``math.inf`` when the outcome is unknown), the input and the
output. Time is the event's position in the history unless every event carries
a ``time``; one operation precedes another in real time only if it completed
strictly before the other was invoked.

Values are compared as JSON: they are frozen into canonical JSON text (object
keys sorted, ``1.0`` written as ``1``), so ``true`` never equals ``1``. JSON
``null`` is the absent value: a read of a missing key returns null, and writing
null is the same as deleting.

Format ``zraft``: JSON Lines, one event per line (blank lines are skipped)::

    {"process": 3, "type": "invoke", "f": "write", "key": "k1", "value": 5, "time": 12.5}
    {"process": 3, "type": "ok",     "f": "write", "key": "k1", "value": 5, "time": 12.7}

- ``process`` (int or string, required): the client; one operation at a time.
- ``type`` (required): ``invoke``, ``ok``, ``fail`` or ``info``.
- ``f`` (required): ``read`` (alias ``get``), ``write`` (alias ``set``),
  ``cas`` or ``del``; a completion must repeat its invocation's ``f``.
- ``key`` (string, optional): the key; events without one share a single
  register. A completion may omit it; if present it must match the invocation.
- ``value``: on ``invoke``: the value to write for ``write``; ``[expected,
  new]`` for ``cas`` (``expected`` null: the key must be absent); ignored for
  ``read`` and ``del``. On ``ok``: the value read for ``read`` (null: absent);
  for ``del`` optionally a boolean, whether the key existed (checked when
  given); ignored otherwise.
- ``time`` (finite number of seconds, optional): on every event or on none.
- Any other field is ignored (a natural place for ``node`` or ``error``).

``fail`` means the operation did not take effect: for ``read``, ``write`` and
``del`` it constrains nothing; for ``cas`` it asserts that the key did not hold
``expected`` when the compare ran. A ``cas`` rejected before its compare ran
(e.g. by a node that is not the leader) should be recorded as ``info`` (always
safe) or left out of the history.

Format ``jepsen``: Jepsen's log of a single-register test, one event per line,
fields separated by tabs or spaces::

    INFO  jepsen.util - 3	:invoke	:read	nil
    INFO  jepsen.util - 1	:fail	:cas	[3 0]
    INFO  jepsen.util - 0	:fail	:read	:timed-out

``:read``/``:write``/``:cas`` with ``[expected new]``; ``:fail :cas`` is a
completed cas whose compare did not match; ``:info`` and ``:fail :read
:timed-out`` are unknown outcomes; ``:nemesis`` lines are skipped.

Malformed input raises ``HistoryError`` naming the source, the line and the
problem.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INVOKE, OK, FAIL, INFO = "invoke", "ok", "fail", "info"
EVENT_TYPES = (INVOKE, OK, FAIL, INFO)
# Status of a paired operation: OK and FAIL completed, UNKNOWN did not (or may have).
UNKNOWN = "unknown"
READ, WRITE, CAS, DEL = "read", "write", "cas", "del"
ALIASES = {"read": READ, "get": READ, "write": WRITE, "set": WRITE, "cas": CAS, "del": DEL}
FORMATS = ("jepsen", "zraft")


class HistoryError(ValueError):
    """Malformed history: ``str(exc)`` is ``SOURCE:LINE: reason`` (or ``SOURCE: reason``)."""

    def __init__(self, source: str, line: int | None, reason: str) -> None:
        self.source, self.line, self.reason = source, line, reason
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, slots=True)
class Event:
    """One step of one process: ``type`` is invoke/ok/fail/info; ``f`` names the operation.

    ``value`` is a plain JSON value (see the module docstring for its meaning
    per ``f`` and ``type``); ``time`` is optional seconds; ``line`` is where the
    event came from, for error messages (0: not from a file).
    """

    process: Hashable
    type: str
    f: str
    key: str | None = None
    value: Any = None
    time: float | None = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class Operation:
    """An invocation paired with its completion.

    ``input``/``output`` hold frozen values (canonical JSON text, None for
    null): ``write`` input = the value; ``cas`` input = (expected, new) and
    output True (matched) / False (did not match) / None (unknown); ``read``
    output = the value read; ``del`` output = whether the key existed, or None
    if not recorded. ``ret`` is ``math.inf`` when ``status`` is ``UNKNOWN``.
    ``index`` is the operation's position among all operations, in invocation
    order; ``line`` is its invocation's line (0 when not from a file).
    """

    index: int
    process: Hashable
    f: str
    key: str | None
    input: Any
    output: Any
    status: str
    call: float
    ret: float
    line: int = 0

    def describe(self) -> str:
        """Return a short human form, e.g. ``process 2, line 45: read -> 3``."""
        if self.f == READ:
            what = "read" if self.status == UNKNOWN else f"read -> {show(self.output)}"
        elif self.f == WRITE:
            what = f"write {show(self.input)}"
        elif self.f == CAS:
            what = f"cas {show(self.input[0])} -> {show(self.input[1])}"
            if self.output is not None:
                what += " (matched)" if self.output else " (did not match)"
        else:
            what = (
                "del" if self.output is None else f"del -> {'existed' if self.output else 'absent'}"
            )
        if self.status == UNKNOWN:
            what += " (outcome unknown)"
        elif self.status == FAIL and self.f != CAS:
            what += " (failed)"
        where = f"line {self.line}" if self.line else f"op {self.index}"
        return f"process {self.process}, {where}: {what}"


def show(frozen: Any) -> str:
    """Render a frozen value for humans: its JSON text, ``null`` for absent."""
    return "null" if frozen is None else str(frozen)


def freeze(value: Any) -> str | None:
    """Return ``value`` as canonical JSON text (None for null): hashable, compares as JSON.

    Raises ValueError for a value that is not JSON (NaN, infinity, non-string keys).
    """
    if value is None:
        return None
    return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _canonical(value: Any) -> Any:
    # The kv store compares numbers by value (1 == 1.0) but never bools with numbers;
    # json.dumps already keeps true and 1 apart, so only integral floats need folding.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError("an object with a non-string key is not JSON")
        return {k: _canonical(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ValueError(f"a {type(value).__name__} is not a JSON value")


# -- pairing ------------------------------------------------------------------


def pair_events(events: Iterable[Event], source: str = "<events>") -> list[Operation]:
    """Pair invocations with completions; return operations in invocation order.

    Times are event positions unless every event has a ``time``. Raises
    ``HistoryError`` (naming ``source`` and the event's line, or its 1-based
    position when it has no line) for an unknown type or ``f``, a completion
    with no invocation in flight or of another ``f``/key, a second invocation
    while one is in flight, a value that is not JSON or not of the right shape,
    a completion timed before its invocation, or ``time`` on some events only.
    """
    events = list(events)

    def where(pos: int) -> int:
        # Events built in Python have no line; their position is the next best pointer.
        return events[pos].line or pos + 1

    timed = [e.time is not None for e in events]
    if any(timed) and not all(timed):
        raise HistoryError(
            source, where(timed.index(not timed[0])), "'time' must be on every event or on none"
        )
    pending: dict[Hashable, int] = {}  # process -> index of its invocation in `calls`
    calls: list[tuple[int, float]] = []  # (event position, time)
    returns: dict[int, tuple[int, float]] = {}  # invocation index -> (event position, time)
    for pos, ev in enumerate(events):
        t = float(pos) if ev.time is None else ev.time
        if not math.isfinite(t):
            raise HistoryError(source, where(pos), f"'time' must be finite, got {t!r}")
        if ev.type not in EVENT_TYPES:
            raise HistoryError(source, where(pos), f"unknown event type {ev.type!r}")
        if ev.f not in ALIASES:
            raise HistoryError(source, where(pos), f"unknown operation {ev.f!r}")
        if ev.type == INVOKE:
            if ev.process in pending:
                first = where(calls[pending[ev.process]][0])
                raise HistoryError(
                    source,
                    where(pos),
                    f"process {ev.process} invokes again while its operation from line {first} "
                    "is in flight",
                )
            pending[ev.process] = len(calls)
            calls.append((pos, t))
            continue
        if ev.process not in pending:
            raise HistoryError(
                source,
                where(pos),
                f"{ev.type} for process {ev.process}, which has nothing in flight",
            )
        index = pending.pop(ev.process)
        inv = events[calls[index][0]]
        if ALIASES[ev.f] != ALIASES[inv.f]:
            raise HistoryError(
                source, where(pos), f"{ev.type} {ev.f!r} completes an invoked {inv.f!r}"
            )
        if ev.key is not None and ev.key != inv.key:
            raise HistoryError(
                source, where(pos), f"key {ev.key!r} completes an operation on key {inv.key!r}"
            )
        if t < calls[index][1]:
            raise HistoryError(source, where(pos), "completion is timed before its invocation")
        returns[index] = (pos, t)
    ops = []
    for index, (pos, call) in enumerate(calls):
        done_pos, ret = returns.get(index, (None, math.inf))
        done = None if done_pos is None else events[done_pos]
        try:
            ops.append(_operation(index, events[pos], call, done, ret))
        except _BadValue as exc:
            bad = pos if exc.in_invocation or done_pos is None else done_pos
            raise HistoryError(source, where(bad), str(exc)) from None
    return ops


class _BadValue(ValueError):
    def __init__(self, message: str, in_invocation: bool) -> None:
        super().__init__(message)
        self.in_invocation = in_invocation


def _operation(index: int, inv: Event, call: float, done: Event | None, ret: float) -> Operation:
    f = ALIASES[inv.f]
    kind = UNKNOWN if done is None or done.type == INFO else done.type
    if kind == UNKNOWN:
        ret = math.inf
    inp: Any = None
    out: Any = None
    if f == WRITE:
        inp = _freeze(inv.value, "the written value", True)
    elif f == CAS:
        v = inv.value
        if not isinstance(v, list | tuple) or len(v) != 2:
            raise _BadValue(f"a cas value must be [expected, new], got {v!r}", True)
        inp = (_freeze(v[0], "cas expected", True), _freeze(v[1], "cas new", True))
        out = {OK: True, FAIL: False}.get(kind)
    elif f == READ and kind == OK:
        out = _freeze(done.value if done else None, "the value read", False)
    elif f == DEL and kind == OK and done is not None and done.value is not None:
        if not isinstance(done.value, bool):
            raise _BadValue(
                f"a del's result must be true/false (existed), got {done.value!r}", False
            )
        out = done.value
    return Operation(index, inv.process, f, inv.key, inp, out, kind, call, ret, inv.line)


def _freeze(value: Any, what: str, in_invocation: bool) -> str | None:
    try:
        return freeze(value)
    except ValueError as exc:
        raise _BadValue(f"{what} is not a JSON value: {exc}", in_invocation) from None


# -- zraft JSON Lines ---------------------------------------------------------


def parse_zraft(lines: Iterable[str], source: str = "<zraft>") -> list[Operation]:
    """Parse a zraft JSON Lines history (see the module docstring); raise ``HistoryError``."""
    events = []
    for n, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text, parse_constant=_reject_constant)
        except ValueError as exc:
            raise HistoryError(source, n, f"not valid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise HistoryError(source, n, "an event must be a JSON object")
        events.append(_zraft_event(obj, source, n))
    return pair_events(events, source)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _zraft_event(obj: dict[str, Any], source: str, n: int) -> Event:
    for field in ("process", "type", "f"):
        if field not in obj:
            raise HistoryError(source, n, f"missing field {field!r}")
    process = obj["process"]
    if isinstance(process, bool) or not isinstance(process, int | str):
        raise HistoryError(source, n, f"'process' must be an integer or a string, got {process!r}")
    typ, f, key, t = obj["type"], obj["f"], obj.get("key"), obj.get("time")
    if typ not in EVENT_TYPES:
        raise HistoryError(
            source, n, f"'type' must be one of {', '.join(EVENT_TYPES)}, got {typ!r}"
        )
    if f not in ALIASES:
        raise HistoryError(source, n, f"'f' must be one of {', '.join(ALIASES)}, got {f!r}")
    if key is not None and not isinstance(key, str):
        raise HistoryError(source, n, f"'key' must be a string, got {key!r}")
    if t is not None and (
        isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t)
    ):
        raise HistoryError(source, n, f"'time' must be a finite number of seconds, got {t!r}")
    if typ == INVOKE and ALIASES[f] in (WRITE, CAS) and "value" not in obj:
        raise HistoryError(source, n, f"an invoked {f} needs a 'value'")
    return Event(process, typ, f, key, obj.get("value"), None if t is None else float(t), n)


# -- Jepsen logs --------------------------------------------------------------

_JEPSEN_LINE = re.compile(r"INFO\s+jepsen\.util\s+-\s+(\S+)\s+:(\S+)\s+:(\S+)(?:\s+(.*?))?\s*")
_JEPSEN_F = {"read": READ, "write": WRITE, "cas": CAS}
_INT = re.compile(r"-?\d+")


def parse_jepsen(lines: Iterable[str], source: str = "<jepsen>") -> list[Operation]:
    """Parse a Jepsen single-register log (see the module docstring); raise ``HistoryError``."""
    events = []
    # Jepsen echoes a write's or cas's value on completion; a different one means
    # lines were garbled or interleaved, and the history cannot be trusted.
    invoked: dict[int, Any] = {}
    for n, text in enumerate(lines, 1):
        if not text.strip():
            continue
        m = _JEPSEN_LINE.fullmatch(text.rstrip("\r\n"))
        if m is None:
            raise HistoryError(
                source,
                n,
                "not a Jepsen history line ('INFO  jepsen.util - PROCESS :TYPE :F VALUE')",
            )
        proc, typ, f, raw = m.groups()
        if proc == ":nemesis":
            continue
        if not _INT.fullmatch(proc):
            raise HistoryError(source, n, f"process must be an integer, got {proc!r}")
        if typ not in EVENT_TYPES:
            raise HistoryError(source, n, f"unknown event type :{typ}")
        if f not in _JEPSEN_F:
            raise HistoryError(source, n, f"unknown operation :{f} (expected :read, :write, :cas)")
        value = _jepsen_value(raw or "nil", source, n)
        if typ == INVOKE:
            invoked[int(proc)] = value
        elif typ in (OK, FAIL) and f != "read" and invoked.get(int(proc), value) != value:
            raise HistoryError(source, n, f"completion value {raw} differs from the invoked one")
        if typ == FAIL and f == "read" and value == ":timed-out":
            typ = INFO  # a timed-out read may have been served: unknown, not failed
        events.append(Event(int(proc), typ, f, None, value, None, n))
    return pair_events(events, source)


def _jepsen_value(raw: str, source: str, n: int) -> Any:
    if raw == "nil":
        return None
    if _INT.fullmatch(raw):
        return int(raw)
    if raw.startswith(":"):
        return raw  # a keyword such as :timed-out; meaningful only on fail/info
    if raw.startswith("[") and raw.endswith("]"):
        parts = raw[1:-1].split()
        if len(parts) == 2:
            return [_jepsen_value(p, source, n) for p in parts]
    raise HistoryError(
        source, n, f"cannot read the value {raw!r} (expected nil, an integer, [a b])"
    )


# -- files --------------------------------------------------------------------


def guess_format(path: str | Path) -> str:
    """Return ``jepsen`` for ``*.log``, ``zraft`` for ``*.jsonl``; else sniff the first line.

    A first non-blank line starting with ``{`` means ``zraft``, anything else
    ``jepsen``. Raises OSError when the file cannot be read.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".log":
        return "jepsen"
    if suffix == ".jsonl":
        return "zraft"
    with open(path, encoding="utf-8", errors="replace") as fh:
        for text in fh:
            if text.strip():
                return "zraft" if text.lstrip().startswith("{") else "jepsen"
    return "zraft"


def load_history(path: str | Path, fmt: str | None = None) -> list[Operation]:
    """Read the history in ``path`` (format guessed when ``fmt`` is None); return its operations.

    Raises ``HistoryError`` for malformed content (including bytes that are not
    UTF-8) and OSError when the file cannot be read.
    """
    fmt = fmt or guess_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown history format {fmt!r} (expected one of {', '.join(FORMATS)})")
    source = str(path)
    try:
        with open(path, encoding="utf-8") as fh:
            # Iterating splits on newlines only (str.splitlines would also split on
            # U+2028 inside a JSON string and shift every later line number).
            lines = list(fh)
    except UnicodeDecodeError as exc:
        raise HistoryError(source, None, f"not UTF-8 text: {exc}") from None
    return parse_jepsen(lines, source) if fmt == "jepsen" else parse_zraft(lines, source)
