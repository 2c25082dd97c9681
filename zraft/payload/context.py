"""What a payload hook receives: who it runs as, and how it learns to stop."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zraft.api.client import Client
from zraft.payload.fencing import Fence
from zraft.payload.process import run_fenced


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """Facts about the node a payload runs on, the same for all its hooks."""

    node_id: str
    ensemble: str
    client_endpoint: str  # this node's client socket, e.g. "tcp://127.0.0.1:7001"
    config_path: str
    stop_grace_s: float  # SIGTERM to SIGKILL for processes started by ``run``
    timeout_s: float = 5.0  # payload.timeout_ms: time to return once told to stop


class PayloadContext:
    """Passed to every payload hook: the role it runs for, and its stop signal.

    ``term`` is the fencing token of a leader payload: hand it to external
    systems so they can refuse a deposed leader's late writes. A leader
    payload may act only while ``valid()``; ``wait(t)`` sleeps up to ``t``
    seconds and returns True as soon as the payload must stop (leadership or
    lease lost, node stopping). Both look at the fence's deadline themselves,
    so a payload thread that wakes after the process was frozen sees that its
    lease ran out even before the driver runs again.

    Thread-safe; one context per hook call.
    """

    def __init__(
        self,
        node: NodeInfo,
        role: str,
        term: int = 0,
        leader_id: str = "",
        *,
        settings: Mapping[str, Any] | None = None,
        fence: Fence | None = None,
        log: logging.Logger | None = None,
        on_process_exit: Callable[[int], None] | None = None,
    ) -> None:
        self.node = node
        self.node_id = node.node_id
        self.role = role
        self.term = term
        self.leader_id = leader_id
        self.settings: Mapping[str, Any] = settings or {}
        self.log = log or logging.getLogger(f"zraft.payload.{role}")
        self._fence = fence
        self._stop = threading.Event()
        self._on_process_exit = on_process_exit

    # -- stop signal ------------------------------------------------------

    def stop(self) -> None:
        """Ask the payload to stop (called by zraft, from the driver thread)."""
        self._stop.set()

    def deadline(self) -> float:
        """Return the ``time.monotonic()`` at which the payload must stop (inf: none)."""
        if self._stop.is_set():
            return -math.inf
        if self._fence is None:
            return math.inf
        if not self._fence.valid(time.monotonic()):
            return -math.inf
        return self._fence.stop_at

    def fence_lapsed(self) -> None:
        """Record that the fence ran out (e.g. the keeper saw it first); it stays dead."""
        if self._fence is not None:
            self._fence.revoke()

    def valid(self) -> bool:
        """Tell whether the payload may still act now (check before each side effect)."""
        return time.monotonic() < self.deadline()

    @property
    def stopping(self) -> bool:
        """True once the payload must stop."""
        return not self.valid()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds (None: forever); True once the payload must stop."""
        end = math.inf if timeout is None else time.monotonic() + timeout
        while True:
            now = time.monotonic()
            deadline = self.deadline()
            if now >= deadline:
                return True
            if now >= end:
                return False
            # Wake at the fence's deadline even if nobody calls stop().
            left = min(end, deadline) - now
            if self._stop.wait(None if math.isinf(left) else left):
                return True

    # -- helpers ----------------------------------------------------------

    def environ(self) -> dict[str, str]:
        """Return the ``ZRAFT_*`` variables a payload process gets."""
        return {
            "ZRAFT_NODE_ID": self.node_id,
            "ZRAFT_ROLE": self.role,
            "ZRAFT_TERM": str(self.term),
            "ZRAFT_LEADER_ID": self.leader_id,
            "ZRAFT_ENSEMBLE": self.node.ensemble,
            "ZRAFT_CLIENT": self.node.client_endpoint,
            "ZRAFT_CONFIG": self.node.config_path,
        }

    def run(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None
    ) -> int:
        """Run ``argv`` as a fenced process until it exits or the payload must stop.

        The process runs in its own process group under a keeper process
        (``zraft.payload.keeper``) that sends the group SIGTERM when the fence
        runs out, and SIGKILL ``stop_grace_ms`` later, even if this node is
        frozen or killed. Its environment is ours plus ``environ()`` plus
        ``env``. Returns its exit code (128 + n when killed by signal n).
        """
        code = run_fenced(self, list(argv), env, cwd, self.node.stop_grace_s)
        if self._on_process_exit is not None:
            self._on_process_exit(code)
        return code

    def client(self, timeout: float = 1.0, retry_for: float | None = None) -> Client:
        """Return a new client of this node's endpoint (close it when done).

        A leader payload's client fences its writes to ``term``: once another
        leader has been elected they fail with ``FENCED`` instead of landing
        after that leader's writes. ``retry_for`` (default: the time a
        payload has to return once told to stop) bounds one call's retries.
        """
        return Client(
            [self.node.client_endpoint],
            timeout=timeout,
            retry_for=self.node.timeout_s if retry_for is None else retry_for,
            fence=self.term if self.role == "leader" else 0,
        )
