"""The seeded scheduler: one schedule = one seed = one exactly replayable run.

A ``random.Random(seed)`` picks every step's event: tick a node (clocks
may run at different rates), deliver, drop or duplicate an in-flight
message (the others stay delayed; links are mostly but not always FIFO),
handle a node's deferred Ready, read a chunk of a node's snapshot under way
(``tests.sim.snapshots``: snapshots are taken, the log compacted and
snapshots streamed and installed as a real node does), partition (two-way
split, isolated node, one-way cuts), heal, crash a node (possibly half-way
through a Ready or an install), restart it (from its newest durable
snapshot), pause it (a stopped process), skew its clock, transfer
leadership, or let a client write, cas or read. Faults prefer the leader.
After every step the invariants of ``tests.sim.invariants`` are checked.
After the last step the network heals, every node restarts, and the cluster
must converge on one leader with identical logs and states holding every
acknowledged write; then the client history must be linearizable
(``zraft.check``).

Everything, including the fault mix (``Profile``), derives from the seed,
the node count and the step count, so ``python -m tests.sim --seed N --nodes
K --steps S --verbose`` replays a failure exactly. Nothing here reads a clock
or iterates a set, so a replay in another process is identical too. (The
one exception, the linearizability check's time budget, can only turn a
verdict into "undecided", which is counted and never fails a run.)
"""

from __future__ import annotations

import random
import sys
import traceback
from collections import deque
from collections.abc import Sequence
from typing import Any

from tests.sim.clients import Clients, Op
from tests.sim.config import TRACE_TAIL, Profile, Report, SimConfig, SimFailure
from tests.sim.events import Events
from tests.sim.invariants import (
    CONVERGENCE,
    FINAL_STATE,
    LINEARIZABILITY,
    Invariants,
    Violation,
)
from tests.sim.network import Network, describe
from tests.sim.node import DRIVER_SWITCHES, SimNode
from tests.sim.snapshots import SnapshotStats
from zraft.api.routes import Reply
from zraft.check import NOT_LINEARIZABLE, UNKNOWN, check_history, pair_events
from zraft.core import Entry, Message, Role
from zraft.unsafe import CORE_SWITCHES

__all__ = ["Profile", "Report", "SimConfig", "SimFailure", "Simulation", "run_schedule"]

KEYS = ("a", "b", "c")
PROCESSES = 10
READERS = 3  # processes 0..2 only read
CLIENT_TIMEOUT = 300  # steps a client waits before it records "info" and moves on
END_STEPS = 6000  # bound on the steps the healed cluster may take to converge
CHECK_BUDGET_S = 20.0  # WGL search budget per history; running out is "undecided", not a failure
CORE_ERROR = "core_error"  # the core or storage raised (e.g. an assertion inside RaftLog)


def run_schedule(config: SimConfig) -> Report:
    """Run one schedule; return its report or raise ``SimFailure``."""
    return Simulation(config).run()


class Simulation(Events):
    """One schedule in progress: nodes, network, clients, invariants and the trace.

    It picks each step's event (the handlers are ``tests.sim.events.Events``),
    runs the end phase, and is the ``Host`` of its nodes: their Ready handling
    reports here.
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.profile = Profile.draw(self.rng)
        ids = tuple(f"n{i + 1}" for i in range(config.nodes))
        self.step = 0
        self.nodes = [
            SimNode(
                nid,
                ids,
                config.seed * 100 + i,
                self,
                pre_vote=self.profile.pre_vote,
                check_quorum=self.profile.check_quorum,
                heartbeat_ticks=self.profile.heartbeat_ticks,
                election_ticks=self.profile.election_ticks,
                max_inflight=self.profile.max_inflight,
                max_entries_per_msg=self.profile.max_entries,
                unsafe=config.unsafe & (CORE_SWITCHES | DRIVER_SWITCHES),
                skip_fsync="skip_fsync" in config.unsafe,
                timeout_steps=CLIENT_TIMEOUT,
                snapshot_every=self.profile.snapshot_every,
                snapshot_trailing=self.profile.snapshot_trailing,
                compact_unsnapshotted="compact_unsnapshotted" in config.unsafe,
            )
            for i, nid in enumerate(ids)
        ]
        self.by_id = {n.id: n for n in self.nodes}
        self.net = Network(ids)
        self.inv = Invariants(self.nodes, config.checks)
        self.clients = Clients(
            random.Random(config.seed * 7 + 1),
            PROCESSES,
            KEYS,
            CLIENT_TIMEOUT,
            self.inv,
            READERS,
        )
        self.dirty: list[SimNode] = []  # nodes whose Ready waits for a "ready" event
        self.crashes = 0
        self.roles = {n.id: (Role.FOLLOWER, 0) for n in self.nodes}
        self.trace: deque[tuple[int, Any, str]] | list[tuple[int, Any, str]]
        self.trace = [] if config.record_trace else deque(maxlen=TRACE_TAIL)
        self.undecided = False
        self.leader_known = False  # some node up knows a leader (clients back off otherwise)
        self.heal_at = 0  # step at which the current partition heals (0: none)
        self.restart_at = {n.id: 0 for n in self.nodes}  # step at which a down node restarts
        self.resume_at = {n.id: 0 for n in self.nodes}  # step at which a paused node resumes
        self.paused: list[SimNode] = []
        self.clock = {nid: 1.0 for nid in ids}  # each node's clock rate (its tick weight)
        self.note(f"profile {self.profile}")

    # -- the run -------------------------------------------------------------

    def run(self) -> Report:
        """Run the random steps, then heal and converge, then the final checks."""
        try:
            for _ in range(self.config.steps):
                self.step += 1
                self.random_event()
                self.end_step()
            self.converge()
            self.final_checks()
        except Violation as v:
            raise self.failure(v.invariant, v.details) from None
        except (SimFailure, BrokenPipeError):
            raise
        except Exception as exc:  # the core or storage refused what happened: report it
            where = traceback.format_exception(exc)[-3:]
            raise self.failure(CORE_ERROR, f"{exc!r}\n{''.join(where).rstrip()}") from exc
        return self.report()

    def failure(self, invariant: str, details: str) -> SimFailure:
        """Build the failure for ``invariant`` at the current step."""
        tail = "\n".join(self.format(e) for e in list(self.trace)[-TRACE_TAIL:])
        return SimFailure(self.config, self.step, invariant, details, tail)

    def random_event(self) -> None:
        """Run one event: a due heal, restart or resume first, else one picked by weight.

        Weights: 3 per running node for a tick (times its clock rate), 3 per
        message in flight for a delivery (so a larger backlog drains faster and
        the pool stays bounded without a FIFO), the profile's odds of a drop or
        duplicate instead, 6 per deferred Ready, the profile's snapshot pace
        per running node writing a snapshot, and the profile's weights for
        clients and faults. When every node is down, time jumps to the next restart.
        """
        p, net, rng, step = self.profile, self.net, self.rng, self.step
        if self.heal_at and step >= self.heal_at:
            self.heal()
            return
        for node in self.paused:
            if step >= self.resume_at[node.id]:
                self.resume(node)
                return
        up = 0
        for node in self.nodes:
            if node.up:
                up += 1
            elif step >= self.restart_at[node.id]:
                self.restart(node)
                return
        if not up:
            self.restart(min(self.nodes, key=lambda n: self.restart_at[n.id]))
            return
        running = self.running()
        tick = 3.0 * sum(self.clock[n.id] for n in running)
        deliver = 3.0 * len(net.in_flight)
        drop = p.drop * deliver
        duplicate = p.duplicate * deliver
        ready = 6.0 * sum(1 for n in self.dirty if n not in self.paused)
        snapshot = p.snapshot_pace * sum(1 for n in running if n.snaps.taking is not None)
        client = p.clients if self.clients.in_flight < PROCESSES and running else 0.0
        if not self.leader_known:
            client *= 0.1  # clients back off while no node knows a leader
        # A new partition may replace the current one: the isolated old leader
        # rejoins just as the new one is cut off (divergent logs meet, Raft §5.3).
        partition = p.partition * up / len(self.nodes)
        crash = p.crash * up
        pause = p.pause * len(running)
        skew = p.skew * up
        network = deliver + drop + duplicate
        faults = partition + crash + pause + skew + p.transfer
        x = rng.random() * (tick + network + ready + snapshot + 2.34 * client + faults)
        for weight, event in (
            (tick, self.tick_random),
            (deliver, self.deliver_random),
            (drop, self.drop_random),
            (duplicate, self.duplicate_random),
            (ready, self.ready_random),
            (snapshot, self.snapshot_random),
            (client, self.client_write),
            (client, self.client_read),
            (0.34 * client, self.client_cas),
            (partition, self.partition),
            (crash, self.crash_random),
            (pause, self.pause_random),
            (skew, self.skew_random),
        ):
            if x < weight:
                event()
                return
            x -= weight
        self.transfer()

    def end_step(self) -> None:
        """Check every invariant, trace role changes, expire old client operations."""
        self.inv.after_step()
        known = False
        for n in self.nodes:
            if n.up:
                rt = (n.raft.role, n.raft.term)
                if self.roles[n.id] != rt:
                    self.roles[n.id] = rt
                    self.note(f"{n.id} is {rt[0].value} in term {rt[1]}")
                known = known or bool(n.raft.leader_id)
        self.leader_known = known
        self.clients.expire(self.step)

    # -- the end: heal, converge, read back, check ---------------------------

    def converge(self) -> None:
        """Heal, restart every node, and run without faults until one leader has
        committed its own term and every node applied the same log (liveness)."""
        self.net.heal()
        self.note("end of faults: heal and restart everything")
        for node in list(self.paused):
            self.resume(node)
        for node in self.nodes:
            if not node.up:
                self.restart(node)
        for node in list(self.dirty):
            self.touched(node, defer=False)
        for _ in range(END_STEPS):
            if self.converged():
                return
            self.step += 1
            self.calm_event()
            self.end_step()
        raise Violation(
            CONVERGENCE,
            f"no convergence {END_STEPS} steps after healing: "
            + "; ".join(self.describe_node(n) for n in self.nodes),
        )

    def calm_event(self) -> None:
        """Deliver, tick or write a snapshot chunk, nothing else (the end phase)."""
        pool = len(self.net.in_flight)
        snapshot = self.profile.snapshot_pace * sum(
            1 for n in self.nodes if n.snaps.taking is not None
        )
        x = self.rng.random() * (3.0 * pool + 3.0 * len(self.nodes) + snapshot)
        if x < 3.0 * pool:
            self.deliver_random(faults=False)
        elif x >= 3.0 * pool + 3.0 * len(self.nodes):
            self.snapshot_random()
        else:
            node = self.rng.choice(self.nodes)
            node.tick()
            self.note(f"tick {node.id}")
            self.touched(node, defer=False)

    def converged(self) -> bool:
        """Tell whether one leader committed an entry of its term and all nodes caught up."""
        leaders = [n for n in self.nodes if n.raft.role is Role.LEADER]
        if len(leaders) != 1:
            return False
        log, term = leaders[0].raft.log, leaders[0].raft.term
        last = log.last_index()
        if log.committed != last or log.term(last) != term:
            return False
        return all(
            n.raft.term == term
            and n.raft.log.last_index() == last
            and n.raft.log.committed == last
            and n.applied_index == last
            for n in self.nodes
        )

    def final_checks(self) -> None:
        """Check logs, states and acks as converged (the cluster is still, right after
        ``converge``), then read every key through the leader and check the history."""
        checks = self.config.checks
        if FINAL_STATE in checks:
            self.check_final_state()
        for i, key in enumerate(KEYS):
            self.final_read(PROCESSES + i, key)
        self.clients.finish(self.step)
        if LINEARIZABILITY in checks:
            self.check_history()

    def final_read(self, process: int, key: str) -> Op | None:
        """Read ``key`` through ReadIndex at the leader, running until it is answered."""
        for _ in range(3):
            leaders = [n for n in self.nodes if n.raft.role is Role.LEADER]
            if not leaders:
                break
            op = self.clients.read_at(process, leaders[0], key, self.step)
            if op is None:
                break
            self.note(f"final read {key} at {leaders[0].id}")
            self.touched(leaders[0], defer=False)
            for _ in range(END_STEPS // 10):
                if op.done:
                    break
                self.step += 1
                self.calm_event()
                self.end_step()
            if op.done:
                return op
        return None

    def check_final_state(self) -> None:
        """Every node holds the same log (Raft §5.3, checked whole once at the end), the
        same state, and every acknowledged write at the index it was acknowledged at."""
        first = self.nodes[0]
        start = max(n.raft.log.snapshot_index for n in self.nodes)  # compacted differently
        for node in self.nodes[1:]:
            if _log_after(node, start) != _log_after(first, start):
                raise Violation(FINAL_STATE, f"{first.id} and {node.id} hold different logs")
            if node.replica.state_hash() != first.replica.state_hash():
                raise Violation(
                    FINAL_STATE,
                    f"{first.id} holds {first.kv()} but {node.id} holds {node.kv()} "
                    "(or their session tables differ)",
                )
        for index, term, _, what in self.inv.acked:
            for node in self.nodes:
                have = node.applied_terms[index - 1] if index <= node.applied_index else None
                if have != term:
                    raise Violation(
                        FINAL_STATE,
                        f"{what} was acknowledged at index {index} term {term} but {node.id} "
                        f"applied {'nothing' if have is None else f'term {have}'} there",
                    )

    def check_history(self) -> None:
        result = check_history(pair_events(self.clients.history()), "kv", budget_s=CHECK_BUDGET_S)
        if result.verdict is NOT_LINEARIZABLE:
            raise Violation(LINEARIZABILITY, result.explanation)
        self.undecided = result.verdict is UNKNOWN

    # -- Host: what the nodes' Ready handling reports --------------------------

    def send(self, node: SimNode, messages: Sequence[Message]) -> None:
        if messages:
            self.net.send(messages)

    def logged(self, node: SimNode, entries: Sequence[Entry]) -> None:
        self.inv.logged(node, entries)

    def synced(self, node: SimNode, first_index: int) -> None:
        self.inv.synced(node, first_index)

    def applied(self, node: SimNode, entry: Entry) -> None:
        self.inv.applied(node, entry)

    def replied(self, node: SimNode, reply: Reply) -> None:
        self.clients.replied(node, reply, self.step)

    @property
    def now(self) -> int:
        return self.step

    # -- trace and report ----------------------------------------------------

    def note(self, what: Any, suffix: str = "") -> None:
        """Add an event to the trace (formatted lazily unless verbose)."""
        item = (self.step, what, suffix)
        self.trace.append(item)
        if self.config.verbose:
            print(self.format(item), file=sys.stdout)

    @staticmethod
    def format(item: tuple[int, Any, str]) -> str:
        step, what, suffix = item
        text = describe(what) if isinstance(what, Message) else str(what)
        return f"{step:6d} {text}{' ' + suffix if suffix else ''}"

    def describe_node(self, n: SimNode) -> str:
        if not n.up:
            return f"{n.id} down"
        r = n.raft
        return (
            f"{n.id} {r.role.value} t{r.term} lead={r.leader_id or '-'} "
            f"last={r.log.last_index()} commit={r.log.committed} applied={n.applied_index}"
        )

    def report(self) -> Report:
        net = self.net
        return Report(
            seed=self.config.seed,
            nodes=self.config.nodes,
            steps=self.step,
            delivered=net.delivered,
            dropped=net.dropped,
            duplicated=net.duplicated,
            crashes=self.crashes,
            partitions=net.partitions,
            leaders=len(self.inv.leader_of_term),
            commit=len(self.inv.committed),
            clients=self.clients.stats,
            snapshots=SnapshotStats.total(n.snaps.stats for n in self.nodes),
            undecided=self.undecided,
            trace=[self.format(e) for e in self.trace] if self.config.record_trace else [],
        )


def _log_after(node: SimNode, index: int) -> list[Entry]:
    """Return ``node``'s log entries after ``index`` (which its log must reach)."""
    log = node.raft.log
    return log.entries[index - log.snapshot_index :]
