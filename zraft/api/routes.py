"""Requests a node holds and the replies it owes, as plain values (no I/O).

A request reaches a node from one of its front ends (the native JSON endpoint
today, RESP later) or, forwarded by a follower, from a peer; either way the
answer goes back through its ``Route``. Replies are values (``Reply``): the
front end that owns the route encodes them, and only it knows the wire form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zraft.statemachine import Outcome


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed client request: the command plus its envelope fields."""

    command: dict[str, Any]  # {"cmd": name, **args}; validated by the request book
    id: Any = None  # echoed back untouched (str or int)
    client: str = ""  # session id for exactly-once writes ("" = no session)
    seq: int = 0  # session sequence number, > 0 when client is set
    stale: bool = False  # serve a read from local state without ReadIndex
    forward: bool = True  # a follower forwards writes to the leader (else NOT_LEADER)
    # A write is proposed only by the leader of this term, else FENCED (0: no fence).
    # Ignored on reads. A leader payload's ctx.client() sets it to its term.
    fence: int = 0


@dataclass(slots=True)
class Route:
    """How to answer one request: a front end's handle, or the forwarding peer's id."""

    address: Any = None  # the front end's handle for a local client (a ROUTER envelope)
    peer: str = ""  # the follower that forwarded the request ("" for a local client)
    fwd_id: int = 0
    started: float = 0.0  # when the request arrived (the shell's clock)
    command: str = "?"  # a declared command name, for metrics; "?" otherwise
    rid: Any = None  # the client's request id, echoed in replies


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer, ready for the front end that owns ``route`` to encode.

    ``extra`` adds fields such as ``leader_client``. ``served_by`` names the
    leader that served a forwarded request. ``index``/``term`` give a write's
    place in the log (0 for anything else); the simulation checks them, the
    wire does not carry them.
    """

    route: Route
    outcome: Outcome
    extra: dict[str, Any] = field(default_factory=dict)
    served_by: str | None = None
    index: int = 0
    term: int = 0
    relayed: bool = False  # the leader answered it for us (a forwarded write)


@dataclass(slots=True)
class Pending:
    """A request the node is holding: waiting for a leader, a commit, a read index or a forward."""

    route: Route
    request: Request
    deadline: float
    read: bool  # the command's kind is "read"
    index: int = 0  # a proposed write's log index, or a read's read index
    term: int = 0  # a proposed write's term
