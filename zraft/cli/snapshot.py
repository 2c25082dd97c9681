"""``zraft snapshot``: back up a running ensemble, inspect a backup, seed a node from one.

* ``save FILE``: the leader snapshots its applied state now (a node applies
  only committed entries, so the snapshot is at a committed index); the file
  is downloaded from it into ``FILE.tmp``, verified, its sha256 compared with
  what the leader reported, fsynced and renamed to ``FILE``.
* ``inspect FILE``: verify the file and describe it: header, sections, key
  count of the KV store, checksum.
* ``restore FILE --node ID``: seed the node's empty data directory from the
  file (a snapshot and a WAL that starts after it), so that ``zraft run``
  starts from it. Refused, with nothing touched, for a data directory that
  is not empty, a file of another ensemble, or a damaged file.
* ``take``: ask a node (default: the leader) to snapshot now.

README "Backup and restore" shows them. Exit codes as for every ``zraft``
command: 0 success, 1 failure (an error reply, a damaged file, a refused
restore), 2 usage, 78 configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack

from zraft.api.client import Client, ZraftError
from zraft.api.fanout import status_all
from zraft.builtin.kv_snapshot import SNAPSHOT_FORMAT as KV_FORMAT
from zraft.cli.common import add_target, endpoints, load, problem
from zraft.core import HardState
from zraft.daemon import EX_CONFIG
from zraft.node.snapshots import snapshot_dir
from zraft.plugins import PluginError, load_plugins
from zraft.replica import capture
from zraft.snapshot.format import SnapshotError, SnapshotInfo, read_sections, verify
from zraft.snapshot.store import SnapshotStore
from zraft.storage import StorageError
from zraft.storage.snapshot import fsync_dir
from zraft.storage.wal import WalStorage

SAVE_ATTEMPTS = 3  # a snapshot pruned or a leader stopping mid-save starts the save again
AGAIN = frozenset({"NO_SNAPSHOT", "SHUTTING_DOWN"})  # the error codes that do
BARRIER_KEY = "zraft:snapshot"  # read (never written) before a snapshot: see take()


class Failed(Exception):
    """A snapshot command failed; the message says why (printed to stderr, exit 1)."""


# -- finding the node -----------------------------------------------------------


def find_node(args: argparse.Namespace, node_id: str | None) -> tuple[str, str]:
    """Return ``(id, client endpoint)`` of node ``node_id``, or of the leader when None.

    Asks every target endpoint's status until one fits, for up to three
    ``--timeout`` periods (an election may be under way); the leader is found
    through any node that knows it. Raises Failed.
    """
    candidates = endpoints(args)
    deadline = time.monotonic() + 3 * args.timeout
    while True:
        rows = [r for r in status_all(candidates, timeout=min(1.0, args.timeout)) if r["status"]]
        if node_id is not None:
            found = [
                (r["status"]["id"], r["endpoint"]) for r in rows if r["status"]["id"] == node_id
            ]
        else:
            found = _leader(rows)
        if found:
            return found[0]
        if time.monotonic() >= deadline:
            what = f"node {node_id} not found" if node_id else "no leader found"
            answered = ", ".join(r["status"]["id"] for r in rows) or "no node"
            raise Failed(f"{what} among {', '.join(candidates)} ({answered} answered)")
        time.sleep(0.1)


def _leader(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Return ``[(id, endpoint)]`` of the leader of the highest term in status ``rows``
    (one that answered, else the address its followers know), or ``[]``."""
    heard: list[tuple[int, int, str, str]] = []
    for r in rows:
        st = r["status"]
        if st["role"] == "leader":
            heard.append((st["term"], 1, st["id"], r["endpoint"]))
        elif st.get("leader") and st.get("leader_client"):
            heard.append((st["term"], 0, st["leader"], st["leader_client"]))
    return [(nid, endpoint) for _, _, nid, endpoint in sorted(heard, reverse=True)[:1]]


def take(endpoint: str, wait: float, timeout: float) -> dict[str, Any]:
    """Ask the node at ``endpoint`` for a snapshot now; return its ``snapshot_take`` result.

    A linearizable read on that node comes first (ReadIndex, thesis §6.4): once
    it is answered, the node has applied every write acknowledged before, so
    the snapshot holds them all (a new leader may not have applied them yet).
    Then one attempt of up to ``wait`` seconds. Raises ZraftError.
    """
    with Client(endpoint, timeout=timeout, retry_for=3 * timeout) as client:
        try:
            client.call("exists", key=BARRIER_KEY)
        except ZraftError as exc:
            if exc.code != "UNKNOWN_COMMAND":  # an ensemble without the KV store: no barrier
                raise
    with Client(endpoint, timeout=wait, retry_for=0) as client:
        return client.snapshot_take()


# -- save -----------------------------------------------------------------------


def cmd_save(args: argparse.Namespace) -> int:
    """Snapshot the leader now and download the file to FILE (module docstring)."""
    dest = Path(args.file)
    tmp = dest.with_name(dest.name + ".tmp")
    try:
        for attempt in range(1, SAVE_ATTEMPTS + 1):
            nid, endpoint = find_node(args, None)
            try:
                taken = take(endpoint, args.wait, args.timeout)
                with Client(endpoint, timeout=args.timeout, retry_for=3 * args.timeout) as c:
                    c.snapshot_download(taken["name"], tmp)
                break
            except ZraftError as exc:
                if exc.code not in AGAIN or attempt == SAVE_ATTEMPTS:
                    raise
                problem(f"{nid}: {exc.code}: {exc.message}; starting again", 4)
        info = verify(tmp)
        if (info.sha256, info.header.index) != (taken["sha256"], taken["index"]):
            raise Failed(
                f"the downloaded file (index {info.header.index}, sha256 {info.sha256}) is "
                f"not the snapshot {nid} took (index {taken['index']}, sha256 {taken['sha256']})"
            )
        os.replace(tmp, dest)  # the download was fsynced; the rename is made durable next
        fsync_dir(dest.parent)
    except (Failed, ZraftError, SnapshotError, StorageError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        return _failed("save", exc)
    facts = {"file": str(dest), "node": nid, **_summary(info)}
    if args.output == "json":
        print(json.dumps(facts, indent=2))
    else:
        print(f"saved {dest} from {nid}")
        _print_fields(facts, ("index", "term", "size", "sha256"))
    return 0


def _summary(info: SnapshotInfo) -> dict[str, Any]:
    h = info.header
    return {
        "ensemble": h.ensemble,
        "index": h.index,
        "term": h.term,
        "size": info.size,
        "sha256": info.sha256,
    }


def _failed(what: str, exc: Exception) -> int:
    if isinstance(exc, ZraftError):
        problem(f"snapshot {what}: error: {exc.code}: {exc.message}")
    elif isinstance(exc, SnapshotError):
        problem(f"snapshot {what}: damaged snapshot: {exc}")
    else:
        problem(f"snapshot {what}: {exc}")
    return 1


def _print_fields(facts: dict[str, Any], names: tuple[str, ...], width: int = 0) -> None:
    width = max(width, *(len(n) for n in names))
    for name in names:
        value = facts[name]
        print(f"{name:<{width}}  {' '.join(value) if isinstance(value, list) else value}")


def _utc(ms: int) -> str:
    """Return the wall-clock time ``ms`` (Unix milliseconds) as ISO 8601 UTC."""
    stamp = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


# -- inspect --------------------------------------------------------------------


def describe(path: str | Path) -> dict[str, Any]:
    """Verify the snapshot file at ``path`` and describe it as a JSON-ready dict.

    Each section gets ``keys`` when it holds a KV store (the count its header
    announces). Raises SnapshotError (damage: file, section, offset) or
    StorageError (cannot read).
    """
    info = verify(path)
    h = info.header
    keys = _kv_key_counts(path)
    return {
        "file": str(path),
        **_summary(info),
        "voters": list(h.voters),
        "node": h.node,
        "created_ms": h.created_ms,
        "created": _utc(h.created_ms),
        "time_ms": h.time_ms,
        "sections": [
            {"name": s.name, "bytes": s.size, "chunks": s.chunks, "keys": keys.get(s.name)}
            for s in info.sections
        ],
    }


def _kv_key_counts(path: str | Path) -> dict[str, int]:
    """Return section -> key count for every section that starts with a KV store header
    (``zraft.builtin.kv_snapshot``: ``{"format": "zraft.kv", ..., "keys": n}``)."""
    counts: dict[str, int] = {}
    for name, chunks in read_sections(path):
        unpacker = msgpack.Unpacker(raw=False)
        for data in chunks:
            unpacker.feed(data)
            try:
                first = next(unpacker)
            except StopIteration:
                continue  # the header spans chunks: feed the next one
            except ValueError:
                break  # not msgpack: not a KV section
            if isinstance(first, dict) and first.get("format") == KV_FORMAT:
                n = first.get("keys")
                if type(n) is int:
                    counts[name] = n
            break
    return counts


def cmd_inspect(args: argparse.Namespace) -> int:
    """Verify and describe a snapshot file; 1 when it is damaged or unreadable."""
    try:
        facts = describe(args.file)
    except (SnapshotError, StorageError) as exc:
        return _failed("inspect", exc)
    if args.output == "json":
        print(json.dumps(facts, indent=2))
        return 0
    when = f"{_utc(facts['time_ms'])}, leader time at index {facts['index']}"
    shown = dict(facts, time_ms=f"{facts['time_ms']} ({when})")
    names = ("file", "ensemble", "index", "term", "voters", "node", "created", "time_ms")
    _print_fields(shown, (*names, "size", "sha256"))
    rows = [("SECTION", "BYTES", "CHUNKS", "KEYS")]
    for s in facts["sections"]:
        keys = "-" if s["keys"] is None else str(s["keys"])
        rows.append((s["name"], str(s["bytes"]), str(s["chunks"]), keys))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


# -- restore --------------------------------------------------------------------


def restore(
    file: str | Path,
    data_dir: Path,
    ensemble: str,
    segment_bytes: int,
    check_sections: Callable[[list[str]], None] = lambda names: None,
) -> SnapshotInfo:
    """Seed the empty ``data_dir`` from the snapshot ``file`` of ensemble ``ensemble``.

    Every check comes first, and a refusal touches nothing: the data directory
    must be missing or empty, the file must verify and belong to ``ensemble``,
    and ``check_sections`` (ValueError) must accept its section names: the
    node's plugins must own exactly those sections, or it could not start.
    Then the file is copied into ``<data_dir>/snap`` under its proper name
    (temp file, fsync, rename: ``SnapshotStore.publish``), and a WAL is
    created that starts after the snapshot (an INSTALL record at it) with the
    hard state term = snapshot term, commit = snapshot index. Returns the
    published file's info. Raises Failed, SnapshotError or StorageError; after
    a failure part-way, what it created is removed.
    """
    existed = data_dir.exists()
    if existed and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise Failed(f"the data directory {data_dir} is not empty: restore only seeds a new node")
    info = verify(file)
    h = info.header
    if h.ensemble != ensemble:
        raise Failed(f"{file} is a snapshot of ensemble {h.ensemble!r}, not {ensemble!r}")
    try:
        check_sections([sec.name for sec in info.sections])
    except ValueError as exc:
        raise Failed(f"{file} does not fit the node's plugins: {exc}") from None
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fsync_dir(data_dir.parent)
        store = SnapshotStore(snapshot_dir(data_dir))
        tmp = store.temp_path("restoring")
        shutil.copyfile(file, tmp)
        copied = verify(tmp)  # what is on this disk, not what was read before the copy
        if copied.sha256 != info.sha256:
            raise Failed(f"{file} changed while it was copied")
        final = store.publish(tmp, h)
        fsync_dir(data_dir)
        wal = WalStorage(data_dir, segment_bytes=segment_bytes)
        wal.open()
        try:
            wal.install(h.meta())
            wal.append(HardState(term=h.term, commit=h.index), [], sync=True)
        finally:
            wal.close()
    except BaseException:
        _undo(data_dir, existed)
        raise
    return SnapshotInfo(final, h, info.sections, info.size, info.sha256)


def _undo(data_dir: Path, existed: bool) -> None:
    """Remove what a failed restore created in ``data_dir`` (it was missing or empty)."""
    for child in ("snap", "wal"):
        shutil.rmtree(data_dir / child, ignore_errors=True)
    if not existed:
        try:
            data_dir.rmdir()
        except OSError:
            pass


def cmd_restore(args: argparse.Namespace) -> int:
    """Seed one node's empty data directory from a snapshot file (``restore``)."""
    config = load(args.config)
    try:
        me = config.node(args.node)
    except KeyError as exc:
        problem(str(exc.args[0]))
        return 1
    try:
        pm, _ = load_plugins(config, args.node)
    except PluginError as exc:
        problem(f"snapshot restore: {exc}")
        return EX_CONFIG
    data_dir = Path(me.data_dir)
    try:
        info = restore(
            args.file,
            data_dir,
            config.name,
            config.storage.segment_bytes,
            lambda names: capture.check_sections(pm, names),
        )
    except (Failed, SnapshotError, StorageError, OSError) as exc:
        return _failed("restore", exc)
    facts = {"node": args.node, "data_dir": str(data_dir), "snapshot": str(info.path)}
    facts.update(_summary(info))
    if args.output == "json":
        print(json.dumps(facts, indent=2))
    else:
        print(f"restored {args.file} into {data_dir} for node {args.node}")
        _print_fields(facts, ("ensemble", "index", "term", "size", "sha256"))
        where = "" if config.path.startswith("<") else f" -c {config.path}"
        print(f"start it with: zraft run{where} --node {args.node}")
    return 0


# -- take -----------------------------------------------------------------------


def cmd_take(args: argparse.Namespace) -> int:
    """Ask a node (default: the leader) to snapshot now; print the durable file's facts."""
    try:
        nid, endpoint = find_node(args, args.node)
        taken = take(endpoint, args.wait, args.timeout)
    except (Failed, ZraftError) as exc:
        return _failed("take", exc)
    facts = {"node": nid, **taken}
    if args.output == "json":
        print(json.dumps(facts, indent=2))
    else:
        print(f"{nid} took snapshot {taken['name']}")
        _print_fields(facts, ("index", "term", "size", "sha256"))
    return 0


def add_parsers(sub: Any) -> None:
    """Add ``snapshot save|inspect|restore|take`` to the ``zraft`` subparsers."""
    top = sub.add_parser(
        "snapshot",
        help="back up, inspect and restore snapshots; ask a node to snapshot now",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmds = top.add_subparsers(dest="snapshot_command", required=True, metavar="SUBCOMMAND")

    def output(p: argparse.ArgumentParser) -> None:
        p.add_argument("-w", "--output", choices=["text", "json"], default="text")

    def wait(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--wait",
            type=float,
            default=300.0,
            help="seconds the node may take to write the snapshot (default 300)",
        )

    p = cmds.add_parser("save", help="snapshot the leader now and download it to FILE")
    p.add_argument("file", metavar="FILE", help="where to write the snapshot")
    add_target(p)
    wait(p)
    output(p)
    p.set_defaults(func=cmd_save)

    p = cmds.add_parser("inspect", help="verify a snapshot file and describe it")
    p.add_argument("file", metavar="FILE")
    output(p)
    p.set_defaults(func=cmd_inspect)

    p = cmds.add_parser("restore", help="seed a node's empty data directory from FILE")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-n", "--node", required=True, help="the node's id in the ensemble file")
    p.add_argument(
        "-c", "--config", help="ensemble TOML file (default: the embedded local ensemble)"
    )
    output(p)
    p.set_defaults(func=cmd_restore)

    p = cmds.add_parser("take", help="ask a node (default: the leader) to snapshot now")
    add_target(p)
    p.add_argument("-n", "--node", help="the node to ask, by id (default: the leader)")
    wait(p)
    output(p)
    p.set_defaults(func=cmd_take)
