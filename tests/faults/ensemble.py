"""The node processes of one fault run: ``tests.support.ensemble.Ensemble`` plus its end phase.

``FaultEnsemble`` is the shared ``Ensemble`` with the fault suite's settings
(ensemble name ``faults``, a 1.5 s client request timeout) and two additions:
each node is started through ``setpriv --pdeathsig KILL`` (util-linux; it
execs, so the pid stays the node's), so that if the runner dies, its nodes die
with it instead of lingering in the namespaces (not ``preexec_fn``: the runner
forks while its load threads run, where ``preexec_fn`` may deadlock the
child); and ``converge``, which waits for every node to hold the same state.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from tests.faults.net import Network
from tests.support.ensemble import Ensemble
from zraft.api.client import Client, ZraftError
from zraft.builtin.kv import MAX_KEYS_LIMIT, MAX_MGET_KEYS

STALL_S = 8.0  # converge() gives up when no node's applied index moved for this long
TIMING = {"tick_ms": 10, "heartbeat_ms": 50, "election_ms": 500, "request_timeout_ms": 1500}


def die_with_parent() -> list[str]:
    """Return a command prefix that makes the child get SIGKILL when its parent exits.

    ``setpriv --pdeathsig`` sets PR_SET_PDEATHSIG and execs the command; an
    empty prefix where it is missing (the runner still kills its nodes itself).
    """
    return ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []


class FaultEnsemble(Ensemble):
    """``n`` nodes ``n1..nN`` of one ensemble file under ``workdir`` on ``net``."""

    stop_timeout = 10.0

    def __init__(
        self,
        workdir: Path,
        net: Network,
        n: int,
        unsafe: str = "",
        timing: dict[str, int] | None = None,
        extra_toml: str = "",
        raft_toml: str = "",
    ) -> None:
        super().__init__(
            workdir,
            n,
            net=net,
            name="faults",
            timing=dict(TIMING, **(timing or {})),
            extra_toml=extra_toml,
            raft_toml=raft_toml,
            unsafe=unsafe,
        )

    def command(self, nid: str) -> list[str]:
        return die_with_parent() + super().command(nid)

    # -- the end of a run: the same state everywhere ---------------------------

    def state_digest(self, nid: str) -> str | None:
        """Return a SHA-256 of node ``nid``'s whole KV state, read with stale (local) reads.

        Computed here rather than by the node's own ``status`` with ``"hash": true``,
        which once crashed the node (tests/faults/test_faults.py has the regression test).
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

    def node_hashes(self, st: dict[str, Any]) -> dict[str, str | None]:
        """Return each node's own state hash (``status`` with ``hash``), None where it
        does not answer or has applied another index than in ``st``."""
        rows = self.statuses(self.ids, timeout=5.0, state_hash=True)
        return {
            n: r.get("state_hash") if r and st.get(n) and r["applied"] == st[n]["applied"] else None
            for n, r in rows.items()
        }

    def converge(self, timeout: float = 30.0) -> dict[str, dict[str, Any] | None]:
        """Wait until every node has applied the same index and holds the same state.

        Returns the last statuses, each with ``state_hash`` (``state_digest``: the
        keys and values as clients read them) and ``node_hash`` (the node's own
        hash of its whole replicated state, snapshot sections and sessions
        included) when the applied index was stable across the digests, whether
        or not they agreed: the caller judges them. Returns early when the
        applied indexes agree but the states keep differing.
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
            if any(not self.alive(n) for n in self.ids):
                return st  # a node exited (it could not start): it never catches up
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
                        own = self.node_hashes(st)
                        for n, s in st.items():
                            s["state_hash"] = digests[n]  # type: ignore[index]
                            s["node_hash"] = own[n]  # type: ignore[index]
                        if len(set(digests.values())) == 1 and len(set(own.values())) == 1:
                            if None not in own.values():
                                return st
                        disagreements += 1
                        if disagreements >= 3:
                            return st
            if time.monotonic() >= deadline:
                return st
            time.sleep(0.1)
