"""``zraft status``: every node's role, term, commit, applied index and leader."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from zraft.api.fanout import status_all
from zraft.cli.common import add_target, endpoints
from zraft.status import render_table, watch


def cmd_status(args: argparse.Namespace) -> int:
    """Print the status table (or JSON, or redraw it); 1 when no node answered."""
    targets = endpoints(args)
    if args.watch:
        if args.output == "json":
            print("zraft status: --watch draws the table; use -w json without it", file=sys.stderr)
            return 2
        return watch(targets, max(0.1, args.interval), args.count, args.timeout, args.hash)
    rows = status_all(targets, timeout=args.timeout, state_hash=args.hash)
    if args.output == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(render_table(rows))
    return 0 if any(r.get("status") for r in rows) else 1


def add_parsers(sub: Any) -> None:
    """Add ``status`` to the ``zraft`` subparsers."""
    p = sub.add_parser("status", help="show every node: role, term, commit, applied, leader")
    add_target(p)
    p.add_argument("-w", "--output", choices=["table", "json"], default="table")
    p.add_argument(
        "--hash", action="store_true", help="add a hash of each node's replicated state (STATE)"
    )
    p.add_argument("--watch", action="store_true", help="redraw the table until Ctrl-C")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between redraws")
    p.add_argument("--count", type=int, default=0, help="stop after this many redraws")
    p.set_defaults(func=cmd_status, timeout=1.0)
