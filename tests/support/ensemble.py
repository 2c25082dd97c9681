"""Real ``zraft run`` processes: one ensemble file, started, signalled and watched by pid.

``Ensemble`` writes the TOML of ``n`` nodes ``n1..nN`` into its work directory
and starts each node as ``python -m zraft run`` behind its network's command
prefix. Where the nodes live is a ``Network``: ``Loopback`` (here; every node on
127.0.0.1 with its own ports) for the integration tests, or
``tests.faults.net.Netns`` (a network namespace per node, faults by nftables)
for the fault suite, whose ``tests.faults.ensemble.FaultEnsemble`` adds its end
phase. Every process is signalled and reaped by its own pid, never by name.

``tests/conftest.py`` makes fixtures of it: ``ensemble`` (three nodes on
loopback in ``tmp_path``, started) and ``make_ensemble`` (build your own); both
stop every node at teardown.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import zmq

from tests import ROOT
from zraft.api.client import Client
from zraft.status import collect

TIMING = {"tick_ms": 10, "heartbeat_ms": 50, "election_ms": 500}
"""Raft timing of a test ensemble; ``request_timeout_ms`` too when given (it writes [client])."""


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


class NetError(RuntimeError):
    """The network could not be set up or changed."""


class Network:
    """Where the nodes live: their endpoints, their command prefix, the faults between them.

    ``setup(ids)`` comes first (``Ensemble`` calls it), ``teardown()`` last.
    """

    kind = "?"
    partitions = False  # whether apply() can cut links

    def setup(self, ids: list[str]) -> None:
        self.ids = list(ids)

    def raft_endpoint(self, nid: str) -> str:
        raise NotImplementedError

    def client_endpoint(self, nid: str) -> str:
        raise NotImplementedError

    def metrics_address(self, nid: str) -> str:
        """Return ``host:port`` for the node's HTTP endpoint (/metrics, /health, /ready)."""
        raise NetError(f"the {self.kind} network gives no metrics endpoints")

    def command_prefix(self, nid: str) -> list[str]:
        """Return what goes before a node's command line (``ip netns exec ...``)."""
        return []

    def apply(self, cuts: Iterable[tuple[str, str]] = (), loss_pct: int = 0) -> None:
        """Make exactly these faults active: ``(src, dst)`` = src's messages to dst are lost."""
        raise NetError(f"the {self.kind} network cannot partition nodes")

    def heal(self) -> None:
        """Remove every network fault."""

    def teardown(self) -> None:
        """Undo setup (best effort)."""


class Loopback(Network):
    """Every node on 127.0.0.1 with its own raft, client and metrics ports; no network faults."""

    kind = "loopback"

    def setup(self, ids: list[str]) -> None:
        super().setup(ids)
        n = len(ids)
        ports = free_ports(3 * n)
        self._raft = {nid: ports[i] for i, nid in enumerate(ids)}
        self._client = {nid: ports[n + i] for i, nid in enumerate(ids)}
        self._metrics = {nid: ports[2 * n + i] for i, nid in enumerate(ids)}

    def raft_endpoint(self, nid: str) -> str:
        return f"tcp://127.0.0.1:{self._raft[nid]}"

    def client_endpoint(self, nid: str) -> str:
        return f"tcp://127.0.0.1:{self._client[nid]}"

    def metrics_address(self, nid: str) -> str:
        return f"127.0.0.1:{self._metrics[nid]}"


class Ensemble:
    """``n`` nodes ``n1..nN`` of one ensemble file (``workdir/ensemble.toml``) on ``net``.

    ``net`` defaults to a fresh ``Loopback``. ``timing`` overrides ``TIMING``;
    ``extra_toml`` is appended before the ``[[node]]`` tables, ``raft_toml``
    inside ``[raft]``; ``metrics`` gives
    every node an HTTP endpoint (``self.metrics``); ``unsafe`` is the nodes'
    ``ZRAFT_UNSAFE_TEST_ONLY`` (never inherited from this process). Nothing
    starts before ``start()``; ``stop_all()`` then ``close()`` end it (so does
    ``with``).
    """

    stop_timeout = 15.0  # stop_all(): seconds for every node to exit on SIGTERM

    def __init__(
        self,
        workdir: Path,
        n: int = 3,
        *,
        net: Network | None = None,
        name: str = "test",
        timing: dict[str, int] | None = None,
        extra_toml: str = "",
        metrics: bool = False,
        unsafe: str = "",
        raft_toml: str = "",
    ) -> None:
        self.workdir = workdir
        self.net = net = net or Loopback()
        self.ids = [f"n{i + 1}" for i in range(n)]
        self.unsafe = unsafe
        self.timing = dict(TIMING, **(timing or {}))
        net.setup(self.ids)
        self.raft = {nid: net.raft_endpoint(nid) for nid in self.ids}
        self.client = {nid: net.client_endpoint(nid) for nid in self.ids}
        self.metrics = {nid: net.metrics_address(nid) for nid in self.ids} if metrics else {}
        t = self.timing
        lines = [
            f'[ensemble]\nname = "{name}"\n',
            f"[raft]\ntick_ms = {t['tick_ms']}\nheartbeat_interval_ms = {t['heartbeat_ms']}\n"
            f"election_timeout_ms = {t['election_ms']}\n{raft_toml}\n",
        ]
        if "request_timeout_ms" in t:
            lines.append(f"[client]\nrequest_timeout_ms = {t['request_timeout_ms']}\n")
        lines.append(extra_toml)
        for nid in self.ids:
            lines.append(
                f'[[node]]\nid = "{nid}"\nraft = "{self.raft[nid]}"\n'
                f'client = "{self.client[nid]}"\ndata_dir = "{workdir / nid}"\n'
                + (f'metrics = "{self.metrics[nid]}"\n' if metrics else "")
            )
        self.config = workdir / "ensemble.toml"
        self.config.write_text("\n".join(lines))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.stopped: set[str] = set()  # SIGSTOPped, not yet continued
        self.starts = 0
        self._ctx: zmq.Context[Any] | None = None

    def __enter__(self) -> Ensemble:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
        self.close()

    @property
    def election_s(self) -> float:
        return self.timing["election_ms"] / 1000.0

    @property
    def ctx(self) -> zmq.Context[Any]:
        """This ensemble's own ZeroMQ context (made on first use; ``close()`` destroys it)."""
        if self._ctx is None:
            self._ctx = zmq.Context()
        return self._ctx

    # -- processes -----------------------------------------------------------

    def log_path(self, nid: str) -> Path:
        return self.workdir / f"{nid}.log"

    def log_text(self, nid: str) -> str:
        return self.log_path(nid).read_text(errors="replace")

    def command(self, nid: str) -> list[str]:
        """Return the command line that starts node ``nid``."""
        return self.net.command_prefix(nid) + [
            sys.executable,
            "-m",
            "zraft",
            "run",
            "--config",
            str(self.config),
            "--node",
            nid,
            "--log-format",
            "text",
            "--log-level",
            "info",
        ]

    def start(self, *nids: str) -> None:
        """Start the given nodes (all when none given) that are not running.

        Each appends its output to ``log_path(nid)``.
        """
        for nid in nids or self.ids:
            if self.alive(nid):
                continue
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            env.pop("ZRAFT_UNSAFE_TEST_ONLY", None)
            if self.unsafe:
                env["ZRAFT_UNSAFE_TEST_ONLY"] = self.unsafe
            with open(self.log_path(nid), "ab") as log:
                self.procs[nid] = subprocess.Popen(
                    self.command(nid),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=ROOT,
                    env=env,
                )
            self.stopped.discard(nid)
            self.starts += 1

    def alive(self, nid: str) -> bool:
        p = self.procs.get(nid)
        return p is not None and p.poll() is None

    def running(self) -> list[str]:
        """Nodes whose process is alive and not stopped."""
        return [n for n in self.ids if self.alive(n) and n not in self.stopped]

    def kill(self, *nids: str) -> None:
        """SIGKILL these nodes (all at once) and reap them."""
        victims = [self.procs[n] for n in nids if self.alive(n)]
        for p in victims:
            os.kill(p.pid, signal.SIGKILL)
        for p in victims:
            p.wait(timeout=15)
        self.stopped.difference_update(nids)

    def terminate(self, nid: str, timeout: float = 15.0) -> int | None:
        """SIGTERM this node (a graceful stop) and reap it; return its exit code."""
        if not self.alive(nid):
            return None
        p = self.procs[nid]
        os.kill(p.pid, signal.SIGTERM)
        return p.wait(timeout=timeout)

    def pause(self, nid: str) -> None:
        """SIGSTOP this node (``resume`` continues it)."""
        if self.alive(nid):
            os.kill(self.procs[nid].pid, signal.SIGSTOP)
            self.stopped.add(nid)

    def resume(self, nid: str) -> None:
        if self.alive(nid):
            os.kill(self.procs[nid].pid, signal.SIGCONT)
        self.stopped.discard(nid)

    def stop_all(self, timeout: float | None = None) -> dict[str, int | None]:
        """SIGCONT + SIGTERM every live node, wait, SIGKILL stragglers; return exit codes.

        ``timeout`` (default ``stop_timeout``) bounds the wait for all of them together.
        """
        live = {n: p for n, p in self.procs.items() if p.poll() is None}
        for p in live.values():
            os.kill(p.pid, signal.SIGCONT)
            os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + (self.stop_timeout if timeout is None else timeout)
        for p in live.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        self.stopped.clear()
        return {n: p.returncode for n, p in self.procs.items()}

    def close(self) -> None:
        """Kill whatever is still running (by pid) and destroy the ZeroMQ context."""
        for p in self.procs.values():
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        if self._ctx is not None:
            self._ctx.destroy(linger=0)
            self._ctx = None

    # -- observation ---------------------------------------------------------

    def statuses(
        self, nids: list[str] | None = None, timeout: float = 0.5, state_hash: bool = False
    ) -> dict[str, dict[str, Any] | None]:
        """Ask every given node (default: running ones) for its status in parallel.

        A node that does not answer within ``timeout`` maps to None.
        """
        nids = self.running() if nids is None else nids
        rows = collect([self.client[n] for n in nids], timeout, state_hash)
        return {nid: row["status"] for nid, row in zip(nids, rows, strict=True)}

    def wait_leader(self, timeout: float = 20.0, exclude: tuple[str, ...] = ()) -> str:
        """Wait until every running node answers and all agree on one leader; return its id.

        A leader in ``exclude`` (the one just killed, say) does not count.
        Raises AssertionError on timeout.
        """
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

    def leader(self, timeout: float = 15.0, among: list[str] | None = None) -> str:
        """Wait until a majority of the ensemble agrees on one leader; return it.

        Only nodes of ``among`` (default: all) that are running are asked, so
        it works while some nodes are down, stopped or cut off. Raises
        TimeoutError on timeout.
        """
        among = among or self.ids
        need = len(self.ids) // 2 + 1
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while True:
            last = self.statuses([n for n in among if n in self.running()])
            claims = [s for s in last.values() if s and s["role"] == "leader"]
            if claims:
                top = max(claims, key=lambda s: s["term"])
                agree = [s for s in last.values() if s and s["term"] == top["term"] and s["leader"]]
                if sum(1 for s in agree if s["leader"] == top["id"]) >= need:
                    return top["id"]
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no leader agreed by a majority within {timeout}s: {last}")
            time.sleep(0.05)

    def client_for(self, *nids: str, **kw: Any) -> Client:
        """Return a client of the given nodes (all when none given); ``kw`` go to ``Client``."""
        return Client([self.client[n] for n in (nids or self.ids)], **kw)
