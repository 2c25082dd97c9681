"""The driver: one thread, one poll loop, each Ready handled in order.

Per loop round: drain every readable socket (peers, clients), tick the core
when due, then handle Readys until there are none. Draining first is what
makes group commit work: every proposal that arrived in the round is made
durable by the same fsync (ARCHITECTURE.md "The one door").
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pluggy
import zmq
from prometheus_client import CollectorRegistry

from zraft.api import entries as payloads
from zraft.api import protocol as proto
from zraft.api.routes import PendingRequest, PendingWrite, Route
from zraft.api.server import ClientRequests
from zraft.api.sessions import Duplicate, Expired, SessionTable
from zraft.config import EnsembleConfig
from zraft.core import (
    CoreConfig,
    Entry,
    EntryKind,
    MsgType,
    NotLeader,
    ProposalDropped,
    Raft,
    RaftLog,
    Ready,
    Role,
    SoftState,
)
from zraft.core.progress import ProgressState
from zraft.metrics import Metrics
from zraft.nodestatus import NodeStatus
from zraft.payload.driver import Payloads
from zraft.plugins import CommandTable, PluginError, configure_plugins, make_plugin_manager
from zraft.statemachine import AppliedEntry, ApplyContext, CommandError
from zraft.storage import LogStorage, StorageError
from zraft.storage.unsafe import UnsafeWalStorage
from zraft.storage.wal import WalStorage
from zraft.transport.codec import DecodeError, Forward, ForwardReply, decode, encode
from zraft.transport.mesh import PeerMesh
from zraft.unsafe import CORE_SWITCHES

log = logging.getLogger("zraft.node")

UNKNOWN_PEER_LOG_INTERVAL_S = 10.0
CLOCK_MIN_INTERVAL_S = 0.05  # at most 20 clock entries per second for TTL expiry
STATUS_INTERVAL_S = 1.0  # STATUS= refresh (commit, applied) when systemd runs no watchdog


class Node(ClientRequests, NodeStatus):
    """One zraft node: storage, core, peer mesh, client endpoint and state machine.

    ``run()`` blocks on the calling thread until ``stop()`` (from any thread)
    or a fatal storage error. Several nodes may run in one process (tests):
    each has its own ZeroMQ context and metrics registry.
    """

    def __init__(
        self,
        config: EnsembleConfig,
        node_id: str,
        *,
        rng: random.Random | None = None,
        registry: CollectorRegistry | None = None,
        plugin_manager: pluggy.PluginManager | None = None,
        storage: LogStorage | None = None,
        unsafe: frozenset[str] = frozenset(),
    ) -> None:
        self.config = config
        self.unsafe = unsafe  # test-only negative controls (zraft/unsafe.py); empty in production
        self.id = node_id
        self.me = config.node(node_id)
        self.metrics = Metrics(registry)
        self.pm = plugin_manager or make_plugin_manager(config.plugins, payload=config.payload)
        configure_plugins(self.pm, config.plugins.settings, node_id)
        self.commands = CommandTable.from_plugins(self.pm)
        try:
            self.payloads = Payloads(config, node_id, self.pm, self.metrics, unsafe)
        except ValueError as exc:
            raise PluginError(str(exc)) from exc
        self._applied_batch: list[AppliedEntry] | None = [] if self.payloads.wants_applied else None
        self.sessions = SessionTable()
        if storage is None and unsafe & {"lazy_writes", "skip_fsync"}:
            storage = UnsafeWalStorage(
                Path(self.me.data_dir),
                segment_bytes=config.storage.segment_bytes,
                lazy_writes="lazy_writes" in unsafe,
                skip_fsync="skip_fsync" in unsafe,
            )
        self.storage = storage or WalStorage(
            Path(self.me.data_dir), segment_bytes=config.storage.segment_bytes
        )
        rec = self.storage.open()
        if rec.truncated_bytes:
            log.warning("WAL: truncated a torn tail of %d bytes", rec.truncated_bytes)
            self.metrics.wal_corrupt.inc(rec.truncated_bytes)
        rc = config.raft
        self.raft = Raft(
            CoreConfig(
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
            ),
            rng or random.Random(),
            rec.hard_state,
            RaftLog(rec.entries, rec.snapshot.index, rec.snapshot.term, rec.hard_state.commit),
        )
        self.tick_s = rc.tick_ms / 1000.0
        self.timeout_s = config.client.request_timeout_ms / 1000.0
        self.sm_time_ms = 0  # leader time of the last applied entry
        self.last_stamp_ms = 0  # leader: the last timestamp it stamped (kept monotonic)
        self.started = time.time()

        self.ctx = zmq.Context()
        self.mesh = PeerMesh(
            self.ctx, node_id, self.me.raft, config.peers_of(node_id), on_event=self._on_mesh_event
        )
        self.client_sock = self.ctx.socket(zmq.ROUTER)
        self.client_sock.setsockopt(zmq.LINGER, 0)
        self.client_sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        # A hard cap far above the polite limit: oversized frames get a clear
        # TOO_LARGE reply, absurd ones are dropped by libzmq before buffering.
        self.client_sock.setsockopt(zmq.MAXMSGSIZE, 4 * config.client.max_request_bytes + 4096)
        self.client_sock.bind(self.me.client)
        self.poller = zmq.Poller()
        self.poller.register(self.mesh.socket, zmq.POLLIN)
        self.poller.register(self.client_sock, zmq.POLLIN)

        peers = config.peers_of(node_id)
        self._sent_counters = {p: self.metrics.messages_sent.labels(p) for p in peers}
        self._recv_counters = {p: self.metrics.messages_received.labels(p) for p in peers}
        self._peer_rtt = {p: self.metrics.peer_rtt.labels(p) for p in peers}
        self._election_s = rc.election_timeout_ms / 1000.0
        self._follower_lag = {p: self.metrics.follower_lag.labels(p) for p in peers}
        self._request_counters: dict[tuple[str, str], Any] = {}
        self._duration = {
            k: self.metrics.client_request_duration.labels(k) for k in ("local", "relayed")
        }
        self.pending_writes: dict[int, PendingWrite] = {}
        self.forwards: dict[int, PendingRequest] = {}
        self.next_fwd_id = 1
        self.waiting_for_leader: list[PendingRequest] = []
        self.batch_reads: list[PendingRequest] = []
        self.reads: dict[bytes, list[PendingRequest]] = {}  # ReadIndex context -> reads
        self.parked_reads: list[tuple[int, list[PendingRequest]]] = []  # (read index, reads)
        # What the state machine holds: ahead of raft.log.applied while a Ready is
        # handled (the core learns of applied entries only at advance).
        self.applied_index = self.raft.log.applied
        self.unknown_peer_logged = -UNKNOWN_PEER_LOG_INTERVAL_S  # rate limit of that warning
        self.unknown_peer_suppressed = 0
        self.next_read_ctx = 1
        self.last_clock_proposal = 0.0
        self._stop_requested = False
        self._stop_deadline = 0.0
        self._handover_at = 0.0  # graceful stop: when leadership is handed over
        self._handed_over = False
        self.running = False
        self.fatal: BaseException | None = None
        # systemd: the daemon sets these (sd_notify, half of $WATCHDOG_USEC); the loop
        # sends READY=1 once it turns, STATUS= on changes, WATCHDOG=1 while it turns.
        self.notify: Callable[[str], Any] = lambda state: None
        self.watchdog_s = 0.0
        self._last_watchdog = 0.0
        self._last_status_line = ""
        self.loop_turned_at = 0.0  # monotonic time of the last loop round (/health)
        self.last_heard: dict[str, float] = {}  # peer -> monotonic time of its last message
        self._heartbeat_sent: dict[str, float] = {}  # peer -> when the last heartbeat left
        self._observe(SoftState("", Role.FOLLOWER, self.raft.term), first=True)

    # ------------------------------------------------------------------
    # the loop
    # ------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to stop gracefully (thread-safe). A leader hands over first."""
        self._stop_requested = True

    def run(self) -> None:
        """Run the event loop until stopped. Raises StorageError (fatal) after cleanup."""
        self.running = True
        log.info(
            "node %s: raft %s, client %s, term %d, log %d..%d, commit %d",
            self.id,
            self.me.raft,
            self.me.client,
            self.raft.term,
            self.raft.log.first_index(),
            self.raft.log.last_index(),
            self.raft.log.committed,
        )
        next_tick = time.monotonic() + self.tick_s
        self.payloads.start()
        self.loop_turned_at = time.monotonic()
        self.notify("READY=1\nSTATUS=" + self._status_line())
        try:
            while True:
                if self._stop_requested and self._ready_to_exit():
                    break
                timeout_ms = 0 if self.raft.has_ready() else (next_tick - time.monotonic()) * 1000
                events = dict(self.poller.poll(max(0, int(timeout_ms)) if timeout_ms > 0 else 0))
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
            self.metrics.loop_lag.observe(now - next_tick)
            # Tick by real time, so a stalled loop catches up (bounded).
            due = min(int((now - next_tick) / self.tick_s) + 1, 4 * self.raft.cfg.election_ticks)
            for _ in range(due):
                self.raft.tick()
            next_tick = max(next_tick + due * self.tick_s, now - self.tick_s)
            self._on_tick(now)
        if self.mesh.socket in events:
            self._drain_peers()
        if self.client_sock in events:
            self._drain_clients()
        self._flush_reads()
        for _ in range(64):
            if not self.raft.has_ready():
                break
            self._handle_ready(self.raft.ready())
        return next_tick

    def _ready_to_exit(self) -> bool:
        now = time.monotonic()
        if not self._stop_deadline:
            # A transfer's forced votes skip the followers' lease, so the leader
            # payload must be stopped before leadership moves (payload/fencing.py).
            self.payloads.revoke_leader(now)
            self._handover_at = now + self.config.payload.timeout_ms / 1000.0
            election_s = self.config.raft.election_timeout_ms / 1000.0
            self._stop_deadline = self._handover_at + 2 * election_s
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
            target = self._transfer_target()
            if not target:
                return True  # a follower, or the only voter: nobody to hand over to
            log.info("stopping: handing leadership to %s", target)
            self.raft.transfer_leader(target)
            return False
        return self.raft.role is not Role.LEADER or now >= self._stop_deadline

    def _transfer_target(self) -> str | None:
        if self.raft.role is not Role.LEADER or len(self.raft.voters) == 1:
            return None
        best = max(
            (p for p in self.raft.voters if p != self.id),
            key=lambda p: self.raft.progress[p].match_index,
        )
        return best

    def _shutdown(self) -> None:
        self.running = False
        self.payloads.shutdown(self.config.payload.timeout_ms / 1000.0)
        for route in [pw.route for pw in self.pending_writes.values()] + [
            p.route for p in self._all_parked()
        ]:
            self._reply_error(route, proto.SHUTTING_DOWN, "the node is stopping; retry elsewhere")
        self.pending_writes.clear()
        try:
            self.mesh.close()
            self.client_sock.close(linger=0)
            self.ctx.term()
        finally:
            self.storage.close()

    def _all_parked(self) -> list[PendingRequest]:
        out = list(self.forwards.values()) + self.waiting_for_leader + self.batch_reads
        for reads in self.reads.values():
            out += reads
        for _, reads in self.parked_reads:
            out += reads
        self.forwards.clear()
        self.waiting_for_leader = []
        self.batch_reads = []
        self.reads.clear()
        self.parked_reads = []
        return out

    # ------------------------------------------------------------------
    # Ready, in the documented order
    # ------------------------------------------------------------------

    def _handle_ready(self, rd: Ready) -> None:
        self._send_all(rd.early_messages)  # thesis §10.2.1: the leader's appends go first
        if rd.hard_state is not None or rd.entries:
            t0 = time.perf_counter()
            self.storage.append(rd.hard_state, rd.entries, sync=rd.must_sync)
            if rd.must_sync:
                self.metrics.wal_fsync.observe(time.perf_counter() - t0)
                self.metrics.wal_batch_entries.observe(len(rd.entries))
        self._send_all(rd.messages)
        if rd.committed_entries:
            self._apply(rd.committed_entries)
        for rs in rd.read_states:
            if not self.payloads.on_read_state(rs.context, rs.rejected):
                self._on_read_state(rs.index, rs.context, rs.rejected)
        if rd.soft_state is not None:
            self._observe(rd.soft_state)
        self.raft.advance(rd)
        m = self.metrics
        m.commit_index.set(self.raft.log.committed)
        m.applied_index.set(self.raft.log.applied)
        m.last_index.set(self.raft.log.last_index())
        m.proposals_pending.set(len(self.pending_writes))

    def _send_all(self, messages: tuple[Any, ...]) -> None:
        sent = self._sent_counters
        for msg in messages:
            if self.mesh.send(msg.dst, encode(msg)):
                sent[msg.dst].inc()
                if msg.type is MsgType.HEARTBEAT:
                    # Time the oldest unanswered heartbeat, so a follower that
                    # stalls shows its stall (unless it is older than an
                    # election timeout: that peer was away, not slow).
                    now, sent_at = time.monotonic(), self._heartbeat_sent.get(msg.dst)
                    if sent_at is None or now - sent_at > self._election_s:
                        self._heartbeat_sent[msg.dst] = now

    def _apply(self, entries: tuple[Entry, ...]) -> None:
        for e in entries:
            outcome: list[Any] | None = None
            if e.kind is EntryKind.NORMAL:
                outcome = self._apply_normal(e)
            pw = self.pending_writes.pop(e.index, None)
            if pw is not None:
                if pw.term != e.term:
                    self.metrics.proposals_failed.labels("lost").inc()
                    self._reply_error(
                        pw.route,
                        proto.NOT_LEADER,
                        "leadership changed before the write committed; retry",
                    )
                elif outcome is not None:
                    self._reply_outcome(pw.route, outcome)
        self.metrics.proposals_committed.inc(len(entries))
        self.metrics.proposals_applied.inc(len(entries))
        self.applied_index = entries[-1].index
        self.payloads.on_committed(entries[-1].index, entries[-1].term)
        if self._applied_batch:
            self.payloads.on_applied(self._applied_batch)
            self._applied_batch = []
        self._serve_parked_reads(self.applied_index)

    def _apply_normal(self, e: Entry) -> list[Any] | None:
        try:
            p = payloads.decode(e.data)
        except ValueError as exc:
            log.error(
                "entry %d (term %d) has a payload zraft cannot read: %s", e.index, e.term, exc
            )
            self.metrics.apply_errors.inc()
            return [False, proto.INTERNAL, f"unreadable entry: {exc}"]
        self.sm_time_ms = max(self.sm_time_ms, p.timestamp_ms)
        ctx = ApplyContext(e.index, e.term, self.sm_time_ms)
        if p.command is None:
            self.pm.hook.zraft_tick(ctx=ctx)
            return None
        if p.client:
            try:
                self.sessions.check(p.client, p.seq, ctx.timestamp_ms)
            except Duplicate as dup:
                return list(dup.reply)
            except Expired as exp:
                return [False, proto.SESSION_EXPIRED, str(exp)]
        outcome = self._call_state_machine("zraft_apply", p.command, ctx)
        if p.client:
            self.sessions.record(p.client, p.seq, outcome, ctx.timestamp_ms)
        if self._applied_batch is not None:
            ok = bool(outcome[0])
            result = outcome[1] if ok else {"code": outcome[1], "message": outcome[2]}
            self._applied_batch.append(
                AppliedEntry(e.index, e.term, ctx.timestamp_ms, p.command, ok, result)
            )
        return outcome

    def _call_state_machine(self, hook: str, command: dict[str, Any], ctx: Any) -> list[Any]:
        owner = self.commands.owner(command["cmd"])
        plugin = self.pm.get_plugin(owner) if owner else None
        if plugin is None:
            return [False, proto.BAD_REQUEST, f"no plugin serves {command['cmd']!r}"]
        try:
            return [True, getattr(plugin, hook)(command=command, ctx=ctx)]
        except CommandError as exc:
            return [False, exc.code, exc.message]
        except Exception as exc:  # a plugin bug must not kill the node
            log.exception("plugin %s failed in %s(%s)", owner, hook, command.get("cmd"))
            self.metrics.apply_errors.inc()
            return [False, proto.INTERNAL, f"{type(exc).__name__}: {exc}"]

    def _observe(self, soft: SoftState, first: bool = False) -> None:
        m = self.metrics
        prev = getattr(self, "_soft", None)
        self._soft = soft
        self.payloads.on_soft_state(soft.role, soft.term)
        if prev is not None and prev.role is Role.LEADER and soft.role is not Role.LEADER:
            self._observe_followers()  # no longer leader: the lag gauges go to 0
        m.term.set(soft.term)
        m.is_leader.set(1 if soft.role is Role.LEADER else 0)
        m.has_leader.set(1 if soft.leader_id else 0)
        if first:
            return
        if prev is None or soft.leader_id != prev.leader_id:
            if soft.leader_id:
                m.leader_changes.inc()
                log.info(
                    "term %d: leader is %s%s",
                    soft.term,
                    soft.leader_id,
                    " (this node)" if soft.leader_id == self.id else "",
                )
                self._retry_waiting()
            else:
                log.info("term %d: no leader (%s)", soft.term, soft.role.value)
            self._last_status_line = self._status_line()
            self.notify("STATUS=" + self._last_status_line)

    # ------------------------------------------------------------------
    # peers
    # ------------------------------------------------------------------

    def _on_mesh_event(self, event: str, who: str) -> None:
        if event == "dropped":
            self.metrics.messages_dropped.labels(who).inc()
        elif event == "unknown_peer":
            self.metrics.unknown_peer.inc()
            # After a peer reconnects (e.g. SIGSTOP/SIGCONT), frames still queued on its
            # old connection arrive under a generated identity: warn once per interval.
            now = time.monotonic()
            self.unknown_peer_suppressed += 1
            if now - self.unknown_peer_logged >= UNKNOWN_PEER_LOG_INTERVAL_S:
                log.warning(
                    "dropped %d frame(s) from unknown peer identities (last: %s)",
                    self.unknown_peer_suppressed,
                    who,
                )
                self.unknown_peer_logged, self.unknown_peer_suppressed = now, 0
        else:
            self.metrics.decode_errors.labels(who, event).inc()

    def _drain_peers(self) -> None:
        for peer, frame in self.mesh.recv():
            try:
                obj = decode(frame)
            except DecodeError as exc:
                self.metrics.decode_errors.labels(peer, exc.reason).inc()
                log.warning("dropped a bad frame from peer %s: %s", peer, exc)
                continue
            if isinstance(obj, Forward):
                route = Route(peer=peer, fwd_id=obj.fwd_id, started=time.monotonic())
                self._handle_request(route, obj.request, forwarded=True)
            elif isinstance(obj, ForwardReply):
                self._on_forward_reply(obj)
            elif obj.src != peer or obj.dst != self.id:
                self.metrics.decode_errors.labels(peer, "wrong_src").inc()
                log.warning(
                    "dropped a message from %s claiming src=%s dst=%s", peer, obj.src, obj.dst
                )
            else:
                self._recv_counters[peer].inc()
                now = self.last_heard[peer] = time.monotonic()
                if obj.type is MsgType.HEARTBEAT_RESP:
                    sent = self._heartbeat_sent.pop(peer, None)
                    if sent is not None:
                        self._peer_rtt[peer].observe(now - sent)
                self.raft.step(obj)

    def _on_tick(self, now: float) -> None:
        if self.raft.role is Role.LEADER and now - self.last_clock_proposal >= CLOCK_MIN_INTERVAL_S:
            deadlines = [d for d in self.pm.hook.zraft_next_deadline() if d is not None]
            wall_ms = int(time.time() * 1000)
            if deadlines and min(deadlines) <= wall_ms:
                self.last_clock_proposal = now
                self.last_stamp_ms = max(self.last_stamp_ms, self.sm_time_ms, wall_ms)
                try:
                    self.raft.propose(payloads.encode_clock(self.last_stamp_ms))
                except (NotLeader, ProposalDropped):
                    pass
        if self.waiting_for_leader and self.raft.leader_id and not self.raft.lead_transferee:
            # A leader is known and not handing over (e.g. a transfer timed out and this
            # node kept leading): requests parked meanwhile must not wait for a change.
            self._retry_waiting()
        self.payloads.on_tick(now, self.raft)
        self._expire(now)
        if self.raft.role is Role.LEADER:
            self._observe_followers()
        if now - self._last_watchdog >= (self.watchdog_s or STATUS_INTERVAL_S):
            # From the event loop itself: a loop that stops turning stops these,
            # and systemd restarts the node (WatchdogSec).
            self._last_watchdog = now
            line = self._status_line()
            ping = ["WATCHDOG=1"] if self.watchdog_s else []
            if line != self._last_status_line:
                self._last_status_line = line
                ping.append(f"STATUS={line}")
            if ping:
                self.notify("\n".join(ping))

    def _observe_followers(self) -> None:
        """Leader: how many entries each follower lacks (0 on every other node)."""
        r = self.raft
        last = r.log.last_index()
        for peer, gauge in self._follower_lag.items():
            progress = r.progress.get(peer) if r.role is Role.LEADER else None
            if progress is None:
                gauge.set(0)
            elif progress.match_index or progress.state is not ProgressState.PROBE:
                # A new leader knows a follower's match only once it has answered:
                # until then the gauge keeps its last value rather than the whole log.
                gauge.set(max(0, last - progress.match_index))
