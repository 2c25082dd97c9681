"""The plugin manager, plugin loading from entry points/modules/files, and the command table."""

from __future__ import annotations

import importlib.metadata
import inspect
import textwrap
import tomllib
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from tests import ROOT
from zraft import hookspecs
from zraft.builtin.kv import KVStore
from zraft.hookspecs import hookimpl
from zraft.plugins import CommandTable, PluginError, make_plugin_manager, plugin_list
from zraft.statemachine import ApplyContext, Arg, CommandError, CommandSpec, QueryContext

KV_COMMANDS = ["cas", "del", "exists", "expire", "get", "incr", "keys", "mget", "set", "ttl"]


def config(modules: tuple = (), files: tuple = (), disable: tuple = ()) -> SimpleNamespace:
    """A PluginsConfig look-alike: the plugin layer only reads these three attributes."""
    return SimpleNamespace(modules=modules, files=files, disable=disable)


def write_plugin(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


COUNTER_PLUGIN = """
    from zraft.hookspecs import hookimpl
    from zraft.statemachine import Arg, CommandSpec

    class ZraftPlugin:
        def __init__(self):
            self.count = 0

        @hookimpl
        def zraft_commands(self):
            return [CommandSpec("bump", "write", (Arg("by", "int", False),), "Add to a counter.")]

        @hookimpl
        def zraft_apply(self, command, ctx):
            if command["cmd"] == "bump":
                self.count += command.get("by", 1)
                return self.count
"""


@pytest.fixture
def table() -> CommandTable:
    return CommandTable.from_plugins(make_plugin_manager(entry_points=False))


def test_every_hook_is_prefixed_and_documented() -> None:
    specs = [
        (name, fn)
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, f"{hookspecs.PROJECT}_spec")
    ]
    assert len(specs) >= 7
    for name, fn in specs:
        assert name.startswith("zraft_"), name
        assert (fn.__doc__ or "").strip(), f"hook {name} has no docstring"
    undeclared = [
        name
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("zraft_") and not hasattr(fn, f"{hookspecs.PROJECT}_spec")
    ]
    assert undeclared == []


def test_builtin_kv_is_registered_without_installed_entry_points() -> None:
    pm = make_plugin_manager(entry_points=False)
    assert isinstance(pm.get_plugin("kv"), KVStore)
    name, version, source = plugin_list(pm)[0]
    assert (name, source) == ("kv", "builtin zraft.builtin.kv")
    assert version != ""


def test_each_manager_gets_its_own_kv_store() -> None:
    one, two = make_plugin_manager(entry_points=False), make_plugin_manager(entry_points=False)
    ctx = ApplyContext(index=1, term=1, timestamp_ms=1000)
    assert one.hook.zraft_apply(command={"cmd": "set", "key": "a", "value": 1}, ctx=ctx) is True
    query = {"command": {"cmd": "get", "key": "a"}, "ctx": QueryContext(1, 1000)}
    assert one.hook.zraft_query(**query) == 1
    assert two.hook.zraft_query(**query) is None


def test_pyproject_entry_point_names_the_kv_class() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    value = pyproject["project"]["entry-points"]["zraft"]["kv"]
    assert value == "zraft.builtin.kv:KVStore"
    assert importlib.metadata.EntryPoint("kv", value, "zraft").load() is KVStore


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    eps = [importlib.metadata.EntryPoint(name, value, "zraft") for name, value in values.items()]

    def entry_points(group: str) -> list[importlib.metadata.EntryPoint]:
        assert group == "zraft"
        return eps

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def test_entry_points_are_loaded_and_kv_is_not_registered_twice(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_plugin(tmp_path, "ep_counter", COUNTER_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    fake_entry_points(monkeypatch, kv="zraft.builtin.kv:KVStore", counter="ep_counter")
    pm = make_plugin_manager()
    assert [row[0] for row in plugin_list(pm)] == ["counter", "kv"]
    sources = {name: source for name, _, source in plugin_list(pm)}
    assert sources["kv"] == "entry point zraft.builtin.kv:KVStore"
    assert "bump" in CommandTable.from_plugins(pm).names()
    assert make_plugin_manager(entry_points=False).get_plugin("counter") is None


def test_a_failing_entry_point_is_a_plugin_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, broken="no_such_module_zraft:Thing")
    with pytest.raises(PluginError, match=r"plugin 'broken' \(entry point no_such_module_zraft"):
        make_plugin_manager()
    assert make_plugin_manager(config(disable=("broken",))).has_plugin("kv")


def test_plugin_file_is_loaded_under_its_stem(tmp_path: Path) -> None:
    path = write_plugin(tmp_path, "counter", COUNTER_PLUGIN)
    pm = make_plugin_manager(config(files=(path,)), entry_points=False)
    assert ("counter", "-", f"file {path}") in plugin_list(pm)
    table = CommandTable.from_plugins(pm)
    assert table.names() == sorted(KV_COMMANDS + ["bump"])
    assert table.owner("bump") == "counter" and table.owner("set") == "kv"
    ctx = ApplyContext(index=1, term=1, timestamp_ms=0)
    assert pm.hook.zraft_apply(command=table.validate({"cmd": "bump", "by": 5}), ctx=ctx) == 5
    other = make_plugin_manager(config(files=(str(path),)), entry_points=False)
    assert other.get_plugin("counter") is not pm.get_plugin("counter")  # one instance per node


def test_module_factory_function_and_plain_module(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_plugin(
        tmp_path,
        "factory_mod",
        """
        from zraft.hookspecs import hookimpl

        class _Impl:
            @hookimpl
            def zraft_next_deadline(self):
                return 42

        def zraft_plugin():
            return _Impl()
    """,
    )
    write_plugin(
        tmp_path,
        "plain_mod",
        """
        from zraft.hookspecs import hookimpl
        __version__ = "9.9"

        @hookimpl
        def zraft_commands():
            return []
    """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    pm = make_plugin_manager(config(modules=("factory_mod", "plain_mod")), entry_points=False)
    assert 42 in pm.hook.zraft_next_deadline()
    assert not isinstance(pm.get_plugin("factory_mod"), ModuleType)
    assert pm.get_plugin("plain_mod").__name__ == "plain_mod"
    assert ("plain_mod", "9.9", "module plain_mod") in plugin_list(pm)


def test_missing_module_is_a_plugin_error() -> None:
    expected = r"plugin 'no_such_mod_zraft' \(module no_such_mod_zraft\)"
    with pytest.raises(PluginError, match=expected):
        make_plugin_manager(config(modules=("no_such_mod_zraft",)), entry_points=False)


def test_broken_plugin_file_is_a_plugin_error_naming_it(tmp_path: Path) -> None:
    path = write_plugin(tmp_path, "broken", "raise RuntimeError('boom at import')\n")
    with pytest.raises(PluginError) as info:
        make_plugin_manager(config(files=(path,)), entry_points=False)
    message = str(info.value)
    assert "'broken'" in message and str(path) in message and "boom at import" in message


def test_missing_plugin_file_is_a_plugin_error(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="no such file"):
        make_plugin_manager(config(files=(tmp_path / "absent.py",)), entry_points=False)


def test_factory_returning_none_is_a_plugin_error(tmp_path: Path) -> None:
    path = write_plugin(tmp_path, "nothing", "def zraft_plugin():\n    return None\n")
    with pytest.raises(PluginError, match="'nothing'.*returned None"):
        make_plugin_manager(config(files=(path,)), entry_points=False)


def test_unknown_hook_name_is_a_plugin_error(tmp_path: Path) -> None:
    path = write_plugin(
        tmp_path,
        "typo",
        """
        from zraft.hookspecs import hookimpl

        @hookimpl
        def zraft_aply(command, ctx):
            return None
    """,
    )
    with pytest.raises(PluginError, match=r"plugin 'typo' \(file .*zraft_aply"):
        make_plugin_manager(config(files=(path,)), entry_points=False)


def test_hook_with_wrong_arguments_is_a_plugin_error(tmp_path: Path) -> None:
    path = write_plugin(
        tmp_path,
        "badargs",
        """
        from zraft.hookspecs import hookimpl

        @hookimpl
        def zraft_apply(cmd, context):
            return None
    """,
    )
    with pytest.raises(PluginError, match="'badargs'"):
        make_plugin_manager(config(files=(path,)), entry_points=False)


def test_disabling_kv_removes_its_commands(tmp_path: Path) -> None:
    pm = make_plugin_manager(config(disable=("kv",)), entry_points=False)
    assert pm.get_plugin("kv") is None
    assert CommandTable.from_plugins(pm).names() == []
    path = write_plugin(tmp_path, "counter", COUNTER_PLUGIN)
    pm = make_plugin_manager(config(files=(path,), disable=("counter",)), entry_points=False)
    assert [row[0] for row in plugin_list(pm)] == ["kv"]


class Declares:
    def __init__(self, *specs: Any) -> None:
        self.specs = list(specs)

    @hookimpl
    def zraft_commands(self) -> list[Any]:
        return self.specs


def table_of(**plugins: Declares) -> CommandTable:
    pm = make_plugin_manager(config(disable=("kv",)), entry_points=False)
    for name, plugin in plugins.items():
        pm.register(plugin, name=name)
    return CommandTable.from_plugins(pm)


def test_duplicate_command_names_are_a_plugin_error() -> None:
    with pytest.raises(PluginError, match="'second'.*'get'.*already declared by plugin 'first'"):
        table_of(
            first=Declares(CommandSpec("get", "read")), second=Declares(CommandSpec("get", "read"))
        )
    pm = make_plugin_manager(entry_points=False)
    pm.register(Declares(CommandSpec("set", "write")), name="mine")
    with pytest.raises(PluginError, match="'set' is already declared by plugin 'kv'"):
        CommandTable.from_plugins(pm)


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        (CommandSpec("status", "read"), "reserved"),
        (CommandSpec("ping", "write"), "reserved"),
        ("not a spec", "not a CommandSpec"),
        (CommandSpec("", "read"), "non-empty"),
        (CommandSpec("x", "mutate"), "kind"),  # type: ignore[arg-type]
        (CommandSpec("x", "read", (Arg("a", "float"),)), "unknown type 'float'"),
        (CommandSpec("x", "read", (Arg("a"), Arg("a"))), "repeated argument 'a'"),
        (CommandSpec("x", "read", (Arg("cmd"),)), "argument 'cmd'"),
    ],
)
def test_bad_command_specs_are_plugin_errors(spec: Any, why: str) -> None:
    with pytest.raises(PluginError, match=f"'bad'.*{why}"):
        table_of(bad=Declares(spec))


def test_a_failing_zraft_commands_is_a_plugin_error() -> None:
    class Fails:
        @hookimpl
        def zraft_commands(self) -> list[Any]:
            raise RuntimeError("oops")

    with pytest.raises(PluginError, match="'fails'.*oops"):
        table_of(fails=Fails())  # type: ignore[arg-type]


def test_table_lookup_and_describe(table: CommandTable) -> None:
    assert table.names() == KV_COMMANDS
    assert table.get("set").kind == "write"  # type: ignore[union-attr]
    assert table.get("get").kind == "read"  # type: ignore[union-attr]
    assert table.get("status") is None
    described = {entry["name"]: entry for entry in table.describe()}
    assert described["set"]["usage"] == "set key value [ttl_ms]"
    assert described["set"]["plugin"] == "kv" and described["set"]["help"]
    assert described["mget"]["args"] == [{"name": "keys", "type": "list[str]", "required": True}]


def test_validate_returns_the_normalized_command(table: CommandTable) -> None:
    assert table.validate({"value": [1], "cmd": "set", "key": "a"}) == {
        "cmd": "set",
        "key": "a",
        "value": [1],
    }
    assert table.validate({"cmd": "set", "key": "a", "value": None, "ttl_ms": None}) == {
        "cmd": "set",
        "key": "a",
        "value": None,
    }
    assert table.validate({"cmd": "cas", "key": "a", "expected": None, "value": 1}) == {
        "cmd": "cas",
        "key": "a",
        "expected": None,
        "value": 1,
    }
    assert table.validate({"cmd": "keys"}) == {"cmd": "keys"}
    assert table.validate({"cmd": "mget", "keys": []}) == {"cmd": "mget", "keys": []}


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (["set"], "BAD_REQUEST", "a request must be an object"),
        ({"key": "a"}, "BAD_REQUEST", "'cmd' must be a non-empty string"),
        ({"cmd": 3}, "BAD_REQUEST", "'cmd' must be a non-empty string"),
        ({"cmd": "nope"}, "UNKNOWN_COMMAND", "unknown command 'nope'"),
        ({"cmd": "status"}, "UNKNOWN_COMMAND", "unknown command 'status'"),
        ({"cmd": "set", "value": 1}, "BAD_REQUEST", "set: missing required argument 'key'"),
        (
            {"cmd": "cas", "key": "a", "value": 1},
            "BAD_REQUEST",
            "cas: missing required argument 'expected'",
        ),
        ({"cmd": "get", "key": "a", "ttl": 1}, "BAD_REQUEST", "get: unknown argument 'ttl'"),
        (
            {"cmd": "get", "key": "a", "x": 1, "y": 2},
            "BAD_REQUEST",
            "get: unknown arguments 'x', 'y'",
        ),
        (
            {"cmd": "get", "key": 1},
            "BAD_REQUEST",
            "get: argument 'key' must be a string, got number",
        ),
        (
            {"cmd": "get", "key": None},
            "BAD_REQUEST",
            "get: argument 'key' must be a string, got null",
        ),
        (
            {"cmd": "incr", "key": "a", "by": True},
            "BAD_REQUEST",
            "incr: argument 'by' must be an integer, got boolean",
        ),
        (
            {"cmd": "incr", "key": "a", "by": 1.0},
            "BAD_REQUEST",
            "incr: argument 'by' must be an integer, got number",
        ),
        (
            {"cmd": "mget", "keys": ["a", 1]},
            "BAD_REQUEST",
            "mget: argument 'keys' must be a list of strings, got array",
        ),
        (
            {"cmd": "mget", "keys": "a"},
            "BAD_REQUEST",
            "mget: argument 'keys' must be a list of strings, got string",
        ),
    ],
)
def test_validate_rejects_with_a_precise_message(
    table: CommandTable, request_: Any, code: str, message: str
) -> None:
    with pytest.raises(CommandError) as info:
        table.validate(request_)
    assert (info.value.code, info.value.message) == (code, message)


def test_validate_number_type() -> None:
    table = table_of(p=Declares(CommandSpec("scale", "write", (Arg("f", "number"),))))
    assert table.validate({"cmd": "scale", "f": 2}) == {"cmd": "scale", "f": 2}
    assert table.validate({"cmd": "scale", "f": 2.5}) == {"cmd": "scale", "f": 2.5}
    for bad, got in ((True, "boolean"), ("2", "string"), (float("inf"), "number")):
        with pytest.raises(CommandError, match=f"'f' must be a finite number, got {got}"):
            table.validate({"cmd": "scale", "f": bad})
