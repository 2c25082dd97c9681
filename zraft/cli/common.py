"""What every ``zraft`` subcommand shares: the ensemble file, the target nodes, stderr."""

from __future__ import annotations

import argparse
import os
import sys

from zraft.config import EnsembleConfig, load_config, load_default


def load(path: str | None) -> EnsembleConfig:
    """Return the ensemble in ``path``, or the embedded default; raises ConfigError."""
    return load_config(path) if path else load_default()


def add_target(p: argparse.ArgumentParser) -> None:
    """Add ``-c/--config``, ``-e/--endpoint`` and ``--timeout``: the nodes a command talks to."""
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


def endpoints(args: argparse.Namespace) -> list[str]:
    """Return the client endpoints named by ``add_target``'s options; raises ConfigError."""
    if args.endpoint:
        return list(args.endpoint)
    return [n.client for n in load(args.config).nodes]


def problem(text: str, priority: int = 3) -> None:
    """Print to stderr; under journald each line gets a syslog priority (3 error, 4 warning)."""
    prefix = f"<{priority}>" if os.environ.get("JOURNAL_STREAM") else ""
    for line in str(text).splitlines():
        print(prefix + line, file=sys.stderr)
