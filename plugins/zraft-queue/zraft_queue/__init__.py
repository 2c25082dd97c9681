"""A replicated FIFO queue for zraft (a state-machine plugin).

Commands (``queue`` is a name, ``item`` any JSON value but null):

    qpush queue item   write  append item; return the new length (QUEUE_FULL at max_len)
    qpop queue         write  remove and return the oldest item, or null when empty
    qlen queue         read   return the length (0 for a queue never pushed to)
    qpeek queue        read   return the oldest item without removing it, or null

Every node applies the same writes in the same order, so every node holds the
same queues. That is the one rule of a state machine: ``zraft_apply`` depends
on nothing but the state and the command (no clock, no randomness, no I/O).
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from zraft.hookspecs import hookimpl
from zraft.statemachine import ApplyContext, Arg, CommandError, CommandSpec, QueryContext

SNAPSHOT_FORMAT = "zraft-queue/1"
MAX_NAME_CHARS = 256


def _canonical(item: Any) -> Any:
    """Return a copy of ``item`` with sorted object keys (so snapshots are byte-identical)."""
    try:
        return json.loads(json.dumps(item, sort_keys=True, allow_nan=False))
    except ValueError as exc:  # NaN or Infinity
        raise CommandError("BAD_ARG", f"item is not plain JSON: {exc}") from exc


class Queues:
    """The plugin: named FIFO queues, one instance per node (entry point ``queue``)."""

    def __init__(self) -> None:
        self.queues: dict[str, deque[Any]] = {}  # an empty queue is removed, never stored
        self.max_len = 10_000

    @hookimpl
    def zraft_configure(self, settings: dict[str, Any], node_id: str) -> None:
        """Read ``max_len`` (default 10000), the most items one queue may hold."""
        unknown = sorted(set(settings) - {"max_len"})
        if unknown:
            raise ValueError(f"unknown setting(s) {unknown}; known: ['max_len']")
        max_len = settings.get("max_len", self.max_len)
        if type(max_len) is not int or max_len < 1:
            raise ValueError(f"max_len must be a positive integer, got {max_len!r}")
        self.max_len = max_len

    @hookimpl
    def zraft_commands(self) -> list[CommandSpec]:
        """Declare the commands; zraft checks every request against these before the log."""
        queue = Arg("queue")  # type "str", required
        return [
            CommandSpec("qpush", "write", (queue, Arg("item", "any")), "Append item; return len."),
            CommandSpec("qpop", "write", (queue,), "Remove and return the oldest item, or null."),
            CommandSpec("qlen", "read", (queue,), "Return the number of items in queue."),
            CommandSpec("qpeek", "read", (queue,), "Return the oldest item, or null."),
        ]

    @hookimpl
    def zraft_apply(self, command: dict[str, Any], ctx: ApplyContext) -> Any:
        """Apply qpush or qpop. Check everything first: a CommandError must change nothing."""
        name = _name(command)
        items = self.queues.get(name, deque())
        if command["cmd"] == "qpush":
            item = command["item"]
            if item is None:
                raise CommandError("BAD_ARG", "item must not be null (qpop's null means empty)")
            if len(items) >= self.max_len:
                raise CommandError("QUEUE_FULL", f"queue {name!r} holds {self.max_len} items")
            items.append(_canonical(item))
            self.queues[name] = items
            return len(items)
        # qpop
        if not items:
            return None
        item = items.popleft()
        if not items:
            del self.queues[name]
        return item

    @hookimpl
    def zraft_query(self, command: dict[str, Any], ctx: QueryContext) -> Any:
        """Answer qlen or qpeek from the applied state, changing nothing."""
        items = self.queues.get(_name(command))
        if command["cmd"] == "qlen":
            return len(items) if items else 0
        return items[0] if items else None

    @hookimpl
    def zraft_snapshot(self) -> bytes:
        """Return every queue as JSON, keys sorted: equal states give equal bytes."""
        state = {"format": SNAPSHOT_FORMAT, "queues": {n: list(q) for n, q in self.queues.items()}}
        return json.dumps(state, sort_keys=True, separators=(",", ":")).encode()

    @hookimpl
    def zraft_restore(self, data: bytes) -> None:
        """Replace every queue with a snapshot's; on bad data raise ValueError, changing nothing."""
        try:
            state = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"queue snapshot is not JSON: {exc}") from exc
        if not isinstance(state, dict) or state.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"queue snapshot: format is not {SNAPSHOT_FORMAT!r}")
        queues = state.get("queues")
        if not isinstance(queues, dict):
            raise ValueError("queue snapshot: 'queues' must be an object")
        for name, items in queues.items():
            if not name or len(name) > MAX_NAME_CHARS:
                raise ValueError(f"queue snapshot: bad queue name {name!r}")
            if not isinstance(items, list) or not items or None in items:
                raise ValueError(f"queue snapshot: queue {name!r} must be a non-empty list")
        self.queues = {name: deque(items) for name, items in queues.items()}


def _name(command: dict[str, Any]) -> str:
    """Return the queue name; zraft already checked it is a string."""
    name = command["queue"]
    if not name or len(name) > MAX_NAME_CHARS:
        raise CommandError("BAD_ARG", f"queue must be 1 to {MAX_NAME_CHARS} characters")
    return name
