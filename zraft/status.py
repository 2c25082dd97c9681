"""``zraft status``: ask every node for its status at once and render a table."""

from __future__ import annotations

import json
import time
from typing import Any

import zmq

COLUMNS = ("NODE", "ROLE", "TERM", "COMMIT", "APPLIED", "LAG", "LEADER", "PAYLOADS", "ENDPOINT")


def collect(
    endpoints: list[str], timeout: float = 1.0, state_hash: bool = False
) -> list[dict[str, Any]]:
    """Query ``status`` on every endpoint in parallel; unreachable nodes get ``status: None``.

    ``state_hash`` asks each node for a hash of its replicated state as well.
    """
    body = json.dumps({"cmd": "status", "id": 1, "hash": state_hash}).encode()
    ctx = zmq.Context.instance()
    socks: dict[zmq.Socket, str] = {}
    rows: dict[str, dict[str, Any]] = {ep: {"endpoint": ep, "status": None} for ep in endpoints}
    poller = zmq.Poller()
    try:
        for ep in endpoints:
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(ep)
            s.send_multipart([b"", body])
            socks[s] = ep
            poller.register(s, zmq.POLLIN)
        deadline = time.monotonic() + timeout
        pending = set(socks)
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for s, _ in poller.poll(left * 1000):
                try:
                    reply = json.loads(s.recv_multipart()[-1])
                except ValueError:
                    continue
                if reply.get("ok"):
                    rows[socks[s]]["status"] = reply["result"]
                pending.discard(s)
    finally:
        for s in socks:
            s.close(linger=0)
    return [rows[ep] for ep in endpoints]


def _payloads(st: dict[str, Any]) -> str:
    """Name the payloads running on a node: ``leader:urlcheck,follower:x`` or ``-``."""
    running = st.get("payloads") or {}
    names = [f"{role}:{p}" for role in ("leader", "follower") for p in running.get(role, [])]
    return ",".join(names) or "-"


def render_table(rows: list[dict[str, Any]]) -> str:
    """Render status rows as an aligned text table (the seed's monitor page, in a terminal).

    A ``STATE`` column (the first 12 hex digits of the state hash) is added
    when the rows carry ``state_hash``: nodes at the same applied index must
    show the same value.
    """
    hashed = any(r["status"] and "state_hash" in r["status"] for r in rows)
    leader_commit = max(
        (r["status"]["commit"] for r in rows if r["status"] and r["status"]["role"] == "leader"),
        default=None,
    )
    columns = COLUMNS + (("STATE",) if hashed else ())
    lines = [columns]
    for r in rows:
        st = r["status"]
        if st is None:
            lines.append(("?", "unreachable") + ("-",) * (len(columns) - 3) + (r["endpoint"],))
            continue
        lag = "-" if leader_commit is None else str(max(0, leader_commit - st["applied"]))
        lines.append(
            (
                st["id"],
                st["role"],
                str(st["term"]),
                str(st["commit"]),
                str(st["applied"]),
                lag,
                st.get("leader") or "-",
                _payloads(st),
                r["endpoint"],
            )
            + ((st.get("state_hash", "-")[:12],) if hashed else ())
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )
