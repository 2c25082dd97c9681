"""ReadIndex bookkeeping on the leader (Raft thesis §6.4).

A read is registered with the commit index at the time it arrives. The
leader then confirms it is still leader with one round of heartbeats; once a
quorum has acknowledged a heartbeat sent after the read was registered, the
read may be served at that index. Reads share heartbeats: an acknowledgement
of the newest heartbeat confirms every read registered before it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from zraft.core.messages import NodeId, ReadContext
from zraft.core.quorum import MajorityConfig


@dataclass(slots=True)
class PendingRead:
    """One read waiting for a quorum to confirm leadership."""

    seq: int  # the leader's own heartbeat context for this read
    index: int  # commit index when the read arrived
    requester: NodeId  # who asked: this node, or a follower that forwarded it
    context: ReadContext  # the requester's own tag, returned with the answer
    acks: set[NodeId] = field(default_factory=set)


class ReadIndexQueue:
    """Reads in arrival order, released in that order once confirmed."""

    __slots__ = ("_queue", "_by_seq", "_next_seq")

    def __init__(self) -> None:
        self._queue: deque[PendingRead] = deque()
        self._by_seq: dict[int, PendingRead] = {}
        self._next_seq = 1

    def __len__(self) -> int:
        return len(self._queue)

    def add(
        self, index: int, requester: NodeId, context: ReadContext, self_id: NodeId
    ) -> PendingRead:
        """Register a read at commit ``index``; the leader's own ack is implied."""
        read = PendingRead(self._next_seq, index, requester, context, {self_id})
        self._next_seq += 1
        self._queue.append(read)
        self._by_seq[read.seq] = read
        return read

    def last_seq(self) -> int:
        """Return the heartbeat context that confirms every read now queued (0 if none)."""
        return self._queue[-1].seq if self._queue else 0

    def ack(self, seq: int, voter: NodeId, voters: MajorityConfig) -> list[PendingRead]:
        """Record ``voter``'s heartbeat ack for ``seq``; return reads now confirmed.

        An ack for ``seq`` confirms leadership after every read registered at
        or before ``seq``, so all of them are released, oldest first.
        """
        read = self._by_seq.get(seq)
        if read is None:
            return []
        read.acks.add(voter)
        if not voters.has_quorum(read.acks):
            return []
        released: list[PendingRead] = []
        while self._queue and self._queue[0].seq <= seq:
            done = self._queue.popleft()
            del self._by_seq[done.seq]
            released.append(done)
        return released

    def drain(self) -> list[PendingRead]:
        """Remove and return every pending read (leadership was lost)."""
        reads = list(self._queue)
        self._queue.clear()
        self._by_seq.clear()
        return reads
