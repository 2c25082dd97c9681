"""``zraft status``: every node's status as a table, once or redrawn (``--watch``).

The rows come from ``zraft.api.fanout.status_all`` (``collect`` here, the
name tools and tests import); this module only renders them.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from zraft.api.fanout import status_all

COLUMNS = (
    "NODE",
    "ROLE",
    "TERM",
    "COMMIT",
    "APPLIED",
    "LAG",
    "LEADER",
    "CONTACT",
    "PAYLOADS",
    "ENDPOINT",
)

collect = status_all
"""Query every node's status in parallel: ``zraft.api.fanout.status_all``."""


def _contact(st: dict[str, Any]) -> str:
    """How long ago a node heard from the leader; for the leader, from its slowest peer."""
    ages = st.get("last_contact_s") or {}
    if st.get("role") == "leader":
        if any(a < 0 for a in ages.values()):
            return "never"  # a peer it has never heard from is the slowest of all
        age = max(ages.values(), default=0.0)
    elif st.get("leader") in ages:
        age = ages[st["leader"]]
    else:
        return "-"
    return "never" if age < 0 else f"{age:.2f}s"


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
                _contact(st),
                _payloads(st),
                r["endpoint"],
            )
            + ((st.get("state_hash", "-")[:12],) if hashed else ())
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def watch(
    endpoints: list[str],
    interval: float = 1.0,
    count: int = 0,
    timeout: float = 1.0,
    state_hash: bool = False,
    out: Any = None,
) -> int:
    """Redraw the table every ``interval`` seconds until Ctrl-C (or ``count`` frames).

    The live equivalent of the old monitor page: on a terminal the screen is
    cleared before each frame; piped, frames follow each other. Returns 0 on
    Ctrl-C or a closed pipe; after ``count`` frames, 1 when no node answered
    the last one (as ``zraft status`` does).
    """
    out = out or sys.stdout
    clear = "\x1b[H\x1b[2J" if out.isatty() else ""
    frames = 0
    try:
        while True:
            started = time.monotonic()
            rows = status_all(endpoints, timeout=timeout, state_hash=state_hash)
            up = sum(1 for r in rows if r["status"])
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            out.write(f"{clear}{stamp}  {up}/{len(rows)} nodes answering  (Ctrl-C to stop)\n")
            out.write(render_table(rows) + "\n\n")
            out.flush()
            frames += 1
            if count and frames >= count:
                return 0 if up else 1
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    except (KeyboardInterrupt, BrokenPipeError):
        return 0
