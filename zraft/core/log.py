"""The Raft log as the core sees it: entries after a snapshot point, with
commit, apply and durability cursors.

Indexes: ``snapshot_index`` < ``first_index()`` <= ... <= ``last_index()``.
``stable_index`` is the last index known durable; entries after it are
"unstable" and are handed to the driver in the next Ready for persisting.
"""

from __future__ import annotations

from collections.abc import Sequence

from zraft.core.messages import Entry

ENTRY_OVERHEAD = 24  # rough per-entry framing cost, for byte budgets


class RaftLog:
    """An in-memory log whose first index may be greater than 1."""

    __slots__ = (
        "snapshot_index",
        "snapshot_term",
        "entries",
        "committed",
        "applied",
        "stable_index",
    )

    def __init__(
        self,
        entries: Sequence[Entry] = (),
        snapshot_index: int = 0,
        snapshot_term: int = 0,
        committed: int = 0,
        applied: int | None = None,
    ) -> None:
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        self.entries: list[Entry] = list(entries)
        for offset, entry in enumerate(self.entries):
            if entry.index != snapshot_index + 1 + offset:
                raise ValueError(f"log entries not contiguous at index {entry.index}")
        self.stable_index = self.last_index()  # whatever we were given came from storage
        # Storage writes entries before the hard state that commits them, so a
        # recovered commit index beyond the stored log means storage lost data;
        # never trust it beyond what we hold.
        self.committed = min(max(committed, snapshot_index), self.last_index())
        self.applied = snapshot_index if applied is None else applied

    # -- queries -----------------------------------------------------------

    def first_index(self) -> int:
        """Return the index of the first entry held (snapshot_index + 1)."""
        return self.snapshot_index + 1

    def last_index(self) -> int:
        """Return the index of the last entry (snapshot_index if empty)."""
        return self.snapshot_index + len(self.entries)

    def last_term(self) -> int:
        """Return the term of the last entry (snapshot_term if empty)."""
        return self.entries[-1].term if self.entries else self.snapshot_term

    def term(self, index: int) -> int | None:
        """Return the term at ``index``, or None if compacted away or not yet written."""
        if index == self.snapshot_index:
            return self.snapshot_term
        if index < self.snapshot_index or index > self.last_index():
            return None
        return self.entries[index - self.snapshot_index - 1].term

    def entry(self, index: int) -> Entry:
        """Return the entry at ``index`` (must be held)."""
        return self.entries[index - self.snapshot_index - 1]

    def match_term(self, index: int, term: int) -> bool:
        """Tell whether the entry at ``index`` has ``term`` (Raft §5.3 consistency check)."""
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Tell whether a candidate's log is at least as up to date as ours (Raft §5.4.1)."""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def slice(self, lo: int, hi: int, max_bytes: int, max_entries: int) -> tuple[Entry, ...]:
        """Return entries [lo, hi) within the budgets; always at least one if any exist."""
        hi = min(hi, self.last_index() + 1, lo + max_entries)
        if lo >= hi:
            return ()
        base = self.snapshot_index + 1
        out = self.entries[lo - base : hi - base]
        size = 0
        for n, e in enumerate(out):
            size += len(e.data) + ENTRY_OVERHEAD
            if size > max_bytes and n > 0:
                return tuple(out[:n])
        return tuple(out)

    def unstable_entries(self) -> tuple[Entry, ...]:
        """Return the entries not yet known durable."""
        return tuple(self.entries[self.stable_index - self.snapshot_index :])

    def next_committed(self) -> tuple[Entry, ...]:
        """Return committed entries not yet applied."""
        if self.committed <= self.applied:
            return ()
        base = self.snapshot_index + 1
        return tuple(self.entries[self.applied + 1 - base : self.committed + 1 - base])

    # -- fast back-off (thesis §3.5 / etcd findConflictByTerm) -------------

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Return the largest (idx, term) with idx <= ``index`` and term <= ``term``.

        A follower rejecting an append uses it to hint where the leader should
        probe next, and the leader uses it on the hint to skip whole terms that
        cannot match, instead of backing off one entry per round trip.
        """
        index = min(index, self.last_index())
        while index > self.snapshot_index:
            t = self.term(index)
            assert t is not None
            if t <= term:
                return index, t
            index -= 1
        return self.snapshot_index, self.snapshot_term

    # -- mutation ----------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries, replacing any suffix that starts at entries[0].index."""
        if not entries:
            return
        first = entries[0].index
        if first <= self.committed:
            raise AssertionError(f"overwriting committed entry {first} <= {self.committed}")
        if first > self.last_index() + 1:
            raise AssertionError(f"gap in log: appending {first} after {self.last_index()}")
        del self.entries[first - self.snapshot_index - 1 :]
        self.entries.extend(entries)
        self.stable_index = min(self.stable_index, first - 1)

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, entries: Sequence[Entry]
    ) -> int | None:
        """Handle AppendEntries' log part (Raft §5.3); return the last new index or None.

        Returns None when the entry at ``prev_index`` does not have
        ``prev_term`` (the consistency check fails). Entries already present
        with the same term are kept; the first conflicting entry and all that
        follow are replaced.
        """
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        for n, e in enumerate(entries):
            t = self.term(e.index)
            if t is None and e.index <= self.snapshot_index:
                continue  # already compacted, hence committed and matching
            if t != e.term:
                self.append(entries[n:])
                break
        self.commit_to(min(commit, last_new))
        return last_new

    def commit_to(self, index: int) -> bool:
        """Advance the commit index (never backwards); return whether it moved."""
        if index > self.committed:
            if index > self.last_index():
                raise AssertionError(f"commit {index} beyond last index {self.last_index()}")
            self.committed = index
            return True
        return False

    def stable_to(self, index: int, term: int) -> None:
        """Record that entries up to ``index`` (whose term was ``term``) are durable."""
        if self.term(index) == term and index > self.stable_index:
            self.stable_index = index

    def compact(self, index: int) -> None:
        """Forget the entries up to ``index``: a durable snapshot covers them (thesis §5.1).

        ``index`` must be applied and durable (never compact what no snapshot
        holds); an index at or below the current start is ignored.
        """
        if index <= self.snapshot_index:
            return
        if index > self.applied or index > self.stable_index:
            raise AssertionError(
                f"compacting to {index} past applied {self.applied} / stable {self.stable_index}"
            )
        term = self.term(index)
        assert term is not None
        del self.entries[: index - self.snapshot_index]
        self.snapshot_index, self.snapshot_term = index, term

    def restore(self, index: int, term: int) -> None:
        """Replace the whole log by a snapshot ending at (``index``, ``term``) (Raft §7).

        Used when the log does not hold that entry: every entry is dropped,
        and everything up to ``index`` counts as committed, applied and durable.
        """
        if index <= self.committed:
            raise AssertionError(f"restoring snapshot {index} at or below commit {self.committed}")
        self.entries = []
        self.snapshot_index, self.snapshot_term = index, term
        self.committed = self.applied = self.stable_index = index

    def applied_to(self, index: int) -> None:
        """Record that entries up to ``index`` were handed to the state machine."""
        if index > self.applied:
            self.applied = index
