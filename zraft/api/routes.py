"""Where a reply goes, and the requests a node is waiting on (pure bookkeeping).

A request reaches a node from a client socket or, forwarded by a follower,
from a peer; either way the driver answers through a ``Route``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Route:
    """How to answer one request: a client's ROUTER envelope, or a peer's forward id."""

    frames: list[bytes] | None = None  # identity (+ delimiter) frames of a local client
    peer: str = ""  # the follower that forwarded the request
    fwd_id: int = 0
    started: float = 0.0  # monotonic time the request arrived
    command: str = "?"  # for metrics
    rid: Any = None  # the client's request id, echoed in replies


@dataclass(slots=True)
class PendingWrite:
    """A proposal waiting for its entry to be applied (matched by index and term)."""

    term: int
    route: Route
    deadline: float


@dataclass(slots=True)
class PendingRequest:
    """A request parked until something happens (a leader, a read index, a forward reply)."""

    route: Route
    payload: bytes
    deadline: float
    command: dict[str, Any] = field(default_factory=dict)
    stale: bool = False
