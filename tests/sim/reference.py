"""The reference state: the committed log applied in order to a fresh KV replica.

A node restored from a snapshot (installed from the leader, or loaded at
start) must hold exactly the state that applying the committed log up to
the snapshot's index gives. ``Reference`` computes that state's hash at any
index, from the run's global applied log (``Invariants.applied_entries``,
itself checked entry by entry by State Machine Safety, Raft §5.4.3).

Indexes are asked for out of order (a lagging node snapshots an older index
than the leader did a moment ago), so the reference keeps a capture of its
state at every index it hashed and rewinds to the nearest one below when it
must go back. Not for production.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from tests.support.kv import kv_replica
from zraft.core import Entry
from zraft.replica import Replica


class Reference:
    """State hashes of the committed log's prefixes, computed on demand and cached."""

    def __init__(self, log: Sequence[Entry]) -> None:
        self.log = log  # entry at index i is log[i - 1]; grows as the run applies entries
        self.replica = kv_replica()
        self.hashes: dict[int, str] = {}
        self._points: list[int] = [0]  # indexes with a checkpoint, sorted
        self._checkpoints: dict[int, tuple[dict[str, bytes], int]] = {
            0: (self.replica.capture(), 0)
        }
        self.rewinds = 0

    def hash_at(self, index: int) -> str:
        """Return the state hash after applying the committed log up to ``index``.

        Raises IndexError when fewer than ``index`` entries were ever applied.
        """
        cached = self.hashes.get(index)
        if cached is not None:
            return cached
        if index > len(self.log):
            raise IndexError(f"index {index} was never applied (applied: {len(self.log)})")
        r = self.replica
        if index < r.applied_index:
            point = self._points[bisect.bisect_right(self._points, index) - 1]
            captured, time_ms = self._checkpoints[point]
            r.restore(captured, point, time_ms)
            self.rewinds += 1
        for i in range(r.applied_index, index):
            r.apply(self.log[i])
        digest = self.hashes[index] = r.state_hash()
        bisect.insort(self._points, index)
        self._checkpoints[index] = (r.capture(), r.time_ms)
        return digest

    def kv_at(self, index: int) -> dict[str, object]:
        """Return the KV contents at ``index`` (for messages)."""
        self.hash_at(index)
        return kv_of(self.replica)


def kv_of(replica: Replica) -> dict[str, object]:
    """Return a replica's KV keys and values."""
    return dict(replica.pm.get_plugin("kv")._data)
