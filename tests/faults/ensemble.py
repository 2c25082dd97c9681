"""The node processes of one fault run: start, SIGKILL, SIGSTOP/SIGCONT, observe.

Every process is one ``python -m zraft run`` started here (behind the
network's command prefix) and is signalled and reaped by its own pid only. Each
is started through ``setpriv --pdeathsig KILL`` (util-linux; it execs, so the
pid stays the node's), so that if the runner dies, its nodes die with it
instead of lingering in the namespaces. (Not ``preexec_fn``: the runner forks
while its load threads run, where ``preexec_fn`` may deadlock the child.)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import zmq

from tests.faults.net import Network
from zraft.api.client import Client, ZraftError
from zraft.builtin.kv import MAX_KEYS_LIMIT, MAX_MGET_KEYS
from zraft.status import collect

ROOT = Path(__file__).resolve().parents[2]

STALL_S = 8.0  # converge() gives up when no node's applied index moved for this long
TIMING = {"tick_ms": 10, "heartbeat_ms": 50, "election_ms": 500, "request_timeout_ms": 1500}


def die_with_parent() -> list[str]:
    """Return a command prefix that makes the child get SIGKILL when its parent exits.

    ``setpriv --pdeathsig`` sets PR_SET_PDEATHSIG and execs the command; an
    empty prefix where it is missing (the runner still kills its nodes itself).
    """
    return ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []


class Ensemble:
    """``n`` nodes ``n1..nN`` of one ensemble file under ``workdir`` on ``net``."""

    def __init__(
        self,
        workdir: Path,
        net: Network,
        n: int,
        unsafe: str = "",
        timing: dict[str, int] | None = None,
        extra_toml: str = "",
    ) -> None:
        self.workdir = workdir
        self.net = net
        self.ids = [f"n{i + 1}" for i in range(n)]
        self.unsafe = unsafe
        self.timing = dict(TIMING, **(timing or {}))
        net.setup(self.ids)
        self.client = {nid: net.client_endpoint(nid) for nid in self.ids}
        t = self.timing
        lines = [
            '[ensemble]\nname = "faults"\n',
            f"[raft]\ntick_ms = {t['tick_ms']}\nheartbeat_interval_ms = {t['heartbeat_ms']}\n"
            f"election_timeout_ms = {t['election_ms']}\n",
            f"[client]\nrequest_timeout_ms = {t['request_timeout_ms']}\n",
            extra_toml,
        ]
        for nid in self.ids:
            lines.append(
                f'[[node]]\nid = "{nid}"\nraft = "{net.raft_endpoint(nid)}"\n'
                f'client = "{self.client[nid]}"\ndata_dir = "{workdir / nid}"\n'
            )
        self.config = workdir / "ensemble.toml"
        self.config.write_text("\n".join(lines))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.stopped: set[str] = set()  # SIGSTOPped, not yet continued
        self.starts = 0
        self.ctx = zmq.Context()

    @property
    def election_s(self) -> float:
        return self.timing["election_ms"] / 1000.0

    # -- processes -----------------------------------------------------------

    def log_path(self, nid: str) -> Path:
        return self.workdir / f"{nid}.log"

    def start(self, *nids: str) -> None:
        """Start the given nodes (all when none given) that are not running."""
        for nid in nids or self.ids:
            if self.alive(nid):
                continue
            cmd = (
                die_with_parent()
                + self.net.command_prefix(nid)
                + [
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
            )
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            env.pop("ZRAFT_UNSAFE_TEST_ONLY", None)
            if self.unsafe:
                env["ZRAFT_UNSAFE_TEST_ONLY"] = self.unsafe
            with open(self.log_path(nid), "ab") as log:
                self.procs[nid] = subprocess.Popen(
                    cmd,
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
        if self.alive(nid):
            os.kill(self.procs[nid].pid, signal.SIGSTOP)
            self.stopped.add(nid)

    def resume(self, nid: str) -> None:
        if self.alive(nid):
            os.kill(self.procs[nid].pid, signal.SIGCONT)
        self.stopped.discard(nid)

    def stop_all(self, timeout: float = 10.0) -> dict[str, int | None]:
        """SIGCONT + SIGTERM every live node, wait, SIGKILL stragglers; return exit codes."""
        live = {n: p for n, p in self.procs.items() if p.poll() is None}
        for p in live.values():
            os.kill(p.pid, signal.SIGCONT)
            os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in live.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        self.stopped.clear()
        return {n: p.returncode for n, p in self.procs.items()}

    def close(self) -> None:
        """Kill whatever is still running (by pid) and close the ZeroMQ context."""
        for p in self.procs.values():
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        self.ctx.destroy(linger=0)

    # -- observation ---------------------------------------------------------

    def statuses(
        self, nids: list[str] | None = None, timeout: float = 0.5, state_hash: bool = False
    ) -> dict[str, dict[str, Any] | None]:
        """Ask every given node (default: running ones) for its status in parallel."""
        nids = self.running() if nids is None else nids
        rows = collect([self.client[n] for n in nids], timeout, state_hash)
        return {nid: row["status"] for nid, row in zip(nids, rows, strict=True)}

    def leader(self, timeout: float = 15.0, among: list[str] | None = None) -> str:
        """Wait until a majority of ``among`` (default: all) agrees on one leader; return it."""
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

    def state_digest(self, nid: str) -> str | None:
        """Return a SHA-256 of node ``nid``'s whole KV state, read with stale (local) reads.

        Computed here because the node's own ``status`` with ``"hash": true``
        crashes the node (see tests/faults/test_faults.py, the xfail test of it).
        """
        c = Client(self.client[nid], timeout=3.0, retry_for=0, context=self.ctx)
        try:
            keys = c.call("keys", prefix="", limit=MAX_KEYS_LIMIT, stale=True)
            values: list[Any] = []
            for i in range(0, len(keys), MAX_MGET_KEYS):
                values += c.call("mget", keys=keys[i : i + MAX_MGET_KEYS], stale=True)
        except ZraftError:
            return None
        finally:
            c.close()
        blob = json.dumps([keys, values], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def converge(self, timeout: float = 30.0) -> dict[str, dict[str, Any] | None]:
        """Wait until every node has applied the same index and holds the same state.

        Returns the last statuses, each with ``state_hash`` (``state_digest``) when
        the applied index was stable across the digests, whether or not they
        agreed: the caller judges them. Returns early when the applied indexes
        agree but the states keep differing.
        """
        deadline = time.monotonic() + timeout
        disagreements = 0
        progress: tuple[Any, ...] = ()
        progress_at = time.monotonic()
        while True:
            st = self.statuses(self.ids, timeout=2.0)
            now = time.monotonic()
            seen = tuple((s or {}).get("applied") for s in st.values())
            if seen != progress:
                progress, progress_at = seen, now
            elif now - progress_at > STALL_S:
                return st  # nothing moves any more: waiting longer cannot help
            if all(st.values()):
                applied = {s["applied"] for s in st.values()}  # type: ignore[index]
                commits = {s["commit"] for s in st.values()}  # type: ignore[index]
                if len(applied) == 1 and commits == applied:
                    digests = {n: self.state_digest(n) for n in self.ids}
                    again = self.statuses(self.ids, timeout=2.0)
                    stable = all(
                        a and a["applied"] == st[n]["applied"]  # type: ignore[index]
                        for n, a in again.items()
                    )
                    if stable and None not in digests.values():
                        for n, s in st.items():
                            s["state_hash"] = digests[n]  # type: ignore[index]
                        if len(set(digests.values())) == 1:
                            return st
                        disagreements += 1
                        if disagreements >= 3:
                            return st
            if time.monotonic() >= deadline:
                return st
            time.sleep(0.1)
