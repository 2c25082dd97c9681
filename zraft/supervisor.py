"""``zraft up``: run every node of an ensemble as child processes of this terminal.

For development and demos; in production each node is its own systemd unit.
Child output is prefixed with the node id. Ctrl-C (or SIGTERM) sends SIGTERM
to every child, waits for a graceful stop, then SIGKILLs stragglers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO

from zraft.api.fanout import status_all
from zraft.config import ConfigError, EnsembleConfig, load_config, load_default
from zraft.daemon import EX_CONFIG
from zraft.status import render_table

STOP_GRACE_S = 10.0


def _pump(prefix: str, stream: IO[bytes]) -> None:
    for line in iter(stream.readline, b""):
        sys.stderr.write(f"{prefix} {line.decode(errors='replace')}")
        sys.stderr.flush()


def run_ensemble(config_path: str | None, log_level: str = "info") -> int:
    """Start all nodes, print the status table once a leader is elected, wait for Ctrl-C."""
    try:
        config = load_config(config_path) if config_path else load_default()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EX_CONFIG
    procs: dict[str, subprocess.Popen[bytes]] = {}
    stopping = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    for node in config.nodes:
        argv = [
            sys.executable,
            "-m",
            "zraft",
            "run",
            "--node",
            node.id,
            "--log-level",
            log_level,
            "--log-format",
            "text",
        ]
        if config_path:
            argv[4:4] = ["--config", config_path]
        procs[node.id] = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        threading.Thread(
            target=_pump, args=(f"[{node.id}]", procs[node.id].stdout), daemon=True
        ).start()
    print(
        f"zraft up: ensemble {config.name!r}, {len(procs)} nodes, pids "
        + ", ".join(f"{n}={p.pid}" for n, p in procs.items()),
        file=sys.stderr,
    )
    _announce_leader(config, stopping)
    reported: set[str] = set()
    while not stopping.wait(0.5):
        for nid, p in procs.items():
            if p.poll() is not None and nid not in reported:
                reported.add(nid)
                print(f"zraft up: node {nid} exited with code {p.returncode}", file=sys.stderr)
        if len(reported) == len(procs):
            break
    return _stop_all(procs)


def _announce_leader(config: EnsembleConfig, stopping: threading.Event) -> None:
    endpoints = [n.client for n in config.nodes]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not stopping.is_set():
        rows = status_all(endpoints, timeout=0.5)
        if any(r["status"] and r["status"]["role"] == "leader" for r in rows):
            print(render_table(rows), flush=True)
            print(
                "zraft up: ready. Try: zraft set hello world && zraft get hello "
                "(Ctrl-C stops the ensemble)",
                flush=True,
            )
            return
        time.sleep(0.2)


def _stop_all(procs: dict[str, subprocess.Popen[bytes]]) -> int:
    print("zraft up: stopping", file=sys.stderr)
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for p in procs.values():
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    bad = {n: p.returncode for n, p in procs.items() if p.returncode not in (0, -signal.SIGTERM)}
    if bad:
        print(f"zraft up: exit codes {bad}", file=sys.stderr)
    return 0
