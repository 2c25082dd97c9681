"""The node's logic without I/O: the only caller of the core's door, and the one Ready loop.

``Shell`` joins the pure pieces: the core (``zraft.core.Raft``), the
replicated state (``zraft.replica.Replica``) and the request book
(``zraft.api.book.RequestBook``). It handles every Ready in the order
ARCHITECTURE.md fixes ("The one door"):

0. send the leader's early messages (thesis §10.2.1),
1. switch in a received snapshot, then persist hard state and entries
   (fsync when the Ready says so),
2. send the other messages,
3. apply committed entries, answer the writes they complete and the reads
   now applied far enough, and hand read states to their owners,
4. observe the soft state,
5. advance.

What touches the world goes through ``Io``: the real node (``loop.py``)
writes the WAL and uses sockets; the deterministic simulation
(``tests/sim``) uses memory and a simulated network. Both drive this same
code, so the simulation exercises the real request, session and apply logic.
Time comes in as arguments (``now`` in seconds, ``wall_ms`` for leader
stamps); the shell reads no clock.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from zraft.api import codes, forwarding
from zraft.api.book import Leadership, RequestBook, WriteStep
from zraft.api.routes import Pending, Reply, Request, Route
from zraft.core import (
    Entry,
    HardState,
    Message,
    NotLeader,
    ProposalDropped,
    Raft,
    RaftStatus,
    ReadContext,
    ReadPurpose,
    ReadState,
    Ready,
    Role,
    SnapshotMeta,
    SoftState,
)
from zraft.replica import Replica
from zraft.statemachine import Outcome

log = logging.getLogger("zraft.node")

CLOCK_MIN_INTERVAL_S = 0.05  # at most 20 clock entries per second for TTL expiry
MAX_READYS_PER_ROUND = 64


class Io(Protocol):
    """What the shell asks of the world, in Ready order. Called on the driver thread only."""

    def install(self, meta: SnapshotMeta) -> None:
        """Switch in the received snapshot ``meta`` (state and log), durably; raises on failure."""

    def persist(self, hard_state: HardState | None, entries: tuple[Entry, ...], sync: bool) -> None:
        """Write hard state and entries; fsync when ``sync``. Raises on a storage failure."""

    def send(self, messages: tuple[Message, ...]) -> None:
        """Hand messages to the network (they may be lost)."""

    def forward(self, leader: str, fwd_id: int, data: bytes) -> bool:
        """Send a forwarded request to ``leader``; False when it could not go out."""

    def reply(self, reply: Reply) -> None:
        """Deliver a reply: to a local client, or back to the follower that forwarded it."""

    def on_applied(self, entries: tuple[Entry, ...]) -> None:
        """Observe entries applied (metrics, payload observers)."""

    def lease_read(self, rs: ReadState) -> None:
        """Take the answer to a lease probe (a ReadIndex round of purpose ``LEASE``)."""

    def observe(self, soft: SoftState, previous: SoftState) -> None:
        """Observe a change of role, term or leader."""


class Shell:
    """One node's core, replicated state and request book, driven in Ready order.

    ``clients`` maps every member's id to its client endpoint (for the
    leader hint in NOT_LEADER replies).
    """

    def __init__(
        self,
        raft: Raft,
        replica: Replica,
        book: RequestBook,
        io: Io,
        clients: Mapping[str, str],
    ) -> None:
        self.raft = raft
        self.replica = replica
        self.book = book
        self.io = io
        self.clients = dict(clients)
        self.soft = SoftState("", Role.FOLLOWER, raft.term)
        self._last_clock = -1e18
        self._wall_ms = 0  # the latest wall time given to an input (leader stamps)
        self._leader_found = False  # retry parked requests once the Ready is advanced

    # -- inputs -------------------------------------------------------------

    def tick(self, ticks: int, now: float, wall_ms: int) -> None:
        """Let ``ticks`` ticks pass, then do what is due: clock entries, retries, expiry."""
        raft = self.raft
        self._wall_ms = wall_ms
        for _ in range(ticks):
            raft.tick()
        if raft.role is Role.LEADER and now - self._last_clock >= CLOCK_MIN_INTERVAL_S:
            data = self.replica.clock_data(wall_ms)
            if data is not None:
                self._last_clock = now
                try:
                    raft.propose(data)
                except (NotLeader, ProposalDropped):
                    pass
        if self.book.waiting and raft.leader_id and self._accepting():
            # A leader is known and not handing over (e.g. a transfer timed out and
            # this node kept leading): requests parked meanwhile must not wait longer.
            self._retry_waiting()
        self.book.expire(now)
        self._deliver()

    def step(self, msg: Message) -> None:
        """Hand a peer's message (already checked: src is the sending peer) to the core."""
        self.raft.step(msg)

    def submit(self, route: Route, req: Request, now: float, wall_ms: int) -> None:
        """Take a client request (local, or forwarded when ``route.peer`` is set)."""
        self._wall_ms = wall_ms
        p = self.book.admit(route, req, now)
        if p is not None:
            if p.read:
                self.book.add_read(p)
            else:
                self._write(p)
        self._deliver()

    def forwarded(self, peer: str, fwd_id: int, data: bytes, now: float, wall_ms: int) -> bool:
        """Take a write a follower forwarded; False (nothing answered) when malformed."""
        try:
            req = forwarding.decode_request(data)
        except forwarding.ForwardError:
            return False
        self.submit(Route(peer=peer, fwd_id=fwd_id, started=now), req, now, wall_ms)
        return True

    def forward_answered(self, fwd_id: int, data: bytes) -> bool:
        """Take the leader's answer to a write we forwarded; False when malformed."""
        try:
            outcome, extra, by = forwarding.decode_reply(data)
        except forwarding.ForwardError:
            return False
        self.book.forward_answered(fwd_id, outcome, extra, by)
        self._deliver()
        return True

    def probe_lease(self, ctx: ReadContext) -> bool:
        """Start a ReadIndex round for a leader-payload lease; False when not leading."""
        try:
            self.raft.read_index(ctx)
        except NotLeader:
            return False
        return True

    def transfer_leader(self, target: str) -> None:
        """Hand leadership to ``target`` (thesis §3.10); raises NotLeader."""
        self.raft.transfer_leader(target)

    def compact(self, index: int) -> SnapshotMeta:
        """Compact the core's log up to ``index`` (a durable snapshot holds it)."""
        return self.raft.compact(index)

    def term_at(self, index: int) -> int | None:
        """Return the term of the log entry at ``index`` (None when not held)."""
        return self.raft.term_at(index)

    def report_snapshot(self, peer: str, index: int, ok: bool) -> None:
        """Tell the core how streaming snapshot ``index`` to ``peer`` ended."""
        self.raft.report_snapshot(peer, index, ok)

    def transfer_target(self) -> str:
        """Return the best voter to hand leadership to ("" when none or not leading)."""
        return self.raft.transfer_target()

    def close(self) -> None:
        """Answer every request still held (the node is stopping)."""
        self.book.close()
        self._deliver()

    # -- outputs ----------------------------------------------------------

    def status(self) -> RaftStatus:
        """Return the core's status value."""
        return self.raft.status()

    def has_work(self) -> bool:
        """Tell whether ``process`` has something to do now."""
        return bool(self.book.batch) or self.raft.has_ready()

    def process(self) -> None:
        """Send this round's reads as one ReadIndex, then handle Readys until none is left."""
        ctx = self.book.read_batch()
        if ctx is not None:
            try:
                self.raft.read_index(ctx)  # one ReadIndex round for every read of this round
            except NotLeader:
                self.book.read_refused(ctx)
        raft = self.raft
        for _ in range(MAX_READYS_PER_ROUND):
            if not raft.has_ready():
                break
            self.handle_ready(raft.ready())
        self._deliver()

    def handle_ready(self, rd: Ready) -> None:
        """Handle one Ready in the documented order (module docstring), then advance."""
        io = self.io
        if rd.early_messages:
            io.send(rd.early_messages)  # thesis §10.2.1: the leader's appends go first
        if rd.snapshot is not None:
            io.install(rd.snapshot)  # before anything after it is persisted (Raft §7)
            self.book.installed(rd.snapshot.index)
        if rd.hard_state is not None or rd.entries:
            io.persist(rd.hard_state, rd.entries, rd.must_sync)
        if rd.messages:
            io.send(rd.messages)
        if rd.committed_entries:
            book, replica = self.book, self.replica
            for e in rd.committed_entries:
                book.applied(e.index, e.term, replica.apply(e))
            book.served_applied()
            io.on_applied(rd.committed_entries)
        for rs in rd.read_states:
            if rs.context.purpose is ReadPurpose.CLIENT:
                self.book.read_state(rs.context, rs.index, rs.rejected)
            else:
                io.lease_read(rs)
        if rd.soft_state is not None:
            self._observe(rd.soft_state)
        self.raft.advance(rd)
        if self._leader_found:  # proposals wait until the Ready is advanced
            self._leader_found = False
            self._retry_waiting()

    # -- internals ----------------------------------------------------------

    def _observe(self, soft: SoftState) -> None:
        previous, self.soft = self.soft, soft
        self.io.observe(soft, previous)
        if soft.leader_id and soft.leader_id != previous.leader_id:
            self._leader_found = True

    def _accepting(self) -> bool:
        return self.raft.role is not Role.LEADER or not self.raft.transferring

    def _leadership(self) -> Leadership:
        raft = self.raft
        leading = raft.role is Role.LEADER
        return Leadership(
            leading,
            raft.term,
            raft.leader_id,
            self.clients.get(raft.leader_id),
            accepting=not leading or self._accepting(),
        )

    def _write(self, p: Pending) -> None:
        step = self.book.route_write(p, self._leadership())
        if step is WriteStep.PROPOSE:
            r = p.request
            data = self.replica.command_data(self._wall_ms, r.client, r.seq, r.command)
            try:
                index, term = self.raft.propose(data)
            except (NotLeader, ProposalDropped):
                self.book.park(p)
                return
            self.book.proposed(p, index, term)
        elif step is WriteStep.FORWARD:
            fwd_id = self.book.next_forward_id()
            data = forwarding.encode_request(p.request)
            if self.io.forward(self.raft.leader_id, fwd_id, data):
                self.book.forwarded(p, fwd_id)
            else:
                self.book.park(p)

    def _retry_waiting(self) -> None:
        for p in self.book.take_waiting():
            if p.read:
                self.book.batch.append(p)
                continue
            try:
                self._write(p)
            except Exception:  # a bug serving one request fails that request, never the node
                log.exception("internal error while retrying a client request")
                msg = "internal error (logged); the write was not proposed"
                self.book.answer(p.route, Outcome.error(codes.INTERNAL, msg))

    def _deliver(self) -> None:
        for reply in self.book.take_replies():
            self.io.reply(reply)
