"""Snapshot soak and benchmark: pause and latency while snapshotting a big state,
InstallSnapshot throughput, memory, disk and restart time after many writes.

Not part of CI (it takes minutes). Run::

    python -m tests.bench_snapshots big --keys 1000000      # pause/p99 during a snapshot
    python -m tests.bench_snapshots install --keys 1000000  # InstallSnapshot MB/s
    python -m tests.bench_snapshots bounded --writes 1000000 --keys 1000  # RSS, disk, restart

Each command starts a real 3-node ensemble on loopback in a temporary
directory, prints figures, and stops every process it started (by pid).
``--repo DIR`` runs the nodes from another checkout (to compare with an older
zraft that had no snapshots).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.ensemble import Ensemble
from zraft.api.fanout import pipelined_load

TIMING = {"tick_ms": 10, "heartbeat_ms": 100, "election_ms": 1000}


def _load(ens: Ensemble, nid: str, total: int, keys: int, tag: str, first: int = 0) -> list[float]:
    res = pipelined_load(
        ens.client[nid],
        lambda n: {"cmd": "set", "key": f"key{(first + n) % keys:07d}", "value": f"{tag}{n}"},
        total,
        conns=4,
        depth=32,
        deadline_s=max(120.0, total / 2000),
    )
    if res.errors or res.unanswered:
        print(f"  warning: {res.errors} errors, {res.unanswered} unanswered", file=sys.stderr)
    return res.latencies


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


def _ensemble(workdir: Path, raft_toml: str, repo: Path | None) -> Ensemble:
    ens = Ensemble(workdir, timing=TIMING, raft_toml=raft_toml, metrics=True)
    if repo is not None:
        import tests.support.ensemble as support

        support.ROOT = repo  # the nodes run from that checkout (cwd = repo)
    return ens


def _snapshot_lines(ens: Ensemble, nid: str) -> list[tuple[int, int, float]]:
    """(index, bytes, seconds) of every 'snapshot N ... written' line of ``nid``'s log."""
    pat = re.compile(r"snapshot (\d+) \(term \d+\) written: (\d+) bytes in ([\d.]+) s")
    return [(int(a), int(b), float(c)) for a, b, c in pat.findall(ens.log_text(nid))]


def big(args: argparse.Namespace) -> None:
    """Fill ``--keys`` keys, then write while the leader snapshots them all."""
    keys = args.keys
    with tempfile.TemporaryDirectory(prefix="zraft-snapbench-") as tmp:
        # No snapshot while filling: the first one comes during the measured load.
        raft = f"snapshot_entries = {keys + keys // 10}\nsnapshot_bytes = 1099511627776\n"
        with _ensemble(Path(tmp), raft, args.repo) as ens:
            ens.start()
            lead = ens.wait_leader()
            pid = ens.procs[lead].pid
            t0 = time.monotonic()
            _load(ens, lead, keys, keys, "v")
            fill_s = time.monotonic() - t0
            rss_before = _rss_kb(pid)
            print(f"filled {keys} keys in {fill_s:.1f} s; leader RSS {rss_before / 1024:.0f} MiB")
            base = _load(ens, lead, 20000, keys, "b", first=1)
            batches: list[tuple[float, float, list[float]]] = []
            peak = rss_before
            deadline = time.monotonic() + 600
            while not _snapshot_lines(ens, lead) and time.monotonic() < deadline:
                t = time.monotonic()
                lat = _load(ens, lead, 2000, keys, "s", first=len(batches) * 2000)
                batches.append((t, time.monotonic(), lat))
                peak = max(peak, _rss_kb(pid))
            for _ in range(5):  # a little after, for the writer thread's tail
                t = time.monotonic()
                batches.append((t, time.monotonic(), _load(ens, lead, 2000, keys, "a")))
                peak = max(peak, _rss_kb(pid))
            snaps = _snapshot_lines(ens, lead)
            if not snaps:
                print("no snapshot was taken", file=sys.stderr)
                return
            index, size, secs = snaps[0]
            during = [x for _, _, lat in batches for x in lat]
            print(f"snapshot of {keys} keys at index {index}: {size / 1e6:.1f} MB in {secs:.2f} s")
            print(
                f"writes before: p50 {_ms(_pct(base, 0.5))} p99 {_ms(_pct(base, 0.99))} "
                f"max {_ms(max(base))}"
            )
            print(
                f"writes while snapshotting ({len(during)}): p50 {_ms(_pct(during, 0.5))} "
                f"p99 {_ms(_pct(during, 0.99))} max {_ms(max(during))} (longest pause seen)"
            )
            print(
                f"leader RSS: {rss_before / 1024:.0f} MiB before, peak {peak / 1024:.0f} MiB "
                f"during ({(peak - rss_before) / max(1, rss_before) * 100:.0f}% more)"
            )
            if args.install:
                _install(ens, lead, size)


def _install(ens: Ensemble, lead: str, size: int) -> None:
    victim = next(n for n in ens.ids if n != lead)
    ens.kill(victim)
    shutil.rmtree(ens.workdir / victim)
    t0 = time.monotonic()
    ens.start(victim)
    deadline = t0 + 600
    while "installed snapshot" not in ens.log_text(victim):
        if time.monotonic() > deadline:
            print("the wiped follower never installed a snapshot", file=sys.stderr)
            return
        with ens.client_for(lead, timeout=2.0, retry_for=5) as c:
            c.set("poke", time.monotonic())  # a rejected append starts the probe
        time.sleep(0.2)
    took = time.monotonic() - t0
    m = re.search(r"installed snapshot \d+ \(term \d+, (\d+) bytes\)", ens.log_text(victim))
    nbytes = int(m.group(1)) if m else size
    print(
        f"InstallSnapshot: {nbytes / 1e6:.1f} MB to a wiped follower in {took:.1f} s "
        f"from its start ({nbytes / 1e6 / took:.1f} MB/s, start-up and restore included)"
    )


def install(args: argparse.Namespace) -> None:
    """``big`` plus the InstallSnapshot figure."""
    args.install = True
    big(args)


def bounded(args: argparse.Namespace) -> None:
    """``--writes`` writes over ``--keys`` keys; RSS, data dir and restart at checkpoints."""
    marks = sorted({int(x) for x in args.marks.split(",")} | {args.writes})
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="zraft-snapbench-") as tmp:
        with _ensemble(Path(tmp), "", args.repo) as ens:
            ens.start()
            lead = ens.wait_leader()
            done = 0
            for mark in marks:
                _load(ens, lead, mark - done, args.keys, "v", first=done)
                done = mark
                follower = next(n for n in ens.ids if n != lead)
                time.sleep(1.0)
                rss = _rss_kb(ens.procs[follower].pid)
                disk = _dir_bytes(ens.workdir / follower)
                ens.kill(follower)
                t0 = time.monotonic()
                ens.start(follower)
                restart = _wait_ready(ens, follower, lead, t0)
                rows.append(
                    {
                        "writes": mark,
                        "rss_mib": rss / 1024,
                        "disk_mb": disk / 1e6,
                        "restart_s": restart,
                    }
                )
                print(
                    f"{mark:>9} writes: follower RSS {rss / 1024:7.1f} MiB, data dir "
                    f"{disk / 1e6:8.1f} MB, restart to ready {restart:6.2f} s",
                    flush=True,
                )
    print("\n| writes | RSS (MiB) | data dir (MB) | restart to ready (s) |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        w, rss, disk, rs = r["writes"], r["rss_mib"], r["disk_mb"], r["restart_s"]
        print(f"| {w:,} | {rss:.1f} | {disk:.1f} | {rs:.2f} |")


def _wait_ready(ens: Ensemble, nid: str, lead: str, t0: float) -> float:
    """Seconds from ``t0`` until ``nid`` answers status, knows the leader and has caught up."""
    deadline = t0 + 600
    while time.monotonic() < deadline:
        st = ens.statuses([nid, lead], timeout=0.5)
        me, ld = st.get(nid), st.get(lead)
        if me and ld and me.get("leader") and me["applied"] >= ld["commit"] - 100:
            return time.monotonic() - t0
        time.sleep(0.02)
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench_snapshots", description=__doc__)
    p.add_argument("--repo", type=Path, help="run the nodes from this checkout")
    sub = p.add_subparsers(dest="what", required=True)
    b = sub.add_parser("big", help="pause and write latency while snapshotting --keys keys")
    b.add_argument("--keys", type=int, default=1_000_000)
    b.set_defaults(func=big, install=False)
    i = sub.add_parser("install", help="big, then time an InstallSnapshot to a wiped follower")
    i.add_argument("--keys", type=int, default=1_000_000)
    i.set_defaults(func=install)
    d = sub.add_parser("bounded", help="RSS, data dir and restart time after many writes")
    d.add_argument("--writes", type=int, default=1_000_000)
    d.add_argument("--keys", type=int, default=1000)
    d.add_argument("--marks", default="100000,300000", help="also measure at these counts")
    d.set_defaults(func=bounded)
    args = p.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
