"""The ensemble configuration: one TOML file parsed into frozen dataclasses.

Every setting is declared once, in the dataclasses below, with its default, its
allowed range and a comment saying what it does; the parser derives the known
keys, their types and their defaults from those declarations. Parsing collects
every problem in the file before it raises one `ConfigError` that lists them
all, each as ``"<file>: <key path>: <problem>"``. Key paths index nodes from 0
in file order: ``node[0]`` is the first ``[[node]]`` table. The value
checkers and the ``[[node]]`` checks live in ``zraft/config_checks.py``.
"""

import re
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, get_args, get_type_hints

import tomli

from zraft.config_checks import (
    _Collector,
    _got,
    _Invalid,
    _name,
    _nodes,
    _q,
    _unknown_keys,
)

DEFAULT_PATH = "<embedded default>"
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


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

    @property
    def heartbeat_ticks(self) -> int:
        """Returns the heartbeat interval in ticks."""
        return self.heartbeat_interval_ms // self.tick_ms

    @property
    def election_ticks(self) -> int:
        """Returns the (minimum) election timeout in ticks."""
        return self.election_timeout_ms // self.tick_ms


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Write-ahead log policy, the ``[storage]`` table."""

    # A WAL segment is closed and a new one started past this size.
    segment_bytes: int = _setting(67108864, lo=1)


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Client endpoint limits, the ``[client]`` table."""

    # A request not answered within this time gets a timeout reply.
    request_timeout_ms: int = _setting(5000, lo=1)
    # Larger client requests are refused.
    max_request_bytes: int = _setting(1048576, lo=1)
    # Requests waiting for commit or ReadIndex beyond this are refused as busy.
    max_pending: int = _setting(20000, lo=1)


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


def load_config(path: str | Path) -> EnsembleConfig:
    """Reads and validates the TOML file at `path`; raises ConfigError."""
    shown = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"{shown}: cannot read: {e.strerror or e}"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([f"{shown}: not UTF-8 text (byte {e.start})"]) from None
    return parse_config(text, shown)


def load_default() -> EnsembleConfig:
    """Returns the embedded default: a local 3-node ensemble on 127.0.0.1."""
    text = resources.files("zraft").joinpath("default.toml").read_text(encoding="utf-8")
    return parse_config(text, DEFAULT_PATH)


def parse_config(text: str, path: str) -> EnsembleConfig:
    """Validates TOML `text`, naming `path` in messages; raises ConfigError."""
    try:
        doc = tomli.loads(text)
    except tomli.TOMLDecodeError as e:
        raise ConfigError([f"{path}:{e.lineno}:{e.colno}: {e.msg}"]) from None
    c = _Collector(path)
    sections = {
        "raft": RaftConfig,
        "storage": StorageConfig,
        "client": ClientConfig,
        "plugins": PluginsConfig,
        "payload": PayloadConfig,
    }
    _unknown_keys(c, "", doc, ["ensemble", "node", *sections])
    name = _ensemble_name(c, doc.get("ensemble"))
    built = {}
    for key, cls in sections.items():
        built[key] = _section(c, key, doc.get(key, {}), cls)
        if key == "raft":
            _check_raft_timing(c, built[key])
        if key == "payload":
            _check_payload(c, built["raft"], built[key])
    nodes = _nodes(c, doc.get("node", []))
    if c.errors:
        raise ConfigError(c.errors)
    warnings = []
    if len(nodes) % 2 == 0:
        n = len(nodes)
        warnings.append(
            f"{path}: node: {n} nodes tolerate no more failures than {n - 1} "
            f"({(n - 1) // 2} each); prefer an odd number"
        )
    return EnsembleConfig(
        path=path,
        name=name,
        nodes=tuple(NodeConfig(**n) for n in nodes),
        warnings=tuple(warnings),
        **built,
    )


def describe(config: EnsembleConfig) -> str:
    """Returns a short human summary of `config` for ``zraft check-config``."""
    n, r, s, cl, p = len(config.nodes), config.raft, config.storage, config.client, config.plugins
    f = (n - 1) // 2
    width = max(len(i) for i in config.ids)
    lines = [
        f'ensemble "{config.name}" from {config.path}: {n} node{"s" * (n != 1)}, '
        f"tolerates {f} failure{'s' * (f != 1)}"
    ]
    lines += [
        f"  {node.id:<{width}}  raft {node.raft}  client {node.client}  "
        f"metrics {node.metrics or 'off'}  data {node.data_dir}"
        for node in config.nodes
    ]
    lines += [
        f"raft: tick {r.tick_ms} ms, heartbeat {r.heartbeat_interval_ms} ms "
        f"({r.heartbeat_ticks} ticks), election timeout {r.election_timeout_ms} ms "
        f"({r.election_ticks} ticks), pre-vote {'on' if r.pre_vote else 'off'}, "
        f"check-quorum {'on' if r.check_quorum else 'off'}; appends of at most "
        f"{r.max_entries_per_append} entries / {r.max_bytes_per_append} bytes, "
        f"{r.max_inflight_appends} in flight",
        f"storage: segments of {s.segment_bytes} bytes",
        f"client: timeout {cl.request_timeout_ms} ms, max request {cl.max_request_bytes} "
        f"bytes, max pending {cl.max_pending}",
        f"plugins: modules [{', '.join(p.modules)}], files [{', '.join(map(str, p.files))}], "
        f"disabled [{', '.join(p.disable)}], settings for [{', '.join(sorted(p.settings))}]",
        f"payload: leader {list(config.payload.leader) or 'none'}, follower "
        f"{list(config.payload.follower) or 'none'}; timeout {config.payload.timeout_ms} ms, "
        f"stop grace {config.payload.stop_grace_ms} ms, hysteresis "
        f"{config.payload.hysteresis_ms} ms, clock drift {config.payload.clock_drift_ppm} ppm",
    ]
    return "\n".join(lines + [f"warning: {w}" for w in config.warnings])


# ---------------------------------------------------------------------------
# Validation internals


def _typed(hint: Any, lo: int | None, hi: int | None):
    """Returns a checker for a setting declared as `hint` with range lo..hi."""

    def check(value: Any) -> Any:
        if hint is bool:
            if not isinstance(value, bool):
                raise _Invalid(f"must be true or false (got {_got(value)})")
            return value
        if hint is int:
            if not isinstance(value, int) or isinstance(value, bool):
                raise _Invalid(f"must be an integer (got {_got(value)})")
            if lo is not None and value < lo:
                raise _Invalid(f"must be at least {lo} (got {value})")
            if hi is not None and value > hi:
                raise _Invalid(f"must be at most {hi} (got {value})")
            return value
        item = get_args(hint)[0]  # tuple[str, ...] or tuple[Path, ...]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _Invalid(f"must be an array of strings (got {_got(value)})")
        if item is Path:
            return tuple(Path(v).expanduser() for v in value)
        return tuple(value)

    return check


def _section(c: _Collector, key: str, table: Any, cls: type) -> Any:
    """Builds `cls` from `table`; invalid or absent keys take the declared default."""
    if not isinstance(table, dict):
        c.error(key, f"must be a table (got {_got(table)})")
        return cls()
    hints = get_type_hints(cls)
    _unknown_keys(c, key, table, [f.name for f in fields(cls)])
    kwargs = {}
    for f in fields(cls):
        if f.name in table and not (cls is PluginsConfig and f.name == "settings"):
            checker = _typed(hints[f.name], f.metadata.get("lo"), f.metadata.get("hi"))
            value = c.check(f"{key}.{f.name}", checker, table[f.name])
            if value is not None:
                kwargs[f.name] = value
    if cls is PluginsConfig:
        if "settings" in table:
            kwargs["settings"] = _plugin_settings(c, f"{key}.settings", table["settings"])
        for i, module in enumerate(kwargs.get("modules", ())):
            if not _MODULE.fullmatch(module):
                c.error(f"{key}.modules[{i}]", f"{_q(module)} is not a dotted module name")
        for i, file in enumerate(kwargs.get("files", ())):
            if file.suffix != ".py":
                c.error(f"{key}.files[{i}]", f"{_q(str(file))} is not a .py file")
    return cls(**kwargs)


def _plugin_settings(c: _Collector, key: str, table: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(table, dict):
        c.error(key, f"must be a table of tables, one per plugin (got {_got(table)})")
        return {}
    out = {}
    for name, settings in table.items():
        if not isinstance(settings, dict):
            c.error(f"{key}.{name}", f"must be a table (got {_got(settings)})")
        elif c.check(f"{key}.{name}", _name, name) is not None:
            out[name] = settings
    return out


def _check_payload(c: _Collector, r: RaftConfig, p: PayloadConfig) -> None:
    """Records payload settings that cannot be fenced safely."""
    for key, argv in (("payload.leader", p.leader), ("payload.follower", p.follower)):
        if argv and not argv[0]:
            c.error(key, "the first element (the program) must not be empty")
    if p.leader and not r.check_quorum:
        c.error(
            "payload.leader",
            "needs raft.check_quorum = true: the leader payload's fence relies on the "
            "followers' leader lease, which CheckQuorum provides",
        )
    timing = {"raft.tick_ms", "raft.election_timeout_ms", "raft.heartbeat_interval_ms"}
    if p.leader and not c.bad & (timing | {"payload.stop_grace_ms"}):
        problem = lease_problem(r, p)
        if problem:
            c.error("payload.stop_grace_ms", problem)


def lease_problem(r: RaftConfig, p: PayloadConfig) -> str | None:
    """Tell why leader payloads cannot be fenced with these timings, or None if they can.

    Checked here when ``[payload] leader`` is set, and by the node at start
    when a plugin has a leader payload.
    """
    from zraft.payload.fencing import KILL_MARGIN_S, lease_seconds

    lease_ms = 1000 * lease_seconds(r.election_timeout_ms, r.tick_ms, p.clock_drift_ppm)
    margin_ms = 1000 * KILL_MARGIN_S
    if p.stop_grace_ms + margin_ms + 2 * r.heartbeat_interval_ms < lease_ms:
        return None
    return (
        f"{p.stop_grace_ms} ms leaves no room to renew the leader lease of {lease_ms:.0f} ms "
        f"(payload.stop_grace_ms + {margin_ms:.0f} ms + 2 x raft.heartbeat_interval_ms must be "
        "below it; lower it or raise raft.election_timeout_ms)"
    )


def _ensemble_name(c: _Collector, table: Any) -> str:
    if not isinstance(table, dict):
        c.error(
            "ensemble",
            'missing table; add [ensemble] with name = "..."'
            if table is None
            else f"must be a table (got {_got(table)})",
        )
        return ""
    _unknown_keys(c, "ensemble", table, ["name"])
    if "name" not in table:
        c.error("ensemble.name", "missing required key")
        return ""
    return c.check("ensemble.name", _name, table["name"]) or ""


def _check_raft_timing(c: _Collector, r: RaftConfig) -> None:
    """Records cross-field timing errors, skipping fields already found invalid."""
    tick, hb, el = "raft.tick_ms", "raft.heartbeat_interval_ms", "raft.election_timeout_ms"
    if tick in c.bad:
        return
    for key, ms in ((hb, r.heartbeat_interval_ms), (el, r.election_timeout_ms)):
        if key in c.bad:
            continue
        if ms < r.tick_ms:
            c.error(key, f"must be at least tick_ms (got {ms} < {r.tick_ms})")
        elif ms % r.tick_ms:
            c.error(key, f"must be a multiple of tick_ms (got {ms}, tick_ms = {r.tick_ms})")
    # Raft §5.6: broadcastTime << electionTimeout, or followers campaign
    # while the leader is healthy.
    if not c.bad & {hb, el} and r.election_timeout_ms < 3 * r.heartbeat_interval_ms:
        c.error(
            el,
            f"must be at least 3 × heartbeat_interval_ms "
            f"(got {r.election_timeout_ms} < {3 * r.heartbeat_interval_ms})",
        )
