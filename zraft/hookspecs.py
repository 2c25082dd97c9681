"""Every zraft hook, with its contract. Plugins implement these with ``@hookimpl``.

Rules for all hooks:

* Names start with ``zraft_``; a test fails if one here lacks a docstring.
* ``zraft_apply`` and ``zraft_query`` are called only on the plugin that
  declared the command in ``zraft_commands``, so ``None`` is a valid result.
* State-machine hooks (apply, tick, query, snapshot, restore, next_deadline)
  run on the driver thread, in log order, and must be deterministic: every
  node applies the same entries and must reach the same state. They must not
  read the local clock, randomness or anything outside the entry; time comes
  from ``ctx.timestamp_ms``, which the leader stamped into the entry.
* A state-machine hook reports a bad command by raising
  ``zraft.statemachine.CommandError``; the client gets that error as its reply
  and the state must be unchanged. Any other exception is a bug: it is logged
  and counted, and the client gets an ``INTERNAL`` error.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "zraft"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def zraft_commands() -> list[Any]:
    """Declare the client commands this plugin serves.

    Return a list of ``zraft.statemachine.CommandSpec``. Each names a command,
    says whether it is a ``read`` (served by ``zraft_query``) or a ``write``
    (replicated, then served by ``zraft_apply``), and lists its arguments so
    that the client endpoint can reject a malformed request before it reaches
    the log. Called once at start; two plugins declaring one name is a start-up
    error.
    """


@hookspec(firstresult=True)
def zraft_apply(command: dict[str, Any], ctx: Any) -> Any:
    """Apply one committed write ``command`` to the state machine; return its result.

    ``command`` is the validated request (``{"cmd": name, ...args}``) of a
    ``write`` command; ``ctx`` is a ``zraft.statemachine.ApplyContext`` with
    the entry's index, term and leader timestamp. Called exactly once per
    committed entry per node, in log order (retried client writes are
    deduplicated by zraft's sessions before this hook). The return value must
    be JSON-serializable; it is the client's reply.
    """


@hookspec
def zraft_tick(ctx: Any) -> None:
    """Let leader time pass: called for each committed clock entry, in log order.

    The leader appends a clock entry when the time from ``zraft_next_deadline``
    has come, so that time-based state (TTLs, leases) changes by the log and
    never by a node's own clock. ``ctx`` is an ``ApplyContext``.
    """


@hookspec
def zraft_next_deadline() -> int | None:
    """Return the earliest leader time (ms since the epoch) at which this state
    machine needs a ``zraft_tick``, or None when it needs none. zraft takes the
    earliest answer across plugins."""


@hookspec(firstresult=True)
def zraft_query(command: dict[str, Any], ctx: Any) -> Any:
    """Answer one ``read`` command from the applied state; return its result.

    ``ctx`` is a ``zraft.statemachine.QueryContext``: ``timestamp_ms`` is the
    leader time of the last applied entry (use it, not the local clock, for
    TTLs). zraft calls this only once the read is linearizable (ReadIndex)
    unless the client asked for a stale read. Must not change the state.
    """


@hookspec(firstresult=True)
def zraft_snapshot() -> bytes:
    """Return the whole state machine as bytes (no pickle: it is read back from disk)."""


@hookspec(firstresult=True)
def zraft_restore(data: bytes) -> bool:
    """Replace the whole state machine with ``data`` from ``zraft_snapshot``; return True."""
