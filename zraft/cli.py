"""The ``zraft`` command line: run a node, start a local ensemble, talk to one.

Exit codes: 0 success, 1 an error reply or failure, 2 usage, 78 configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from zraft import __version__
from zraft.daemon import EX_CONFIG


def _load(path: str | None) -> Any:
    from zraft.config import load_config, load_default

    return load_config(path) if path else load_default()


def _endpoints(args: argparse.Namespace) -> list[str]:
    if args.endpoint:
        return list(args.endpoint)
    return [n.client for n in _load(args.config).nodes]


def _json_arg(text: str) -> Any:
    """Parse a CLI value as JSON when it is JSON (42, true, {"a":1}); else keep the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


# -- subcommands -------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from zraft.daemon import run_node, setup_logging

    setup_logging(args.log_level, args.log_format, args.node)
    return run_node(args.config, args.node)


def cmd_up(args: argparse.Namespace) -> int:
    from zraft.supervisor import run_ensemble

    return run_ensemble(args.config, log_level=args.log_level)


def _problem(text: str, priority: int = 3) -> None:
    """Print to stderr; under journald each line gets a syslog priority (3 error, 4 warning)."""
    prefix = f"<{priority}>" if os.environ.get("JOURNAL_STREAM") else ""
    for line in str(text).splitlines():
        print(prefix + line, file=sys.stderr)


def cmd_check_config(args: argparse.Namespace) -> int:
    from zraft.config import ConfigError, describe

    try:
        config = _load(args.file)
    except ConfigError as exc:
        _problem(str(exc))
        return EX_CONFIG
    print(describe(config))
    for w in config.warnings:
        _problem(f"warning: {w}", 4)
    if args.node:
        # What `zraft run --node` would refuse too: an unknown id, a plugin that
        # does not load or rejects its settings (systemd's ExecStartPre passes %i).
        from zraft.metrics import Metrics
        from zraft.payload.driver import Payloads
        from zraft.plugins import PluginError, configure_plugins, make_plugin_manager

        try:
            config.node(args.node)
            pm = make_plugin_manager(config.plugins, payload=config.payload)
            configure_plugins(pm, config.plugins.settings, args.node)
            Payloads(config, args.node, pm, Metrics())  # leader payloads that cannot be fenced
        except KeyError as exc:
            _problem(exc.args[0])
            return EX_CONFIG
        except (PluginError, ValueError) as exc:
            _problem(f"plugin error: {exc}")
            return EX_CONFIG
        print(f"node {args.node}: plugins load and accept their settings")
    print("configuration OK")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from zraft.config import ConfigError
    from zraft.plugins import (
        CommandTable,
        PluginError,
        configure_plugins,
        make_plugin_manager,
        plugin_hooks,
        plugin_list,
    )

    try:
        config = _load(args.config)
        node_id = args.node or config.ids[0]
        config.node(node_id)
        pm = make_plugin_manager(config.plugins, payload=config.payload)
        configure_plugins(pm, config.plugins.settings, node_id)
        commands = CommandTable.from_plugins(pm).describe()
    except (ConfigError, PluginError, KeyError) as exc:
        print(exc.args[0] if isinstance(exc, KeyError) else exc, file=sys.stderr)
        return EX_CONFIG
    rows = [
        {
            "name": name,
            "version": version,
            "source": source,
            "hooks": plugin_hooks(pm, name),
            "commands": [c["name"] for c in commands if c["plugin"] == name],
        }
        for name, version, source in plugin_list(pm)
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    widths = [
        max(len(r[k]) for r in rows + [{"name": "PLUGIN", "version": "VERSION"}])
        for k in ("name", "version")
    ]
    print(f"{'PLUGIN':<{widths[0]}}  {'VERSION':<{widths[1]}}  SOURCE")
    for r in rows:
        print(f"{r['name']:<{widths[0]}}  {r['version']:<{widths[1]}}  {r['source']}")
        print(f"{'':<{widths[0]}}    hooks: {', '.join(r['hooks'])}")
        if r["commands"]:
            print(f"{'':<{widths[0]}}    commands: {', '.join(r['commands'])}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from zraft.status import collect, render_table

    endpoints = _endpoints(args)
    if args.watch:
        from zraft.status import watch

        if args.output == "json":
            print("zraft status: --watch draws the table; use -w json without it", file=sys.stderr)
            return 2
        return watch(endpoints, max(0.1, args.interval), args.count, args.timeout, args.hash)
    rows = collect(endpoints, timeout=args.timeout, state_hash=args.hash)
    if args.output == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(render_table(rows))
    return 0 if any(r.get("status") for r in rows) else 1


def cmd_kv(args: argparse.Namespace) -> int:
    from zraft.api.client import Client, ZraftError

    body: dict[str, Any] = {"cmd": args.cmd}
    for name in args.arg_names:
        value = getattr(args, name)
        if value is not None:
            body[name] = value
    if getattr(args, "stale", False):
        body["stale"] = True
    with Client(_endpoints(args), timeout=args.timeout, retry_for=3 * args.timeout) as client:
        try:
            result = client.call(**body)
        except ZraftError as exc:
            print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
            return 1
    if isinstance(result, str) and not args.json:
        print(result)
    elif args.cmd == "keys" and not args.json:
        for key in result:
            print(key)
    else:
        print(json.dumps(result))
    return 0


def cmd_call(args: argparse.Namespace) -> int:
    from zraft.api.client import Client

    try:
        body = json.loads(args.request)
    except ValueError as exc:
        print(f"error: the request is not valid JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(body, dict):
        print(
            'error: the request must be a JSON object, e.g. \'{"cmd": "status"}\'', file=sys.stderr
        )
        return 2
    with Client(_endpoints(args), timeout=args.timeout, retry_for=3 * args.timeout) as client:
        reply = client.request(body)
    print(json.dumps(reply))
    return 0 if reply.get("ok") else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from zraft.bench import main as bench_main

    return bench_main(args)


# -- parser ------------------------------------------------------------------

KV_COMMANDS: list[tuple[str, str, list[tuple[str, Any, str]]]] = [
    # (command, help, [(arg, type or None for optional-flag, help)])
    ("get", "read a key (linearizable unless --stale)", [("key", str, "the key")]),
    (
        "set",
        "write a key",
        [("key", str, "the key"), ("value", _json_arg, "the value (JSON or text)")],
    ),
    ("del", "delete a key", [("key", str, "the key")]),
    ("exists", "tell whether a key exists", [("key", str, "the key")]),
    (
        "expire",
        "give a key a time to live",
        [("key", str, "the key"), ("ttl_ms", int, "milliseconds")],
    ),
    ("ttl", "remaining ms (-1: no TTL, -2: no key)", [("key", str, "the key")]),
    ("incr", "add to an integer key", [("key", str, "the key")]),
    (
        "cas",
        "compare and set (expected null = must be absent)",
        [
            ("key", str, "the key"),
            ("expected", _json_arg, "expected value (JSON)"),
            ("value", _json_arg, "new value (JSON or text)"),
        ],
    ),
    ("mget", "read several keys", [("keys", str, "keys")]),
    ("keys", "list keys by prefix", []),
]


def _add_target(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c", "--config", help="ensemble TOML file (default: the embedded local ensemble)"
    )
    p.add_argument(
        "-e",
        "--endpoint",
        action="append",
        help="client endpoint, e.g. tcp://127.0.0.1:7001 (repeatable; overrides --config)",
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per attempt (default 5)")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="zraft", description="zraft: a Raft consensus daemon")
    parser.add_argument("--version", action="version", version=f"zraft {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run one node in the foreground (what systemd starts)")
    p.add_argument(
        "-c", "--config", help="ensemble TOML file (default: the embedded local ensemble)"
    )
    p.add_argument("-n", "--node", required=True, help="this node's id in the ensemble file")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="auto", choices=["auto", "text", "journal", "json"])
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("up", help="start every node of an ensemble here; Ctrl-C stops them")
    p.add_argument("config", nargs="?", help="ensemble TOML file (default: the embedded local one)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("check-config", help="validate an ensemble file and summarize it")
    p.add_argument("file", nargs="?", help="ensemble TOML file (default: the embedded one)")
    p.add_argument("-n", "--node", help="also check this node id and load its plugins")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("plugins", help="list the plugins a node would load, with versions")
    p.add_argument("-c", "--config", help="ensemble TOML file (default: the embedded one)")
    p.add_argument("-n", "--node", help="node id to configure them for (default: the first)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("status", help="show every node: role, term, commit, applied, leader")
    _add_target(p)
    p.add_argument("-w", "--output", choices=["table", "json"], default="table")
    p.add_argument(
        "--hash", action="store_true", help="add a hash of each node's replicated state (STATE)"
    )
    p.add_argument("--watch", action="store_true", help="redraw the table until Ctrl-C")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between redraws")
    p.add_argument("--count", type=int, default=0, help="stop after this many redraws")
    p.set_defaults(func=cmd_status, timeout=1.0)

    for name, help_text, params in KV_COMMANDS:
        p = sub.add_parser(name, help=help_text)
        _add_target(p)
        p.add_argument("--json", action="store_true", help="print results as JSON")
        names = []
        for arg, typ, arg_help in params:
            nargs = "+" if name == "mget" else None
            p.add_argument(arg, type=typ, help=arg_help, nargs=nargs)
            names.append(arg)
        if name in ("set", "cas"):
            p.add_argument("--ttl-ms", dest="ttl_ms", type=int, help="expire after this many ms")
            names.append("ttl_ms")
        if name == "incr":
            p.add_argument("--by", type=int, help="amount (default 1)")
            names.append("by")
        if name == "keys":
            p.add_argument("prefix", nargs="?", default="", help="key prefix")
            p.add_argument("--limit", type=int, help="at most this many (default 1000)")
            names += ["prefix", "limit"]
        if name in ("get", "exists", "ttl", "mget", "keys"):
            p.add_argument(
                "--stale", action="store_true", help="read this node's state without ReadIndex"
            )
        p.set_defaults(func=cmd_kv, cmd=name, arg_names=names)

    p = sub.add_parser("call", help='send one raw JSON request, e.g. \'{"cmd":"get","key":"a"}\'')
    _add_target(p)
    p.add_argument("request", help="the request as a JSON object")
    p.set_defaults(func=cmd_call)

    p = sub.add_parser("bench", help="benchmark a running ensemble: writes/s, reads/s, p50/p99")
    _add_target(p)
    from zraft.bench import add_arguments

    add_arguments(p)
    p.set_defaults(func=cmd_bench)
    from zraft.check.cli import add_parser as add_check_history

    add_check_history(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # config errors from _load land here too
        from zraft.config import ConfigError

        if isinstance(exc, ConfigError):
            print(exc, file=sys.stderr)
            return EX_CONFIG
        raise
