"""The replicated state: what every node rebuilds, identically, by applying the log.

``Replica`` owns the state-machine plugins' dispatch, the client session
table (exactly-once writes, thesis §6.3), the leader time carried in the
entries (ARCHITECTURE.md: time-based state changes by the log, never by the
applying node's clock) and the encoding of entry data. It does no I/O and
never calls the core: the shell hands it committed entries in log order and
asks it for entry data to propose. It is the home of snapshot capture and
restore (``start_capture``/``restore_sections``, built in ``capture``) and
of the state hash that ``zraft status --hash`` compares across nodes.

Single-threaded: the node's driver thread (or the simulation) is the only caller.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import pluggy

from zraft.api import codes
from zraft.core import Entry, EntryKind
from zraft.plugins import CommandTable
from zraft.replica import capture, entries
from zraft.replica.capture import Capture
from zraft.replica.sessions import Duplicate, Expired, SessionTable
from zraft.statemachine import (
    AppliedEntry,
    ApplyContext,
    CommandError,
    Outcome,
    QueryContext,
)

log = logging.getLogger("zraft.replica")


class Replica:
    """The state machines, the session table and the leader time of one node.

    ``applied_index`` is what the state machines hold: it runs ahead of the
    core's applied index while a Ready is handled (the core learns of applied
    entries only at ``advance``). ``time_ms`` is the leader time of the last
    applied entry: reads and TTLs see it, never this host's clock.
    """

    def __init__(
        self,
        pm: pluggy.PluginManager,
        commands: CommandTable,
        *,
        applied_index: int = 0,
        observe_applied: bool = False,
    ) -> None:
        self.pm = pm
        self.commands = commands
        self.sessions = SessionTable()
        self.applied_index = applied_index
        self.time_ms = 0
        self.errors = 0  # plugin failures and unreadable entries (the shell counts them)
        self._last_stamp_ms = 0  # leader: the last timestamp it stamped, kept monotonic
        # What zraft_applied observers get, collected per batch (None: nobody listens).
        self._applied: list[AppliedEntry] | None = [] if observe_applied else None

    # -- the leader's side: entry data -------------------------------------

    def stamp(self, wall_ms: int) -> int:
        """Return the leader time to stamp into a new entry: never behind an earlier stamp."""
        self._last_stamp_ms = max(self._last_stamp_ms, self.time_ms, wall_ms)
        return self._last_stamp_ms

    def command_data(self, wall_ms: int, client: str, seq: int, command: dict[str, Any]) -> bytes:
        """Return the entry data for a validated client command, stamped with leader time."""
        return entries.encode_command(self.stamp(wall_ms), client, seq, command)

    def clock_data(self, wall_ms: int) -> bytes | None:
        """Return a clock entry's data when a state machine's deadline has passed, else None."""
        deadlines = [d for d in self.pm.hook.zraft_next_deadline() if d is not None]
        if not deadlines or min(deadlines) > wall_ms:
            return None
        return entries.encode_clock(self.stamp(wall_ms))

    # -- applying -----------------------------------------------------------

    def apply(self, e: Entry) -> Outcome | None:
        """Apply one committed entry; return the client's outcome (None: no client waits).

        Never raises for a bad entry or a failing plugin: the outcome says so,
        and ``errors`` counts it (a plugin bug must not kill the node).
        """
        self.applied_index = e.index
        if e.kind is not EntryKind.NORMAL:
            return None  # a leader's no-op (or, later, a membership change)
        try:
            p = entries.decode(e.data)
        except ValueError as exc:
            log.error("entry %d (term %d) has data zraft cannot read: %s", e.index, e.term, exc)
            self.errors += 1
            return Outcome.error(codes.INTERNAL, f"unreadable entry: {exc}")
        self.time_ms = max(self.time_ms, p.timestamp_ms)
        ctx = ApplyContext(e.index, e.term, self.time_ms)
        if p.command is None:
            self.pm.hook.zraft_tick(ctx=ctx)
            return None
        if p.client:
            try:
                self.sessions.check(p.client, p.seq, ctx.timestamp_ms)
            except Duplicate as dup:
                return Outcome.from_wire(dup.reply)
            except Expired as exp:
                return Outcome.error(codes.SESSION_EXPIRED, str(exp))
        outcome = self._call("zraft_apply", p.command, ctx)
        if p.client:
            self.sessions.record(p.client, p.seq, outcome.to_wire(), ctx.timestamp_ms)
        if self._applied is not None:
            result = (
                outcome.result if outcome.ok else {"code": outcome.code, "message": outcome.message}
            )
            self._applied.append(
                AppliedEntry(e.index, e.term, ctx.timestamp_ms, p.command, outcome.ok, result)
            )
        return outcome

    def take_applied(self) -> list[AppliedEntry]:
        """Return (and forget) the commands applied since the last call, for observers."""
        if not self._applied:
            return []
        out, self._applied = self._applied, []
        return out

    def query(self, command: dict[str, Any]) -> Outcome:
        """Serve a validated read command from the applied state."""
        return self._call("zraft_query", command, QueryContext(self.applied_index, self.time_ms))

    def _call(self, hook: str, command: dict[str, Any], ctx: Any) -> Outcome:
        owner = self.commands.owner(command["cmd"])
        plugin = self.pm.get_plugin(owner) if owner else None
        if plugin is None:
            return Outcome.error(codes.BAD_REQUEST, f"no plugin serves {command['cmd']!r}")
        try:
            return Outcome.success(getattr(plugin, hook)(command=command, ctx=ctx))
        except CommandError as exc:
            return Outcome.error(exc.code, exc.message)
        except Exception as exc:  # a plugin bug must not kill the node
            log.exception("plugin %s failed in %s(%s)", owner, hook, command.get("cmd"))
            self.errors += 1
            return Outcome.error(codes.INTERNAL, f"{type(exc).__name__}: {exc}")

    # -- snapshots ----------------------------------------------------------

    def section_names(self) -> list[str]:
        """Return the sections a capture holds: ``SESSIONS``, then stateful plugins by name."""
        return capture.section_names(self.pm)

    def start_capture(self) -> Capture:
        """Start a capture of the state at ``applied_index`` (leader time ``time_ms``).

        Cheap: the session table is dumped (it is bounded), simple-pair
        plugins are copied, and stream-pair plugins (the KV store) only begin
        their copy-on-write, so entries may be applied while the capture is
        read. Read it (``Capture.sections``) or close it: an open capture
        costs memory for every value changed since it started.
        """
        return capture.open_capture(self.pm, self.sessions.dump(), self.applied_index, self.time_ms)

    def check_sections(self, names: Iterable[str]) -> None:
        """Raise ValueError unless ``names`` are exactly this replica's sections (any order)."""
        capture.check_sections(self.pm, names)

    def restore_sections(
        self, sections: Iterable[tuple[str, Iterator[bytes]]], index: int, time_ms: int
    ) -> None:
        """Replace the state with the sections of a capture taken at ``index``.

        ``sections`` yields ``(name, chunks)`` as ``Capture.sections`` does (or
        as the snapshot file reader does); each section's chunks are consumed
        before the next is asked for. The names are checked first when
        ``sections`` is a list or tuple, else as they come; a missing or
        unknown section (a plugin not loaded here) is a ValueError naming it.
        The state is unchanged when the session table (first in a capture)
        or the first plugin's section is bad, but a ValueError from a later
        plugin's restore leaves the plugins before it restored: the caller
        must then restore another snapshot or stop, never serve this state.
        On success ``applied_index`` and ``time_ms`` are the capture's.
        """
        if isinstance(sections, list | tuple):
            self.check_sections(name for name, _ in sections)
        sessions = SessionTable()
        capture.restore_plugins(self.pm, sections, sessions)
        self.sessions = sessions
        self.applied_index = index
        self.time_ms = time_ms

    def capture(self) -> dict[str, bytes]:
        """Return the whole state as ``{section name: bytes}`` (tests and tools: not streamed).

        The session table is under ``SESSIONS``. Deterministic: nodes at the
        same applied index return equal captures.
        """
        with self.start_capture() as c:
            return {name: b"".join(chunks) for name, chunks in c.sections()}

    def restore(self, captured: dict[str, bytes], index: int, time_ms: int) -> None:
        """Replace the state with ``captured`` (from ``capture``), taken at ``index``.

        Raises ValueError naming the part that is malformed, missing or unknown.
        """
        self.restore_sections([(n, iter((b,))) for n, b in captured.items()], index, time_ms)

    def state_hash(self) -> str:
        """Return a SHA-256 of the replicated state, to compare nodes at the same index.

        Computed over a full capture: equal states (same history) give equal hashes.
        """
        with self.start_capture() as c:
            return capture.digest(c)
