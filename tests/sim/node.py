"""A simulated node: the real ``Shell`` (core, replicated state, request book) on memory.

``SimNode`` is the shell's ``Io`` for one node of the simulation: persisting
goes to ``MemoryStorage`` (a crash keeps only what an fsync made durable),
sending goes to the simulated network, and replies go to the simulated
clients. Everything else, the Ready order, the apply path, sessions,
ReadIndex batching and the reply rules, is the code a real node runs
(``zraft/node/shell.py``). Time is the schedule's step counter. Not for
production.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from typing import Any, Protocol

from tests.support.kv import kv_replica
from zraft.api.book import RequestBook
from zraft.api.routes import Reply, Request, Route
from zraft.core import (
    CoreConfig,
    Entry,
    HardState,
    Message,
    Raft,
    RaftLog,
    ReadState,
    SoftState,
)
from zraft.node.shell import Shell
from zraft.storage.memory import MemoryStorage

DRIVER_SWITCHES = frozenset({"local_reads", "ack_before_commit"})
STEP_MS = 10  # leader time advances this much per schedule step


class Host(Protocol):
    """What a node reports to the simulation while it handles a Ready, in Ready order."""

    def send(self, node: SimNode, messages: Sequence[Message]) -> None:
        """Put ``messages`` on the network."""

    def logged(self, node: SimNode, entries: Sequence[Entry]) -> None:
        """See new (or rewritten) entries of ``node``'s log, before they are persisted."""

    def synced(self, node: SimNode, first_index: int) -> None:
        """See an fsync: ``node.durable`` changed from ``first_index`` on."""

    def applied(self, node: SimNode, entry: Entry) -> None:
        """See ``entry`` applied (``node.applied_index`` already counts it)."""

    def replied(self, node: SimNode, reply: Reply) -> None:
        """See a reply to a simulated client."""

    @property
    def now(self) -> int:
        """The current step."""


class CrashPoint(enum.Enum):
    """Where in the handling of a pending Ready a crash strikes."""

    BEFORE_READY = "before-ready"  # nothing of the pending Ready happened
    AFTER_EARLY = "after-early"  # early messages left; the write was not fsynced
    AFTER_PERSIST = "after-persist"  # early messages left and the fsync finished


class Crash(Exception):
    """Raised inside a Ready to stop the node at its crash point."""


class SimNode:
    """One node of the simulated cluster (the shell's ``Io``).

    ``shell`` (and its core, replica and book) is replaced at every restart;
    ``life`` counts boots (1 = first). ``durable`` mirrors the entries that
    would survive a crash now.
    """

    def __init__(
        self,
        node_id: str,
        voters: tuple[str, ...],
        seed: int,
        host: Host,
        *,
        pre_vote: bool,
        check_quorum: bool,
        heartbeat_ticks: int,
        election_ticks: int,
        max_inflight: int,
        max_entries_per_msg: int,
        unsafe: frozenset[str],
        skip_fsync: bool,
        timeout_steps: int,
    ) -> None:
        self.id = node_id
        self.host = host
        self.config = CoreConfig(
            id=node_id,
            voters=voters,
            election_ticks=election_ticks,
            heartbeat_ticks=heartbeat_ticks,
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            max_inflight=max_inflight,
            max_entries_per_msg=max_entries_per_msg,
            unsafe=unsafe - DRIVER_SWITCHES,
        )
        self.unsafe = unsafe & DRIVER_SWITCHES
        self.voters = voters
        self.seed = seed
        self.skip_fsync = skip_fsync
        self.timeout_steps = timeout_steps
        self.storage = MemoryStorage()
        self.durable: list[Entry] = []
        self.life = 0
        self.up = False
        self.applied_terms: list[int] = []
        self._crash_at: CrashPoint | None = None
        self.boot()

    # -- life -------------------------------------------------------------

    def boot(self) -> None:
        """Start (or restart) from what storage holds, as ``zraft.node.Node`` does.

        The state machine starts empty and is rebuilt by re-applying the
        committed log: the core hands every committed entry out again.
        """
        rec = self.storage.open()
        self.life += 1
        log = RaftLog(rec.entries, rec.snapshot.index, rec.snapshot.term, rec.hard_state.commit)
        # A fresh Random per life: the restarted core must not replay the dead one's timeouts.
        rng = random.Random(self.seed * 1_000_003 + self.life)
        self.raft = Raft(self.config, rng, rec.hard_state, log)
        self.replica = kv_replica(applied_index=self.raft.status().applied)
        book = RequestBook(
            self.replica.commands,
            self.replica,
            timeout_s=float(self.timeout_steps),
            max_pending=1 << 30,
            unsafe=self.unsafe,
        )
        self.shell = Shell(self.raft, self.replica, book, self, {v: v for v in self.voters})
        self.applied_terms = []
        self.durable = list(rec.entries)
        self.up = True

    def crash(self, point: CrashPoint) -> None:
        """Lose power, possibly in the middle of handling the pending Ready.

        Only what an fsync made durable survives (``MemoryStorage.crash``).
        """
        if point is not CrashPoint.BEFORE_READY and self.raft.has_ready():
            self._crash_at = point
            try:
                self.shell.handle_ready(self.raft.ready())
            except Crash:
                pass
            self._crash_at = None
        self.storage = self.storage.crash()
        self.up = False

    # -- inputs, through the shell -----------------------------------------

    def tick(self) -> None:
        """One tick of this node's clock."""
        now = self.host.now
        self.shell.tick(1, float(now), now * STEP_MS)

    def step(self, m: Message) -> None:
        """Deliver one message."""
        self.shell.step(m)

    def submit(self, route: Route, req: Request) -> None:
        """Take a client request (replies reach the host, possibly at once)."""
        now = self.host.now
        self.shell.submit(route, req, float(now), now * STEP_MS)

    def has_work(self) -> bool:
        """Tell whether ``drain`` would do something."""
        return self.shell.has_work()

    def drain(self) -> None:
        """Send the round's reads and handle Readys until none is left (a node's loop round)."""
        for _ in range(100):
            if not self.shell.has_work():
                return
            self.shell.process()
        raise AssertionError(f"{self.id}: the core kept producing Readys")

    @property
    def applied_index(self) -> int:
        """What the state machine holds."""
        return self.replica.applied_index

    def kv(self) -> dict[str, Any]:
        """The KV state machine's keys and values (for messages)."""
        store = self.replica.pm.get_plugin("kv")
        return dict(store._data)

    # -- Io ---------------------------------------------------------------

    def persist(self, hard_state: HardState | None, entries: tuple[Entry, ...], sync: bool) -> None:
        if self._crash_at is CrashPoint.AFTER_EARLY:
            raise Crash
        if entries:
            self.host.logged(self, entries)
        sync = sync and not self.skip_fsync  # negative control: nothing ever becomes durable
        self.storage.append(hard_state, entries, sync=sync)
        if sync:
            self.durable = self.storage.durable_entries()
            first = entries[0].index if entries else len(self.durable) + 1
            self.host.synced(self, first)
        if self._crash_at is CrashPoint.AFTER_PERSIST:
            raise Crash

    def send(self, messages: tuple[Message, ...]) -> None:
        self.host.send(self, messages)

    def forward(self, leader: str, fwd_id: int, data: bytes) -> bool:
        return False  # simulated clients ask with forward=False: followers redirect them

    def reply(self, reply: Reply) -> None:
        self.host.replied(self, reply)

    def on_applied(self, entries: tuple[Entry, ...]) -> None:
        for entry in entries:
            self.applied_terms.append(entry.term)
            self.host.applied(self, entry)

    def lease_read(self, rs: ReadState) -> None:
        pass  # no payloads in the simulation

    def observe(self, soft: SoftState, previous: SoftState) -> None:
        pass  # the schedule reads roles after every step
