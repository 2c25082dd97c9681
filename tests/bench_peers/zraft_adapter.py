"""zraft adapter for the shared peer benchmark harness (shared/bench/peers).

Plugs zraft into ``harness.bench`` next to PySyncObj and pyraft; see README.md
beside this file for the command line. Three ``python -m zraft run`` processes
on 127.0.0.1, one ensemble TOML written into the harness workdir:

    node idx 0..2  <->  zraft ids n1..n3
    client port = base_port + 10*(idx+1)     (8010, 8020, 8030 by default)
    raft port   = client port + 1            (8011, 8021, 8031)
    data_dir    = the harness's node_dir(idx) (/tmp/peers-bench/zraft/nodeN)

Raft timing is zraft's default (tick 10 ms, heartbeat 100 ms, election 1000 ms);
no metrics endpoint. The client wraps ``zraft.api.client.Client`` bound to the
one node the harness chose, with ``retry_for=0`` so that, as with the peers' RESP
clients, an error reply (NOT_LEADER, OVERLOADED, TIMEOUT...) is counted as an
error instead of being hidden as latency by the client's own retries.

This module is imported by the harness process only; node processes run
``python -m zraft`` with the repo root put on PYTHONPATH (see ``_repo_on_path``).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time

import zmq
from harness.adapter import ClusterAdapter, KVClient, KVError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# zraft's roles -> the harness's vocabulary (PreVote counts as campaigning).
_ROLES = {
    "leader": "leader",
    "follower": "follower",
    "candidate": "candidate",
    "pre-candidate": "candidate",
}


def _repo_on_path() -> None:
    """Make ``zraft`` importable here and in node (and load-generator) children."""
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if not any(os.path.abspath(p) == REPO_ROOT for p in parts):
        os.environ["PYTHONPATH"] = os.pathsep.join([REPO_ROOT, *parts])


def _text(value):
    """Harness values are bytes; zraft values are JSON, so carry them as str."""
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else value


def _bytes(value):
    """Hand str values back as bytes, so the harness can compare them with its VALUE."""
    return value.encode("utf-8") if isinstance(value, str) else value


def _error(reply) -> KVError:
    if reply is None:
        return KVError("TIMEOUT: no reply")
    return KVError(f"{reply.get('error', '?')}: {reply.get('message', '')}")


_repo_on_path()  # load-generator children unpickle the factory by importing this module


class ZraftKVClient(KVClient):
    """set/get (one attempt each) and pipelined set_many/get_many over one DEALER."""

    def __init__(self, endpoint, timeout=15.0, retry_for=0.0):
        from zraft.api.client import Client  # imported here: load-generator children

        self.c = Client([endpoint], timeout=timeout, retry_for=retry_for)

    def _one(self, body):
        from zraft.api.client import ZraftError

        try:
            reply = self.c.request(body)
        except ZraftError as e:  # no reply within timeout
            raise KVError(str(e)) from None
        if not reply.get("ok"):
            raise _error(reply)
        return reply.get("result")

    def set(self, key, value):
        self._one({"cmd": "set", "key": key, "value": _text(value)})

    def get(self, key):
        return _bytes(self._one({"cmd": "get", "key": key}))

    def set_many(self, items):
        replies = self.c.pipeline({"cmd": "set", "key": k, "value": _text(v)} for k, v in items)
        return [True if r is not None and r.get("ok") else _error(r) for r in replies]

    def get_many(self, keys):
        replies = self.c.pipeline({"cmd": "get", "key": k} for k in keys)
        return [
            _bytes(r.get("result")) if r is not None and r.get("ok") else _error(r) for r in replies
        ]

    def close(self):
        self.c.close()


class ZraftClientFactory:
    """Picklable factory (shipped to load-generator processes)."""

    def __init__(self, endpoint, timeout=15.0, retry_for=0.0):
        self.endpoint, self.timeout, self.retry_for = endpoint, timeout, retry_for

    def __call__(self):
        return ZraftKVClient(self.endpoint, self.timeout, self.retry_for)


class ZraftAdapter(ClusterAdapter):
    name = "zraft"
    persistent = True  # WAL under data_dir, fsynced (zraft's only mode)
    supports_pipeline = True  # Client.pipeline: many requests in flight on one DEALER

    tick_ms = 10
    heartbeat_interval_ms = 100
    election_timeout_ms = 1000
    client_timeout_s = 15.0  # one attempt; same bound as the RESP peers' client
    client_retry_for_s = 0.0  # no client-side retries (see module docstring)

    def __init__(self, workdir, base_port=8000, **kw):
        super().__init__(workdir, base_port, **kw)
        _repo_on_path()
        self._ctx = zmq.Context()
        self._status_socks = {}
        self._ids = itertools.count(1)

    # ---- ensemble ----------------------------------------------------------
    @staticmethod
    def node_id(idx):
        return f"n{idx + 1}"

    def client_port(self, idx):
        return self.base_port + 10 * (idx + 1)

    def raft_port(self, idx):
        return self.client_port(idx) + 1

    def endpoint(self, idx):
        return f"tcp://127.0.0.1:{self.client_port(idx)}"

    def client_address(self, idx):
        return ("127.0.0.1", self.client_port(idx))

    @property
    def config_path(self):
        return os.path.join(self.workdir, "ensemble.toml")

    def _ensemble_toml(self):
        lines = [
            '[ensemble]\nname = "peers-bench"\n',
            f"[raft]\ntick_ms = {self.tick_ms}\n"
            f"heartbeat_interval_ms = {self.heartbeat_interval_ms}\n"
            f"election_timeout_ms = {self.election_timeout_ms}\n",
        ]
        for i in range(self.n_nodes):
            lines.append(
                f'[[node]]\nid = "{self.node_id(i)}"\n'
                f'raft = "tcp://127.0.0.1:{self.raft_port(i)}"\n'
                f'client = "{self.endpoint(i)}"\ndata_dir = "{self.node_dir(i)}"\n'
            )
        return "\n".join(lines)

    def _write_config(self):
        # wipe_data() removes the whole workdir, so (re)write whenever it is missing
        if not os.path.exists(self.config_path):
            os.makedirs(self.workdir, exist_ok=True)
            tmp = self.config_path + ".tmp"
            with open(tmp, "w") as f:
                f.write(self._ensemble_toml())
            os.replace(tmp, self.config_path)
        return self.config_path

    def node_command(self, idx):
        return [
            self.python,
            "-m",
            "zraft",
            "run",
            "--config",
            self._write_config(),
            "--node",
            self.node_id(idx),
            "--log-format",
            "text",
        ]

    # ---- status --------------------------------------------------------------
    def _drop_status(self, idx):
        s = self._status_socks.pop(idx, None)
        if s is not None:
            s.close(linger=0)

    def start_node(self, idx):
        self._drop_status(idx)
        return super().start_node(idx)

    def kill_node(self, idx, *a, **kw):
        self._drop_status(idx)
        return super().kill_node(idx, *a, **kw)

    def node_status(self, idx, timeout=0.5):
        s = self._status_socks.get(idx)
        if s is None:
            s = self._ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(self.endpoint(idx))
            self._status_socks[idx] = s
        rid = next(self._ids)
        s.send_multipart([b"", json.dumps({"cmd": "status", "id": rid}).encode()])
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not s.poll(left * 1000):
                self._drop_status(idx)  # a late reply must not answer the next poll
                return None
            try:
                reply = json.loads(s.recv_multipart()[-1])
            except ValueError:
                continue
            if reply.get("id") == rid:
                break
        if not reply.get("ok"):
            return None
        st = reply["result"]
        ids = [self.node_id(i) for i in range(self.n_nodes)]
        leader = st.get("leader")
        return {
            "role": _ROLES.get(st.get("role"), "unknown"),
            "leader": ids.index(leader) if leader in ids else None,
            "term": st.get("term"),
            "commit_idx": st.get("commit"),
            "applied": st.get("applied"),
        }

    # ---- clients -------------------------------------------------------------
    def client_factory(self, idx):
        return ZraftClientFactory(
            self.endpoint(idx), self.client_timeout_s, self.client_retry_for_s
        )
