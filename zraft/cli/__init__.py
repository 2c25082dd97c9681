"""The ``zraft`` command line: run a node, start a local ensemble, talk to one.

One module per group of subcommands, each with ``add_parsers(subparsers)``:
``run`` (run, up), ``startup`` (check-config, plugins), ``status``, ``kv``
(the KV commands, built from the store's CommandSpecs, and call), ``bench``,
``snapshot`` (save, inspect, restore, take), ``recover`` (disaster recovery);
``check-history`` comes from ``zraft.check.cli``. ``common`` holds what they
share.

Exit codes: 0 success, 1 an error reply or failure, 2 usage, 78 configuration.
"""

from __future__ import annotations

import argparse
import sys

from zraft import __version__
from zraft.check import cli as check_history
from zraft.cli import bench, kv, recover, run, snapshot, startup, status
from zraft.config import ConfigError
from zraft.daemon import EX_CONFIG

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="zraft", description="zraft: a Raft consensus daemon")
    parser.add_argument("--version", action="version", version=f"zraft {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (run, startup, status, kv, bench, snapshot, recover):
        module.add_parsers(sub)
    check_history.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:  # from loading --config for the target endpoints
        print(exc, file=sys.stderr)
        return EX_CONFIG
