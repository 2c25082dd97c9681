"""Fault scenarios around snapshots (``scenarios.SCENARIOS`` registers them).

Their ensembles snapshot every ``snapshot_entries`` applied entries into WAL
segments of ``segment_bytes`` (``RAFT_TOML``, ``STORAGE_TOML``), so that under
the ordinary load a node takes a snapshot about every second and compacts its
log behind it. Each scenario first writes a state of big values (``preload``:
about 20 MB by default), so that a snapshot takes tens of milliseconds to
write and to send: long enough for ``snapwatch`` (a process of its own,
polling the node's snapshot directory) to SIGKILL a node inside that window.

- ``kill_while_writing``: SIGKILL while ``taking-*.partial`` is being written;
- ``kill_mid_install``: a follower misses what the leader compacts, restarts,
  and is SIGKILLed while it receives the leader's snapshot (``incoming.partial``);
- ``lagging_by_snapshot``: a follower cut off while the leader compacts past
  its log must catch up by InstallSnapshot once healed;
- ``power_loss_snapshot``: every node SIGKILLed (with ``lazy_writes``: unsynced
  WAL writes lost) right after a snapshot is published, then while one is written;
- ``corrupt_transfer``: the first transfer of each snapshot is corrupted in
  transit (``corrupt_snapshot_chunks``); the follower must refuse it and
  install the resent one.

Each notes what it saw in ``ctx.figures`` (kills that landed, installs), and
the runner's verdicts apply as to every scenario: linearizable, no
acknowledged write lost, the same state on every node.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.faults.snapwatch import kill_when

if TYPE_CHECKING:
    from tests.faults.scenarios import Ctx

RAFT_TOML = "snapshot_entries = 200\nsnapshot_trailing_entries = 50\n"
STORAGE_TOML = "[storage]\nsegment_bytes = 65536\n"
PRELOAD_KEYS = 300
PRELOAD_BYTES = 64 * 1024
CHUNK_BYTES = 256 * 1024  # the leader's snapshot chunk (zraft.snapshot.transfer.Sender)
INSTALLED = "installed snapshot"
REFUSED = re.compile(r"snapshot from \S+ refused")
_SNAP = re.compile(r"^([0-9a-f]{16})-[0-9a-f]{16}\.snap$")


def snap_dir(ctx: Ctx, nid: str) -> Path:
    return ctx.ens.workdir / nid / "snap"


def _snap_names(ctx: Ctx, nid: str) -> list[str]:
    try:
        return sorted(os.listdir(snap_dir(ctx, nid)))
    except OSError:
        return []


def _newest_index(ctx: Ctx, nid: str) -> int:
    found = [int(m.group(1), 16) for n in _snap_names(ctx, nid) if (m := _SNAP.match(n))]
    return max(found, default=-1)


def _status(ctx: Ctx, nid: str) -> dict[str, Any]:
    st = ctx.ens.statuses([nid], timeout=2.0)[nid]
    if not st:
        raise TimeoutError(f"{nid} did not answer status")
    return st


def _seed(ctx: Ctx) -> int:
    return ctx.rng.randrange(1 << 30)


def preload(ctx: Ctx, keys: int = PRELOAD_KEYS) -> None:
    """Write ``keys`` big values (params ``keys``, ``value_bytes``); note how many."""
    keys = ctx.params.get("keys", keys)
    size = ctx.params.get("value_bytes", PRELOAD_BYTES)
    done = ctx.load.preload(keys, size)
    ctx.note(f"preloaded {done} of {keys} keys of {size} bytes")
    ctx.figures["preloaded"] = done


def push_past(ctx: Ctx, index: int, behind: str, limit_s: float = 40.0) -> int:
    """Bulk-write until the other nodes' logs start after ``index``; return their first index.

    The log of the node ``behind`` ends at ``index``: once the others have
    compacted past it, only a snapshot can bring it back.
    """
    ctx.load.start_bulk()
    deadline = time.monotonic() + limit_s
    first = 0
    try:
        while time.monotonic() < deadline:
            others = ctx.ens.statuses([n for n in ctx.ens.running() if n != behind], timeout=1.0)
            firsts = [s["first_index"] for s in others.values() if s]
            if firsts and (first := min(firsts)) > index + 1:
                break
            time.sleep(0.1)
    finally:
        ctx.load.stop_bulk()
    ctx.note(f"the others' logs start at {first}; {behind}'s log ends at {index}")
    ctx.figures["compacted_past"] = first > index + 1
    return first


def restart(ctx: Ctx, nid: str) -> bool:
    """Start ``nid`` and wait until it answers (``wait_up``)."""
    ctx.ens.start(nid)
    ctx.note(f"restart {nid}")
    return wait_up(ctx, nid)


def wait_up(ctx: Ctx, nid: str, timeout: float = 15.0) -> bool:
    """Wait until the started ``nid`` answers; False (noted) when it exits instead.

    A node that cannot start from what it left on disk is the failure these
    scenarios look for: the runner's verdict then finds it unreachable, and
    the scenario stops early rather than take the quorum down with it.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not ctx.ens.alive(nid):
            code = ctx.ens.procs[nid].returncode
            ctx.note(f"{nid} did not start (exit {code})")
            ctx.figures.setdefault("failed_starts", []).append(nid)
            return False
        if ctx.ens.statuses([nid], timeout=0.5)[nid]:
            return True
        time.sleep(0.1)
    return True  # still starting (a long load): the verdict judges it


def installs(ctx: Ctx, nid: str) -> int:
    """How many snapshots node ``nid`` installed from a leader (its log says so)."""
    return ctx.ens.log_text(nid).count(INSTALLED)


def wait_installed(ctx: Ctx, nid: str, before: int, timeout: float) -> int:
    """Wait until ``nid`` installs a snapshot (or dies); return its installs since ``before``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and ctx.ens.alive(nid):
        if installs(ctx, nid) > before:
            break
        time.sleep(0.1)
    n = installs(ctx, nid) - before
    ctx.note(f"{nid} installed {n} snapshot(s)" + ("" if ctx.ens.alive(nid) else "; it is down"))
    return n


def kill_while_writing(ctx: Ctx) -> None:
    """SIGKILL a node while it writes a snapshot (the leader, then a follower), restart it."""
    preload(ctx)
    landed = 0
    for r in range(ctx.params.get("rounds", 2)):
        lead = ctx.leader()
        victim = lead if r % 2 == 0 else ctx.rng.choice(ctx.followers(lead))
        hit = kill_when(
            ctx.ens,
            [victim],
            snap_dir(ctx, victim),
            ["taking-*.partial"],
            seed=_seed(ctx),
            timeout=20.0,
            delay_max=ctx.params.get("delay_max", 0.02),
        )
        if hit is None:
            ctx.note(f"{victim} wrote no snapshot within 20 s")
            continue
        landed += hit.size >= 0  # -1: published during the delay
        ctx.note(f"SIGKILL {victim} writing {hit.name} ({hit.size} bytes on disk)")
        ctx.pause(ctx.E, 2 * ctx.E)
        if not restart(ctx, victim):
            break
        ctx.leader()
        ctx.pause(ctx.E)
    ctx.figures["mid_write_kills"] = landed


def kill_mid_install(ctx: Ctx) -> None:
    """SIGKILL a follower while it receives the leader's snapshot; restart it: it must catch up."""
    preload(ctx)
    lead = ctx.leader()
    victim = ctx.rng.choice(ctx.followers(lead))
    last = _status(ctx, victim)["last_index"]
    ctx.ens.kill(victim)
    ctx.note(f"SIGKILL follower {victim} (its log ends at {last})")
    push_past(ctx, last, victim)
    before = installs(ctx, victim)
    landed = 0
    for _ in range(ctx.params.get("rounds", 1)):
        own = _snap_names(ctx, victim)
        ctx.ens.start(victim)
        ctx.note(f"restart {victim}")
        hit = kill_when(
            ctx.ens,
            [victim],
            snap_dir(ctx, victim),
            ["incoming.partial", "received.partial", "*.snap"],  # .snap: above its log
            seed=_seed(ctx),
            timeout=15.0,
            ignore=own,
            index_above=last,
            min_bytes=CHUNK_BYTES,
            delay_max=0.01,
        )
        if hit is None:
            ctx.note(f"{victim} received no snapshot within 15 s")
            continue
        landed += 1
        ctx.note(f"SIGKILL {victim} receiving {hit.name} ({hit.size} bytes on disk)")
        ctx.pause(ctx.E)
    restart(ctx, victim)
    ctx.figures["mid_install_kills"] = landed
    ctx.figures["installs"] = wait_installed(ctx, victim, before, 25.0)


def lagging_by_snapshot(ctx: Ctx) -> None:
    """Cut a follower off while the leader compacts past its log; healed, it installs a snapshot."""
    preload(ctx, PRELOAD_KEYS // 3)  # no window to hit: a smaller state will do
    lead = ctx.leader()
    victim = ctx.rng.choice(ctx.followers(lead))
    last = _status(ctx, victim)["last_index"]
    before = installs(ctx, victim)
    ctx.partition([victim], ctx.followers(victim))
    ctx.pause(ctx.E)
    push_past(ctx, last, victim)
    ctx.heal()
    ctx.figures["installs"] = wait_installed(ctx, victim, before, 25.0)


def power_loss_snapshot(ctx: Ctx) -> None:
    """Power loss (every node SIGKILLed, unsynced writes lost) after a snapshot, then during one."""
    preload(ctx)
    landed = []
    for r in range(ctx.params.get("rounds", 2)):
        lead = ctx.leader()
        d = snap_dir(ctx, lead)
        if r % 2 == 0:  # at the moment a snapshot is published (compaction follows it)
            patterns, above, when = ["*.snap"], _newest_index(ctx, lead), "after publishing"
        else:
            patterns, above, when = ["taking-*.partial"], -1, "while writing"
        ids = ctx.ens.running()
        hit = kill_when(
            ctx.ens,
            ids,
            d,
            patterns,
            seed=_seed(ctx),
            timeout=20.0,
            index_above=above,
            delay_max=0.02,
        )
        if hit is None:
            ctx.note(f"{lead} published no snapshot within 20 s")
            continue
        landed.append(when)
        ctx.note(f"power loss: SIGKILL {','.join(ids)} ({lead} {when} {hit.name})")
        ctx.pause(0.1, 0.5)
        ctx.ens.start(*ids)
        ctx.note("restart all nodes")
        if not all([wait_up(ctx, n) for n in ids]):
            break
        ctx.leader()
        ctx.pause(ctx.E)
    ctx.figures["power_losses"] = landed


def corrupt_transfer(ctx: Ctx) -> None:
    """A follower far behind refuses a snapshot corrupted in transit, then installs it resent."""
    preload(ctx, PRELOAD_KEYS // 3)  # no window to hit: a smaller state will do
    lead = ctx.leader()
    victim = ctx.rng.choice(ctx.followers(lead))
    last = _status(ctx, victim)["last_index"]
    ctx.ens.kill(victim)
    ctx.note(f"SIGKILL follower {victim} (its log ends at {last})")
    push_past(ctx, last, victim)
    before = installs(ctx, victim)
    restart(ctx, victim)
    ctx.figures["installs"] = wait_installed(ctx, victim, before, 25.0)
    ctx.figures["refused"] = len(REFUSED.findall(ctx.ens.log_text(victim)))
