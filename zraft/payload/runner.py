"""Payload hooks run here, never on the driver thread.

Each plugin gets up to two threads of its own, so one plugin that hangs
delays nobody else:

* a **role thread** runs ``zraft_became_leader`` and ``zraft_became_follower``.
  These may run for as long as the role lasts. When the role ends the
  runner stops their context, and they must return within ``timeout_s``.
  Runs of one plugin never overlap: a new role's hook starts only after the
  previous one returned.
* an **event thread** runs the short hooks in order: ``zraft_node_start``,
  ``zraft_became_candidate``, ``zraft_committed``, ``zraft_applied``,
  ``zraft_node_stop``. Each must return within ``timeout_s``. Its queue is
  bounded: when a plugin falls that far behind, events are dropped and
  counted, never the driver slowed.

A hook that raises is logged and counted. A hook that overruns its time is
logged and counted once (Python cannot kill a thread; the run ends when the
hook returns). The driver calls ``check(now)`` on every tick to find those.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pluggy

from zraft.metrics import Metrics
from zraft.payload.context import NodeInfo, PayloadContext
from zraft.payload.fencing import Desired, Kind

log = logging.getLogger("zraft.payload")

ROLE_HOOKS = {Kind.LEADER: "zraft_became_leader", Kind.FOLLOWER: "zraft_became_follower"}
EVENT_HOOKS = (
    "zraft_node_start",
    "zraft_became_candidate",
    "zraft_committed",
    "zraft_applied",
    "zraft_node_stop",
)
MAX_QUEUED_EVENTS = 4096


@dataclass(slots=True)
class Call:
    """One hook call in progress, watched for overrunning its time."""

    plugin: str
    hook: str
    started: float
    deadline: float  # inf while a role hook is allowed to run
    ctx: PayloadContext | None = None
    gen: int = 0
    reported: bool = False


class PayloadRunner:
    """Runs the payload hooks of every plugin in ``pm``; see the module docstring."""

    def __init__(
        self,
        pm: pluggy.PluginManager,
        node: NodeInfo,
        *,
        timeout_s: float,
        metrics: Metrics,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.node = node
        self.timeout_s = timeout_s
        self.metrics = metrics
        self.settings = settings or {}
        self.role_impls: dict[str, dict[Kind, Callable[..., Any]]] = {}
        for kind, hook in ROLE_HOOKS.items():
            for impl in getattr(pm.hook, hook).get_hookimpls():
                self.role_impls.setdefault(impl.plugin_name, {})[kind] = impl.function
        self.event_impls: dict[str, dict[str, Callable[..., Any]]] = {}
        for hook in EVENT_HOOKS:
            for impl in getattr(pm.hook, hook).get_hookimpls():
                self.event_impls.setdefault(impl.plugin_name, {})[hook] = impl.function
        # Every series starts at 0, so that increase() sees a plugin's first failure.
        for plugin, impls in self.role_impls.items():
            for kind in impls:
                self._zero(plugin, ROLE_HOOKS[kind])
        for plugin, hooks in self.event_impls.items():
            for hook in hooks:
                self._zero(plugin, hook)
            metrics.payload_events_dropped.labels(plugin)
        self._cond = threading.Condition()
        self._desired = Desired(Kind.NONE, 0)
        self._calls: dict[tuple[str, str], Call] = {}  # (plugin, "role"|"event") -> call
        self._queues: dict[str, deque[tuple[str, dict[str, Any]]]] = {
            p: deque() for p in self.event_impls
        }
        self._committed: dict[str, tuple[int, int] | None] = {p: None for p in self.event_impls}
        # A plugin's role payloads wait for its zraft_node_start (up to timeout_s).
        self._node_started = {p: threading.Event() for p in self.role_impls}
        for plugin, event in self._node_started.items():
            if "zraft_node_start" not in self.event_impls.get(plugin, {}):
                event.set()
        self._closing = False
        self._events_closed = False
        self._threads: list[threading.Thread] = []

    def _zero(self, plugin: str, hook: str) -> None:
        for result in ("ok", "error"):
            self.metrics.payload_runs.labels(plugin, hook, result)
        self.metrics.payload_timeouts.labels(plugin, hook)

    # -- what the driver sees ---------------------------------------------

    def wants(self, hook: str) -> bool:
        """Tell whether any plugin implements ``hook`` (so the driver can skip the work)."""
        if hook in EVENT_HOOKS:
            return any(hook in impls for impls in self.event_impls.values())
        kind = next(k for k, h in ROLE_HOOKS.items() if h == hook)
        return any(kind in impls for impls in self.role_impls.values())

    def start(self) -> None:
        """Start the threads and queue ``zraft_node_start``."""
        for plugin in self.role_impls:
            self._spawn(f"zraft-role-{plugin}", self._role_loop, plugin)
        for plugin in self.event_impls:
            self._spawn(f"zraft-event-{plugin}", self._event_loop, plugin)
        self.emit("zraft_node_start")

    def _spawn(self, name: str, target: Callable[[str], None], plugin: str) -> None:
        t = threading.Thread(target=target, args=(plugin,), name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def set_desired(self, desired: Desired, now: float) -> None:
        """Make ``desired`` the role payload to run; stop runs of an older generation."""
        with self._cond:
            self._desired = desired
            for (_, lane), call in self._calls.items():
                if lane == "role" and call.gen != desired.gen and call.ctx is not None:
                    call.ctx.stop()
                    if math.isinf(call.deadline):
                        call.deadline = now + self.timeout_s
            self._cond.notify_all()

    def running(self, kind: Kind) -> list[str]:
        """Return the plugins whose ``kind`` payload is running now."""
        with self._cond:
            return sorted(
                c.plugin
                for (_, lane), c in self._calls.items()
                if lane == "role" and c.hook == ROLE_HOOKS[kind]
            )

    def emit(self, hook: str, **kwargs: Any) -> None:
        """Queue ``hook(**kwargs)`` for each plugin that has it (driver thread; never blocks)."""
        with self._cond:
            if self._events_closed:
                return
            for plugin, impls in self.event_impls.items():
                if hook not in impls:
                    continue
                if hook == "zraft_committed":  # only the newest commit matters
                    pending = self._committed[plugin] is not None
                    self._committed[plugin] = (kwargs["index"], kwargs["term"])
                    if pending:
                        continue
                queue = self._queues[plugin]
                if len(queue) >= MAX_QUEUED_EVENTS and hook != "zraft_node_stop":
                    self.metrics.payload_events_dropped.labels(plugin).inc()
                    continue
                queue.append((hook, kwargs))
            self._cond.notify_all()

    def check(self, now: float) -> None:
        """Log and count, once each, the hook calls that overran their time."""
        with self._cond:
            late = [c for c in self._calls.values() if now > c.deadline and not c.reported]
            for c in late:
                c.reported = True
        for c in late:
            self.metrics.payload_timeouts.labels(c.plugin, c.hook).inc()
            log.warning(
                "plugin %s: %s is still running %.1fs after it should have returned; "
                "zraft goes on without it",
                c.plugin,
                c.hook,
                now - (c.deadline - self.timeout_s),
            )

    def stop(self, desired: Desired, timeout_s: float) -> None:
        """Stop every role payload, run ``zraft_node_stop``, and wait up to ``timeout_s``."""
        end = time.monotonic() + timeout_s
        self.set_desired(desired, time.monotonic())
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            while any(lane == "role" for _, lane in self._calls) and time.monotonic() < end:
                self._cond.wait(0.05)
        self.emit("zraft_node_stop")
        with self._cond:
            self._events_closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            log.warning("payload threads still running at stop: %s", ", ".join(stuck))

    # -- the threads --------------------------------------------------------

    def _role_loop(self, plugin: str) -> None:
        impls = self.role_impls[plugin]
        self._node_started[plugin].wait(self.timeout_s)
        done = 0
        while True:
            with self._cond:
                while not self._closing and self._desired.gen == done:
                    self._cond.wait()
                if self._closing:
                    return
                d = self._desired
                done = d.gen
                fn = impls.get(d.kind)
                if fn is None:
                    continue
                ctx = self._context(plugin, d)
                hook = ROLE_HOOKS[d.kind]
                self._calls[(plugin, "role")] = Call(
                    plugin, hook, time.monotonic(), math.inf, ctx, d.gen
                )
                running = self.metrics.payload_running.labels(plugin, d.kind.value)
            running.set(1)
            log.info("plugin %s: %s (term %d) started", plugin, d.kind.value, d.term)
            self._invoke(plugin, hook, fn, ctx=ctx)
            running.set(0)
            log.info("plugin %s: %s (term %d) ended", plugin, d.kind.value, d.term)
            with self._cond:
                self._calls.pop((plugin, "role"), None)
                self._cond.notify_all()

    def _event_loop(self, plugin: str) -> None:
        impls, queue = self.event_impls[plugin], self._queues[plugin]
        while True:
            with self._cond:
                while not queue and not self._events_closed:
                    self._cond.wait()
                if not queue:
                    return
                hook, kwargs = queue.popleft()
                if hook == "zraft_committed":
                    index, term = self._committed[plugin] or (0, 0)
                    self._committed[plugin] = None
                    kwargs = {"index": index, "term": term}
                elif hook in ("zraft_node_start", "zraft_node_stop", "zraft_became_candidate"):
                    kwargs = {"ctx": self._context(plugin, None, **kwargs)}
                now = time.monotonic()
                self._calls[(plugin, "event")] = Call(plugin, hook, now, now + self.timeout_s)
            self._invoke(plugin, hook, impls[hook], **kwargs)
            with self._cond:
                self._calls.pop((plugin, "event"), None)
            if hook == "zraft_node_start" and plugin in self._node_started:
                self._node_started[plugin].set()

    def _context(self, plugin: str, d: Desired | None, **facts: Any) -> PayloadContext:
        if d is None:
            role, term, leader_id, fence = facts.get("role", "node"), facts.get("term", 0), "", None
        else:
            role, term, leader_id, fence = d.kind.value, d.term, d.leader_id, d.fence
        exits = self.metrics.payload_process_exits

        def on_exit(code: int) -> None:
            exits.labels(plugin, role, str(code)).inc()
            level = logging.INFO if code in (0, 143) else logging.WARNING
            log.log(level, "plugin %s: %s process exited with code %d", plugin, role, code)

        return PayloadContext(
            self.node,
            role,
            term,
            leader_id,
            settings=self.settings.get(plugin, {}),
            fence=fence,
            log=logging.getLogger(f"zraft.plugin.{plugin}"),
            on_process_exit=on_exit,
        )

    def _invoke(self, plugin: str, hook: str, fn: Callable[..., Any], **kwargs: Any) -> None:
        started = time.monotonic()
        try:
            fn(**kwargs)
        except Exception:
            log.exception("plugin %s: %s raised", plugin, hook)
            self.metrics.payload_runs.labels(plugin, hook, "error").inc()
        else:
            self.metrics.payload_runs.labels(plugin, hook, "ok").inc()
        took = time.monotonic() - started
        with self._cond:
            call = self._calls.get((plugin, "role" if hook in ROLE_HOOKS.values() else "event"))
            late = call is not None and call.reported
        if late:
            log.warning("plugin %s: %s returned at last, after %.1fs", plugin, hook, took)
