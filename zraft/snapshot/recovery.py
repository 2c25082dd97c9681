"""Start-up: which snapshot and which part of the WAL make up this node's state.

Rules (README "Snapshots"):

* the newest snapshot file that verifies is used; a damaged one is skipped,
  logged with its file, section and offset, and counted, and the next older
  one is tried;
* a snapshot is usable only if the WAL still holds every entry after it (the
  log was compacted at most up to the snapshot's index). The log is never
  compacted past the older of the two snapshots kept, so a damaged newest
  snapshot is always covered by the older one and the log;
* if the WAL does not hold the snapshot's last entry, the snapshot was
  received from the leader and the node stopped before the WAL recorded the
  install: the install is finished now (every WAL entry is discarded, as the
  leader's snapshot replaced them, Raft §7);
* a WAL that starts after an entry no intact snapshot covers is refused: the
  node stops with a message naming what is missing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from zraft.core import Entry, SnapshotMeta
from zraft.snapshot.format import SnapshotError, SnapshotInfo, verify
from zraft.snapshot.store import SnapshotStore
from zraft.storage import LogStorage, Recovered, StorageError

log = logging.getLogger("zraft.snapshot")


class RecoveryError(StorageError):
    """The snapshots and the WAL on disk do not make up a state; the node must not start."""


@dataclass
class Start:
    """What the node starts from."""

    snapshot: SnapshotInfo | None  # the snapshot to restore the state machines from
    log_start: SnapshotMeta  # the log holds the entries after this one
    entries: list[Entry]
    damaged: list[str] = field(default_factory=list)  # snapshots skipped, with the reason


def recover(store: SnapshotStore, storage: LogStorage, rec: Recovered, ensemble: str) -> Start:
    """Pick the snapshot to start from and finish an interrupted install (module docstring).

    ``rec`` is what ``storage.open()`` returned. Raises RecoveryError when no
    intact snapshot covers the start of the WAL, or a snapshot belongs to
    another ensemble.
    """
    removed = store.remove_partials()
    if removed:
        log.info("removed %d unfinished snapshot file(s) left by a stop", removed)
    mark = rec.snapshot
    damaged: list[str] = []
    chosen: SnapshotInfo | None = None
    for index, _term, path in reversed(store.files()):
        if index < mark.index:
            damaged.append(f"{path}: index {index} is below the log start {mark.index}")
            break  # older ones are lower still
        try:
            info = verify(path)
        except SnapshotError as exc:
            log.error("snapshot %s is damaged, trying an older one: %s", path, exc)
            damaged.append(str(exc))
            continue
        if info.header.ensemble != ensemble:
            raise RecoveryError(
                f"{path} is a snapshot of ensemble {info.header.ensemble!r}, "
                f"not {ensemble!r}: move it out of the data directory"
            )
        chosen = info
        break
    if chosen is None:
        if mark.index > 0:
            why = "; ".join(damaged) or "no snapshot file"
            raise RecoveryError(
                f"the log starts after entry {mark.index} but no intact snapshot holds the "
                f"entries before it ({why}). Restore this node from a backup "
                f"(zraft snapshot restore) or wipe its data directory so that it "
                f"receives the leader's snapshot"
            )
        return Start(None, mark, rec.entries, damaged)
    if damaged:
        log.warning(
            "starting from the older snapshot %s at index %d and the log after it",
            chosen.path,
            chosen.header.index,
        )
    meta = chosen.header.meta()
    if meta.index == mark.index or _holds(rec.entries, meta):
        return Start(chosen, mark, rec.entries, damaged)
    # A received snapshot was switched in, but the WAL's INSTALL record never
    # made it to disk: finish the install (the leader's snapshot replaced the log).
    log.warning(
        "finishing the install of snapshot %d (term %d): the log did not hold its last entry",
        meta.index,
        meta.term,
    )
    storage.install(meta)
    return Start(chosen, meta, [], damaged)


def _holds(entries: list[Entry], meta: SnapshotMeta) -> bool:
    if not entries:
        return False
    offset = meta.index - entries[0].index
    return 0 <= offset < len(entries) and entries[offset].term == meta.term
