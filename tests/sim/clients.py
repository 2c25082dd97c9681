"""Simulated clients: processes that write, cas and read, and the history they record.

Each process has at most one operation in flight (the rule of
``zraft.check.history``). Requests go through a node's real request book
(``SimNode.submit``) as the native protocol would hand them over, with a
session (client, seq) and ``forward: false``; replies come back as ``Reply``
values. Outcomes are recorded only as strongly as they are known:

- a write is ``ok`` when the reply says so (it carries the entry's index and
  term, which the invariants check later); a ``NOT_LEADER`` reply means it
  never took effect (refused up front, or its entry lost its index to
  another term: Raft §5.4.3), so it is a ``fail``;
- a cas is ``ok``/``fail`` by its compare once applied; a lost cas never ran
  its compare, so it is ``info`` (``fail`` would claim it did not match);
- a read is ``ok`` with the value the reply carries (served once its node
  applied up to the ReadIndex, thesis §6.4); ``fail`` when refused;
- anything whose node crashed, that timed out, or that is still open at the
  end, is ``info``: it may or may not have happened.

A request refused at once (``NOT_LEADER`` for a follower) never reaches the
log and is left out of the history; the client follows the leader hint once.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.sim.invariants import Invariants
from tests.sim.node import SimNode
from zraft.api import codes
from zraft.api.routes import Reply, Request, Route
from zraft.check import Event
from zraft.replica import entries

# Replies that prove the request never took effect (it never reached the log, or its
# entry lost its index to another term's): such an operation is left out of the history.
NEVER_APPLIED = frozenset({codes.NOT_LEADER, codes.NO_LEADER})


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
    seq: int = 0
    done: bool = False
    recorded: bool = False  # the invocation is in the history
    event: int = -1  # where the invocation sits in the history
    refused: str | None = None  # refused at once; the leader hint ("" if none)


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
    """The client processes of one schedule and the history they record."""

    rng: random.Random
    processes: int
    keys: Sequence[str]
    timeout: int
    invariants: Invariants
    readers: int = 0
    events: list[Event | None] = field(default_factory=list)  # None: withdrawn
    stats: ClientStats = field(default_factory=ClientStats)

    def __post_init__(self) -> None:
        self.busy: list[Op | None] = [None] * self.processes
        self.hint: list[str] = [""] * self.processes
        self.open: dict[int, Op] = {}  # op id -> operation awaiting its reply
        self.values: dict[str, list[Any]] = {k: [None] for k in self.keys}  # for cas guesses
        self.next_op = 1
        self.next_value = 1
        self.seqs: dict[int, int] = {}  # process -> last session seq used
        self.in_flight = 0  # busy regular processes
        self.step = 0

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
        """Let an idle process send a write (or a cas) to a node it picks.

        Returns the node that took the request (None if none did) and a line
        for the trace.
        """
        p = self.idle(writer=True)
        if p is None or not up:
            return None, "all clients busy" if up else "no node up"
        key = self.rng.choice(self.keys)
        new = self._new_value(key)
        if cas:
            op = Op(
                p, self._op_id(), "cas", key, [self.rng.choice(self.values[key][-4:]), new], step
            )
            command = {"cmd": "cas", "key": key, "expected": op.value[0], "value": new}
        else:
            op = Op(p, self._op_id(), "write", key, new, step)
            command = {"cmd": "set", "key": key, "value": new}
        for node in self._targets(p, nodes, up):
            if self._submit(op, node, command, step):
                self.stats.proposals += 1
                return node, f"p{p} {op.f} {key}={op.value} at {node.id}"
        self.stats.refused += 1
        return None, f"p{p} {op.f} {key}={op.value}: refused (no leader reached)"

    def read(
        self, step: int, nodes: Mapping[str, SimNode], up: Sequence[str]
    ) -> tuple[SimNode | None, str]:
        """Let an idle process read a key (ReadIndex, unless a control says otherwise)."""
        p = self.idle(writer=False)
        if p is None or not up:
            return None, "all clients busy" if up else "no node up"
        key = self.rng.choice(self.keys)
        node = next(self._targets(p, nodes, up))
        self.read_at(p, node, key, step)
        return node, f"p{p} read {key} at {node.id}"

    def read_at(self, process: int, node: SimNode, key: str, step: int) -> Op:
        """Send ``process``'s read of ``key`` to ``node``; return the operation.

        ``process`` may be beyond the regular processes (the final reads): such
        a read is tracked like any other but never makes a process busy.
        """
        op = Op(process, self._op_id(), "read", key, None, step)
        self.stats.reads += 1
        self._submit(op, node, {"cmd": "get", "key": key}, step)
        return op

    def _submit(self, op: Op, node: SimNode, command: dict[str, Any], step: int) -> bool:
        """Hand ``op`` to ``node``'s request book; False when refused at once (NOT_LEADER)."""
        self.step = step
        seq = self.seqs[op.process] = self.seqs.get(op.process, 0) + 1
        op.node, op.seq, op.refused = node.id, seq, None
        self.open[op.op_id] = op
        req = Request(command, op.op_id, f"p{op.process}", seq, forward=False)
        node.submit(Route(address=op.op_id, started=float(step)), req)
        if op.refused is not None:
            if op.process < self.processes:
                self.hint[op.process] = op.refused
            return False
        if op.process < self.processes:
            self.hint[op.process] = node.id
        self._invoke(op)
        return True

    # -- outcomes, from the nodes' replies -------------------------------------

    def replied(self, node: SimNode, reply: Reply, step: int) -> None:
        """Record what ``reply`` says of its operation."""
        op = self.open.get(reply.route.address)
        if op is None or op.done or op.node != node.id:
            return
        o = reply.outcome
        if not op.recorded:
            if not o.ok and o.code == codes.NOT_LEADER:
                del self.open[op.op_id]
                op.refused = (reply.extra.get("leader_client") or "") if reply.extra else ""
                return
            self._invoke(op)  # answered while submitted (a control that acks at once)
        if op.f == "read":
            self._complete_read(op, o.ok, o.result, o.code, step)
        elif o.ok:
            if op.f == "cas" and isinstance(o.result, dict) and not o.result.get("ok"):
                self._complete(op, "fail", step)  # the compare ran and did not match
                return
            self._complete(op, "ok", step)
            data = self._entry_data(node, reply.index, op)
            self.invariants.acknowledged(reply.index, reply.term, data, self._name(op))
        elif o.code in NEVER_APPLIED:
            self.stats.lost += 1
            self._withdraw(op)
        else:
            self._complete(op, "info", step)  # TIMEOUT, SHUTTING_DOWN: unknown

    def _complete_read(self, op: Op, ok: bool, value: Any, code: str, step: int) -> None:
        if ok:
            self.stats.reads_served += 1
            self._complete(op, "ok", step, value)
        else:
            self._withdraw(op)  # a read changes nothing: unanswered, it constrains nothing

    def _withdraw(self, op: Op) -> None:
        """Take an operation that had no effect out of the history.

        NOT_LEADER and NO_LEADER say the request never reached the log, or that
        its entry lost its index to another term's (Raft §5.4.3): it did
        nothing, so it constrains nothing. (A cas recorded as ``fail`` would
        claim its compare ran and did not match: wrong.) A read that got no
        value changes nothing either, whatever happened to it.
        """
        if not op.recorded:
            op.done = True
            self.open.pop(op.op_id, None)
            return
        self._complete(op, "info", 0)
        self.events.pop()
        self.events[op.event] = None
        self.stats.unknown -= 1

    def history(self) -> list[Event]:
        """Return the recorded events, withdrawn operations left out."""
        return [e for e in self.events if e is not None]

    @staticmethod
    def _entry_data(node: SimNode, index: int, op: Op) -> bytes:
        """Return the data of the entry a write was acknowledged at, checking it is ours."""
        (entry,) = node.raft.log.slice(index, index + 1, 1 << 30, 1)
        p = entries.decode(entry.data)
        assert (p.client, p.seq) == (f"p{op.process}", op.seq), (
            f"{node.id} acknowledged p{op.process}#{op.seq} with the entry of {p.client}#{p.seq}"
        )
        return entry.data

    def crashed(self, node: SimNode, step: int) -> None:
        """Settle everything waiting at ``node``, which just crashed.

        A write its request book had proposed or forwarded is unknown: it may
        still commit. A write the book was only holding for a leader never
        reached any log, so (as the simulation can see, though a real client
        could not) it had no effect and is withdrawn; so are reads.
        """
        book = node.shell.book
        held = {p.route.address for p in book.waiting}
        for op in [o for o in self.open.values() if o.node == node.id]:
            if op.f == "read" or op.op_id in held:
                self._withdraw(op)
            else:
                self._complete(op, "info", step)

    def expire(self, step: int) -> None:
        """Give up on operations older than the timeout (their outcome becomes unknown)."""
        if not self.in_flight:
            return
        limit = step - self.timeout
        for op in self.busy:
            if op is not None and op.invoked < limit:
                if op.f == "read":
                    self._withdraw(op)
                else:
                    self._complete(op, "info", step)

    def finish(self, step: int) -> None:
        """Close every open operation as unknown."""
        for op in list(self.open.values()):
            self._complete(op, "info", step)

    # -- helpers -------------------------------------------------------------

    def _targets(
        self, p: int, nodes: Mapping[str, SimNode], up: Sequence[str]
    ) -> Iterator[SimNode]:
        """Yield the node to try first (mostly the last leader this process heard of,
        else a random node), then, once, the node a NOT_LEADER answer pointed to."""
        hint = self.hint[p] if p < self.processes else ""
        first = nodes[hint] if hint in up and self.rng.random() < 0.8 else None
        if first is None:
            first = nodes[self.rng.choice(up)]
        yield first
        redirect = self.hint[p] if p < self.processes else ""  # set by a refusal
        if redirect and redirect != first.id and redirect in up:
            yield nodes[redirect]

    def _invoke(self, op: Op) -> None:
        if op.recorded:
            return
        op.recorded = True
        if op.process < self.processes:
            self.busy[op.process] = op
            self.in_flight += 1
        op.event = len(self.events)
        self.events.append(Event(op.process, "invoke", op.f, op.key, op.value, time=op.invoked))

    def _complete(self, op: Op, outcome: str, step: int, read: Any = None) -> None:
        op.done = True
        self.open.pop(op.op_id, None)
        if op.process < self.processes and self.busy[op.process] is op:
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
