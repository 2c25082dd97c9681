"""``check-history``: check recorded histories from the command line.

Usage: ``check-history [--model register|kv] [--format jepsen|zraft]
[--budget SECONDS] FILE...``; one verdict line per file on stdout, errors on
stderr as ``FILE:LINE: error: reason``. Exit 0 when every history is
linearizable, 1 when one is not, 2 when one is undecided (budget exhausted),
malformed or unreadable; with several files the highest code wins.

Wire it into an argparse CLI with ``add_parser(subparsers)``: it sets
``func``, which takes the parsed namespace and returns the exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from zraft.check.history import FORMATS, HistoryError, guess_format, load_history
from zraft.check.models import MODELS
from zraft.check.wgl import LINEARIZABLE, NOT_LINEARIZABLE, Result, check_history

EXIT_OK, EXIT_NOT_LINEARIZABLE, EXIT_UNDECIDED = 0, 1, 2
DEFAULT_BUDGET_S = 60.0
DEFAULT_MODEL = {"jepsen": "register", "zraft": "kv"}

DESCRIPTION = (
    "Check that recorded histories are linearizable. Formats: 'jepsen' (Jepsen's "
    "register log, default for *.log) and 'zraft' (JSON Lines, default for *.jsonl; "
    "schema in zraft/check/history.py). Exit 0: all linearizable, 1: one is not, "
    "2: one is undecided (budget) or malformed."
)


def check_file(
    path: str | Path,
    fmt: str | None = None,
    model: str | None = None,
    budget_s: float | None = None,
) -> Result:
    """Load the history in ``path`` and check it.

    ``fmt`` defaults by extension (``.log`` jepsen, ``.jsonl`` zraft, else the
    first line decides); ``model`` defaults to ``register`` for jepsen and
    ``kv`` for zraft. Raises ``HistoryError`` for malformed input, ValueError
    when the model refuses the history, OSError when the file cannot be read.
    """
    fmt = fmt or guess_format(path)
    ops = load_history(path, fmt)
    return check_history(ops, model or DEFAULT_MODEL[fmt], budget_s)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the check-history options and the FILE arguments to ``parser``."""
    parser.add_argument(
        "--model",
        choices=list(MODELS),
        help="register: one register; kv: independent registers per key "
        "(default: register for jepsen, kv for zraft)",
    )
    parser.add_argument(
        "--format",
        dest="fmt",
        choices=list(FORMATS),
        help="history format (default: jepsen for *.log, zraft for *.jsonl, else sniffed)",
    )
    parser.add_argument(
        "--budget",
        type=_positive,
        default=DEFAULT_BUDGET_S,
        metavar="SECONDS",
        help=f"search time allowed per file; beyond it the verdict is unknown "
        f"(default {DEFAULT_BUDGET_S:g})",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="history files")


def add_parser(subparsers: Any) -> None:
    """Add the ``check-history`` subcommand to an argparse ``subparsers`` object.

    The subcommand's ``func`` default is ``run``: call ``args.func(args)`` and
    use the returned integer as the exit code.
    """
    p = subparsers.add_parser(
        "check-history",
        help="check that recorded histories are linearizable",
        description=DESCRIPTION,
    )
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check every file named by ``args`` (from ``add_arguments``); return the exit code.

    Never raises for bad input: malformed or unreadable files are reported on
    stderr and make the exit code 2.
    """
    code = EXIT_OK
    for name in args.files:
        code = max(code, _check_one(name, args.fmt, args.model, args.budget))
    return code


def _check_one(name: str, fmt: str | None, model: str | None, budget_s: float) -> int:
    started = time.monotonic()
    try:
        result = check_file(name, fmt, model, budget_s)
    except HistoryError as exc:
        where = f"{exc.source}:{exc.line}" if exc.line else exc.source
        print(f"{where}: error: {exc.reason}", file=sys.stderr)
        return EXIT_UNDECIDED
    except (OSError, ValueError) as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return EXIT_UNDECIDED
    elapsed = time.monotonic() - started  # parsing included: what the user waited for
    if result.verdict is LINEARIZABLE:
        keys = f"{result.keys} key" + ("" if result.keys == 1 else "s")
        print(f"{name}: linearizable ({result.ops} ops, {keys}, {elapsed:.2f} s)")
        return EXIT_OK
    if result.verdict is NOT_LINEARIZABLE:
        print(f"{name}: NOT linearizable: {result.explanation}")
        return EXIT_NOT_LINEARIZABLE
    print(f"{name}: unknown: {result.explanation}")
    return EXIT_UNDECIDED


def main(argv: list[str] | None = None) -> int:
    """Run ``check-history`` standalone (``python -m zraft.check FILE...``); return the exit code.

    Usage errors exit 2 through argparse, like every other failure to decide.
    """
    parser = argparse.ArgumentParser(prog="python -m zraft.check", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into head: not an error worth a traceback
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout at exit
        return 141
