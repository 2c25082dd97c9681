"""The KV commands are declared once (``zraft.builtin.kv.COMMANDS``): the CLI is built
from them and the Python client has a method for each, so the three cannot drift."""

from __future__ import annotations

import argparse
import inspect
from typing import Any

import pytest

from zraft.api.client import Client
from zraft.builtin.kv import COMMANDS
from zraft.cli import build_parser, main
from zraft.cli import kv as cli_kv

METHOD = {"del": "delete"}  # commands whose name is not a Python identifier


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


@pytest.mark.parametrize("spec", COMMANDS, ids=[s.name for s in COMMANDS])
def test_every_kv_command_has_a_client_method_with_its_arguments(spec: Any) -> None:
    method = getattr(Client, METHOD.get(spec.name, spec.name))
    params = list(inspect.signature(method).parameters.values())[1:]  # without self
    expected = [a.name for a in spec.args] + (["stale"] if spec.kind == "read" else [])
    assert [p.name for p in params] == expected
    for arg, param in zip(spec.args, params, strict=False):
        has_default = param.default is not inspect.Parameter.empty
        assert has_default == (not arg.required), f"{spec.name}.{arg.name}"


@pytest.mark.parametrize("spec", COMMANDS, ids=[s.name for s in COMMANDS])
def test_every_kv_command_has_a_cli_subcommand_with_its_arguments(spec: Any) -> None:
    p = subcommands()[spec.name]
    dests = {a.dest: a for a in p._actions}
    for arg in spec.args:
        action = dests[arg.name]
        positional = not action.option_strings
        assert positional == (arg.required or (spec.name, arg.name) in cli_kv.POSITIONAL_OPTIONAL)
        if not positional:
            assert action.option_strings == ["--" + arg.name.replace("_", "-")]
    assert ("stale" in dests) == (spec.kind == "read")
    assert p.get_default("func") is cli_kv.cmd_kv and p.get_default("cmd") == spec.name


class FakeClient:
    """Stands in for ``Client`` in the CLI: records the call, returns a canned result."""

    calls: list[dict[str, Any]] = []
    result: Any = True

    def __init__(self, endpoints: list[str], **kwargs: Any) -> None:
        self.endpoints = endpoints

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def call(self, cmd: str, **args: Any) -> Any:
        FakeClient.calls.append({"cmd": cmd, **args})
        return [] if cmd == "keys" and FakeClient.result is True else FakeClient.result


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeClient]:
    monkeypatch.setattr(cli_kv, "Client", FakeClient)
    FakeClient.calls = []
    FakeClient.result = True
    return FakeClient


E = ["-e", "tcp://127.0.0.1:1"]


@pytest.mark.parametrize(
    "argv, body",
    [
        (["get", "k"], {"cmd": "get", "key": "k"}),
        (["get", "k", "--stale"], {"cmd": "get", "key": "k", "stale": True}),
        (["set", "k", "hello"], {"cmd": "set", "key": "k", "value": "hello"}),
        (
            ["set", "k", '{"a": [1]}', "--ttl-ms", "500"],
            {"cmd": "set", "key": "k", "value": {"a": [1]}, "ttl_ms": 500},
        ),
        (["set", "k", "42"], {"cmd": "set", "key": "k", "value": 42}),
        (["set", "k", "null"], {"cmd": "set", "key": "k", "value": None}),
        (["del", "k"], {"cmd": "del", "key": "k"}),
        (["exists", "k"], {"cmd": "exists", "key": "k"}),
        (["expire", "k", "100"], {"cmd": "expire", "key": "k", "ttl_ms": 100}),
        (["ttl", "k"], {"cmd": "ttl", "key": "k"}),
        (["incr", "k"], {"cmd": "incr", "key": "k"}),
        (["incr", "k", "--by", "-3"], {"cmd": "incr", "key": "k", "by": -3}),
        (
            ["cas", "k", "null", "v", "--ttl-ms", "9"],
            {"cmd": "cas", "key": "k", "expected": None, "value": "v", "ttl_ms": 9},
        ),
        (["mget", "a", "b"], {"cmd": "mget", "keys": ["a", "b"]}),
        (["keys"], {"cmd": "keys", "prefix": ""}),
        (["keys", "g", "--limit", "2"], {"cmd": "keys", "prefix": "g", "limit": 2}),
    ],
)
def test_cli_syntax_builds_the_request(
    fake: type[FakeClient], argv: list[str], body: dict[str, Any]
) -> None:
    assert main([*argv, *E]) == 0
    assert fake.calls == [body]


def test_cli_prints_strings_plainly_keys_one_per_line_and_the_rest_as_json(
    fake: type[FakeClient], capsys: pytest.CaptureFixture[str]
) -> None:
    fake.result = "hello"
    main(["get", "k", *E])
    assert capsys.readouterr().out == "hello\n"
    fake.result = ["a", "b"]
    main(["keys", *E])
    assert capsys.readouterr().out == "a\nb\n"
    main(["keys", "--json", *E])
    assert capsys.readouterr().out == '["a", "b"]\n'
    main(["mget", "a", "b", *E])
    assert capsys.readouterr().out == '["a", "b"]\n'


def test_cli_refuses_a_non_integer_where_the_spec_says_int(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["expire", "k", "soon", *E])
    assert exc.value.code == 2 and "invalid int value" in capsys.readouterr().err
