"""``zraft run`` (one node, what systemd starts) and ``zraft up`` (a whole local ensemble)."""

from __future__ import annotations

import argparse
from typing import Any

from zraft.daemon import run_node, setup_logging
from zraft.supervisor import run_ensemble

LOG_LEVELS = ["debug", "info", "warning", "error"]


def cmd_run(args: argparse.Namespace) -> int:
    """Run one node in the foreground until it is stopped; return its exit code."""
    setup_logging(args.log_level, args.log_format, args.node)
    return run_node(args.config, args.node)


def cmd_up(args: argparse.Namespace) -> int:
    """Run every node of an ensemble as child processes until Ctrl-C."""
    return run_ensemble(args.config, log_level=args.log_level)


def add_parsers(sub: Any) -> None:
    """Add ``run`` and ``up`` to the ``zraft`` subparsers."""
    p = sub.add_parser("run", help="run one node in the foreground (what systemd starts)")
    p.add_argument(
        "-c", "--config", help="ensemble TOML file (default: the embedded local ensemble)"
    )
    p.add_argument("-n", "--node", required=True, help="this node's id in the ensemble file")
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    p.add_argument("--log-format", default="auto", choices=["auto", "text", "journal", "json"])
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("up", help="start every node of an ensemble here; Ctrl-C stops them")
    p.add_argument("config", nargs="?", help="ensemble TOML file (default: the embedded local one)")
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    p.set_defaults(func=cmd_up)
