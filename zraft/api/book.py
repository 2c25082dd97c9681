"""The request book: every client request a node holds, until it is answered exactly once.

Pure bookkeeping with no I/O and no call into the core. The shell
(``zraft/node/shell.py``) asks it what to do with a request (``route_write``),
tells it what happened (``proposed``, ``forwarded``, ``applied``,
``read_state``, ``leader_changed``, ``expire``) and sends the ``Reply`` values
it collects (``take_replies``). Reads are served from the ``Replica`` once it
has applied up to their read index (thesis §6.4); a write is answered only
after its entry is committed *and* applied (ARCHITECTURE.md "Safety rules").

Every request held here has a deadline; ``expire`` answers the late ones, so
nothing waits forever.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from zraft.api import codes
from zraft.api.routes import Pending, Reply, Request, Route
from zraft.core import ReadContext, ReadPurpose
from zraft.plugins import CommandTable
from zraft.replica import Replica
from zraft.statemachine import CommandError, Outcome


@dataclass(frozen=True, slots=True)
class Leadership:
    """What the book needs to know of the node's Raft state (from the core's status)."""

    leading: bool
    term: int
    leader_id: str  # "" when no leader is known
    leader_client: str | None  # the leader's client endpoint, for NOT_LEADER hints
    accepting: bool = True  # False while a leader hands leadership over


class WriteStep(enum.Enum):
    """What the shell should do with a write (``RequestBook.route_write``)."""

    PROPOSE = "propose"  # this node leads: encode and propose it
    FORWARD = "forward"  # send it to the leader (then ``forwarded``)
    ANSWERED = "answered"  # refused; the reply is queued
    PARKED = "parked"  # waits for a leader


class RequestBook:
    """Pending writes, forwards, reads and parked requests of one node (driver thread only).

    ``unsafe`` holds the test-only negative controls ``local_reads`` (serve
    reads without ReadIndex) and ``ack_before_commit`` (answer a write once
    proposed); empty in production (zraft/unsafe.py).
    """

    def __init__(
        self,
        commands: CommandTable,
        replica: Replica,
        *,
        timeout_s: float,
        max_pending: int,
        unsafe: frozenset[str] = frozenset(),
    ) -> None:
        self.commands = commands
        self.replica = replica
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self.unsafe = unsafe
        self.writes: dict[int, Pending] = {}  # log index -> proposed write
        self.forwards: dict[int, Pending] = {}  # forward id -> write sent to the leader
        self.waiting: list[Pending] = []  # for a leader
        self.batch: list[Pending] = []  # reads of this round, confirmed by one ReadIndex
        self.reads: dict[int, list[Pending]] = {}  # ReadIndex seq -> reads
        self.parked: list[tuple[int, list[Pending]]] = []  # (read index, reads) to apply
        self._replies: list[Reply] = []
        self.lost = 0  # writes whose index got another term's entry (counted by the shell)
        self.timed_out = 0  # writes not committed before their deadline
        self._next_fwd = 1
        self._next_read = 1

    # -- intake -------------------------------------------------------------

    def admit(self, route: Route, req: Request, now: float) -> Pending | None:
        """Validate ``req`` against the declared commands; None when refused (reply queued)."""
        route.rid = req.id
        try:
            command = self.commands.validate(req.command)
        except CommandError as exc:
            self.answer(route, Outcome.error(exc.code, exc.message))
            return None
        route.command = command["cmd"]
        spec = self.commands.get(route.command)
        assert spec is not None  # validate() refuses undeclared commands
        req = Request(command, req.id, req.client, req.seq, req.stale, req.forward, req.fence)
        return Pending(route, req, now + self.timeout_s, spec.kind == "read")

    def add_read(self, p: Pending) -> None:
        """Take a read: served at once when stale, else in this round's ReadIndex batch."""
        if p.request.stale or "local_reads" in self.unsafe:  # the latter: a negative control
            self._serve(p)
        else:
            self.batch.append(p)

    def route_write(self, p: Pending, lead: Leadership) -> WriteStep:
        """Decide what happens to a write now (a reply is queued when it is refused)."""
        r, route = p.request, p.route
        if lead.leading and lead.accepting:
            if r.fence and r.fence != lead.term:
                # Entries of one term precede every entry of later terms in the log, so
                # a write proposed only in the fence's term can never land after a
                # later leader's writes (the fencing token of a leader payload).
                msg = f"write fenced to term {r.fence}; the leader is in term {lead.term}"
                self.answer(route, Outcome.error(codes.FENCED, msg))
                return WriteStep.ANSWERED
            if len(self.writes) >= self.max_pending:
                self.answer(
                    route, Outcome.error(codes.OVERLOADED, "too many writes pending; retry")
                )
                return WriteStep.ANSWERED
            return WriteStep.PROPOSE
        if route.peer and not lead.leading:
            # Never forward twice: the follower that asked relays this to its client.
            self.answer(route, Outcome.error(codes.NOT_LEADER, "leadership moved; retry"))
            return WriteStep.ANSWERED
        if not lead.leader_id or lead.leading:
            self.waiting.append(p)  # no leader, or this leader is handing over
            return WriteStep.PARKED
        if not r.forward:
            msg = f"writes go to the leader {lead.leader_id}"
            extra = {"leader_client": lead.leader_client}
            self.answer(route, Outcome.error(codes.NOT_LEADER, msg), extra)
            return WriteStep.ANSWERED
        return WriteStep.FORWARD

    def proposed(self, p: Pending, index: int, term: int) -> None:
        """Record that ``p`` went into the log at (index, term)."""
        p.index, p.term = index, term
        if "ack_before_commit" in self.unsafe:  # negative control: acknowledged, not committed
            self._replies.append(Reply(p.route, Outcome.success(True), index=index, term=term))
            return
        older = self.writes.get(index)
        if older is not None:  # our earlier entry at this index was overwritten: lost
            self.lost += 1
            msg = "leadership changed before the write committed; retry"
            self.answer(older.route, Outcome.error(codes.NOT_LEADER, msg))
        self.writes[index] = p

    def next_forward_id(self) -> int:
        """Return a fresh id for a forward (``forwarded`` records it once sent)."""
        self._next_fwd += 1
        return self._next_fwd - 1

    def forwarded(self, p: Pending, fwd_id: int) -> None:
        """Record that ``p`` was sent to the leader under ``fwd_id``."""
        self.forwards[fwd_id] = p

    def park(self, p: Pending) -> None:
        """Hold ``p`` until a leader is known (then ``leader_changed`` hands it back)."""
        self.waiting.append(p)

    # -- outcomes -----------------------------------------------------------

    def applied(self, index: int, term: int, outcome: Outcome | None) -> None:
        """Answer the write proposed at ``index``: its outcome, or lost if another term landed."""
        p = self.writes.pop(index, None)
        if p is None:
            return
        if p.term != term:
            self.lost += 1
            msg = "leadership changed before the write committed; retry"
            self.answer(p.route, Outcome.error(codes.NOT_LEADER, msg))
        elif outcome is not None:
            self._replies.append(Reply(p.route, outcome, index=index, term=term))

    def installed(self, index: int) -> None:
        """A snapshot up to ``index`` replaced the log: answer the writes it covers.

        Their entries were never applied here one by one, so whether each got in
        is unknown; the client retries with the same (client, seq), which the
        session table in the snapshot answers from its cache if it did.
        """
        for i in [i for i in self.writes if i <= index]:
            msg = (
                "a snapshot from the leader replaced this node's log before the write was "
                "applied here; the outcome is unknown: retry with the same client and seq"
            )
            self.answer(self.writes.pop(i).route, Outcome.error(codes.TIMEOUT, msg))
        self.served_applied()

    def served_applied(self) -> None:
        """Serve the parked reads whose read index the replica has reached."""
        if not self.parked:
            return
        applied, keep = self.replica.applied_index, []
        for index, batch in self.parked:
            if index <= applied:
                for p in batch:
                    self._serve(p)
            else:
                keep.append((index, batch))
        self.parked = keep

    def forward_answered(
        self, fwd_id: int, outcome: Outcome, extra: dict[str, Any], by: str
    ) -> None:
        """Relay the leader's answer to a forwarded write to our own client."""
        p = self.forwards.pop(fwd_id, None)
        if p is not None:
            self._replies.append(Reply(p.route, outcome, extra, served_by=by, relayed=True))

    # -- linearizable reads (thesis §6.4) ------------------------------------

    def read_batch(self) -> ReadContext | None:
        """Close this round's reads into one ReadIndex request; return its context (or None)."""
        if not self.batch:
            return None
        ctx = ReadContext(ReadPurpose.CLIENT, self._next_read)
        self._next_read += 1
        self.reads[ctx.seq], self.batch = self.batch, []
        return ctx

    def read_refused(self, ctx: ReadContext) -> None:
        """The core could not take the ReadIndex request (no leader): wait for one."""
        self.waiting.extend(self.reads.pop(ctx.seq, []))

    def read_state(self, ctx: ReadContext, index: int, rejected: bool) -> None:
        """A ReadIndex answer: serve the batch once applied up to ``index``."""
        batch = self.reads.pop(ctx.seq, None)
        if batch is None:
            return
        if rejected:
            self.waiting.extend(batch)  # retried once a leader is known again
        elif index <= self.replica.applied_index:  # entries of this same Ready count
            for p in batch:
                self._serve(p)
        else:
            self.parked.append((index, batch))

    def _serve(self, p: Pending) -> None:
        self._replies.append(Reply(p.route, self.replica.query(p.request.command)))

    # -- leadership and time --------------------------------------------------

    def take_waiting(self) -> list[Pending]:
        """Return (and forget) the requests parked for a leader, to route them again."""
        waiting, self.waiting = self.waiting, []
        return waiting

    def expire(self, now: float) -> None:
        """Answer every request whose deadline has passed, saying what is known of it."""
        for i in [i for i, p in self.writes.items() if p.deadline <= now]:
            msg = (
                "not committed in time; the outcome is unknown: retry with the same client and seq"
            )
            self.timed_out += 1
            self.answer(self.writes.pop(i).route, Outcome.error(codes.TIMEOUT, msg))
        for f in [f for f, p in self.forwards.items() if p.deadline <= now]:
            msg = "the leader did not answer in time; the outcome is unknown"
            self.answer(self.forwards.pop(f).route, Outcome.error(codes.TIMEOUT, msg))
        keep = []
        for p in self.waiting:
            if p.deadline <= now:
                msg = "no leader was elected in time; retry"
                self.answer(p.route, Outcome.error(codes.NO_LEADER, msg))
            else:
                keep.append(p)
        self.waiting = keep
        for seq in [s for s, b in self.reads.items() if b and b[0].deadline <= now]:
            for p in self.reads.pop(seq):
                msg = "the read could not be confirmed in time"
                self.answer(p.route, Outcome.error(codes.TIMEOUT, msg))
        parked = []
        for index, batch in self.parked:
            if batch and batch[0].deadline <= now:
                for p in batch:
                    msg = f"this node did not apply up to {index} in time"
                    self.answer(p.route, Outcome.error(codes.TIMEOUT, msg))
            else:
                parked.append((index, batch))
        self.parked = parked

    def close(self, storage_failed: bool = False) -> None:
        """Answer everything held: the node is stopping.

        A proposed or forwarded write may still commit through the other
        nodes, so its client hears that the outcome is unknown; everything
        else never reached the log and may be retried elsewhere.
        """
        for p in list(self.writes.values()) + list(self.forwards.values()):
            msg = "the node is stopping; the outcome is unknown: retry with the same client and seq"
            self.answer(p.route, Outcome.error(codes.TIMEOUT, msg))
        held = self.waiting + self.batch
        for batch in self.reads.values():
            held += batch
        for _, batch in self.parked:
            held += batch
        for p in held:
            self.answer(
                p.route, Outcome.error(codes.SHUTTING_DOWN, "the node is stopping; retry elsewhere")
            )
        self.writes.clear()
        self.forwards.clear()
        self.waiting, self.batch, self.reads, self.parked = [], [], {}, []

    # -- replies ----------------------------------------------------------------

    def answer(self, route: Route, outcome: Outcome, extra: dict[str, Any] | None = None) -> None:
        """Queue a reply to ``route``."""
        self._replies.append(Reply(route, outcome, extra or {}))

    def take_replies(self) -> list[Reply]:
        """Return (and forget) the replies queued since the last call, in order."""
        if not self._replies:
            return []
        out, self._replies = self._replies, []
        return out

    def counts(self) -> tuple[int, int]:
        """Return (writes awaiting commit, reads awaiting a read index or apply)."""
        reads = sum(len(b) for b in self.reads.values()) + sum(len(b) for _, b in self.parked)
        return len(self.writes), reads
