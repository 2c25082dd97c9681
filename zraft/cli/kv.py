"""The key-value subcommands (``zraft get``, ``set`` ...) and ``zraft call``.

The KV subcommands are built from the store's own declarations,
``zraft.builtin.kv.COMMANDS``, so the command line cannot drift from what
the store serves:

* a required argument is positional, in declaration order; a ``list[str]``
  argument takes one or more words (``zraft mget a b c``);
* an optional argument is an option named after it (``ttl_ms`` is
  ``--ttl-ms``), except the CLI-only spellings in ``POSITIONAL_OPTIONAL``;
* ``any`` values are parsed as JSON when they are JSON (``42``, ``true``,
  ``{"a": 1}``) and kept as text otherwise; ``int`` values must be integers;
* read commands take ``--stale`` (this node's state, without ReadIndex);
* a string result prints as is, a ``LINE_PER_ITEM`` result one item per
  line, anything else (and everything with ``--json``) as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from zraft.api.client import Client, ZraftError
from zraft.builtin.kv import COMMANDS
from zraft.cli.common import add_target, endpoints
from zraft.statemachine import Arg, CommandSpec

POSITIONAL_OPTIONAL: dict[tuple[str, str], Any] = {("keys", "prefix"): ""}
"""(command, argument) -> default: optional arguments written as an optional
positional word rather than an option (``zraft keys PREFIX``)."""

LINE_PER_ITEM = frozenset({"keys"})
"""Commands whose list result prints one item per line (without ``--json``)."""


def json_arg(text: str) -> Any:
    """Parse a CLI value as JSON when it is JSON (42, true, {"a":1}); else keep the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def number_arg(text: str) -> int | float:
    """Parse a CLI value as a JSON number (an integer when it is one)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


CONVERTERS: dict[str, Callable[[str], Any]] = {
    "str": str,
    "int": int,
    "number": number_arg,
    "any": json_arg,
    "list[str]": str,
}
TYPE_HELP = {
    "str": "a string",
    "int": "an integer",
    "number": "a number",
    "any": "JSON, else text",
    "list[str]": "one or more strings",
}


def cmd_kv(args: argparse.Namespace) -> int:
    """Send one KV command built from the parsed arguments; print its result."""
    body: dict[str, Any] = {"cmd": args.cmd}
    for name, required in args.arg_names:
        value = getattr(args, name)
        if required or value is not None:  # a required null stays: `cas k null v`
            body[name] = value
    if getattr(args, "stale", False):
        body["stale"] = True
    with Client(endpoints(args), timeout=args.timeout, retry_for=3 * args.timeout) as client:
        try:
            result = client.call(**body)
        except ZraftError as exc:
            print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
            return 1
    if isinstance(result, str) and not args.json:
        print(result)
    elif args.cmd in LINE_PER_ITEM and not args.json:
        for item in result:
            print(item)
    else:
        print(json.dumps(result))
    return 0


def cmd_call(args: argparse.Namespace) -> int:
    """Send one raw JSON request and print the whole reply; 1 for an error reply."""
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
    with Client(endpoints(args), timeout=args.timeout, retry_for=3 * args.timeout) as client:
        reply = client.request(body)
    print(json.dumps(reply))
    return 0 if reply.get("ok") else 1


def add_command(sub: Any, spec: CommandSpec) -> argparse.ArgumentParser:
    """Add the subcommand for ``spec`` (see the module docstring); return its parser."""
    text = spec.help.replace("%", "%%")
    p = sub.add_parser(spec.name, help=text, description=text)
    add_target(p)
    p.add_argument("--json", action="store_true", help="print results as JSON")
    for arg in spec.args:
        _add_arg(p, spec.name, arg)
    if spec.kind == "read":
        p.add_argument(
            "--stale", action="store_true", help="read this node's state without ReadIndex"
        )
    p.set_defaults(func=cmd_kv, cmd=spec.name, arg_names=[(a.name, a.required) for a in spec.args])
    return p


def _add_arg(p: argparse.ArgumentParser, command: str, arg: Arg) -> None:
    kwargs: dict[str, Any] = {
        "type": CONVERTERS[arg.type],
        "help": TYPE_HELP[arg.type],
    }
    if arg.type == "list[str]":
        kwargs["nargs"] = "+"
    if arg.required:
        p.add_argument(arg.name, **kwargs)
    elif (command, arg.name) in POSITIONAL_OPTIONAL:
        p.add_argument(
            arg.name, nargs="?", default=POSITIONAL_OPTIONAL[command, arg.name], **kwargs
        )
    else:
        p.add_argument("--" + arg.name.replace("_", "-"), dest=arg.name, **kwargs)


def add_parsers(sub: Any) -> None:
    """Add one subcommand per KV command, then ``call``, to the ``zraft`` subparsers."""
    for spec in COMMANDS:
        add_command(sub, spec)
    p = sub.add_parser("call", help='send one raw JSON request, e.g. \'{"cmd":"get","key":"a"}\'')
    add_target(p)
    p.add_argument("request", help="the request as a JSON object")
    p.set_defaults(func=cmd_call)
