"""The client endpoint's logic: requests, forwarding, linearizable reads, replies.

``ClientRequests`` is mixed into ``zraft.node.Node``; it runs on the driver
thread only. A request arrives from the client ROUTER or, forwarded by a
follower, from a peer; each one is answered exactly once through its
``Route``: with a result, or with a clear error (never left hanging: every
pending request has a deadline, swept on every tick).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import zmq

from zraft.api import entries as payloads
from zraft.api import protocol as proto
from zraft.api.routes import PendingRequest, PendingWrite, Route
from zraft.core import NotLeader, ProposalDropped, Role
from zraft.statemachine import CommandError, QueryContext
from zraft.storage import StorageError
from zraft.transport.codec import Forward, ForwardReply, encode

log = logging.getLogger("zraft.node")

MAX_CLIENT_BATCH = 4096  # client requests taken per loop round, so ticks are never starved
SNDMORE_NOBLOCK = zmq.SNDMORE | zmq.NOBLOCK


class ClientRequests:
    """Request handling for ``Node`` (a mixin: ``self`` is the Node)."""

    # ------------------------------------------------------------------
    # clients
    # ------------------------------------------------------------------

    def _drain_clients(self) -> None:
        sock = self.client_sock
        for _ in range(MAX_CLIENT_BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) < 2:
                continue  # a ROUTER always prepends the identity; nothing to answer
            route = Route(frames=frames[:-1], started=time.monotonic())
            self._handle_request(route, frames[-1])

    def _handle_request(self, route: Route, payload: bytes, forwarded: bool = False) -> None:
        """Serve one request; a bug while serving it fails that request, never the node."""
        try:
            self._dispatch_request(route, payload, forwarded)
        except StorageError:
            raise  # fatal for the node (ARCHITECTURE.md): systemd restarts it
        except Exception:
            log.exception("internal error while serving a client request")
            self._reply_error(
                route, proto.INTERNAL, "internal error (logged); a write's outcome is unknown"
            )

    def _dispatch_request(self, route: Route, payload: bytes, forwarded: bool) -> None:
        try:
            req = proto.parse_request(payload, self.config.client.max_request_bytes)
        except proto.RequestError as exc:
            self._reply_error(route, exc.code, exc.message)
            return
        route.rid = req.id
        name = route.command = req.command["cmd"]
        if name == "status":
            self._reply_ok(route, self.status(state_hash=req.command.get("hash") is True))
            return
        if name == "ping":
            self._reply_ok(route, "pong")
            return
        try:
            command = self.commands.validate(req.command)
        except CommandError as exc:
            self._reply_error(route, exc.code, exc.message)
            return
        spec = self.commands.get(name)
        assert spec is not None
        deadline = route.started + self.timeout_s
        pending = PendingRequest(route, payload, deadline, command, req.stale)
        if spec.kind == "read":
            if req.stale or "local_reads" in self.unsafe:  # the latter: a negative control
                self._serve_read(pending)
            else:
                self.batch_reads.append(pending)
            return
        if self.raft.role is Role.LEADER:
            self._propose(pending, req)
        elif forwarded:
            # Never forward twice: the follower that asked relays this to its client.
            self._reply_error(route, proto.NOT_LEADER, "leadership moved; retry")
        elif not self.raft.leader_id:
            self.waiting_for_leader.append(pending)
        elif not req.forward:
            leader = self.raft.leader_id
            self._reply_error(
                route,
                proto.NOT_LEADER,
                f"writes go to the leader {leader}",
                leader_client=self.config.node(leader).client,
            )
        else:
            self._forward(pending)

    def _propose(self, pending: PendingRequest, req: proto.Request) -> None:
        if req.fence and req.fence != self.raft.term:
            # Entries of one term precede every entry of later terms in the log, so
            # a write proposed only in the fence's term can never land after a
            # later leader's writes (the fencing token of a leader payload).
            self._reply_error(
                pending.route,
                proto.FENCED,
                f"write fenced to term {req.fence}; the leader is in term {self.raft.term}",
            )
            return
        if len(self.pending_writes) >= self.config.client.max_pending:
            self._reply_error(pending.route, proto.OVERLOADED, "too many writes pending; retry")
            return
        # Leader time, kept monotonic across our own proposals (TTL safety rule).
        self.last_stamp_ms = max(self.last_stamp_ms, self.sm_time_ms, int(time.time() * 1000))
        data = payloads.encode_command(self.last_stamp_ms, req.client, req.seq, pending.command)
        try:
            index, term = self.raft.propose(data)
        except (NotLeader, ProposalDropped):
            self.waiting_for_leader.append(pending)
            return
        if "ack_before_commit" in self.unsafe:  # negative control: acknowledged, not committed
            self._reply_ok(pending.route, True)
            return
        self.pending_writes[index] = PendingWrite(term, pending.route, pending.deadline)

    def _forward(self, pending: PendingRequest) -> None:
        fwd_id = self.next_fwd_id
        self.next_fwd_id += 1
        frame = encode(Forward(fwd_id, pending.payload))
        if self.mesh.send(self.raft.leader_id, frame):
            self.forwards[fwd_id] = pending
        else:
            self.waiting_for_leader.append(pending)

    def _on_forward_reply(self, fr: ForwardReply) -> None:
        pending = self.forwards.pop(fr.fwd_id, None)
        if pending is None:
            return
        try:
            body = json.loads(fr.reply)
            body["served_by"], body["node"] = body.get("node"), self.id
            reply = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        except (ValueError, TypeError, AttributeError):
            self.metrics.decode_errors.labels(self.raft.leader_id or "?", "bad_forward_reply").inc()
            reply = proto.reply_error(
                proto.INTERNAL,
                "the leader sent an unreadable reply",
                pending.route.rid,
                self.id,
                self.raft.leader_id or None,
            )
        self._send_to(pending.route, reply, relayed=True)

    def _retry_waiting(self) -> None:
        waiting, self.waiting_for_leader = self.waiting_for_leader, []
        for p in waiting:
            if p.command and self.commands.get(p.command["cmd"]).kind == "read":  # type: ignore[union-attr]
                self.batch_reads.append(p)
            else:
                self._handle_request(p.route, p.payload, forwarded=p.route.peer != "")

    # -- linearizable reads (thesis §6.4) ---------------------------------

    def _flush_reads(self) -> None:
        if not self.batch_reads:
            return
        ctx = self.next_read_ctx.to_bytes(8, "big")
        self.next_read_ctx += 1
        batch, self.batch_reads = self.batch_reads, []
        try:
            self.raft.read_index(ctx)  # one ReadIndex round for every read of this loop round
        except NotLeader:
            self.waiting_for_leader.extend(batch)
            return
        self.reads[ctx] = batch
        self.metrics.reads_pending.set(sum(len(b) for b in self.reads.values()))

    def _on_read_state(self, index: int, ctx: bytes, rejected: bool) -> None:
        batch = self.reads.pop(ctx, None)
        if batch is None:
            return
        if rejected:
            self.waiting_for_leader.extend(batch)  # retried once a leader is known again
        elif index <= self.applied_index:  # entries of this same Ready count
            for p in batch:
                self._serve_read(p)
        else:
            self.parked_reads.append((index, batch))

    def _serve_parked_reads(self, applied: int) -> None:
        if not self.parked_reads:
            return
        keep = []
        for index, batch in self.parked_reads:
            if index <= applied:
                for p in batch:
                    self._serve_read(p)
            else:
                keep.append((index, batch))
        self.parked_reads = keep

    def _serve_read(self, p: PendingRequest) -> None:
        ctx = QueryContext(self.applied_index, self.sm_time_ms)
        self._reply_outcome(p.route, self._call_state_machine("zraft_query", p.command, ctx))

    # -- timers -----------------------------------------------------------

    def _expire(self, now: float) -> None:
        late = [i for i, pw in self.pending_writes.items() if pw.deadline <= now]
        for i in late:
            pw = self.pending_writes.pop(i)
            self.metrics.proposals_failed.labels("timeout").inc()
            self._reply_error(
                pw.route,
                proto.TIMEOUT,
                "not committed in time; the outcome is unknown: retry with the same client and seq",
            )
        for fid in [f for f, p in self.forwards.items() if p.deadline <= now]:
            self._reply_error(
                self.forwards.pop(fid).route,
                proto.TIMEOUT,
                "the leader did not answer in time; the outcome is unknown",
            )
        keep = []
        for p in self.waiting_for_leader:
            if p.deadline <= now:
                self._reply_error(p.route, proto.NO_LEADER, "no leader was elected in time; retry")
            else:
                keep.append(p)
        self.waiting_for_leader = keep
        for ctx in list(self.reads):
            batch = self.reads[ctx]
            if batch and batch[0].deadline <= now:
                del self.reads[ctx]
                for p in batch:
                    self._reply_error(
                        p.route, proto.TIMEOUT, "the read could not be confirmed in time"
                    )
        parked = []
        for index, batch in self.parked_reads:
            if batch and batch[0].deadline <= now:
                for p in batch:
                    self._reply_error(
                        p.route, proto.TIMEOUT, f"this node did not apply up to {index} in time"
                    )
            else:
                parked.append((index, batch))
        self.parked_reads = parked

    # ------------------------------------------------------------------
    # replies
    # ------------------------------------------------------------------

    def _reply_outcome(self, route: Route, outcome: list[Any]) -> None:
        if outcome[0]:
            self._reply_ok(route, outcome[1])
        else:
            self._reply_error(route, outcome[1], outcome[2])

    def _count_request(self, command: str, result: str) -> None:
        key = (command, result)
        child = self._request_counters.get(key)
        if child is None:
            child = self._request_counters[key] = self.metrics.client_requests.labels(*key)
        child.inc()

    def _reply_ok(self, route: Route, result: Any) -> None:
        self._count_request(route.command, "ok")
        self._send_to(
            route, proto.reply_ok(result, route.rid, self.id, self.raft.leader_id or None)
        )

    def _reply_error(self, route: Route, code: str, message: str, **extra: Any) -> None:
        self._count_request(route.command, code)
        body = proto.reply_error(
            code, message, route.rid, self.id, self.raft.leader_id or None, **extra
        )
        self._send_to(route, body)

    def _send_to(self, route: Route, body: bytes, relayed: bool = False) -> None:
        if route.frames is not None:
            if route.started:
                self._duration["relayed" if relayed else "local"].observe(
                    time.monotonic() - route.started
                )
            sock = self.client_sock
            try:
                # Frame by frame: send_multipart's per-frame checks cost 3x here.
                for frame in route.frames:
                    sock.send(frame, SNDMORE_NOBLOCK)
                sock.send(body, zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # the client went away; ROUTER drops what it cannot route
        else:
            self.mesh.send(route.peer, encode(ForwardReply(route.fwd_id, body)))
