"""Simulated clients: processes that write, cas and read, and the history they record.

Each process has at most one operation in flight (the rule of
``zraft.check.history``). Outcomes are recorded only as strongly as they are
known:

- a write is ``ok`` once its proposer applies the entry at its (index, term);
  if that node applies another term at that index, the write provably never
  takes effect (an entry never moves to another index, and at most one entry
  is committed per index, Raft §5.4.3), so it is a ``fail``;
- a cas is ``ok``/``fail`` by its compare once applied; a lost cas never ran
  its compare, so it is ``info`` (``fail`` would claim it did not match);
- a read is ``ok`` with the value its node holds once the node applied up
  to the ReadIndex (thesis §6.4), ``fail`` when the leader rejected it;
- anything whose node crashed, or that waited longer than the timeout, or
  that is still open at the end, is ``info``: it may or may not have happened.

A request refused up front (NotLeader, ProposalDropped) never reaches the
log and is left out of the history; the client follows the leader hint once.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.sim.invariants import Invariants
from tests.sim.node import Command, SimNode
from zraft.check import Event
from zraft.core import Entry, NotLeader, ProposalDropped, ReadState


@dataclass(slots=True)
class Op:
    """One client operation in flight."""

    process: int
    op_id: int
    f: str  # "write", "cas" or "read"
    key: str
    value: Any  # write: new value; cas: [expected, new]; read: None
    invoked: int  # step of the invocation
    node: str = ""
    index: int = 0  # write/cas: where the proposal went; read: the ReadIndex once known
    term: int = 0
    data: bytes = b""
    context: bytes = b""
    done: bool = False


@dataclass
class ClientStats:
    """What the clients did in one schedule."""

    proposals: int = 0
    acked: int = 0
    lost: int = 0
    reads: int = 0
    reads_served: int = 0
    unknown: int = 0
    refused: int = 0


@dataclass
class Clients:
    """The client processes of one schedule and the history they record.

    ``local_reads`` and ``ack_before_commit`` are the driver-level negative
    controls (zraft/unsafe.py): serve a read from local state at once, and
    answer a write as soon as the leader has proposed it.
    """

    rng: random.Random
    processes: int
    keys: Sequence[str]
    timeout: int
    invariants: Invariants
    readers: int = 0
    local_reads: bool = False
    ack_before_commit: bool = False
    events: list[Event] = field(default_factory=list)
    stats: ClientStats = field(default_factory=ClientStats)

    def __post_init__(self) -> None:
        self.busy: list[Op | None] = [None] * self.processes
        self.hint: list[str] = [""] * self.processes
        self.writes: dict[str, dict[int, Op]] = {}  # node -> index -> proposal
        self.reads: dict[str, dict[bytes, Op]] = {}  # node -> ReadIndex context -> read
        self.parked: dict[str, list[Op]] = {}  # node -> reads waiting to apply far enough
        self.values: dict[str, list[Any]] = {k: [None] for k in self.keys}  # for cas guesses
        self.next_op = 1
        self.next_value = 1
        self.in_flight = 0  # busy regular processes

    # -- invocations ---------------------------------------------------------

    def idle(self, writer: bool) -> int | None:
        """Return a random idle process (a writer, or any), or None when all of them wait.

        The first ``readers`` processes only read: they keep reading wherever
        they were last answered, so a deposed leader that still believes in
        its lease gets read from, as a real dashboard would read it.
        """
        first = self.readers if writer else 0
        idle = [p for p in range(first, self.processes) if self.busy[p] is None]
        return self.rng.choice(idle) if idle else None

    def write(
        self, step: int, nodes: Mapping[str, SimNode], up: Sequence[str], cas: bool
    ) -> tuple[SimNode | None, str]:
        """Let an idle process propose a write (or a cas) at a node it picks.

        Returns the node whose core took the proposal (None if none did) and
        a line for the trace.
        """
        p = self.idle(writer=True)
        if p is None or not up:
            return None, "all clients busy" if up else "no node up"
        key = self.rng.choice(self.keys)
        new = self._new_value(key)
        if cas:
            f, value = "cas", [self.rng.choice(self.values[key][-4:]), new]
        else:
            f, value = "write", new
        op = Op(p, self._op_id(), f, key, value, step)
        op.data = Command(p, op.op_id, f, key, value).encode()
        for node in self._targets(p, nodes, up):
            try:
                op.index, op.term = node.raft.propose(op.data)
            except NotLeader as exc:
                self.hint[p] = exc.leader_id
                continue
            except ProposalDropped:
                break
            op.node = node.id
            self.hint[p] = node.id
            self._invoke(op, step)
            self.stats.proposals += 1
            if self.ack_before_commit and f == "write":
                # Negative control: the answer goes out before the entry is even durable.
                self._complete(op, "ok", step)
                self.invariants.acknowledged(op.index, op.term, op.data, self._name(op))
            else:
                waiting = self.writes.setdefault(node.id, {})
                older = waiting.get(op.index)
                if older is not None and not older.done:
                    # This node lost that entry and now leads with another at its index;
                    # the old one may still be committed by another leader: unknown.
                    self._complete(older, "info", step)
                waiting[op.index] = op
            return node, f"p{p} {f} {key}={value} at {node.id}: index {op.index} term {op.term}"
        self.stats.refused += 1
        return None, f"p{p} {f} {key}={value}: refused (no leader reached)"

    def read(
        self, step: int, nodes: Mapping[str, SimNode], up: Sequence[str]
    ) -> tuple[SimNode | None, str]:
        """Let an idle process read a key through ReadIndex at a node it picks."""
        p = self.idle(writer=False)
        if p is None or not up:
            return None, "all clients busy" if up else "no node up"
        key = self.rng.choice(self.keys)
        for node in self._targets(p, nodes, up):
            if self.local_reads:
                # Negative control: no ReadIndex, whatever this node has applied.
                op = Op(p, self._op_id(), "read", key, None, step, node=node.id)
                self._invoke(op, step)
                self.stats.reads += 1
                self._serve(op, node, step)
                return None, f"p{p} read {key} locally at {node.id}: {node.kv.get(key)}"
            if self.read_at(p, node, key, step) is not None:
                return node, f"p{p} read {key} at {node.id}"
        self.stats.refused += 1
        return None, f"p{p} read {key}: refused (no leader known)"

    def read_at(self, process: int, node: SimNode, key: str, step: int) -> Op | None:
        """Ask ``node`` for a ReadIndex for ``process``; return the read, None if refused.

        ``process`` may be beyond the regular processes (the final reads): such
        a read is tracked like any other but never makes a process busy.
        """
        op = Op(process, self._op_id(), "read", key, None, step, node=node.id)
        op.context = b"r%d" % op.op_id
        try:
            node.raft.read_index(op.context)
        except NotLeader as exc:
            if process < self.processes:
                self.hint[process] = exc.leader_id
            return None
        self._invoke(op, step)
        self.stats.reads += 1
        self.reads.setdefault(node.id, {})[op.context] = op
        return op

    # -- outcomes, from the nodes' Ready handling -----------------------------

    def applied(self, node: SimNode, entry: Entry, result: bool | None, step: int) -> None:
        """Answer the proposal waiting at ``node`` for ``entry.index``, if any."""
        waiting = self.writes.get(node.id)
        op = waiting.pop(entry.index, None) if waiting else None
        if op is not None and not op.done:
            if entry.term != op.term:
                self.stats.lost += 1
                # Lost for certain for a write; a cas never ran its compare: unknown.
                self._complete(op, "fail" if op.f == "write" else "info", step)
            elif op.f == "write" or result:
                self._complete(op, "ok", step)
                self.invariants.acknowledged(op.index, op.term, op.data, self._name(op))
            else:
                self._complete(op, "fail", step)  # the compare ran and did not match
        parked = self.parked.get(node.id)
        if parked:
            still = []
            for read in parked:
                if read.done:
                    continue
                if node.applied_index >= read.index:
                    self._serve(read, node, step)
                else:
                    still.append(read)
            self.parked[node.id] = still

    def read_state(self, node: SimNode, rs: ReadState, step: int) -> None:
        """Serve (or park, or fail) the read that ``rs`` answers."""
        waiting = self.reads.get(node.id)
        op = waiting.pop(rs.context, None) if waiting else None
        if op is None or op.done:
            return
        if rs.rejected:
            self._complete(op, "fail", step)
        elif node.applied_index >= rs.index:
            self._serve(op, node, step)
        else:
            op.index = rs.index
            self.parked.setdefault(node.id, []).append(op)

    def crashed(self, node: SimNode, step: int) -> None:
        """Make everything waiting at ``node`` unknown: it may or may not have happened."""
        ops = list(self.writes.pop(node.id, {}).values())
        ops += self.reads.pop(node.id, {}).values()
        ops += self.parked.pop(node.id, [])
        for op in ops:
            if not op.done:
                self._complete(op, "info", step)

    def expire(self, step: int) -> None:
        """Give up on operations older than the timeout (their outcome becomes unknown)."""
        if not self.in_flight:
            return
        limit = step - self.timeout
        for op in self.busy:
            if op is not None and op.invoked < limit:
                self._complete(op, "info", step)

    def finish(self, step: int) -> None:
        """Close every open operation as unknown."""
        for op in self.busy:
            if op is not None:
                self._complete(op, "info", step)

    # -- helpers -------------------------------------------------------------

    def _targets(
        self, p: int, nodes: Mapping[str, SimNode], up: Sequence[str]
    ) -> Iterator[SimNode]:
        """Yield the node to try first (mostly the last leader this process heard of,
        else a random node), then, once, the node a NotLeader answer pointed to."""
        hint = self.hint[p]
        first = nodes[hint] if hint in up and self.rng.random() < 0.8 else None
        if first is None:
            first = nodes[self.rng.choice(up)]
        yield first
        redirect = self.hint[p]  # updated by the caller after a NotLeader
        if redirect and redirect != first.id and redirect in up:
            yield nodes[redirect]

    def _serve(self, op: Op, node: SimNode, step: int) -> None:
        self.stats.reads_served += 1
        self._complete(op, "ok", step, node.kv.get(op.key))

    def _invoke(self, op: Op, step: int) -> None:
        if op.process < self.processes:
            self.busy[op.process] = op
            self.in_flight += 1
        self.events.append(Event(op.process, "invoke", op.f, op.key, op.value, time=step))

    def _complete(self, op: Op, outcome: str, step: int, read: Any = None) -> None:
        op.done = True
        if op.process < self.processes:
            self.busy[op.process] = None
            self.in_flight -= 1
        if outcome == "info":
            self.stats.unknown += 1
        elif outcome == "ok" and op.f != "read":
            self.stats.acked += 1
        value = read if op.f == "read" else op.value
        self.events.append(Event(op.process, outcome, op.f, op.key, value, time=step))

    def _op_id(self) -> int:
        self.next_op += 1
        return self.next_op - 1

    def _new_value(self, key: str) -> int:
        value = self.next_value
        self.next_value += 1
        self.values[key].append(value)
        return value

    @staticmethod
    def _name(op: Op) -> str:
        return f"p{op.process}'s {op.f} {op.key}={op.value}"
