"""The ensemble configuration as frozen dataclasses: every setting declared once.

Each setting is declared here with its default, its allowed range and a
comment saying what it does; ``parse.py`` derives the known keys, their
types and their defaults from these declarations. Durations are declared in
milliseconds (as written in the file) and converted once, by the ``*_s``
properties, into float seconds for the code that waits.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _setting(default: Any, *, lo: int | None = None, hi: int | None = None) -> Any:
    """Declares a setting's default and, for integers, its inclusive range."""
    return field(default=default, metadata={"lo": lo, "hi": hi})


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """One member of the ensemble, from one ``[[node]]`` table."""

    # Unique name of the node: 1-64 of A-Z a-z 0-9 _ . -
    id: str
    # ZeroMQ endpoint the node binds for Raft traffic and its peers connect to:
    # "tcp://host:port" (IPv6 as "tcp://[::1]:port") or "ipc://path".
    raft: str
    # ZeroMQ endpoint the node binds for client requests; same forms as `raft`.
    client: str
    # Directory holding the WAL, hard state and snapshots. "~" is expanded; a
    # relative path is relative to the daemon's working directory.
    data_dir: Path
    # "host:port" of the Prometheus /metrics HTTP server; None (key absent) = off.
    # "0.0.0.0:port" and "[::]:port" listen on every address of the node's host.
    metrics: str | None = None


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Protocol timing and flow control, the ``[raft]`` table."""

    # Length of one logical clock tick; the core counts time only in ticks.
    tick_ms: int = _setting(10, lo=1, hi=1000)
    # A leader sends heartbeats this often. A multiple of tick_ms.
    heartbeat_interval_ms: int = _setting(100, lo=1)
    # A follower that hears no leader for a random time in [T, 2T) campaigns.
    # A multiple of tick_ms, at least 3 x heartbeat_interval_ms (Raft §5.6).
    election_timeout_ms: int = _setting(1000, lo=1)
    # Ask for pre-votes before a real election (thesis §9.6).
    pre_vote: bool = _setting(True)
    # A leader that cannot reach a quorum for an election timeout steps down (§6.2).
    check_quorum: bool = _setting(True)
    # At most this many entries in one AppendEntries message.
    max_entries_per_append: int = _setting(1024, lo=1)
    # At most this many bytes of entries in one AppendEntries (one entry always fits).
    max_bytes_per_append: int = _setting(1048576, lo=1)
    # At most this many unacknowledged AppendEntries in flight to one follower.
    max_inflight_appends: int = _setting(64, lo=1)
    # Take a snapshot once this many entries were applied since the last one.
    # Lower: less memory, shorter restarts, more snapshot writes (each costs
    # time proportional to the state's size, on a background thread).
    snapshot_entries: int = _setting(10000, lo=1)
    # ... or once the entries applied since the last one hold this many bytes.
    snapshot_bytes: int = _setting(67108864, lo=1)
    # Entries kept below the newest snapshot, so a follower that lags a little
    # catches up from the log instead of a whole snapshot. The log also keeps
    # every entry after the older of the two snapshots on disk, so a damaged
    # newest snapshot can be rebuilt from the older one and the log.
    snapshot_trailing_entries: int = _setting(5000, lo=0)

    @property
    def heartbeat_ticks(self) -> int:
        """Returns the heartbeat interval in ticks."""
        return self.heartbeat_interval_ms // self.tick_ms

    @property
    def election_ticks(self) -> int:
        """Returns the (minimum) election timeout in ticks."""
        return self.election_timeout_ms // self.tick_ms

    @property
    def tick_s(self) -> float:
        """Returns tick_ms in seconds."""
        return self.tick_ms / 1000.0

    @property
    def heartbeat_interval_s(self) -> float:
        """Returns heartbeat_interval_ms in seconds."""
        return self.heartbeat_interval_ms / 1000.0

    @property
    def election_timeout_s(self) -> float:
        """Returns election_timeout_ms (the minimum election timeout) in seconds."""
        return self.election_timeout_ms / 1000.0


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Write-ahead log policy, the ``[storage]`` table."""

    # A WAL segment is closed and a new one started past this size. Compaction
    # deletes whole segments, so the data directory holds up to one segment
    # beyond what the kept log needs.
    segment_bytes: int = _setting(4194304, lo=1)


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Client endpoint limits, the ``[client]`` table."""

    # A request not answered within this time gets a timeout reply.
    request_timeout_ms: int = _setting(5000, lo=1)
    # Larger client requests are refused.
    max_request_bytes: int = _setting(1048576, lo=1)
    # Requests waiting for commit or ReadIndex beyond this are refused as busy.
    max_pending: int = _setting(20000, lo=1)

    @property
    def request_timeout_s(self) -> float:
        """Returns request_timeout_ms in seconds."""
        return self.request_timeout_ms / 1000.0


@dataclass(frozen=True, slots=True)
class PluginsConfig:
    """Extra plugins to load and built-ins to turn off, the ``[plugins]`` table."""

    # Importable module names registered as plugins, e.g. "myorg.zraft_audit".
    modules: tuple[str, ...] = _setting(())
    # Python files registered as plugins. "~" is expanded; a relative path is
    # relative to the daemon's working directory.
    files: tuple[Path, ...] = _setting(())
    # Names of plugins (built-in or from entry points) not to register, e.g. "kv".
    disable: tuple[str, ...] = _setting(())
    # Free-form settings per plugin, [plugins.settings.<name>]; each plugin gets
    # its own table through zraft_configure and ctx.settings.
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PayloadConfig:
    """Leader and follower payloads, the ``[payload]`` table (README "Payloads")."""

    # Command run on the leader while it leads, fenced (an argv array, no shell;
    # write ["sh", "-c", "..."] for one). Empty: no leader command.
    leader: tuple[str, ...] = _setting(())
    # Command run on every follower while it follows a leader. Empty: none.
    follower: tuple[str, ...] = _setting(())
    # Short payload hooks must return within this; a role payload within this
    # once told to stop. Overruns are logged and counted, never waited for.
    timeout_ms: int = _setting(5000, lo=1)
    # A payload process told to stop gets SIGTERM, then SIGKILL this much later.
    # Must fit in the leader lease with room to renew it (checked).
    stop_grace_ms: int = _setting(200, lo=1)
    # A role must hold this long before its payload starts, so a leadership that
    # flaps never restarts it; a follower payload survives gaps this short.
    hysteresis_ms: int = _setting(200, lo=0, hi=3600000)
    # How much faster this host's monotonic clock may run than another node's,
    # in parts per million; shortens the lease. 10000 (1%) is 20x what NTP slews.
    clock_drift_ppm: int = _setting(10000, lo=0, hi=500000)

    @property
    def timeout_s(self) -> float:
        """Returns timeout_ms in seconds."""
        return self.timeout_ms / 1000.0

    @property
    def stop_grace_s(self) -> float:
        """Returns stop_grace_ms in seconds."""
        return self.stop_grace_ms / 1000.0

    @property
    def hysteresis_s(self) -> float:
        """Returns hysteresis_ms in seconds."""
        return self.hysteresis_ms / 1000.0


@dataclass(frozen=True, slots=True)
class EnsembleConfig:
    """A whole ensemble: every node and the settings they all share."""

    path: str  # where it was loaded from ("<embedded default>" for the default)
    name: str  # the [ensemble] name; same characters as a node id
    nodes: tuple[NodeConfig, ...]
    raft: RaftConfig
    storage: StorageConfig
    client: ClientConfig
    plugins: PluginsConfig
    payload: PayloadConfig
    warnings: tuple[str, ...] = ()  # legal but questionable choices, formatted like errors

    @property
    def ids(self) -> tuple[str, ...]:
        """Returns the node ids in file order."""
        return tuple(n.id for n in self.nodes)

    def node(self, node_id: str) -> NodeConfig:
        """Returns the node named `node_id`; raises KeyError naming the known ids."""
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(f"no node {node_id!r} in {self.path}; known ids: {', '.join(self.ids)}")

    def peers_of(self, node_id: str) -> dict[str, str]:
        """Returns id -> raft endpoint of every node but `node_id` (which must exist)."""
        self.node(node_id)
        return {n.id: n.raft for n in self.nodes if n.id != node_id}


class ConfigError(Exception):
    """Reports every problem found in one configuration file, one per line."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))
