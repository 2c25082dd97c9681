"""Replicated client sessions: a retried write applies exactly once (thesis §6.3).

The session table is part of the replicated state: every node updates it
while applying the log, using only the leader timestamps in the entries,
so every node decides the same way whether an entry is a duplicate.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import msgpack

RESPONSES_PER_CLIENT = 1024  # replies kept per client: the pipelining window a client may use
SESSION_IDLE_MS = 3_600_000  # a session unused for an hour (leader time) is forgotten
MAX_SESSIONS = 100_000


@dataclass(slots=True)
class Session:
    """What one client's writes returned, for answering retries."""

    floor: int = 0  # every seq <= floor has been forgotten
    last_used_ms: int = 0
    replies: dict[int, Any] = field(default_factory=dict)  # seq -> (ok, result | (code, msg))


class Duplicate(Exception):
    """The (client, seq) was applied before; ``reply`` is what it returned."""

    def __init__(self, reply: Any) -> None:
        super().__init__("duplicate")
        self.reply = reply


class Expired(Exception):
    """The (client, seq) is older than what the session still remembers."""


class SessionTable:
    """Client sessions, oldest-used first so expiry is cheap and deterministic."""

    def __init__(self) -> None:
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def check(self, client: str, seq: int, now_ms: int) -> None:
        """Raise Duplicate or Expired if (client, seq) must not be applied again."""
        self.expire(now_ms)
        s = self._sessions.get(client)
        if s is None:
            return
        if seq in s.replies:
            raise Duplicate(s.replies[seq])
        if seq <= s.floor:
            raise Expired(f"session {client!r} no longer remembers seq {seq} (floor {s.floor})")

    def record(self, client: str, seq: int, reply: Any, now_ms: int) -> None:
        """Remember the reply to (client, seq) after applying it."""
        s = self._sessions.get(client)
        if s is None:
            s = self._sessions[client] = Session()
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(client)
        s.last_used_ms = now_ms
        s.replies[seq] = reply
        while len(s.replies) > RESPONSES_PER_CLIENT:
            # Evict in log order (O(1)): a client's seqs reach the log nearly in
            # order, so the first recorded is the oldest. The floor makes any
            # retry older than what is remembered fail loudly, never re-apply.
            oldest = next(iter(s.replies))
            del s.replies[oldest]
            s.floor = max(s.floor, oldest)

    def expire(self, now_ms: int) -> None:
        """Forget sessions idle for longer than SESSION_IDLE_MS of leader time."""
        while self._sessions:
            client, s = next(iter(self._sessions.items()))
            if now_ms - s.last_used_ms <= SESSION_IDLE_MS:
                return
            del self._sessions[client]

    def dump(self) -> bytes:
        """Serialize the table (for snapshots), deterministically.

        Replies keep the order they were recorded in (log order), not seq
        order: eviction follows it, so a table restored from a snapshot must
        evict exactly as the one that was captured.
        """
        rows = [
            [c, s.floor, s.last_used_ms, [[k, v] for k, v in s.replies.items()]]
            for c, s in self._sessions.items()
        ]
        return msgpack.packb([1, rows], use_bin_type=True)

    def load(self, data: bytes) -> None:
        """Replace the table with one from ``dump``; raise ValueError when malformed."""
        try:
            version, rows = msgpack.unpackb(data, raw=False, strict_map_key=True)
            if version != 1:
                raise ValueError(f"unknown session table version {version}")
            table: OrderedDict[str, Session] = OrderedDict()
            for client, floor, used, replies in rows:
                table[str(client)] = Session(int(floor), int(used), {int(k): v for k, v in replies})
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise ValueError(f"malformed session table: {exc}") from None
        self._sessions = table
