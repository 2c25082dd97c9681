"""The payload runner: hooks off the driver thread, never overlapping, timed and counted.

Threads are synchronized with events and bounded waits; nothing sleeps.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from zraft.hookspecs import hookimpl
from zraft.metrics import Metrics
from zraft.payload import runner as runner_mod
from zraft.payload.context import NodeInfo, PayloadContext
from zraft.payload.fencing import Desired, Fence, Kind
from zraft.payload.runner import PayloadRunner
from zraft.plugins import make_plugin_manager

WAIT = 5.0  # upper bound for any cross-thread handoff in these tests
INFO = NodeInfo("n1", "test", "tcp://127.0.0.1:1", "<test>", 0.1)


class Recorder:
    """A plugin whose payloads record what happened and block until told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.ignore_stop = False
        self.raise_in_leader = False
        self.threads: set[str] = set()
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0

    def _enter(self, what: str, value: Any) -> None:
        with self.lock:
            self.events.append((what, value))
            self.threads.add(threading.current_thread().name)
            self.active += 1
            self.max_active = max(self.max_active, self.active)

    def _leave(self) -> None:
        with self.lock:
            self.active -= 1

    @hookimpl
    def zraft_became_leader(self, ctx: PayloadContext) -> None:
        self._enter("leader", ctx.term)
        self.started.set()
        try:
            if self.raise_in_leader:
                raise RuntimeError("boom")
            if self.ignore_stop:
                self.release.wait(WAIT)
            else:
                ctx.wait(WAIT)
        finally:
            self._leave()

    @hookimpl
    def zraft_became_follower(self, ctx: PayloadContext) -> None:
        self._enter("follower", ctx.leader_id)
        self.started.set()
        try:
            ctx.wait(WAIT)
        finally:
            self._leave()

    @hookimpl
    def zraft_node_start(self, ctx: PayloadContext) -> None:
        self.events.append(("node_start", ctx.role))

    @hookimpl
    def zraft_became_candidate(self, ctx: PayloadContext) -> None:
        self.events.append(("candidate", ctx.term))

    @hookimpl
    def zraft_committed(self, index: int, term: int) -> None:
        self.events.append(("committed", index))

    @hookimpl
    def zraft_node_stop(self, ctx: PayloadContext) -> None:
        self.events.append(("node_stop", ctx.role))


def make(*plugins: Any, timeout_s: float = 1.0) -> tuple[PayloadRunner, Metrics]:
    pm = make_plugin_manager(entry_points=False)
    for i, p in enumerate(plugins):
        pm.register(p, name=f"p{i}")
    metrics = Metrics()
    return PayloadRunner(pm, INFO, timeout_s=timeout_s, metrics=metrics), metrics


def leader(gen: int, term: int = 1, stop_at: float = float("inf")) -> Desired:
    return Desired(Kind.LEADER, gen, term, "n1", Fence(term, stop_at))


def until(cond: Any, what: str) -> None:
    end = time.monotonic() + WAIT
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        threading.Event().wait(0.005)


def sample(m: Metrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


def test_leader_payload_runs_off_the_driver_thread_and_stops_when_told() -> None:
    rec = Recorder()
    runner, m = make(rec)
    runner.start()
    runner.set_desired(leader(1, term=7), time.monotonic())
    assert rec.started.wait(WAIT)
    assert runner.running(Kind.LEADER) == ["p0"]
    assert threading.current_thread().name not in rec.threads
    runner.set_desired(Desired(Kind.NONE, 2), time.monotonic())
    until(lambda: not runner.running(Kind.LEADER), "the leader payload to return")
    assert ("leader", 7) in rec.events
    assert (
        sample(m, "zraft_payload_runs_total", plugin="p0", hook="zraft_became_leader", result="ok")
        == 1
    )
    runner.stop(Desired(Kind.NONE, 3), WAIT)
    assert rec.events[0] == ("node_start", "node") and rec.events[-1] == ("node_stop", "node")


def test_a_hook_that_ignores_stop_is_counted_once_and_the_next_role_waits_for_it() -> None:
    rec = Recorder()
    rec.ignore_stop = True
    runner, m = make(rec, timeout_s=0.5)
    runner.start()
    runner.set_desired(leader(1), time.monotonic())
    assert rec.started.wait(WAIT)
    rec.started.clear()
    told = time.monotonic()
    runner.set_desired(Desired(Kind.FOLLOWER, 2, 1, "n2"), told)
    runner.check(told + 0.4)
    assert sample(m, "zraft_payload_timeouts_total", plugin="p0", hook="zraft_became_leader") == 0
    runner.check(told + 0.6)
    runner.check(told + 5.0)
    assert sample(m, "zraft_payload_timeouts_total", plugin="p0", hook="zraft_became_leader") == 1
    # Runs of one plugin never overlap: the follower payload waits for the leader's.
    assert not rec.started.is_set()
    rec.release.set()
    assert rec.started.wait(WAIT)
    assert rec.max_active == 1
    assert [e for e in rec.events if e[0] in ("leader", "follower")] == [
        ("leader", 1),
        ("follower", "n2"),
    ]
    runner.stop(Desired(Kind.NONE, 3), WAIT)


def test_a_hook_that_raises_is_logged_counted_and_the_next_run_still_happens(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = Recorder()
    rec.raise_in_leader = True
    runner, m = make(rec)
    runner.start()
    runner.set_desired(leader(1), time.monotonic())
    until(
        lambda: (
            sample(
                m,
                "zraft_payload_runs_total",
                plugin="p0",
                hook="zraft_became_leader",
                result="error",
            )
            == 1
        ),
        "the error to be counted",
    )
    assert "plugin p0: zraft_became_leader raised" in caplog.text
    rec.raise_in_leader = False
    rec.started.clear()
    runner.set_desired(Desired(Kind.NONE, 2), time.monotonic())
    runner.set_desired(leader(3, term=2), time.monotonic())
    assert rec.started.wait(WAIT)
    runner.stop(Desired(Kind.NONE, 4), WAIT)


def test_one_plugin_hanging_delays_no_other_plugin() -> None:
    stuck, free = Recorder(), Recorder()
    stuck.ignore_stop = True
    runner, _ = make(stuck, free)
    runner.start()
    runner.set_desired(leader(1), time.monotonic())
    assert stuck.started.wait(WAIT) and free.started.wait(WAIT)
    free.started.clear()
    runner.set_desired(Desired(Kind.FOLLOWER, 2, 1, "n2"), time.monotonic())
    assert free.started.wait(WAIT)  # its follower payload starts; the stuck one still runs
    assert runner.running(Kind.LEADER) == ["p0"] and runner.running(Kind.FOLLOWER) == ["p1"]
    stuck.release.set()
    runner.stop(Desired(Kind.NONE, 3), WAIT)


def test_events_keep_their_order_and_commits_are_coalesced() -> None:
    gate = threading.Event()

    class Slow(Recorder):
        @hookimpl
        def zraft_node_start(self, ctx: PayloadContext) -> None:
            gate.wait(WAIT)  # hold the event thread so commits pile up
            self.events.append(("node_start", ctx.role))

    rec = Slow()
    runner, _ = make(rec)
    runner.start()
    runner.emit("zraft_became_candidate", role="candidate", term=4)
    for index in range(1, 100):
        runner.emit("zraft_committed", index=index, term=4)
    gate.set()
    runner.stop(Desired(Kind.NONE, 1), WAIT)
    assert rec.events == [
        ("node_start", "node"),
        ("candidate", 4),
        ("committed", 99),
        ("node_stop", "node"),
    ]


def test_a_plugin_far_behind_loses_events_counted_never_blocking_the_driver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runner_mod, "MAX_QUEUED_EVENTS", 3)
    gate = threading.Event()

    class Stuck:
        @hookimpl
        def zraft_applied(self, entries: list[Any]) -> None:
            gate.wait(WAIT)

    runner, m = make(Stuck())
    runner.start()
    t0 = time.monotonic()
    for i in range(10):
        runner.emit("zraft_applied", entries=[i])
    assert time.monotonic() - t0 < 1.0
    assert sample(m, "zraft_payload_events_dropped_total", plugin="p0") >= 6
    gate.set()
    runner.stop(Desired(Kind.NONE, 1), WAIT)


def test_context_sees_its_fence_lapse_without_being_told() -> None:
    """After a freeze (SIGSTOP), a payload thread may wake before the driver: the
    context's own deadline check must already say stop."""
    lapsed = PayloadContext(INFO, "leader", 3, "n1", fence=Fence(3, time.monotonic() - 0.001))
    assert lapsed.wait(WAIT) is True and not lapsed.valid() and lapsed.stopping
    live = PayloadContext(INFO, "leader", 3, "n1", fence=Fence(3, time.monotonic() + 60))
    assert live.wait(0.01) is False and live.valid()
    live.stop()
    assert live.wait(WAIT) is True
    soon = PayloadContext(INFO, "leader", 3, "n1", fence=Fence(3, time.monotonic() + 0.05))
    t0 = time.monotonic()
    assert soon.wait(WAIT) is True and time.monotonic() - t0 < 1.0
    env = soon.environ()
    assert env["ZRAFT_TERM"] == "3" and env["ZRAFT_ROLE"] == "leader"
    assert env["ZRAFT_NODE_ID"] == "n1" and env["ZRAFT_LEADER_ID"] == "n1"
