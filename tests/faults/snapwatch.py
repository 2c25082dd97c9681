"""SIGKILL nodes at a moment seen on disk: ``python -m tests.faults.snapwatch``.

A snapshot is written in tens of milliseconds and sent in about as long, so a
fault that must land inside one cannot be timed from the runner, whose client
threads share one GIL with whatever would watch. This runs as a process of its
own instead: it polls a directory every ``POLL_S`` for a file that matches one
of the ``--match`` patterns (and is not named in ``--ignore``; a ``.snap``
name must hold an index above ``--index-above``), waits until that file holds
``--min-bytes`` and then a random delay of up to ``--delay-max`` seconds, sends
SIGKILL to every ``--pid`` at once and prints one JSON line: the file, its
size when the signal went, and how long the watch took. It exits 0 after
killing, 3 when nothing matched within ``--timeout`` (it kills nothing then).

``kill_when`` runs it from a scenario and reaps the killed nodes. Every
process is signalled by the pid it was given, never by name.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests import ROOT

POLL_S = 0.0005
NO_MATCH = 3
_SNAP = re.compile(r"^([0-9a-f]{16})-[0-9a-f]{16}\.snap$")


@dataclass(frozen=True)
class Hit:
    """What the watcher saw when it killed: the file, its size then, seconds it watched."""

    name: str
    size: int
    after_s: float


def _matches(name: str, patterns: list[str], ignore: set[str], index_above: int) -> bool:
    if name in ignore or not any(fnmatch.fnmatchcase(name, p) for p in patterns):
        return False
    m = _SNAP.match(name)
    return m is None or int(m.group(1), 16) > index_above


def watch(
    directory: Path,
    patterns: list[str],
    pids: list[int],
    *,
    ignore: Iterable[str] = (),
    index_above: int = -1,
    min_bytes: int = 0,
    delay_max: float = 0.0,
    timeout: float = 10.0,
    rng: random.Random | None = None,
) -> Hit | None:
    """Wait for a matching file, then SIGKILL ``pids``; return what was seen (None: nothing)."""
    rng = rng or random.Random()
    skip = set(ignore)
    started = time.monotonic()
    deadline = started + timeout
    chosen: str | None = None
    while time.monotonic() < deadline:
        try:
            names = os.listdir(directory) if chosen is None else [chosen]
        except OSError:
            names = []
        for name in names:
            if chosen is None and not _matches(name, patterns, skip, index_above):
                continue
            try:
                size = (directory / name).stat().st_size
            except OSError:
                chosen = None  # renamed or removed before it held enough
                continue
            chosen = name
            if size < min_bytes:
                break  # watch this one file until it holds enough
            if delay_max > 0:
                time.sleep(rng.uniform(0, delay_max))
            try:
                size = (directory / name).stat().st_size
            except OSError:
                size = -1  # it was published or removed during the delay
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return Hit(name, size, round(time.monotonic() - started, 4))
        time.sleep(POLL_S)
    return None


def kill_when(
    ens: Any,
    nids: list[str],
    directory: Path,
    patterns: list[str],
    *,
    seed: int,
    timeout: float = 10.0,
    **kw: Any,
) -> Hit | None:
    """Run the watcher for nodes ``nids`` of ``ens`` and reap those it killed.

    ``kw`` are ``watch``'s options (ignore, index_above, min_bytes, delay_max).
    Returns the hit, or None when nothing matched within ``timeout``.
    """
    pids = [str(ens.procs[n].pid) for n in nids if ens.alive(n)]
    if not pids:
        return None
    cmd = [sys.executable, "-m", "tests.faults.snapwatch", "--dir", str(directory)]
    cmd += ["--pid", ",".join(pids), "--timeout", str(timeout), "--seed", str(seed)]
    cmd += [a for p in patterns for a in ("--match", p)]
    if kw.get("ignore"):
        cmd += ["--ignore", ",".join(kw["ignore"])]
    for key in ("index_above", "min_bytes", "delay_max"):
        if key in kw:
            cmd += [f"--{key.replace('_', '-')}", str(kw[key])]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout + 30
    )
    if proc.returncode == NO_MATCH:
        return None
    if proc.returncode != 0:
        raise RuntimeError(f"snapwatch failed ({proc.returncode}): {proc.stderr.strip()}")
    for nid in nids:
        p = ens.procs.get(nid)
        if p is not None:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass  # not killed (it was not running): the runner heals it later
    return Hit(**json.loads(proc.stdout))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.faults.snapwatch", description=__doc__)
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--match", action="append", required=True, help="fnmatch pattern")
    ap.add_argument("--pid", required=True, help="comma-separated pids to SIGKILL")
    ap.add_argument("--ignore", default="", help="comma-separated names that never match")
    ap.add_argument("--index-above", type=int, default=-1)
    ap.add_argument("--min-bytes", type=int, default=0)
    ap.add_argument("--delay-max", type=float, default=0.0)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    hit = watch(
        args.dir,
        args.match,
        [int(p) for p in args.pid.split(",") if p],
        ignore=[n for n in args.ignore.split(",") if n],
        index_above=args.index_above,
        min_bytes=args.min_bytes,
        delay_max=args.delay_max,
        timeout=args.timeout,
        rng=random.Random(args.seed),
    )
    if hit is None:
        return NO_MATCH
    print(json.dumps(hit.__dict__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
