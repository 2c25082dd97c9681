"""Every Prometheus metric zraft exports, defined in one place on a registry passed in.

Names follow etcd's shape (``zraft_server_*``, ``zraft_disk_*``,
``zraft_network_*``) and base units (seconds, bytes). The driver feeds them;
the core never touches them. One ``Metrics`` per node: tests run several
nodes in one process, each with its own ``CollectorRegistry``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_FSYNC_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0)
_LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_REQ_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The metrics of one node."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.has_leader = Gauge(
            "zraft_server_has_leader", "1 if a leader is known, else 0.", registry=r
        )
        self.is_leader = Gauge(
            "zraft_server_is_leader", "1 if this node is the leader, else 0.", registry=r
        )
        self.leader_changes = Counter(
            "zraft_server_leader_changes_seen", "Leader changes this node has seen.", registry=r
        )
        self.term = Gauge("zraft_server_term", "Current Raft term.", registry=r)
        self.commit_index = Gauge(
            "zraft_server_commit_index", "Highest committed index.", registry=r
        )
        self.applied_index = Gauge(
            "zraft_server_applied_index", "Highest applied index.", registry=r
        )
        self.last_index = Gauge("zraft_server_last_index", "Highest index in the log.", registry=r)
        self.proposals_committed = Counter(
            "zraft_server_proposals_committed",
            "Entries this node saw committed (all nodes count every entry).",
            registry=r,
        )
        self.proposals_applied = Counter(
            "zraft_server_proposals_applied", "Entries applied to the state machine.", registry=r
        )
        self.proposals_failed = Counter(
            "zraft_server_proposals_failed",
            "Proposals that failed (leadership lost, timed out, not accepted).",
            ["reason"],
            registry=r,
        )
        for reason in ("lost", "timeout"):  # start at 0, so increase() sees the first one
            self.proposals_failed.labels(reason)
        self.follower_lag = Gauge(
            "zraft_server_follower_lag_entries",
            "Leader: entries a follower still lacks (last index - its match index); 0 elsewhere.",
            ["peer"],
            registry=r,
        )
        self.proposals_pending = Gauge(
            "zraft_server_proposals_pending", "Client writes waiting for commit.", registry=r
        )
        self.reads_pending = Gauge(
            "zraft_server_reads_pending", "Linearizable reads waiting for ReadIndex.", registry=r
        )
        self.wal_fsync = Histogram(
            "zraft_disk_wal_fsync_duration_seconds",
            "Time to write and fsync one WAL batch (group commit).",
            buckets=_FSYNC_BUCKETS,
            registry=r,
        )
        self.wal_batch_entries = Histogram(
            "zraft_disk_wal_batch_entries",
            "Entries made durable by one fsync.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
            registry=r,
        )
        self.wal_bytes = Counter(
            "zraft_disk_wal_written_bytes", "Bytes written to the WAL.", registry=r
        )
        self.messages_sent = Counter(
            "zraft_network_peer_sent_messages", "Raft messages sent.", ["peer"], registry=r
        )
        self.messages_received = Counter(
            "zraft_network_peer_received_messages", "Raft messages received.", ["peer"], registry=r
        )
        self.messages_dropped = Counter(
            "zraft_network_peer_dropped_messages",
            "Messages dropped on send (peer unreachable or queue full).",
            ["peer"],
            registry=r,
        )
        self.peer_rtt = Histogram(
            "zraft_network_peer_round_trip_time_seconds",
            "Time from sending a heartbeat to a peer to receiving its answer.",
            ["peer"],
            buckets=(0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512),
            registry=r,
        )
        self.decode_errors = Counter(
            "zraft_network_decode_errors",
            "Peer frames dropped because they failed validation.",
            ["peer", "reason"],
            registry=r,
        )
        self.unknown_peer = Counter(
            "zraft_network_unknown_peer_messages",
            "Frames from identities that are not ensemble members.",
            registry=r,
        )
        self.client_requests = Counter(
            "zraft_client_requests",
            "Client requests by command and result (ok or error code).",
            ["command", "result"],
            registry=r,
        )
        self.client_request_duration = Histogram(
            "zraft_client_request_duration_seconds",
            "Time from receiving a client request to replying.",
            ["kind"],
            buckets=_REQ_BUCKETS,
            registry=r,
        )
        self.loop_lag = Histogram(
            "zraft_server_event_loop_lag_seconds",
            "How late the driver ran its tick (a busy or stalled event loop).",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.apply_errors = Counter(
            "zraft_server_apply_errors",
            "Entries whose state-machine hook raised something other than CommandError.",
            registry=r,
        )
        self.wal_corrupt = Counter(
            "zraft_disk_wal_truncated_bytes",
            "Torn-tail bytes truncated from the WAL at start-up.",
            registry=r,
        )
        self.payload_runs = Counter(
            "zraft_payload_runs",
            "Payload hook calls that returned, by plugin, hook and result (ok or error).",
            ["plugin", "hook", "result"],
            registry=r,
        )
        self.payload_timeouts = Counter(
            "zraft_payload_timeouts",
            "Payload hook calls still running past payload.timeout_ms (counted once each).",
            ["plugin", "hook"],
            registry=r,
        )
        self.payload_running = Gauge(
            "zraft_payload_running",
            "1 while a plugin's leader or follower payload runs on this node.",
            ["plugin", "role"],
            registry=r,
        )
        self.payload_process_exits = Counter(
            "zraft_payload_process_exits",
            "Payload processes that ended, by plugin, role and exit code (128+n: signal n).",
            ["plugin", "role", "code"],
            registry=r,
        )
        self.payload_events_dropped = Counter(
            "zraft_payload_events_dropped",
            "Observation events dropped because a plugin fell too far behind.",
            ["plugin"],
            registry=r,
        )
        self.lease_remaining = Gauge(
            "zraft_server_leader_lease_remaining_seconds",
            "Leader: time left on the fencing lease a quorum granted (0 when none or not leader).",
            registry=r,
        )
        self.snapshots = SnapshotMetrics(r)


_SNAP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class SnapshotMetrics:
    """Snapshots, log compaction and InstallSnapshot (README "Snapshots")."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.taken = Counter(
            "zraft_snapshot_taken",
            "Snapshots this node wrote, by result (ok, failed, aborted).",
            ["result"],
            registry=r,
        )
        for result in ("ok", "failed", "aborted"):
            self.taken.labels(result)
        self.duration = Histogram(
            "zraft_snapshot_duration_seconds",
            "Time to write one snapshot, from capture to durable file.",
            buckets=_SNAP_BUCKETS,
            registry=r,
        )
        self.size = Gauge("zraft_snapshot_bytes", "Size of the newest snapshot file.", registry=r)
        self.index = Gauge(
            "zraft_snapshot_index", "Last log index the newest snapshot holds.", registry=r
        )
        self.first_index = Gauge(
            "zraft_log_first_index",
            "First log index still held (older ones compacted).",
            registry=r,
        )
        self.compacted = Counter(
            "zraft_log_compacted_entries", "Log entries dropped by compaction.", registry=r
        )
        self.install = Counter(
            "zraft_snapshot_install",
            "InstallSnapshot transfers by direction (sent, received) and result (ok, failed).",
            ["direction", "result"],
            registry=r,
        )
        self.install_bytes = Counter(
            "zraft_snapshot_install_bytes",
            "Snapshot bytes streamed to followers (sent) or from the leader (received).",
            ["direction"],
            registry=r,
        )
        for direction in ("sent", "received"):
            self.install_bytes.labels(direction)
            for result in ("ok", "failed"):
                self.install.labels(direction, result)
        self.load_seconds = Gauge(
            "zraft_snapshot_load_seconds",
            "Time the last snapshot load or install took.",
            registry=r,
        )
