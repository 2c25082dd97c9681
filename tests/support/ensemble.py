"""Real zraft processes on loopback for integration tests (managed by pid, never by name)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests import ROOT
from zraft.api.client import Client
from zraft.status import collect


def free_ports(n: int) -> list[int]:
    """Return ``n`` distinct loopback TCP ports that were free a moment ago."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class Cluster:
    """An ensemble of ``n`` node processes with its own TOML file under ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        n: int = 3,
        election_ms: int = 500,
        heartbeat_ms: int = 50,
        tick_ms: int = 10,
        extra_toml: str = "",
    ) -> None:
        self.workdir = workdir
        self.ids = [f"n{i + 1}" for i in range(n)]
        ports = free_ports(3 * n)
        self.raft = {nid: f"tcp://127.0.0.1:{ports[i]}" for i, nid in enumerate(self.ids)}
        self.client = {nid: f"tcp://127.0.0.1:{ports[n + i]}" for i, nid in enumerate(self.ids)}
        self.metrics = {nid: f"127.0.0.1:{ports[2 * n + i]}" for i, nid in enumerate(self.ids)}
        self.election_ms = election_ms
        lines = [
            '[ensemble]\nname = "test"\n',
            f"[raft]\ntick_ms = {tick_ms}\nheartbeat_interval_ms = {heartbeat_ms}\n"
            f"election_timeout_ms = {election_ms}\n",
            extra_toml,
        ]
        for nid in self.ids:
            lines.append(
                f'[[node]]\nid = "{nid}"\nraft = "{self.raft[nid]}"\n'
                f'client = "{self.client[nid]}"\n'
                f'data_dir = "{workdir / nid}"\nmetrics = "{self.metrics[nid]}"\n'
            )
        self.config = workdir / "ensemble.toml"
        self.config.write_text("\n".join(lines))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Any] = {}

    # -- processes ---------------------------------------------------------

    def start(self, nid: str | None = None) -> None:
        for node in [nid] if nid else self.ids:
            assert node not in self.procs or self.procs[node].poll() is not None
            log = open(self.workdir / f"{node}.log", "ab")
            self.logs[node] = log
            self.procs[node] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "zraft",
                    "run",
                    "--config",
                    str(self.config),
                    "--node",
                    node,
                    "--log-format",
                    "text",
                    "--log-level",
                    "info",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )

    def kill(self, nid: str, sig: int = signal.SIGKILL) -> None:
        p = self.procs[nid]
        if p.poll() is None:
            os.kill(p.pid, sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                p.wait(timeout=15)

    def stop_all(self, sig: int = signal.SIGTERM) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                os.kill(p.pid, sig)
        for p in self.procs.values():
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        for log in self.logs.values():
            log.close()

    def alive(self, nid: str) -> bool:
        return nid in self.procs and self.procs[nid].poll() is None

    def log_text(self, nid: str) -> str:
        return (self.workdir / f"{nid}.log").read_text(errors="replace")

    # -- observation -------------------------------------------------------

    def statuses(self, timeout: float = 0.5) -> dict[str, dict[str, Any] | None]:
        live = [n for n in self.ids if self.alive(n)]
        rows = collect([self.client[n] for n in live], timeout=timeout)
        return {n: r["status"] for n, r in zip(live, rows, strict=True)}

    def wait_leader(self, timeout: float = 20.0, exclude: tuple[str, ...] = ()) -> str:
        """Wait until every live node answers and agrees on one leader; return its id."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.statuses()
            leaders = {n for n, s in last.items() if s and s["role"] == "leader"}
            agreed = {s["leader"] for s in last.values() if s}
            if len(leaders) == 1 and agreed == leaders and all(last.values()):
                (lead,) = leaders
                if lead not in exclude:
                    return lead
            time.sleep(0.05)
        raise AssertionError(f"no agreed leader within {timeout}s: {last}")

    def client_for(self, *nids: str, **kw: Any) -> Client:
        return Client([self.client[n] for n in (nids or self.ids)], **kw)
