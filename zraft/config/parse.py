"""One TOML file (or the embedded default) into checked ``EnsembleConfig`` values.

Parsing collects every problem in the file before it raises one
``ConfigError`` that lists them all, each as ``"<file>: <key path>:
<problem>"``. Key paths index nodes from 0 in file order: ``node[0]`` is the
first ``[[node]]`` table. The known keys, their types, ranges and defaults
come from the declarations in ``model.py``; value checkers and the
``[[node]]`` checks live in ``checks.py``; the leader-lease rule is
``zraft.payload.fencing.lease_problem``.
"""

import re
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any, get_args, get_type_hints

import tomli

from zraft.config.checks import (
    Collector,
    Invalid,
    check_name,
    check_nodes,
    got,
    quote,
    unknown_keys,
)
from zraft.config.model import (
    ClientConfig,
    ConfigError,
    EnsembleConfig,
    NodeConfig,
    PayloadConfig,
    PluginsConfig,
    RaftConfig,
    StorageConfig,
)
from zraft.payload.fencing import lease_problem

DEFAULT_PATH = "<embedded default>"
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


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
    c = Collector(path)
    sections = {
        "raft": RaftConfig,
        "storage": StorageConfig,
        "client": ClientConfig,
        "plugins": PluginsConfig,
        "payload": PayloadConfig,
    }
    unknown_keys(c, "", doc, ["ensemble", "node", *sections])
    name = _ensemble_name(c, doc.get("ensemble"))
    built = {}
    for key, cls in sections.items():
        built[key] = _section(c, key, doc.get(key, {}), cls)
        if key == "raft":
            _check_raft_timing(c, built[key])
        if key == "payload":
            _check_payload(c, built["raft"], built[key])
    nodes = check_nodes(c, doc.get("node", []))
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


# -- validation internals -----------------------------------------------------


def _typed(hint: Any, lo: int | None, hi: int | None):
    """Returns a checker for a setting declared as `hint` with range lo..hi."""

    def check(value: Any) -> Any:
        if hint is bool:
            if not isinstance(value, bool):
                raise Invalid(f"must be true or false (got {got(value)})")
            return value
        if hint is int:
            if not isinstance(value, int) or isinstance(value, bool):
                raise Invalid(f"must be an integer (got {got(value)})")
            if lo is not None and value < lo:
                raise Invalid(f"must be at least {lo} (got {value})")
            if hi is not None and value > hi:
                raise Invalid(f"must be at most {hi} (got {value})")
            return value
        item = get_args(hint)[0]  # tuple[str, ...] or tuple[Path, ...]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise Invalid(f"must be an array of strings (got {got(value)})")
        if item is Path:
            return tuple(Path(v).expanduser() for v in value)
        return tuple(value)

    return check


def _section(c: Collector, key: str, table: Any, cls: type) -> Any:
    """Builds `cls` from `table`; invalid or absent keys take the declared default."""
    if not isinstance(table, dict):
        c.error(key, f"must be a table (got {got(table)})")
        return cls()
    hints = get_type_hints(cls)
    unknown_keys(c, key, table, [f.name for f in fields(cls)])
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
                c.error(f"{key}.modules[{i}]", f"{quote(module)} is not a dotted module name")
        for i, file in enumerate(kwargs.get("files", ())):
            if file.suffix != ".py":
                c.error(f"{key}.files[{i}]", f"{quote(str(file))} is not a .py file")
    return cls(**kwargs)


def _plugin_settings(c: Collector, key: str, table: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(table, dict):
        c.error(key, f"must be a table of tables, one per plugin (got {got(table)})")
        return {}
    out = {}
    for name, settings in table.items():
        if not isinstance(settings, dict):
            c.error(f"{key}.{name}", f"must be a table (got {got(settings)})")
        elif c.check(f"{key}.{name}", check_name, name) is not None:
            out[name] = settings
    return out


def _check_payload(c: Collector, r: RaftConfig, p: PayloadConfig) -> None:
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


def _ensemble_name(c: Collector, table: Any) -> str:
    if not isinstance(table, dict):
        c.error(
            "ensemble",
            'missing table; add [ensemble] with name = "..."'
            if table is None
            else f"must be a table (got {got(table)})",
        )
        return ""
    unknown_keys(c, "ensemble", table, ["name"])
    if "name" not in table:
        c.error("ensemble.name", "missing required key")
        return ""
    return c.check("ensemble.name", check_name, table["name"]) or ""


def _check_raft_timing(c: Collector, r: RaftConfig) -> None:
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
