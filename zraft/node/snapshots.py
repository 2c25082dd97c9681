"""The node's snapshots: start-up from disk, taking them, compacting, sending, installing.

``open_state`` rebuilds the replicated state at start (newest intact
snapshot, then the log after it). ``Snapshots`` runs on the driver thread,
called by the loop each round:

* it takes a snapshot when the applied log since the last one passes
  ``[raft] snapshot_entries`` or ``snapshot_bytes`` (or when asked), a few
  chunks per round (``zraft.snapshot.taker``), then compacts the core's log
  and the WAL up to the older of the two snapshots kept, keeping at least
  ``snapshot_trailing_entries`` below the newest;
* as leader, it streams its newest snapshot to a follower the core says
  needs one (``zraft.snapshot.transfer``) and reports the outcome;
* as follower, it receives one, steps the core once it is whole and
  verified, and switches it in when the core's Ready says so (``install``).

Failures here are never fatal except an install that cannot be finished:
a snapshot that cannot be written is logged and counted, and the old
snapshots and the log stay as they were.

Negative controls (``zraft/unsafe.py``, tests only) honoured here:
``compact_unsnapshotted`` (``take``), ``skip_snapshot_verify`` and
``snapshot_in_place`` (the receiver, and ``on_chunk``), and the fault double
``corrupt_snapshot_chunks`` (``request``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from zraft.config import EnsembleConfig
from zraft.core import Message, MsgType, RaftLog, Role, SnapshotMeta
from zraft.metrics import SnapshotMetrics
from zraft.replica import Replica
from zraft.snapshot.format import SnapshotHeader, SnapshotInfo, read_sections, verify
from zraft.snapshot.recovery import Start, recover
from zraft.snapshot.store import SnapshotStore
from zraft.snapshot.taker import Taker
from zraft.snapshot.transfer import Receiver, Sender
from zraft.storage import LogStorage, Recovered, StorageError
from zraft.transport.codec import encode
from zraft.transport.wire import SnapAck, SnapChunk, SnapStatus
from zraft.unsafe import from_env

log = logging.getLogger("zraft.snapshot")

STEP_BUDGET_S = 0.004  # encoding time per loop round while a snapshot is written
RETRY_AFTER_S = 1.0  # a failed transfer is retried (by the core asking again) after this
RECEIVE_IDLE_S = 30.0  # a transfer that has not moved for this long is dropped


def snapshot_dir(data_dir: Path) -> Path:
    """Return where a node keeps its snapshot files."""
    return Path(data_dir) / "snap"


@dataclass
class Restored:
    """The state a node starts from: the core's log and the snapshot restored."""

    log: RaftLog
    start: Start


def open_state(
    config: EnsembleConfig,
    store: SnapshotStore,
    storage: LogStorage,
    rec: Recovered,
    replica: Replica,
    metrics: SnapshotMetrics,
) -> Restored:
    """Pick the snapshot and log to start from and restore the state machines from it.

    Raises RecoveryError (no intact snapshot covers the log) or
    SnapshotError/ValueError (the chosen snapshot cannot be restored).
    """
    started = time.monotonic()
    start = recover(store, storage, rec, config.name)
    snap = start.snapshot
    applied = 0
    if snap is not None:
        h = snap.header
        replica.check_sections(s.name for s in snap.sections)
        replica.restore_sections(read_sections(snap.path), h.index, h.time_ms)
        applied = h.index
        metrics.index.set(h.index)
        metrics.size.set(snap.size)
        log.info("restored snapshot %s (index %d, %d bytes)", snap.path.name, h.index, snap.size)
    metrics.load_seconds.set(time.monotonic() - started)
    mark = start.log_start
    commit = max(rec.hard_state.commit, applied)
    raft_log = RaftLog(start.entries, mark.index, mark.term, commit, max(applied, mark.index))
    metrics.first_index.set(raft_log.first_index())
    return Restored(raft_log, start)


class Snapshots:
    """Snapshots of one running node (module docstring). Driver thread only.

    ``compact(index) -> SnapshotMeta`` compacts the core's log and returns the
    new log start; ``step_core(message)`` hands the core a SNAPSHOT message;
    ``report(peer, index, ok)`` tells the core how a transfer ended;
    ``send(peer, frame)`` puts a frame on the mesh. ``unsafe`` holds the
    node's test-only switches; None reads them from ``ZRAFT_UNSAFE_TEST_ONLY``
    as the daemon did (for a node that does not pass its own).
    """

    def __init__(
        self,
        config: EnsembleConfig,
        node_id: str,
        store: SnapshotStore,
        storage: LogStorage,
        replica: Replica,
        metrics: SnapshotMetrics,
        *,
        compact: Callable[[int], SnapshotMeta],
        term_at: Callable[[int], int | None],
        step_core: Callable[[Message], None],
        report: Callable[[str, int, bool], None],
        send: Callable[[str, bytes], bool],
        log_start: int = 0,
        unsafe: frozenset[str] | None = None,
    ) -> None:
        self.config, self.id = config, node_id
        self.store, self.storage, self.replica = store, storage, replica
        self.m = metrics
        self._compact, self._step_core, self._report, self._send = compact, step_core, report, send
        self._term_at = term_at
        rc = config.raft
        self.every_entries, self.every_bytes = rc.snapshot_entries, rc.snapshot_bytes
        self.trailing = rc.snapshot_trailing_entries
        self.taker: Taker | None = None
        self.log_start = log_start  # the log holds the entries after this index
        self.since_entries = 0
        self.since_bytes = 0
        newest = store.newest()
        self.last_index = newest[0] if newest else 0
        self._waiters: list[Callable[[SnapshotInfo | None, str | None], None]] = []
        self._senders: dict[str, Sender] = {}
        self._retry: dict[str, tuple[float, int]] = {}  # peer -> (when, index) to report failed
        self.unsafe = from_env(os.environ) if unsafe is None else unsafe
        self._receiver = Receiver(store, config.name, unsafe=self.unsafe)
        self._received: dict[tuple[int, int], SnapshotInfo] = {}
        self._corrupted: set[str] = set()  # corrupt_snapshot_chunks: peers sent one
        self.failed_last = False
        self._known: SnapshotInfo | None = None  # the newest file's verified info, if known

    # -- taking ---------------------------------------------------------------

    def on_applied(self, count: int, nbytes: int) -> None:
        """Count applied entries toward the next snapshot."""
        self.since_entries += count
        self.since_bytes += nbytes

    def due(self) -> bool:
        """Tell whether the applied log since the last snapshot asks for a new one."""
        return self.since_entries >= self.every_entries or self.since_bytes >= self.every_bytes

    def take(
        self, now: float, then: Callable[[SnapshotInfo | None, str | None], None] | None
    ) -> None:
        """Start a snapshot of the applied state now (one at a time); ``then`` gets the
        result (the file's info, or None and why)."""
        if then is not None:
            self._waiters.append(then)
        if self.taker is not None:
            return  # the one being written answers every waiter
        r = self.replica
        if r.applied_index <= self.last_index:  # nothing new: answer with the newest file
            newest = self.store.newest()
            info = self._known
            if newest is None:
                info = None
            elif info is None or info.path != newest[2]:
                try:  # once per file: verifying reads all of it, on the loop
                    info = self._known = verify(newest[2])
                except StorageError as exc:
                    self._finish(None, str(exc))
                    return
            self._finish(info, None if info is not None else "nothing applied yet")
            return
        entry_term = self._term_at(r.applied_index)
        if entry_term is None:  # cannot happen: the applied entry is above the log start
            self._failed(f"the term of applied entry {r.applied_index} is unknown")
            return
        header = SnapshotHeader(
            ensemble=self.config.name,
            index=r.applied_index,
            term=entry_term,
            voters=self.config.ids,
            time_ms=r.time_ms,
            node=self.id,
            created_ms=int(time.time() * 1000),
        )
        self.since_entries = self.since_bytes = 0
        if "compact_unsnapshotted" in self.unsafe:
            # Negative control: the log goes before the snapshot holding it is durable.
            self._compact_to(r.applied_index)
        try:
            self.taker = Taker(self.store, r.start_capture(), header, started=now)
        except (OSError, StorageError, ValueError) as exc:
            self._failed(f"cannot start: {exc}")

    def busy(self) -> bool:
        """Tell whether the loop should turn again at once (encoding or streaming to do)."""
        return (self.taker is not None and self.taker.busy()) or any(
            not s.finished and s.in_flight < s.window and s.acked < s.size
            for s in self._senders.values()
        )

    def round(self, now: float, role: Role, term: int) -> None:
        """Do this round's snapshot work: encode, finish, start when due, stream."""
        t = self.taker
        if t is None and self.due():
            self.take(now, None)
            t = self.taker
        if t is not None:
            t.step(STEP_BUDGET_S)
            state = t.state
            if state == "done":
                self.taker = None
                assert t.info is not None
                self._taken(t.info, now - t.started)
            elif state == "failed":
                self.taker = None
                self._failed(t.error or "unknown error")
        self._stream(now, role, term)

    def _taken(self, info: SnapshotInfo, seconds: float) -> None:
        h = info.header
        self.last_index = h.index
        self.failed_last = False
        self._known = info
        self.m.taken.labels("ok").inc()
        self.m.duration.observe(seconds)
        self.m.index.set(h.index)
        self.m.size.set(info.size)
        log.info(
            "snapshot %d (term %d) written: %d bytes in %.2f s", h.index, h.term, info.size, seconds
        )
        self._compact_log(h.index)
        self._finish(info, None)

    def _failed(self, why: str) -> None:
        self.failed_last = True
        self.m.taken.labels("failed").inc()
        log.error("snapshot failed, the old snapshots and the log are intact: %s", why)
        self._finish(None, why)

    def _finish(self, info: SnapshotInfo | None, why: str | None) -> None:
        waiters, self._waiters = self._waiters, []
        for then in waiters:
            then(info, why)

    def _compact_log(self, newest: int) -> None:
        """Compact to the older kept snapshot, keeping ``trailing`` entries below the newest."""
        files = self.store.files()
        older = files[-2][0] if len(files) >= 2 else 0
        self._compact_to(min(newest - self.trailing, older))

    def _compact_to(self, point: int) -> None:
        """Compact the core's log, then the WAL, up to ``point`` (if above the log start)."""
        before = self.log_start
        if point <= 0 or point <= before:
            return
        meta = self._compact(point)
        self.storage.compact(meta)  # StorageError here is fatal: the loop stops
        self.log_start = meta.index
        self.m.compacted.inc(meta.index - before)
        self.m.first_index.set(meta.index + 1)

    # -- sending (leader) ------------------------------------------------------

    def request(self, m: Message, now: float) -> None:
        """The core asks to stream a snapshot of at least ``m.index`` to ``m.dst``."""
        newest = self.store.newest()
        peer = m.dst
        if peer in self._senders:
            return
        if newest is None or newest[0] < m.index:
            log.error("peer %s needs a snapshot of at least %d but none is on disk", peer, m.index)
            self._retry[peer] = (now + RETRY_AFTER_S, m.index)
            return
        index, snap_term, path = newest
        corrupt = "corrupt_snapshot_chunks" in self.unsafe and peer not in self._corrupted
        try:
            size = path.stat().st_size
            self._senders[peer] = Sender(
                peer,
                path,
                index,
                snap_term,
                m.term,
                size,
                corrupt_at=size // 2 if corrupt else None,
            )
            if corrupt:  # a fault double: the first transfer to each peer
                self._corrupted.add(peer)
        except (OSError, ValueError) as exc:
            log.error("cannot send snapshot %s to %s: %s", path, peer, exc)
            self._retry[peer] = (now + RETRY_AFTER_S, m.index)
            return
        log.info("sending snapshot %d (%d bytes) to %s", index, size, peer)

    def on_ack(self, peer: str, ack: SnapAck, now: float) -> None:
        """Take a follower's acknowledgement of snapshot chunks."""
        sender = self._senders.get(peer)
        if sender is not None:
            sender.on_ack(ack, now)

    def _stream(self, now: float, role: Role, term: int) -> None:
        if role is not Role.LEADER:
            for sender in self._senders.values():
                sender.close()  # a new leader sends its own; progress was reset
            self._senders.clear()
            self._retry.clear()
            return
        for peer, (when, index) in list(self._retry.items()):
            if now >= when:
                del self._retry[peer]
                self._report(peer, index, False)
        for peer, sender in list(self._senders.items()):
            if sender.term != term:
                sender.close()
                del self._senders[peer]
                continue
            for chunk in sender.pump(now):
                if self._send(peer, encode(chunk)):
                    self.m.install_bytes.labels("sent").inc(len(chunk.data))
            if sender.done:
                del self._senders[peer]
                self.m.install.labels("sent", "ok").inc()
                log.info("snapshot %d sent to %s", sender.index, peer)
                self._report(peer, sender.index, True)
            elif sender.failed:
                del self._senders[peer]
                self.m.install.labels("sent", "failed").inc()
                log.warning(
                    "sending snapshot %d to %s failed: %s", sender.index, peer, sender.failed
                )
                self._retry[peer] = (now + RETRY_AFTER_S, sender.index)

    # -- receiving (follower) ----------------------------------------------------

    def on_chunk(self, peer: str, chunk: SnapChunk, term: int, now: float) -> None:
        """Take a chunk of the leader's snapshot; step the core once the file is whole."""
        if chunk.term < term:
            return  # a deposed leader's transfer: the current one will send its own
        before = self._receiver.bytes_received
        ack, received = self._receiver.on_chunk(peer, chunk, now)
        self.m.install_bytes.labels("received").inc(self._receiver.bytes_received - before)
        if (
            "snapshot_in_place" in self.unsafe
            and chunk.offset == 0
            and before < self._receiver.bytes_received
        ):
            self._drop_log_early(chunk)
        if ack is not None:
            self._send(peer, encode(ack))
        if received is None:
            if ack is not None and ack.status is SnapStatus.ABORT:
                self.m.install.labels("received", "failed").inc()
                log.warning("snapshot from %s refused: %s", peer, self._receiver.last_error)
            return
        info = received.info
        h = info.header
        self._received = {(h.index, h.term): info}
        self._step_core(Message(MsgType.SNAPSHOT, chunk.term, peer, self.id, h.index, h.term))

    def _drop_log_early(self, chunk: SnapChunk) -> None:
        """Negative control ``snapshot_in_place``: the log goes when the first chunk comes."""
        if chunk.index > self.log_start:
            self.storage.install(SnapshotMeta(chunk.index, chunk.snap_term, self.config.ids))
            log.warning("snapshot_in_place: dropped the log for snapshot %d", chunk.index)

    def install(self, meta: SnapshotMeta) -> None:
        """Switch in the received snapshot ``meta``: file, WAL, then the state machines.

        Raises StorageError (fatal: the node restarts and recovery finishes
        the install) when any step fails.
        """
        started = time.monotonic()
        info = self._received.pop((meta.index, meta.term), None)
        if info is None:
            raise StorageError(f"no received snapshot file for index {meta.index}")
        final = self.store.publish(info.path, info.header)
        self.storage.install(meta)
        self.log_start = meta.index
        h = info.header
        try:
            if info.sections:  # empty only under the negative control skip_snapshot_verify
                self.replica.check_sections(s.name for s in info.sections)
            self.replica.restore_sections(read_sections(final), h.index, h.time_ms)
        except ValueError as exc:
            raise StorageError(f"cannot restore the received snapshot {final}: {exc}") from exc
        self.last_index = h.index
        self.since_entries = self.since_bytes = 0
        self.m.install.labels("received", "ok").inc()
        self.m.index.set(h.index)
        self.m.size.set(info.size)
        self.m.first_index.set(meta.index + 1)
        self.m.load_seconds.set(time.monotonic() - started)
        log.info(
            "installed snapshot %d (term %d, %d bytes) from the leader", h.index, h.term, info.size
        )

    def expire(self, now: float) -> None:
        """Drop a receive that stalled (the leader died or moved on)."""
        if self._receiver.expire(now, RECEIVE_IDLE_S):
            self.m.install.labels("received", "failed").inc()

    def close(self) -> None:
        """Stop: abort a snapshot being written (its temp file goes)."""
        if self.taker is not None:
            self.taker.abort("node stopping")
            self.taker.join(5.0)
            self.m.taken.labels("aborted").inc()
            self.taker = None
        for sender in self._senders.values():
            sender.close()
        self._senders.clear()
        self._receiver.close()
        self._finish(None, "node stopping")
