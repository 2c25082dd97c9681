"""``zraft recover --force-new-ensemble``: one survivor becomes a one-node ensemble.

For when a majority is lost for good (README "Disaster recovery"). The node
must be stopped; its data directory is rewritten in place (the new snapshot
is durable before the log is reset), and ``--backup FILE`` also writes the
new snapshot to FILE for seeding the other nodes with ``zraft snapshot
restore``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from zraft.cli.common import load, problem
from zraft.node.force import force_new_ensemble
from zraft.node.snapshots import snapshot_dir
from zraft.storage import StorageError


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``recover``."""
    p = sub.add_parser(
        "recover",
        help="disaster recovery: make one stopped survivor a one-node ensemble",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--force-new-ensemble",
        action="store_true",
        required=True,
        help="required: commit everything in this node's log and make it the only voter",
    )
    p.add_argument("--node", required=True, help="the survivor's id in the ensemble file")
    p.add_argument("-c", "--config", help="the ensemble TOML file the survivor ran with")
    p.add_argument("--backup", type=Path, help="also write the new snapshot to this file")
    p.add_argument("-w", "--write-out", choices=("text", "json"), default="text")
    p.set_defaults(func=_recover)


def _recover(args: argparse.Namespace) -> int:
    config = load(args.config)
    try:
        me = config.node(args.node)
    except KeyError as exc:
        problem(str(exc.args[0] if exc.args else exc))
        return 1
    if _running(Path(me.data_dir)):
        problem(f"node {args.node} seems to be running (its WAL is open): stop it first")
        return 1
    try:
        done = force_new_ensemble(config, args.node, snapshot_dir(me.data_dir))
        if args.backup is not None:
            tmp = args.backup.with_name(args.backup.name + ".tmp")
            shutil.copyfile(done.snapshot.path, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, args.backup)
    except (StorageError, OSError, ValueError) as exc:
        problem(f"recover failed: {exc}")
        return 1
    h = done.snapshot.header
    facts = {
        "node": args.node,
        "index": h.index,
        "term": h.term,
        "voters": list(h.voters),
        "snapshot": str(done.snapshot.path),
        "sha256": done.snapshot.sha256,
        "committed_before": done.committed_before,
        "newly_committed": done.uncommitted,
        "backup": str(args.backup) if args.backup else None,
    }
    if args.write_out == "json":
        print(json.dumps(facts, indent=2))
        return 0
    print(
        f"{args.node} is now a one-node ensemble at index {h.index} (term {h.term});\n"
        f"{done.uncommitted} entries past its old commit index {done.committed_before} "
        f"are committed.\nStart it with an ensemble file that lists only {args.node}; "
        f'seed each new node with `zraft snapshot restore` (README "Disaster recovery").'
    )
    if args.backup:
        print(f"snapshot copied to {args.backup} ({done.snapshot.size} bytes)")
    return 0


def _running(data_dir: Path) -> bool:
    """Tell whether a process has a WAL segment of ``data_dir`` open (Linux /proc)."""
    wal = (data_dir / "wal").resolve()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                try:
                    if Path(os.readlink(fd)).parent == wal:
                        return True
                except OSError:
                    continue
        except OSError:
            continue
    return False
