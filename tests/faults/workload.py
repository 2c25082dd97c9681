"""Client load that records a history for the linearizability checker.

Worker threads in the runner process, each one client ``process`` of the
history (``zraft.check.history`` has the event schema), timed with
``time.monotonic()``:

- writers (default: one per node, at least 3), each starting at another node
  and failing over between all of them: ``set`` of a value unique in the whole
  run, ``cas`` from the last value this writer saw, and ``get``;
- one reader pinned to each node (no failover): linearizable ``get`` only, so
  that a node cut off from the others is still asked, as a real client would;
- optionally a bulk writer (``bulk``): pipelined ``set`` of fresh keys outside
  the checked key set, to push a cut-off follower thousands of entries behind.

Every write carries a session (``client``, ``seq``) and is retried by
``zraft.api.client.Client`` with the same pair, so it applies at most once.
Outcomes: a reply ``ok`` is ``ok`` (a cas whose compare did not match is
``fail``); an error that says the command was refused before it could apply
(``BAD_REQUEST``, ``BAD_ARG``...) is ``fail``; anything else (TIMEOUT, no
reply, NOT_LEADER, NO_LEADER, SHUTTING_DOWN, SESSION_EXPIRED after retries)
is ``info``: unknown. Each acknowledged write is remembered by its session
pair, so that ``verify`` can look it up in the committed log.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import zmq

from zraft.api.client import Client, ZraftError
from zraft.check import Event

DEFINITE_ERRORS = frozenset(
    {"BAD_REQUEST", "UNKNOWN_COMMAND", "BAD_ARG", "WRONG_TYPE", "OVERFLOW", "TOO_LARGE"}
)


@dataclass
class Stats:
    ops: int = 0
    ok: int = 0
    fail: int = 0
    info: int = 0
    acked_writes: int = 0
    bulk_acked: int = 0
    last_ack: float = 0.0  # monotonic time of the last acknowledged write
    malformed: int = 0  # ok replies whose result has the wrong shape


@dataclass
class History:
    """Events of all workers, in the order they happened (a lock orders appends)."""

    events: list[Event] = field(default_factory=list)
    acked: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    stats: Stats = field(default_factory=Stats)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ev: Event) -> None:
        with self.lock:
            self.events.append(ev)

    def complete(self, proc: Any, typ: str, f: str, key: str, value: Any = None) -> None:
        with self.lock:
            self.events.append(Event(proc, typ, f, key, value, time.monotonic()))
            st = self.stats
            st.ops += 1
            if typ == "ok":
                st.ok += 1
            elif typ == "fail":
                st.fail += 1
            else:
                st.info += 1

    def malformed(self, reply: dict[str, Any]) -> None:
        with self.lock:
            self.stats.malformed += 1

    def ack(self, client: str, seq: int, command: dict[str, Any], bulk: bool = False) -> None:
        with self.lock:
            self.acked[(client, seq)] = command
            if bulk:
                self.stats.bulk_acked += 1
            else:
                self.stats.acked_writes += 1
            self.stats.last_ack = time.monotonic()

    def to_jsonl(self) -> list[dict[str, Any]]:
        with self.lock:
            return [
                {
                    "process": e.process,
                    "type": e.type,
                    "f": e.f,
                    "key": e.key,
                    **({"value": e.value} if e.value is not None else {}),
                    "time": e.time,
                }
                for e in self.events
            ]


class Workload:
    """Writers, pinned readers and an optional bulk writer against ``endpoints``."""

    def __init__(
        self,
        endpoints: dict[str, str],
        seed: int,
        writers: int | None = None,
        keys: int = 8,
        pinned_readers: bool = True,
        think_s: float = 0.002,
    ) -> None:
        self.endpoints = endpoints
        self.seed = seed
        self.keys = [f"k{i}" for i in range(keys)]
        self.history = History()
        self.ctx = zmq.Context()
        self._stop = threading.Event()
        self._bulk_stop = threading.Event()
        self.think_s = think_s
        self.threads: list[threading.Thread] = []
        self.errors: list[str] = []
        for w in range(writers or max(3, len(endpoints))):
            self.threads.append(threading.Thread(target=self._guard, args=(self._writer, w)))
        if pinned_readers:
            for i, nid in enumerate(endpoints):
                self.threads.append(
                    threading.Thread(target=self._guard, args=(self._reader, 100 + i, nid))
                )
        self.bulk_thread: threading.Thread | None = None
        self._bulk_seq = 0

    # -- life ----------------------------------------------------------------

    def start(self) -> None:
        for t in self.threads:
            t.daemon = True
            t.start()

    def stop(self, timeout: float = 20.0) -> None:
        """Ask every worker to finish its operation in flight and wait for them."""
        self._stop.set()
        self.stop_bulk()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        stuck = [t.name for t in self.threads if t.is_alive()]
        if stuck:
            self.errors.append(f"workers still running after {timeout}s: {stuck}")

    def close(self) -> None:
        self.ctx.destroy(linger=0)

    def _guard(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # a crashed worker must fail the run, not hang it
            self.errors.append(f"worker {args[0]} crashed: {type(exc).__name__}: {exc}")

    # -- operations ----------------------------------------------------------

    def _client(self, endpoints: list[str], name: str, **kw: Any) -> Client:
        return Client(endpoints, client_id=f"{name}-{self.seed}", context=self.ctx, **kw)

    def _write(self, c: Client, proc: int, seq: int, key: str, f: str, value: Any) -> Any:
        """Run one set/cas with session (c.client_id, seq); record it; return the new value."""
        h = self.history
        if f == "cas":
            body = {"cmd": "cas", "key": key, "expected": value[0], "value": value[1]}
        else:
            body = {"cmd": "set", "key": key, "value": value}
        h.add(Event(proc, "invoke", f, key, value, time.monotonic()))
        try:
            reply = c.request({**body, "client": c.client_id, "seq": seq})
        except ZraftError:
            h.complete(proc, "info", f, key)
            return None
        if reply.get("ok"):
            h.ack(c.client_id, seq, body)
            if f == "cas":
                res = reply.get("result")
                if not isinstance(res, dict) or not isinstance(res.get("ok"), bool):
                    h.malformed(reply)  # acknowledged, but which way the compare went is unknown
                    h.complete(proc, "info", f, key)
                    return None
                h.complete(proc, "ok" if res["ok"] else "fail", f, key)
                return res.get("value")
            h.complete(proc, "ok", f, key)
            return value
        h.complete(proc, "fail" if reply.get("error") in DEFINITE_ERRORS else "info", f, key)
        return None

    def _read(self, c: Client, proc: int, key: str) -> tuple[bool, Any]:
        h = self.history
        h.add(Event(proc, "invoke", "read", key, None, time.monotonic()))
        try:
            reply = c.request({"cmd": "get", "key": key})
        except ZraftError:
            h.complete(proc, "info", "read", key)
            return False, None
        if reply.get("ok"):
            h.complete(proc, "ok", "read", key, reply.get("result"))
            return True, reply.get("result")
        h.complete(proc, "info", "read", key)
        return False, None

    def _writer(self, proc: int) -> None:
        rng = random.Random(self.seed * 1000 + proc)
        eps = list(self.endpoints.values())
        first = proc % len(eps)  # writers start spread over the nodes, as real clients are
        c = self._client(eps[first:] + eps[:first], f"w{proc}", timeout=1.0, retry_for=2.5)
        seen: dict[str, Any] = {}
        seq = 0
        n = 0
        try:
            while not self._stop.is_set():
                key = rng.choice(self.keys)
                r = rng.random()
                if r < 0.3:
                    ok, v = self._read(c, proc, key)
                    if ok:
                        seen[key] = v
                else:
                    seq += 1
                    n += 1
                    new = f"{proc}:{n}"
                    if r < 0.5 and key in seen:
                        got = self._write(c, proc, seq, key, "cas", [seen[key], new])
                    else:
                        got = self._write(c, proc, seq, key, "write", new)
                    if got is not None:
                        seen[key] = got
                if self.think_s:
                    time.sleep(rng.uniform(0, 2 * self.think_s))
        finally:
            c.close()

    def _reader(self, proc: int, nid: str) -> None:
        rng = random.Random(self.seed * 1000 + proc)
        c = self._client([self.endpoints[nid]], f"r{proc}", timeout=0.8, retry_for=0.5)
        try:
            while not self._stop.is_set():
                ok, _ = self._read(c, proc, rng.choice(self.keys))
                time.sleep(rng.uniform(0, 4 * self.think_s) if ok else 0.05)
        finally:
            c.close()

    # -- bulk ------------------------------------------------------------------

    def start_bulk(self, depth: int = 64, node: str | None = None) -> None:
        """Start pushing pipelined writes of fresh keys (only to ``node`` if given)."""
        self._bulk_stop.clear()
        self.bulk_thread = threading.Thread(target=self._guard, args=(self._bulk, 900, depth, node))
        self.bulk_thread.daemon = True
        self.bulk_thread.start()

    def stop_bulk(self) -> None:
        self._bulk_stop.set()
        if self.bulk_thread is not None:
            self.bulk_thread.join(20)
            self.bulk_thread = None

    def _bulk(self, proc: int, depth: int, node: str | None) -> None:
        # One client per node, moving on to the next node after a round without
        # success: pipeline() does not fail over, and a cut-off node answers
        # every request with an error.
        endpoints = [self.endpoints[node]] if node else list(self.endpoints.values())
        clients = [
            self._client(ep, "bulk", timeout=3.0, retry_for=0) for ep in endpoints
        ]  # one session: the same client id and a growing seq on every node
        seq = self._bulk_seq
        at = 0
        try:
            while not self._bulk_stop.is_set() and not self._stop.is_set():
                c = clients[at]
                bodies = []
                for _ in range(depth):
                    seq += 1
                    bodies.append(
                        {
                            "cmd": "set",
                            "key": f"bulk/{seq}",
                            "value": seq,
                            "client": c.client_id,
                            "seq": seq,
                        }
                    )
                replies = c.pipeline(bodies)
                for body, reply in zip(bodies, replies, strict=True):
                    if reply is not None and reply.get("ok"):
                        cmd = {k: body[k] for k in ("cmd", "key", "value")}
                        self.history.ack(c.client_id, body["seq"], cmd, bulk=True)
                if not any(r and r.get("ok") for r in replies):
                    at = (at + 1) % len(clients)
                    time.sleep(0.05)  # no leader reachable there: do not spin
        finally:
            self._bulk_seq = seq  # one session across bulk phases: seq keeps growing
            for c in clients:
                c.close()

    def preload(self, keys: int, value_bytes: int, timeout: float = 60.0) -> int:
        """Write keys ``big/0..`` of about ``value_bytes`` each; return how many were acknowledged.

        A state that takes a while to snapshot and to send. Pipelined in small
        batches, each key with its own session pair (retried with the same
        pair, so at most once), moving to the next node after a batch without
        success. Each acknowledged write is recorded like a bulk write.
        """
        clients = [
            self._client(ep, "big", timeout=5.0, retry_for=0) for ep in self.endpoints.values()
        ]
        pending = list(range(keys))
        at = 0
        deadline = time.monotonic() + timeout
        try:
            while pending and time.monotonic() < deadline and not self._stop.is_set():
                c = clients[at]
                batch, pending = pending[:8], pending[8:]
                bodies = [
                    {
                        "cmd": "set",
                        "key": f"big/{i}",
                        "value": f"{i}:" + "v" * value_bytes,
                        "client": c.client_id,
                        "seq": i + 1,
                    }
                    for i in batch
                ]
                replies = c.pipeline(bodies)
                for i, body, reply in zip(batch, bodies, replies, strict=True):
                    if reply is not None and reply.get("ok"):
                        cmd = {k: body[k] for k in ("cmd", "key", "value")}
                        self.history.ack(c.client_id, body["seq"], cmd, bulk=True)
                    else:
                        pending.append(i)
                if not any(r and r.get("ok") for r in replies):
                    at = (at + 1) % len(clients)
                    time.sleep(0.05)
        finally:
            for c in clients:
                c.close()
        return keys - len(pending)

    # -- after the faults ---------------------------------------------------------

    def final_reads(self, endpoints: list[str], timeout: float = 20.0, total: float = 40.0) -> int:
        """Read every checked key linearizably (process ``final``); return keys not read.

        Each key is tried for ``timeout`` seconds, all of them for ``total``.
        """
        c = self._client(endpoints, "final", timeout=1.0, retry_for=1.0)
        missing = 0
        end = time.monotonic() + total
        try:
            for key in self.keys:
                deadline = min(time.monotonic() + timeout, max(end, time.monotonic() + 1.0))
                while True:
                    ok, _ = self._read(c, "final", key)
                    if ok:
                        break
                    if time.monotonic() >= deadline:
                        missing += 1
                        break
        finally:
            c.close()
        return missing
