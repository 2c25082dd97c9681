"""Disaster recovery: turn one survivor's data into a one-node ensemble (etcd's
``--force-new-cluster``).

When a majority is lost for good, nothing can be committed any more. The
operator stops the survivor and runs ``zraft recover --force-new-ensemble``:
this module rebuilds the survivor's state from its newest snapshot and
**every** entry in its log (committed or not: a write the lost majority had
committed may be only in the survivor's log, past its own commit index),
writes that state as a new snapshot whose only voter is the survivor, and
resets its WAL to start after it. The survivor then starts alone with an
ensemble file that lists only it, and the others are seeded from the same
snapshot (``zraft snapshot restore``) before they join it again
(README "Disaster recovery").

Entries of the survivor's log that the old ensemble never committed become
committed: etcd does the same. Nothing acknowledged by the old ensemble is
lost as long as the survivor held it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from zraft.config import EnsembleConfig
from zraft.core import HardState, SnapshotMeta
from zraft.plugins import load_plugins
from zraft.replica import Replica
from zraft.snapshot.format import (
    SnapshotHeader,
    SnapshotInfo,
    read_sections,
    verify,
    write_file,
)
from zraft.snapshot.recovery import recover
from zraft.snapshot.store import SnapshotStore
from zraft.storage import StorageError
from zraft.storage.wal import WalStorage

log = logging.getLogger("zraft.snapshot")


@dataclass(frozen=True)
class Forced:
    """What ``force_new_ensemble`` did."""

    snapshot: SnapshotInfo  # the new snapshot, in the node's snapshot directory
    committed_before: int  # the survivor's commit index before
    uncommitted: int  # entries it held past that commit index, now committed
    term: int


def force_new_ensemble(config: EnsembleConfig, node_id: str, snap_dir: Path) -> Forced:
    """Rewrite ``node_id``'s data directory as a one-node ensemble (module docstring).

    The node must be stopped. Raises StorageError (or RecoveryError,
    SnapshotError) when its data cannot be read; the data directory is
    unchanged until the new snapshot is durable.
    """
    me = config.node(node_id)
    store = SnapshotStore(snap_dir)
    wal = WalStorage(Path(me.data_dir), segment_bytes=config.storage.segment_bytes)
    rec = wal.open()
    try:
        start = recover(store, wal, rec, config.name)
        pm, commands = load_plugins(config, node_id)
        replica = Replica(pm, commands)
        index, term = start.log_start.index, start.log_start.term
        if start.snapshot is not None:
            h = start.snapshot.header
            replica.restore_sections(read_sections(start.snapshot.path), h.index, h.time_ms)
            index, term = h.index, h.term
        for e in start.entries:
            if e.index > index:
                replica.apply(e)
                index, term = e.index, e.term
        if index == 0:
            raise StorageError(f"{me.data_dir} holds no state to recover (empty log)")
        committed = rec.hard_state.commit
        base = start.snapshot.header.index if start.snapshot is not None else 0
        uncommitted = max(0, index - max(committed, base))
        header = SnapshotHeader(
            ensemble=config.name,
            index=index,
            term=term,
            voters=(node_id,),
            time_ms=replica.time_ms,
            node=node_id,
            created_ms=int(time.time() * 1000),
        )
        tmp = store.temp_path("forced")
        capture = replica.start_capture()
        try:
            write_file(tmp, header, capture.sections())
        finally:
            capture.close()
        final = store.publish(tmp, header)
        meta = SnapshotMeta(index, term, (node_id,))
        wal.install(meta)
        hard_term = max(rec.hard_state.term, term)
        wal.append(HardState(hard_term, "", index), [], sync=True)
    finally:
        wal.close()
    info = verify(final)
    log.warning(
        "forced a new one-node ensemble on %s at index %d (term %d); %d entries past the "
        "old commit index %d are now committed",
        node_id,
        index,
        term,
        uncommitted,
        committed,
    )
    return Forced(info, committed, uncommitted, hard_term)
