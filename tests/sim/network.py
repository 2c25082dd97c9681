"""The simulated network: a pool of in-flight messages and a set of one-way cuts.

Nothing is strictly FIFO: the scheduler may deliver any in-flight message
next, so messages are reordered, delayed (left in the pool) for as long as
the seed says, dropped and duplicated. This is what the Raft papers assume of the
network (Raft §5.1: "messages may be lost, duplicated, reordered, delayed")
and what ARCHITECTURE.md reports of the real ZeroMQ mesh under partitions.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from zraft.core import Message


class Network:
    """In-flight messages plus the cuts of the current partition. Not for production.

    A cut ``(a, b)`` loses every message from ``a`` to ``b`` at delivery time,
    including messages sent before the cut was made; cuts are one-way, so a
    two-way partition is two cuts per pair.
    """

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids = tuple(ids)
        self.in_flight: list[Message] = []
        self.cut: set[tuple[str, str]] = set()
        self.sent = 0
        self.delivered = 0
        self.dropped = 0
        self.duplicated = 0
        self.partitions = 0

    def send(self, messages: Iterable[Message]) -> None:
        """Put messages in flight."""
        before = len(self.in_flight)
        self.in_flight.extend(messages)
        self.sent += len(self.in_flight) - before

    def pick(self, rng: random.Random, reorder: float = 1.0) -> int:
        """Return the position of the next message to deliver (the pool must not be empty).

        A random message; with odds ``1 - reorder`` the oldest one in flight on
        the same link instead, so that links are mostly FIFO (a ZeroMQ
        connection is; reordering comes from reconnects and partitions).
        """
        pool = self.in_flight
        i = rng.randrange(len(pool))
        if reorder < 1.0 and rng.random() >= reorder:
            src, dst = pool[i].src, pool[i].dst
            for j in range(i):
                if pool[j].src == src and pool[j].dst == dst:
                    return j
        return i

    def take(self, rng: random.Random, reorder: float = 1.0) -> Message:
        """Remove and return the message ``pick`` chooses."""
        return self.in_flight.pop(self.pick(rng, reorder))

    def duplicate(self, rng: random.Random) -> Message:
        """Put a second copy of a random in-flight message in flight; return it."""
        m = self.in_flight[rng.randrange(len(self.in_flight))]
        self.in_flight.append(m)
        self.duplicated += 1
        return m

    def is_cut(self, m: Message) -> bool:
        """Tell whether the current partition loses ``m``."""
        return (m.src, m.dst) in self.cut

    # -- partitions ---------------------------------------------------------

    def split(self, side: Iterable[str]) -> None:
        """Replace the partition with a two-way split: ``side`` against the rest."""
        inside = set(side)
        self.cut = {
            (a, b) for a in self.ids for b in self.ids if a != b and (a in inside) != (b in inside)
        }
        self.partitions += 1

    def cut_one_way(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Add one-way cuts: for each ``(src, dst)``, messages from src to dst are lost."""
        self.cut.update((a, b) for a, b in pairs if a != b)
        self.partitions += 1

    def heal(self) -> None:
        """Remove every cut."""
        self.cut.clear()


def describe(m: Message) -> str:
    """Return a one-line human form of ``m`` for traces."""
    parts = [f"{m.src}->{m.dst} {m.type.name} t{m.term}"]
    if m.index or m.log_term:
        parts.append(f"i{m.index}/t{m.log_term}")
    if m.entries:
        first, last = m.entries[0], m.entries[-1]
        parts.append(f"e[{first.index}..{last.index}]@t{last.term}")
    if m.commit:
        parts.append(f"c{m.commit}")
    if m.reject:
        parts.append(f"REJECT hint={m.reject_hint}")
    if m.context:
        ctx = str(int.from_bytes(m.context, "big")) if len(m.context) == 8 else repr(m.context)
        parts.append(f"ctx={ctx}")
    return " ".join(parts)
