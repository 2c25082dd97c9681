"""The node's I/O: one thread, one poll loop, the clock turned into ticks.

Per loop round: the ticks owed, then drain every readable socket (peers,
clients), then let the shell handle Readys until there are none. Draining
first is what makes group commit work: every proposal that arrived in the
round is made durable by the same fsync (ARCHITECTURE.md "The one door").
``Node`` is the shell's ``Io``: it writes the WAL, moves frames, feeds the
metrics and the payloads, and publishes a ``NodeView`` every tick.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
from prometheus_client import CollectorRegistry

from zraft.api import codes, forwarding
from zraft.api.book import RequestBook
from zraft.api.endpoint import NativeEndpoint
from zraft.api.routes import Reply, Request, Route
from zraft.config import EnsembleConfig
from zraft.core import (
    CoreConfig,
    Entry,
    HardState,
    Message,
    MsgType,
    Raft,
    ReadState,
    Role,
    SnapshotMeta,
    SoftState,
)
from zraft.metrics import Metrics
from zraft.node.admin import Admin
from zraft.node.observer import Observer
from zraft.node.shell import Shell
from zraft.node.snapshots import Snapshots, open_state, snapshot_dir
from zraft.payload.driver import Payloads
from zraft.plugins import PluginError, load_plugins
from zraft.replica import Replica
from zraft.snapshot.store import SnapshotStore
from zraft.statemachine import Outcome
from zraft.storage import LogStorage, StorageError
from zraft.storage.unsafe import open_wal
from zraft.transport import sockets
from zraft.transport.codec import (
    DecodeError,
    Forward,
    ForwardReply,
    SnapAck,
    SnapChunk,
    decode,
    encode,
)
from zraft.transport.mesh import PeerMesh
from zraft.unsafe import CORE_SWITCHES
from zraft.view import NodeView

log = logging.getLogger("zraft.node")

KNOWN_RESULTS = codes.ALL | {"ok"}  # result labels; other codes count as "other"
STATUS_INTERVAL_S = 1.0  # STATUS= refresh (commit, applied) when systemd runs no watchdog


class Node:
    """One zraft node: storage, core, peer mesh, client endpoint, state machine, payloads.

    ``run()`` blocks on the calling thread until ``stop()`` (from any thread)
    or a fatal storage error. Several nodes may run in one process (tests):
    each has its own ZeroMQ context and metrics registry. Construction is
    node start-up, in one place: plugins, payloads, storage recovery, core,
    replicated state, request book, sockets.
    """

    def __init__(
        self,
        config: EnsembleConfig,
        node_id: str,
        *,
        rng: random.Random | None = None,
        registry: CollectorRegistry | None = None,
        storage: LogStorage | None = None,
        unsafe: frozenset[str] = frozenset(),
    ) -> None:
        self.config, self.id, self.me = config, node_id, config.node(node_id)
        self.metrics = m = Metrics(registry)
        self.pm, commands = load_plugins(config, node_id)
        try:
            self.payloads = Payloads(config, node_id, self.pm, m, unsafe)
        except ValueError as exc:  # a leader payload that these timings cannot fence
            raise PluginError(str(exc)) from exc
        self.storage = storage or open_wal(
            Path(self.me.data_dir), config.storage.segment_bytes, unsafe
        )
        rec = self.storage.open()
        if rec.truncated_bytes:
            log.warning("WAL: truncated a torn tail of %d bytes", rec.truncated_bytes)
            m.wal_corrupt.inc(rec.truncated_bytes)
        rc = config.raft
        core = CoreConfig(
            id=node_id,
            voters=config.ids,
            election_ticks=rc.election_ticks,
            heartbeat_ticks=rc.heartbeat_ticks,
            pre_vote=rc.pre_vote,
            check_quorum=rc.check_quorum,
            max_entries_per_msg=rc.max_entries_per_append,
            max_bytes_per_msg=rc.max_bytes_per_append,
            max_inflight=rc.max_inflight_appends,
            unsafe=unsafe & CORE_SWITCHES,
        )
        self.replica = Replica(self.pm, commands, observe_applied=self.payloads.wants_applied)
        self.store = SnapshotStore(snapshot_dir(self.me.data_dir))
        try:
            restored = open_state(config, self.store, self.storage, rec, self.replica, m.snapshots)
        except BaseException:
            self.storage.close()
            raise
        raft = Raft(core, rng or random.Random(), rec.hard_state, restored.log)
        book = RequestBook(
            commands,
            self.replica,
            timeout_s=config.client.request_timeout_s,
            max_pending=config.client.max_pending,
            unsafe=unsafe,
        )
        clients = {n.id: n.client for n in config.nodes}
        self.shell = shell = Shell(raft, self.replica, book, self, clients)
        self.snapshots = Snapshots(
            config,
            node_id,
            self.store,
            self.storage,
            self.replica,
            m.snapshots,
            compact=shell.compact,
            term_at=shell.term_at,
            step_core=shell.step,
            report=shell.report_snapshot,
            send=lambda peer, frame: self.mesh.send(peer, frame),
            log_start=restored.log.snapshot_index,
            unsafe=unsafe,
        )
        self.admin = Admin(self.reply, self._build_view, self.replica, self.snapshots)
        self.started = time.time()
        self.ctx = sockets.context()
        peers = config.peers_of(node_id)
        self.observer = Observer(m, list(peers), rc.election_timeout_s)
        try:
            self.mesh = PeerMesh(
                self.ctx, node_id, self.me.raft, peers, on_event=self.observer.mesh_event
            )
            self.endpoint = NativeEndpoint(
                self.ctx, self.me.client, config.client.max_request_bytes
            )
        except BaseException:
            self.ctx.destroy(linger=0)
            self.storage.close()
            raise
        self.poller = zmq.Poller()
        self.poller.register(self.mesh.socket, zmq.POLLIN)
        self.poller.register(self.endpoint.socket, zmq.POLLIN)
        self._stop_requested = False
        self._stop_deadline = self._handover_at = 0.0
        self._handed_over = False
        self.running = False
        self.fatal: BaseException | None = None
        # systemd: the daemon sets these (sd_notify, a tenth of $WATCHDOG_USEC); the
        # loop sends READY=1 once it turns, STATUS= on changes, WATCHDOG=1 while it turns.
        self.notify: Callable[[str], Any] = lambda state: None
        self.watchdog_s = 0.0
        self._last_watchdog = 0.0
        self._last_status_line = ""
        self.loop_turned_at = time.monotonic()
        m.term.set(raft.term)
        self.view = self._build_view(time.monotonic())

    # -- life ----------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to stop gracefully (thread-safe). A leader hands over first."""
        self._stop_requested = True

    def health(self) -> tuple[bool, dict[str, Any]]:
        """``/health`` (any thread): is the event loop turning?"""
        return self.view.health(time.monotonic())

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """``/ready`` (any thread): can this node serve linearizable requests now?"""
        return self.view.ready(time.monotonic())

    def run(self) -> None:
        """Run the event loop until stopped. Raises StorageError (fatal) after cleanup."""
        self.running = True
        st = self.shell.status()
        log.info(
            "node %s: raft %s, client %s, term %d, log %d..%d, commit %d",
            self.id,
            self.me.raft,
            self.me.client,
            st.term,
            st.first_index,
            st.last_index,
            st.commit,
        )
        tick_s = self.config.raft.tick_s
        next_tick = time.monotonic() + tick_s
        self.payloads.start()
        self.loop_turned_at = time.monotonic()
        self.view = self._build_view(self.loop_turned_at)
        self.notify("READY=1\nSTATUS=" + self.view.status_line())
        try:
            while not (self._stop_requested and self._ready_to_exit()):
                busy = self.shell.has_work() or self.snapshots.busy()
                wait_ms = 0 if busy else (next_tick - time.monotonic()) * 1000
                events = dict(self.poller.poll(max(0, int(wait_ms))))
                next_tick = self._loop_round(events, next_tick)
        except StorageError as exc:
            # ARCHITECTURE.md: never continue after a failed write or fsync.
            log.critical("storage failed, stopping so that recovery starts from disk: %s", exc)
            self.fatal = exc
        finally:
            self._shutdown()
        if self.fatal is not None:
            raise self.fatal

    def _loop_round(self, events: dict[Any, int], next_tick: float) -> float:
        """Run one round after a poll: ticks owed, then what arrived, then Readys.

        Returns when the next tick is due. The ticks owed for the time the loop
        was blocked (a slow fsync, a pause, SIGSTOP) run *before* the messages
        that arrived meanwhile: a heartbeat handled after them restarts the
        election timer from real time, so this follower's leader lease (which
        fences leader payloads) lasts its full election timeout. Ticking after
        draining would age that fresh heartbeat by the whole stall.
        """
        now = self.loop_turned_at = time.monotonic()
        if now >= next_tick:
            tick_s = self.config.raft.tick_s
            self.metrics.loop_lag.observe(now - next_tick)
            # Tick by real time, so a stalled loop catches up (bounded).
            due = min(int((now - next_tick) / tick_s) + 1, 4 * self.config.raft.election_ticks)
            self.shell.tick(due, now, int(time.time() * 1000))
            next_tick = max(next_tick + due * tick_s, now - tick_s)
            self._on_tick(now)
        if self.mesh.socket in events:
            self._drain_peers(now)
        if self.endpoint.socket in events:
            self._drain_clients(now)
        self.shell.process()
        st = self.shell.soft
        self.snapshots.round(now, st.role, st.term)
        return next_tick

    def _ready_to_exit(self) -> bool:
        now = time.monotonic()
        if not self._stop_deadline:
            # A transfer's forced votes skip the followers' lease, so the leader
            # payload must be stopped before leadership moves (payload/fencing.py).
            self.payloads.revoke_leader(now)
            self._handover_at = now + self.config.payload.timeout_s
            self._stop_deadline = self._handover_at + 2 * self.config.raft.election_timeout_s
        if not self._handed_over:
            running = self.payloads.leader_payload_running()
            if running and now < self._handover_at:
                return False
            if running:
                log.warning(
                    "stopping: leader payload of %s has not returned; handing over anyway",
                    ", ".join(running),
                )
            self._handed_over = True
            target = self.shell.transfer_target()
            if not target:
                return True  # a follower, or the only voter: nobody to hand over to
            log.info("stopping: handing leadership to %s", target)
            self.shell.transfer_leader(target)
            return False
        return self.shell.status().role is not Role.LEADER or now >= self._stop_deadline

    def _shutdown(self) -> None:
        self.running = False
        self.view = self._build_view(time.monotonic())
        self.payloads.shutdown(self.config.payload.timeout_s)
        try:
            self.snapshots.close()
            self.shell.close()  # every held request gets its answer before the sockets go
            self.mesh.close()
            self.endpoint.close()
            self.ctx.term()
        finally:
            self.storage.close()

    # -- inputs ----------------------------------------------------------------

    def _drain_peers(self, now: float) -> None:
        wall_ms = int(time.time() * 1000)
        for peer, frame in self.mesh.recv():
            try:
                obj = decode(frame)
            except DecodeError as exc:
                self.metrics.decode_errors.labels(peer, exc.reason).inc()
                log.warning("dropped a bad frame from peer %s: %s", peer, exc)
                continue
            if isinstance(obj, SnapChunk | SnapAck):
                if isinstance(obj, SnapChunk):
                    self.snapshots.on_chunk(peer, obj, self.shell.soft.term, now)
                else:
                    self.snapshots.on_ack(peer, obj, now)
            elif isinstance(obj, Forward | ForwardReply):
                try:
                    if isinstance(obj, Forward):
                        ok = self.shell.forwarded(peer, obj.fwd_id, obj.request, now, wall_ms)
                    else:
                        ok = self.shell.forward_answered(obj.fwd_id, obj.reply)
                except StorageError:
                    raise
                except Exception:  # a peer's bad forward must never take the node down
                    log.exception("internal error while handling a forward from %s", peer)
                    ok = False
                if not ok:
                    kind = "bad_forward" if isinstance(obj, Forward) else "bad_forward_reply"
                    self.metrics.decode_errors.labels(peer, kind).inc()
            elif obj.src != peer or obj.dst != self.id:
                self.metrics.decode_errors.labels(peer, "wrong_src").inc()
                log.warning(
                    "dropped a message from %s claiming src=%s dst=%s", peer, obj.src, obj.dst
                )
            else:
                self.observer.heard(peer, now, obj.type is MsgType.HEARTBEAT_RESP)
                self.shell.step(obj)

    def _drain_clients(self, now: float) -> None:
        wall_ms = int(time.time() * 1000)
        for route, item in self.endpoint.receive(now):
            try:
                if isinstance(item, Reply):
                    self.reply(item)  # a request that could not be parsed
                elif not self._answer_node(route, item):  # not a node-local command
                    self.shell.submit(route, item, now, wall_ms)
            except StorageError:
                raise  # fatal for the node (ARCHITECTURE.md): systemd restarts it
            except Exception:
                # A bug while serving one request fails that request, never the node.
                log.exception("internal error while serving a client request")
                msg = "internal error (logged); a write's outcome is unknown"
                self.reply(Reply(route, Outcome.error(codes.INTERNAL, msg)))

    def _answer_node(self, route: Route, req: Request) -> bool:
        return self.admin.answer(route, req)  # status, ping, snapshot_take/read (admin.py)

    def _on_tick(self, now: float) -> None:
        st = self.shell.status()
        probe = self.payloads.on_tick(now, st)
        if probe is not None and self.shell.probe_lease(probe):
            self.payloads.probe_issued(probe, st.term, now)
        self.observer.tick(st, self.replica, self.shell.book)
        self.snapshots.expire(now)
        self.view = view = self._build_view(now, st)
        if now - self._last_watchdog >= (self.watchdog_s or STATUS_INTERVAL_S):
            # From the event loop itself: a loop that stops turning stops these,
            # and systemd restarts the node (WatchdogSec).
            self._last_watchdog = now
            line = view.status_line()
            ping = ["WATCHDOG=1"] if self.watchdog_s else []
            if line != self._last_status_line:
                self._last_status_line = line
                ping.append(f"STATUS={line}")
            if ping:
                self.notify("\n".join(ping))

    def _build_view(self, now: float, st: Any = None) -> NodeView:
        st = st or self.shell.status()
        leader_client = self.config.node(st.leader_id).client if st.leader_id else None
        return NodeView(
            at=now,
            raft=st,
            applied=self.replica.applied_index,
            ensemble=self.config.name,
            client=self.me.client,
            leader_client=leader_client,
            uptime_s=time.time() - self.started,
            running=self.running,
            stopping=self._stop_requested,
            loop_turned_at=self.loop_turned_at,
            loop_limit_s=max(5.0, 3 * self.config.raft.election_timeout_s),
            pending_writes=len(self.shell.book.writes),
            sessions=len(self.replica.sessions),
            last_contact_s=self.observer.last_contact(now),
            payloads=self.payloads.status(now),
            snapshot_index=self.snapshots.last_index,
            snapshot_failing=self.snapshots.failed_last,
        )

    # -- Io: what the shell asks of the world ------------------------------------

    def install(self, meta: SnapshotMeta) -> None:
        """Switch in the snapshot received from the leader (file, WAL, state machines)."""
        self.snapshots.install(meta)

    def persist(self, hard_state: HardState | None, entries: tuple[Entry, ...], sync: bool) -> None:
        """Write to the WAL (one write, at most one fsync: group commit)."""
        t0 = time.perf_counter()
        self.storage.append(hard_state, entries, sync=sync)
        if sync:
            self.metrics.wal_fsync.observe(time.perf_counter() - t0)
            self.metrics.wal_batch_entries.observe(len(entries))

    def send(self, messages: tuple[Message, ...]) -> None:
        """Encode and send Raft messages; time the oldest unanswered heartbeat per peer."""
        observer, sent, mesh = self.observer, self.observer.sent, self.mesh
        for msg in messages:
            if msg.type is MsgType.SNAPSHOT:  # stream a snapshot; never a wire message
                self.snapshots.request(msg, time.monotonic())
                continue
            if mesh.send(msg.dst, encode(msg)):
                sent[msg.dst].inc()
                if msg.type is MsgType.HEARTBEAT:
                    observer.heartbeat_sent(msg.dst, time.monotonic())

    def forward(self, leader: str, fwd_id: int, data: bytes) -> bool:
        """Send a client's write to the leader."""
        return self.mesh.send(leader, encode(Forward(fwd_id, data)))

    def reply(self, reply: Reply) -> None:
        """Answer a local client, or the follower that forwarded the request."""
        route, outcome = reply.route, reply.outcome
        result = "ok" if outcome.ok else outcome.code
        if result not in KNOWN_RESULTS:
            result = "other"  # a plugin's own code or a peer's: never an unbounded label
        if route.peer:
            self.observer.replied(route.command, result, None, False)
            data = forwarding.encode_reply(outcome, reply.extra, self.id)
            self.mesh.send(route.peer, encode(ForwardReply(route.fwd_id, data)))
            return
        waited = time.monotonic() - route.started
        # A relayed write was counted by the leader that served it: time it only.
        command = None if reply.relayed else route.command
        self.observer.replied(command, result, waited, reply.relayed)
        self.endpoint.send(reply, self.id, self.shell.soft.leader_id or None)

    def on_applied(self, entries: tuple[Entry, ...]) -> None:
        """Count applied entries and tell the payload observers."""
        self.observer.applied(len(entries))
        self.snapshots.on_applied(len(entries), sum(len(e.data) for e in entries))
        self.payloads.on_committed(entries[-1].index, entries[-1].term)
        applied = self.replica.take_applied()
        if applied:
            self.payloads.on_applied(applied)

    def lease_read(self, rs: ReadState) -> None:
        """Hand a lease probe's answer to the payload fence."""
        self.payloads.on_read_state(rs.context, rs.rejected)

    def observe(self, soft: SoftState, previous: SoftState) -> None:
        """Role, term or leader changed: metrics, payload gate, a log line, STATUS=."""
        self.payloads.on_soft_state(soft.role, soft.term)
        self.observer.role_changed(soft, previous)
        if soft.leader_id == previous.leader_id:
            return
        if soft.leader_id:
            me = " (this node)" if soft.leader_id == self.id else ""
            log.info("term %d: leader is %s%s", soft.term, soft.leader_id, me)
        else:
            log.info("term %d: no leader (%s)", soft.term, soft.role.value)
        self.view = self._build_view(time.monotonic())  # /ready sees a new leader at once
        self._last_status_line = self.view.status_line()
        self.notify("STATUS=" + self._last_status_line)
