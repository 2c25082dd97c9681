"""The plugin manager: where plugins come from, and the table of client commands.

Plugins are found in this order: the ``zraft`` entry-point group, the built-in
KV store (when no entry point named ``kv`` supplied it), the built-in script
payloads (``script-leader``, ``script-follower``, when ``[payload] leader`` or
``follower`` is set), the modules named in ``[plugins] modules``, then the
``.py`` files in ``[plugins] files``. Names in
``[plugins] disable`` are skipped wherever they come from. Every failure is a
``PluginError`` naming the plugin and where it came from.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import math
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from zraft import __version__, hookspecs
from zraft.builtin.kv import KVStore
from zraft.builtin.script import FollowerScript, LeaderScript
from zraft.statemachine import CommandError, CommandSpec

if TYPE_CHECKING:
    from zraft.config import EnsembleConfig, PayloadConfig, PluginsConfig

ENTRY_POINT_GROUP = "zraft"
BUILTIN_KV = "kv"
RESERVED_COMMANDS = frozenset({"status", "ping"})
ARG_TYPES = frozenset({"str", "int", "number", "any", "list[str]"})


class PluginError(Exception):
    """A plugin that cannot be loaded, registered or trusted; the message names it."""


class ZraftPluginManager(pluggy.PluginManager):
    """A pluggy manager for project ``zraft`` that remembers where each plugin came from."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.sources: dict[str, str] = {}
        self.versions: dict[str, str] = {}


def _instantiate(obj: Any) -> Any:
    """Return the object to register for an entry-point, module or file value.

    A module defining ``zraft_plugin()`` or ``ZraftPlugin`` yields what that
    returns (a per-node instance); any other module is registered as is. A
    class or function is called once with no arguments; anything else is
    registered as is.
    """
    if isinstance(obj, ModuleType):
        factory = getattr(obj, "zraft_plugin", None) or getattr(obj, "ZraftPlugin", None)
        if factory is None:
            return obj
        obj = factory
        if not callable(obj):
            raise TypeError("zraft_plugin / ZraftPlugin is not callable")
    elif not (inspect.isclass(obj) or inspect.isroutine(obj)):
        return obj
    instance = obj()
    if instance is None:
        raise TypeError(f"{getattr(obj, '__qualname__', obj)!r} returned None")
    return instance


def _load_file(path: Path) -> ModuleType:
    """Import the Python file at ``path`` as a fresh module ``zraft_plugin_<stem>``."""
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    module_name = f"zraft_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered in sys.modules during execution so that dataclasses, pickling
    # of exceptions and relative lookups inside the file work.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def _register(
    pm: ZraftPluginManager, name: str, source: str, load: Callable[[], Any], version: str = "-"
) -> None:
    try:
        plugin = _instantiate(load())
        pm.register(plugin, name=name)
    except Exception as exc:
        raise PluginError(f"plugin {name!r} ({source}): {type(exc).__name__}: {exc}") from exc
    pm.sources[name] = source
    pm.versions[name] = version if version != "-" else str(getattr(plugin, "__version__", "-"))


def make_plugin_manager(
    plugins: PluginsConfig | None = None,
    *,
    entry_points: bool = True,
    payload: PayloadConfig | None = None,
) -> pluggy.PluginManager:
    """Return a new plugin manager with every enabled plugin registered and checked.

    ``plugins`` is read by duck typing: ``.modules`` (importable names),
    ``.files`` (paths of ``.py`` files) and ``.disable`` (plugin names to
    skip). ``entry_points=False`` ignores installed plugins (tests); the
    built-in ``kv`` store is registered either way unless disabled. Each call
    makes new plugin instances, so several nodes can share one process.
    ``payload`` (``.leader``, ``.follower`` commands) adds the script payloads.
    Raises PluginError on any failure, including hook implementations that no
    hookspec declares (``check_pending``).
    """
    modules: Iterable[str] = getattr(plugins, "modules", ()) or ()
    files: Iterable[str | Path] = getattr(plugins, "files", ()) or ()
    disable = frozenset(getattr(plugins, "disable", ()) or ())
    pm = ZraftPluginManager()

    if entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in disable or pm.has_plugin(ep.name):
                continue
            dist = getattr(ep, "dist", None)
            version = getattr(dist, "version", None) or "-"
            label = f"entry point {ep.value}" + (f" from {dist.name}" if dist else "")
            _register(pm, ep.name, label, ep.load, version)

    if BUILTIN_KV not in disable and not pm.has_plugin(BUILTIN_KV):
        _register(pm, BUILTIN_KV, "builtin zraft.builtin.kv", KVStore, __version__)

    for name, cls, argv in (
        ("script-leader", LeaderScript, getattr(payload, "leader", ())),
        ("script-follower", FollowerScript, getattr(payload, "follower", ())),
    ):
        if argv and name not in disable:
            _register(
                pm, name, f"builtin zraft.builtin.script ({argv[0]})", lambda c=cls, a=argv: c(a)
            )

    for module_name in modules:
        if module_name not in disable:
            _register(
                pm,
                module_name,
                f"module {module_name}",
                lambda m=module_name: importlib.import_module(m),
            )

    for file in files:
        path = Path(file)
        if path.stem not in disable:
            _register(pm, path.stem, f"file {path}", lambda p=path: _load_file(p))

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or "?"
        source = pm.sources.get(name, "?")
        raise PluginError(f"plugin {name!r} ({source}): {exc}") from exc
    snapshot_plugins(pm)
    return pm


SNAPSHOT_PAIRS = (
    ("zraft_snapshot", "zraft_restore"),
    ("zraft_snapshot_stream", "zraft_restore_stream"),
)


def snapshot_plugins(pm: pluggy.PluginManager) -> dict[str, bool]:
    """Return the plugins with replicated state: name -> whether it streams its snapshot.

    A plugin has state when it implements one snapshot pair: ``zraft_snapshot``
    with ``zraft_restore``, or ``zraft_snapshot_stream`` with
    ``zraft_restore_stream`` (True). Raises PluginError for a half pair or
    for both pairs: that plugin's state could not be snapshotted or restored.
    """
    has: dict[str, set[str]] = {}
    for pair in SNAPSHOT_PAIRS:
        for hook in pair:
            for impl in getattr(pm.hook, hook).get_hookimpls():
                has.setdefault(impl.plugin_name, set()).add(hook)
    out: dict[str, bool] = {}
    for name, hooks in has.items():
        whole = [set(pair) <= hooks for pair in SNAPSHOT_PAIRS]
        if whole.count(True) != 1 or len(hooks) != 2:
            source = getattr(pm, "sources", {}).get(name, "?")
            raise PluginError(
                f"plugin {name!r} ({source}): implement exactly one snapshot pair, "
                f"zraft_snapshot + zraft_restore or zraft_snapshot_stream + "
                f"zraft_restore_stream (it has {', '.join(sorted(hooks))})"
            )
        out[name] = whole[1]
    return out


def configure_plugins(
    pm: pluggy.PluginManager, settings: dict[str, dict[str, Any]], node_id: str
) -> None:
    """Call every ``zraft_configure`` with its plugin's settings table; raise PluginError.

    A settings table for a plugin that is not loaded is an error too: it is
    almost always a typo, and a silently ignored setting is worse.
    """
    names = {name for name, plugin in pm.list_name_plugin() if plugin is not None}
    for name in sorted(set(settings) - names):
        raise PluginError(
            f"[plugins.settings.{name}] names no loaded plugin; loaded: {', '.join(sorted(names))}"
        )
    for impl in pm.hook.zraft_configure.get_hookimpls():
        try:
            impl.function(settings=dict(settings.get(impl.plugin_name, {})), node_id=node_id)
        except Exception as exc:
            source = getattr(pm, "sources", {}).get(impl.plugin_name, "?")
            raise PluginError(
                f"plugin {impl.plugin_name!r} ({source}): zraft_configure: "
                f"{type(exc).__name__}: {exc}"
            ) from exc


def load_plugins(config: EnsembleConfig, node_id: str) -> tuple[pluggy.PluginManager, CommandTable]:
    """Load the plugins node ``node_id`` runs with, configure them, and index their commands.

    What a node does at start (``zraft run``) and what ``zraft check-config
    --node`` and ``zraft plugins`` check: ``make_plugin_manager`` from
    ``[plugins]`` and ``[payload]``, ``configure_plugins`` with
    ``[plugins.settings]``, then ``CommandTable.from_plugins``. ``node_id``
    is not looked up in ``config`` here (``config.node`` does that). Raises
    PluginError naming the plugin at the first failure.
    """
    pm = make_plugin_manager(config.plugins, payload=config.payload)
    configure_plugins(pm, config.plugins.settings, node_id)
    return pm, CommandTable.from_plugins(pm)


def plugin_list(pm: pluggy.PluginManager) -> list[tuple[str, str, str]]:
    """Return (name, version or "-", source) for every registered plugin, sorted by name."""
    sources: dict[str, str] = getattr(pm, "sources", {})
    versions: dict[str, str] = getattr(pm, "versions", {})
    rows = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # blocked
            continue
        version = versions.get(name) or str(getattr(plugin, "__version__", "-"))
        rows.append((name, version, sources.get(name, "-")))
    return sorted(rows)


def plugin_hooks(pm: pluggy.PluginManager, name: str) -> list[str]:
    """Return the names of the hooks plugin ``name`` implements, without the prefix, sorted."""
    plugin = pm.get_plugin(name)
    callers = pm.get_hookcallers(plugin) or [] if plugin is not None else []
    return sorted(c.name.removeprefix("zraft_") for c in callers)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _type_ok(type_: str, value: Any) -> bool:
    if type_ == "any":
        return True
    if type_ == "str":
        return isinstance(value, str)
    if type_ == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_ == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return not isinstance(value, float) or math.isfinite(value)
    # "list[str]"
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


_TYPE_NAMES = {
    "str": "a string",
    "int": "an integer",
    "number": "a finite number",
    "list[str]": "a list of strings",
    "any": "a JSON value",
}


class CommandTable:
    """The client commands every plugin declared, and the validation of requests against them.

    Built once at start from ``zraft_commands``; read-only afterwards, so it
    may be shared by threads.
    """

    def __init__(self, specs: Iterable[tuple[str, CommandSpec]] = ()) -> None:
        """Index ``(plugin name, spec)`` pairs; raises PluginError on a bad or duplicate spec."""
        self._specs: dict[str, CommandSpec] = {}
        self._owners: dict[str, str] = {}
        for owner, spec in specs:
            self._add(owner, spec)

    @classmethod
    def from_plugins(cls, pm: pluggy.PluginManager) -> CommandTable:
        """Return the table of every command declared by the plugins registered in ``pm``."""
        pairs: list[tuple[str, CommandSpec]] = []
        for impl in pm.hook.zraft_commands.get_hookimpls():  # in registration order
            try:
                declared = list(impl.function() or ())
            except Exception as exc:
                raise PluginError(
                    f"plugin {impl.plugin_name!r}: zraft_commands failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            pairs.extend((impl.plugin_name, spec) for spec in declared)
        return cls(pairs)

    def _add(self, owner: str, spec: Any) -> None:
        def fail(why: str) -> PluginError:
            return PluginError(f"plugin {owner!r}: {why}")

        if not isinstance(spec, CommandSpec):
            raise fail(f"zraft_commands returned {spec!r}, not a CommandSpec")
        if not isinstance(spec.name, str) or not spec.name:
            raise fail(f"command name {spec.name!r} is not a non-empty string")
        if spec.name in RESERVED_COMMANDS:
            raise fail(f"command name {spec.name!r} is reserved by zraft")
        if spec.name in self._specs:
            raise fail(
                f"command {spec.name!r} is already declared by plugin {self._owners[spec.name]!r}"
            )
        if spec.kind not in ("read", "write"):
            raise fail(f"command {spec.name!r} has kind {spec.kind!r}, not 'read' or 'write'")
        seen: set[str] = set()
        for arg in spec.args:
            if arg.name == "cmd" or arg.name in seen or not arg.name:
                raise fail(f"command {spec.name!r} has a bad or repeated argument {arg.name!r}")
            if arg.type not in ARG_TYPES:
                raise fail(
                    f"command {spec.name!r} argument {arg.name!r} has unknown type {arg.type!r}"
                )
            seen.add(arg.name)
        self._specs[spec.name] = spec
        self._owners[spec.name] = owner

    def get(self, name: str) -> CommandSpec | None:
        """Return the spec of command ``name``, or None if no plugin declared it."""
        return self._specs.get(name)

    def owner(self, name: str) -> str | None:
        """Return the name of the plugin that declared command ``name``, or None."""
        return self._owners.get(name)

    def names(self) -> list[str]:
        """Return every command name, sorted."""
        return sorted(self._specs)

    def validate(self, request: dict[str, Any]) -> dict[str, Any]:
        """Return ``{"cmd": name, **args}`` checked against the command's spec.

        ``request`` holds only ``cmd`` and arguments (the API layer strips the
        envelope first). An optional argument given as null counts as absent,
        except for type ``any``, where null is a value. Raises CommandError:
        ``UNKNOWN_COMMAND`` for an undeclared command, ``BAD_REQUEST`` naming
        the argument for a missing, unknown or mistyped one.
        """
        if not isinstance(request, dict):
            raise CommandError("BAD_REQUEST", "a request must be an object")
        name = request.get("cmd")
        if not isinstance(name, str) or not name:
            raise CommandError("BAD_REQUEST", "'cmd' must be a non-empty string")
        spec = self._specs.get(name)
        if spec is None:
            raise CommandError("UNKNOWN_COMMAND", f"unknown command {name!r}")
        declared = {arg.name for arg in spec.args}
        unknown = sorted(k for k in request if k != "cmd" and k not in declared)
        if unknown:
            raise CommandError(
                "BAD_REQUEST",
                f"{name}: unknown argument{'s' if len(unknown) > 1 else ''} "
                + ", ".join(repr(k) for k in unknown),
            )
        command: dict[str, Any] = {"cmd": name}
        for arg in spec.args:
            present = arg.name in request and (
                request[arg.name] is not None or arg.type == "any" or arg.required
            )
            if not present:
                if arg.required:
                    raise CommandError(
                        "BAD_REQUEST", f"{name}: missing required argument {arg.name!r}"
                    )
                continue
            value = request[arg.name]
            if not _type_ok(arg.type, value):
                raise CommandError(
                    "BAD_REQUEST",
                    f"{name}: argument {arg.name!r} must be {_TYPE_NAMES[arg.type]}, "
                    f"got {_json_type(value)}",
                )
            command[arg.name] = value
        return command

    def describe(self) -> list[dict[str, Any]]:
        """Return one JSON-ready dict per command, sorted by name, for help output.

        Each has ``name``, ``kind``, ``plugin``, ``usage`` (e.g.
        ``set key value [ttl_ms]``), ``help`` and ``args`` (name, type, required).
        """
        out = []
        for name in self.names():
            spec = self._specs[name]
            usage = " ".join([name] + [a.name if a.required else f"[{a.name}]" for a in spec.args])
            out.append(
                {
                    "name": name,
                    "kind": spec.kind,
                    "plugin": self._owners[name],
                    "usage": usage,
                    "help": spec.help,
                    "args": [
                        {"name": a.name, "type": a.type, "required": a.required} for a in spec.args
                    ],
                }
            )
        return out
