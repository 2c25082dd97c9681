"""A simulated node: a pure core, its ``MemoryStorage`` and a tiny KV state machine.

``SimNode`` is a driver in the sense of ARCHITECTURE.md "The one door". It
handles each ``Ready`` in the order the ``Ready`` docstring fixes: send
``early_messages`` (thesis §10.2.1), persist (fsync iff ``must_sync``), send
``messages``, apply ``committed_entries`` and hand over ``read_states``, then
``advance``. A crash keeps only what ``MemoryStorage`` made durable, and a
restart rebuilds the core from ``storage.open()`` exactly as
``zraft.node.Node.__init__`` does. Not for production.
"""

from __future__ import annotations

import enum
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from zraft.core import CoreConfig, Entry, EntryKind, Message, Raft, RaftLog, ReadState
from zraft.storage.memory import MemoryStorage


@dataclass(frozen=True, slots=True)
class Command:
    """A client operation carried in an entry's ``data`` (sim-only JSON).

    ``f`` is ``"write"`` (``value`` is the new value) or ``"cas"`` (``value``
    is ``[expected, new]``; ``expected`` None means "the key is absent").
    ``(process, op_id)`` names the operation uniquely within a schedule.
    """

    process: int
    op_id: int
    f: str
    key: str
    value: Any

    def encode(self) -> bytes:
        """Return the entry data for this command."""
        fields = [self.process, self.op_id, self.f, self.key, self.value]
        return json.dumps(fields, separators=(",", ":")).encode()

    @staticmethod
    def decode(data: bytes) -> Command:
        """Parse entry data written by ``encode``."""
        process, op_id, f, key, value = json.loads(data)
        return Command(process, op_id, f, key, value)


def apply_command(kv: dict[str, Any], cmd: Command) -> bool | None:
    """Apply ``cmd`` to ``kv``; return None for a write, whether the compare matched for a cas."""
    if cmd.f == "write":
        kv[cmd.key] = cmd.value
        return None
    expected, new = cmd.value
    if kv.get(cmd.key) != expected:
        return False
    kv[cmd.key] = new
    return True


class Host(Protocol):
    """What a node reports to the simulation while it handles a Ready, in Ready order."""

    def send(self, node: SimNode, messages: Sequence[Message]) -> None:
        """Put ``messages`` on the network."""

    def logged(self, node: SimNode, entries: Sequence[Entry]) -> None:
        """See new (or rewritten) entries of ``node``'s log, before they are persisted."""

    def synced(self, node: SimNode, first_index: int) -> None:
        """See an fsync: ``node.durable`` changed from ``first_index`` on."""

    def applied(self, node: SimNode, entry: Entry, result: bool | None) -> None:
        """See ``entry`` applied (``node.applied_index`` already counts it)."""

    def read_state(self, node: SimNode, rs: ReadState) -> None:
        """See a ReadIndex answer; serving it waits until applied far enough."""


class CrashPoint(enum.Enum):
    """Where in the handling of a pending Ready a crash strikes."""

    BEFORE_READY = "before-ready"  # nothing of the pending Ready happened
    AFTER_EARLY = "after-early"  # early messages left; the write was not fsynced
    AFTER_PERSIST = "after-persist"  # early messages left and the fsync finished


class SimNode:
    """One node of the simulated cluster.

    ``raft`` is replaced at every restart; ``life`` counts boots (1 = first).
    ``durable`` mirrors the entries that would survive a crash now. Between
    ``ready()`` and ``advance()`` nothing else touches the core: ``handle_ready``
    runs a whole Ready at once.
    """

    def __init__(
        self,
        node_id: str,
        voters: tuple[str, ...],
        seed: int,
        *,
        pre_vote: bool,
        check_quorum: bool,
        heartbeat_ticks: int,
        election_ticks: int,
        max_inflight: int,
        max_entries_per_msg: int,
        unsafe_core: frozenset[str],
        skip_fsync: bool,
    ) -> None:
        self.id = node_id
        self.config = CoreConfig(
            id=node_id,
            voters=voters,
            election_ticks=election_ticks,
            heartbeat_ticks=heartbeat_ticks,
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            max_inflight=max_inflight,
            max_entries_per_msg=max_entries_per_msg,
            unsafe=unsafe_core,
        )
        self.seed = seed
        self.skip_fsync = skip_fsync
        self.storage = MemoryStorage()
        self.durable: list[Entry] = []
        self.life = 0
        self.up = False
        self.kv: dict[str, Any] = {}
        self.applied_index = 0
        self.applied_terms: list[int] = []
        self.boot()

    def boot(self) -> None:
        """Start (or restart) from what storage holds, the way ``zraft.node.Node`` does.

        The state machine starts empty and is rebuilt by re-applying the
        committed log: the core hands every committed entry out again.
        """
        rec = self.storage.open()
        self.life += 1
        log = RaftLog(rec.entries, rec.snapshot.index, rec.snapshot.term, rec.hard_state.commit)
        # A fresh Random per life: the restarted core must not replay the dead one's timeouts.
        rng = random.Random(self.seed * 1_000_003 + self.life)
        self.raft = Raft(self.config, rng, rec.hard_state, log)
        self.kv = {}
        self.applied_index = self.raft.log.applied
        self.applied_terms = []
        self.durable = list(rec.entries)
        self.up = True

    def handle_ready(self, host: Host) -> None:
        """Handle one Ready in the documented order, then advance. Requires ``has_ready()``."""
        rd = self.raft.ready()
        host.send(self, rd.early_messages)  # thesis §10.2.1: before our own fsync
        self._persist(host, rd.hard_state, rd.entries, rd.must_sync)
        host.send(self, rd.messages)  # Figure 2: only after term, vote and entries are durable
        for entry in rd.committed_entries:
            result = None
            if entry.kind is EntryKind.NORMAL:
                result = apply_command(self.kv, Command.decode(entry.data))
            self.applied_index = entry.index
            self.applied_terms.append(entry.term)
            host.applied(self, entry, result)
        # The core collects rejected forwarded reads from a set: fix their order
        # so that a replay in another process (another hash seed) is identical.
        served = [rs for rs in rd.read_states if not rs.rejected]
        rejected = sorted((rs for rs in rd.read_states if rs.rejected), key=lambda rs: rs.context)
        for rs in served + rejected:
            host.read_state(self, rs)
        self.raft.advance(rd)

    def drain(self, host: Host, limit: int = 100) -> None:
        """Handle Readys until the core has nothing left (as ``zraft.node`` does per round)."""
        for _ in range(limit):
            if not self.raft.has_ready():
                return
            self.handle_ready(host)
        raise AssertionError(f"{self.id}: the core kept producing Readys ({limit} in a row)")

    def crash(self, host: Host, point: CrashPoint) -> None:
        """Lose power, possibly in the middle of handling the pending Ready.

        Only what an fsync made durable survives (``MemoryStorage.crash``).
        """
        if point is not CrashPoint.BEFORE_READY and self.raft.has_ready():
            rd = self.raft.ready()
            host.send(self, rd.early_messages)
            self._persist(
                host, rd.hard_state, rd.entries, rd.must_sync and point is CrashPoint.AFTER_PERSIST
            )
        self.storage = self.storage.crash()
        self.up = False

    def _persist(self, host: Host, hard_state: Any, entries: Sequence[Entry], sync: bool) -> None:
        if entries:
            host.logged(self, entries)
        if hard_state is None and not entries:
            return
        sync = sync and not self.skip_fsync  # negative control: nothing ever becomes durable
        self.storage.append(hard_state, entries, sync=sync)
        if sync:
            self.durable = self.storage.durable_entries()
            first = entries[0].index if entries else len(self.durable) + 1
            host.synced(self, first)
