"""Every zraft hook, with its contract. Plugins implement these with ``@hookimpl``.

Three families (README "Writing a payload plugin", "Writing a state machine"):

* **state machine**: commands, apply, tick, next_deadline, query, and one
  snapshot pair: snapshot + restore (the whole state as one bytes value) or
  snapshot_stream + restore_stream (a large state, in chunks). Driver
  thread, deterministic, in log order.
* **payloads**: became_leader, became_follower, became_candidate, node_start,
  node_stop. Never on the driver thread (``zraft.payload.runner``); each
  plugin has its own threads, and a hook that hangs or raises is logged and
  counted without delaying Raft.
* **observation**: committed, applied. Also off the driver thread, in order,
  through a bounded queue.

Plus ``zraft_configure``, called once at start-up with the plugin's settings.

Rules for all hooks:

* Names start with ``zraft_``; a test fails if one here lacks a docstring.
* ``zraft_apply`` and ``zraft_query`` are called only on the plugin that
  declared the command in ``zraft_commands``, so ``None`` is a valid result.
* State-machine hooks (apply, tick, query, the snapshot pairs, next_deadline)
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

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from zraft.payload.context import PayloadContext
    from zraft.statemachine import AppliedEntry

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


@hookspec
def zraft_snapshot() -> bytes:
    """Return this plugin's whole replicated state as bytes (no pickle: it is read from disk).

    zraft calls each plugin's implementation on its own and keeps the result
    under the plugin's name, so every state machine is snapshotted and
    compared (``zraft status --hash``). Equal states must give equal bytes:
    sort what has no order of its own.
    """


@hookspec
def zraft_restore(data: bytes) -> None:
    """Replace this plugin's whole state with ``data`` from its own ``zraft_snapshot``.

    zraft calls each plugin's implementation with the bytes that plugin's
    ``zraft_snapshot`` produced. Raise ``ValueError`` on data it cannot read.
    """


@hookspec
def zraft_snapshot_stream() -> Iterator[bytes]:
    """Return an iterator of chunks holding this plugin's state *as of this call*.

    The alternative to ``zraft_snapshot`` for a state too large to copy at
    once; a plugin implements one pair or the other (a half pair, or both, is
    a start-up error). zraft pulls the iterator a few chunks per loop round
    and keeps applying entries in between, so the plugin must keep the state
    of the call for the iterator (copy-on-write: save a value before changing
    it while a stream is open) and must never change a value in place.
    Several streams may be open at once. zraft pulls the first chunk at once,
    so a generator function may fix its view before its first ``yield``.
    zraft may ``close()`` the iterator early (an aborted snapshot): release
    the copy-on-write bookkeeping in a ``finally``. Equal states must give
    equal bytes; chunk boundaries carry no meaning (a chunk may reach
    ``zraft_restore_stream`` split or joined).
    """


@hookspec
def zraft_restore_stream(chunks: Iterator[bytes]) -> None:
    """Replace this plugin's whole state with the chunks of one ``zraft_snapshot_stream``.

    All or nothing: read every chunk, and raise ``ValueError`` with the state
    unchanged on data it cannot read. zraft may split or join the chunks the
    stream produced: parse the concatenation, not each chunk.
    """


# ---------------------------------------------------------------------------
# start-up


@hookspec
def zraft_configure(settings: dict[str, Any], node_id: str) -> None:
    """Receive this plugin's ``[plugins.settings.<name>]`` table, once, before anything else.

    Called on the main thread while the node starts. Raise ``ValueError``
    with a clear message on a bad setting: start-up stops with that message
    and the plugin's name (exit code 78, so systemd does not restart-loop).
    Every node gets the same table; a state machine must not let anything
    node-specific change how it applies entries.
    """


# ---------------------------------------------------------------------------
# payloads: never on the driver thread


@hookspec
def zraft_became_leader(ctx: PayloadContext) -> None:
    """Run the leader payload: code that must run on exactly one node at a time.

    Called on the plugin's own thread once this node is leader *and* has
    committed an entry of its term *and* holds a lease from a quorum, after
    ``payload.hysteresis_ms`` of that. ``ctx`` is a
    ``zraft.payload.PayloadContext``; ``ctx.term`` is the fencing token.

    May run for the whole leadership: loop on ``ctx.wait(seconds)``, which
    returns True once leadership or the lease is lost, and check
    ``ctx.valid()`` before each side effect. Must return within
    ``payload.timeout_ms`` of that signal. ``ctx.run(argv)`` runs a command
    that a separate keeper process kills when the lease runs out, even if
    this node is frozen or killed. May also return at once (a one-shot
    action); it is not called again until leadership is lost and regained.
    """


@hookspec
def zraft_became_follower(ctx: PayloadContext) -> None:
    """Run the follower payload, on every node that follows a leader.

    Same contract as ``zraft_became_leader`` without the fence: starts after
    ``payload.hysteresis_ms`` of following, keeps running across elections
    shorter than that, and is stopped when this node becomes leader or
    stops. ``ctx.leader_id`` is the leader when it started.
    """


@hookspec
def zraft_became_candidate(ctx: PayloadContext) -> None:
    """Notify that this node started an election (``ctx.term`` is the candidate's term).

    A notification on the plugin's event thread; must return within
    ``payload.timeout_ms``.
    """


@hookspec
def zraft_node_start(ctx: PayloadContext) -> None:
    """Notify that the node started: the plugin's first event; its role payloads wait
    for it to return (up to ``payload.timeout_ms``)."""


@hookspec
def zraft_node_stop(ctx: PayloadContext) -> None:
    """Notify that the node is stopping, after every role payload was stopped (last event)."""


# ---------------------------------------------------------------------------
# observation: off the driver thread, in order


@hookspec
def zraft_committed(index: int, term: int) -> None:
    """Observe the commit index advance to ``index`` (entry of ``term``).

    Coalesced: a slow plugin sees only the newest commit index, never a
    backlog. Must return within ``payload.timeout_ms``.
    """


@hookspec
def zraft_applied(entries: list[AppliedEntry]) -> None:
    """Observe client commands applied on this node, oldest first.

    ``entries`` is a list of ``zraft.statemachine.AppliedEntry`` (index,
    term, leader timestamp, the command, whether it succeeded, its result).
    Called on every node for every applied command. Read-only: changing
    state here would diverge the nodes. The queue is bounded: a plugin that
    falls thousands of batches behind loses batches, counted in
    ``zraft_payload_events_dropped_total``.
    """
