"""Values that cross the core's one door: log entries, hard state, messages.

Everything here is a frozen, slotted dataclass or an enum. The codec in
``zraft.transport.codec`` and the WAL in ``zraft.storage`` serialize these
values; the core never sees bytes other than an entry's opaque ``data``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

NodeId = str
"""A node's id as written in the ensemble file (e.g. ``"n1"``)."""

NO_NODE: NodeId = ""
"""The empty id: "nobody" for voted_for, leader_id and message fields."""


class EntryKind(enum.IntEnum):
    """What an entry carries. Values are stable: they are written to the WAL."""

    NORMAL = 0  # opaque data for the state machine
    NOOP = 1  # appended by a new leader to commit entries of earlier terms (§5.4.2)
    CONFIG = 2  # membership change (reserved: later work carries membership in the log)


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. ``index`` starts at 1; ``data`` is opaque to the core."""

    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """What Raft must persist before answering (Raft §5, Figure 2 "persistent state").

    ``commit`` is persisted too so that a restart need not wait for the
    leader to re-apply entries it already applied; it is never required for
    safety.
    """

    term: int = 0
    voted_for: NodeId = NO_NODE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Where a snapshot ends: the log may start after ``index`` (first index > 1)."""

    index: int = 0
    term: int = 0
    voters: tuple[NodeId, ...] = ()


class MsgType(enum.IntEnum):
    """Raft message types. Values are stable: they go on the wire."""

    APPEND = 1  # AppendEntries RPC (§5.3); heartbeats are empty appends
    APPEND_RESP = 2
    VOTE = 3  # RequestVote RPC (§5.2, §5.4.1)
    VOTE_RESP = 4
    PRE_VOTE = 5  # thesis §9.6: a trial election that does not bump terms
    PRE_VOTE_RESP = 6
    HEARTBEAT = 7  # leader liveness + commit + ReadIndex context (thesis §6.4)
    HEARTBEAT_RESP = 8
    READ_INDEX = 9  # follower asks the leader for a read index (thesis §6.4)
    READ_INDEX_RESP = 10
    TIMEOUT_NOW = 11  # leadership transfer: start an election now (thesis §3.10)
    SNAPSHOT = 12  # InstallSnapshot (§7): between core and driver; the bytes travel apart


@dataclass(frozen=True, slots=True)
class Message:
    """A Raft message between two nodes.

    Field use by type (unused fields keep their defaults):

    * APPEND: ``index``/``log_term`` = prev log index/term, ``entries``, ``commit``.
    * APPEND_RESP: ``index`` = last index matched (accept) or rejected prev index
      (reject); ``reject``; ``reject_hint``/``log_term`` = follower's hint for the
      fast back-off (its last index at or below the probe, and that entry's term).
    * VOTE / PRE_VOTE: ``index``/``log_term`` = candidate's last log index/term.
      A PRE_VOTE carries the term the candidate *would* use.
    * VOTE_RESP / PRE_VOTE_RESP: ``reject``.
    * HEARTBEAT: ``commit`` (capped to what the follower matches), ``context``.
    * HEARTBEAT_RESP: ``context`` echoed.
    * READ_INDEX: ``context`` = an encoded ``ReadContext``; READ_INDEX_RESP:
      ``index`` = read index, the same ``context``, ``reject`` when the leader
      cannot serve it. The core ignores either when its context does not decode.
    * TIMEOUT_NOW: no payload.
    * SNAPSHOT never goes on the wire as a Message (Raft §7, thesis §5.1; the
      snapshot's bytes travel as a chunked stream beside the Raft messages):
      from a leader's core it asks the driver to stream its newest snapshot
      to ``dst`` (``index``/``log_term`` = the leader's log start, the least
      snapshot index that helps); a follower's driver steps one into its core
      once it holds a whole, verified snapshot file: ``index``/``log_term`` =
      the snapshot's last included index and term.
    """

    type: MsgType
    term: int
    src: NodeId
    dst: NodeId
    index: int = 0
    log_term: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""


class ReadPurpose(enum.IntEnum):
    """Who asked for a ReadIndex round. Values are stable: they go on the wire."""

    CLIENT = 1  # a batch of client reads (the request book)
    LEASE = 2  # a leader-payload lease probe (zraft/payload)


_READ_PURPOSES = frozenset(int(p) for p in ReadPurpose)
_SEQ_LIMIT = 1 << 64


@dataclass(frozen=True, slots=True)
class ReadContext:
    """The tag of one ReadIndex request (thesis §6.4), returned in its ``ReadState``.

    On the wire (``Message.context`` of READ_INDEX and READ_INDEX_RESP) it is
    9 bytes: the purpose, then ``seq`` big-endian. ``seq`` is the caller's
    own counter, unique per purpose while the read is pending.
    """

    purpose: ReadPurpose
    seq: int  # 0 <= seq < 2**64

    def __post_init__(self) -> None:
        if self.purpose not in _READ_PURPOSES:
            raise ValueError(f"unknown read purpose {self.purpose!r}")
        if not 0 <= self.seq < _SEQ_LIMIT:
            raise ValueError(f"read seq {self.seq} out of range")

    def encode(self) -> bytes:
        """Return the 9-byte wire form: purpose byte, then seq big-endian."""
        return bytes((self.purpose,)) + self.seq.to_bytes(8, "big")

    @staticmethod
    def decode(data: bytes) -> ReadContext | None:
        """Return the context ``data`` encodes, or None when it is not a valid one."""
        if len(data) != 9 or data[0] not in _READ_PURPOSES:
            return None
        return ReadContext(ReadPurpose(data[0]), int.from_bytes(data[1:], "big"))


@dataclass(frozen=True, slots=True)
class ReadState:
    """A ReadIndex answer: the read tagged ``context`` may be served once
    ``last_applied >= index`` (thesis §6.4)."""

    index: int
    context: ReadContext
    rejected: bool = False  # the leader could not confirm it (lost leadership): fail the read


class Role(enum.Enum):
    """A node's role. PRE_CANDIDATE is the PreVote phase (thesis §9.6)."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state the driver observes for metrics and hooks."""

    leader_id: NodeId
    role: Role
    term: int


@dataclass(frozen=True, slots=True)
class Ready:
    """Everything the driver must do, as a value (see ARCHITECTURE.md "The one door").

    The driver handles it in this order, then calls ``advance(ready)``:

    0. send ``early_messages``: a leader's appends and heartbeats, whose term
       and vote are already durable, may go out before its own fsync
       (thesis §10.2.1); the leader counts its own entries only after advance.
    1. persist ``hard_state`` (if not None) and ``entries``; fsync when
       ``must_sync`` is true. Entries may overwrite a suffix: an entry at an
       index already stored replaces it and everything after it.
    2. send ``messages``. A leader's own appends are counted in its quorum
       only after ``advance``, i.e. after they are durable (thesis §10.2.1).
    3. apply ``committed_entries`` in order, and serve ``read_states`` once
       applied far enough.
    4. observe ``soft_state`` (None when unchanged).

    ``snapshot`` (not None only on a follower that accepted an InstallSnapshot)
    comes first in step 1: switch the received snapshot in (state machine and
    log) before persisting anything else; the log now starts after it, and
    the answer to the leader is in ``messages``.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    messages: tuple[Message, ...] = ()
    committed_entries: tuple[Entry, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    must_sync: bool = False
    early_messages: tuple[Message, ...] = ()
    snapshot: SnapshotMeta | None = None

    def is_empty(self) -> bool:
        """Tell whether there is nothing to do."""
        return not (
            self.soft_state
            or self.hard_state
            or self.entries
            or self.messages
            or self.committed_entries
            or self.read_states
            or self.early_messages
            or self.snapshot
        )
