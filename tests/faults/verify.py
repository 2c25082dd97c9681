"""Judging a fault run from what the nodes left behind and what the clients saw.

- ``read_wal``: every record of a node's WAL in write order, read independently
  of ``zraft.storage.wal`` (only the documented record format is shared):
  the replayed log, the sequence of hard-state records, and where snapshots
  took the log over (an INSTALL discards the log; a compaction mark only says
  that entries up to it may be gone: ``walarchive`` keeps them);
- ``leaders_by_term``: every ``term T: leader is X`` line of every node's log;
- ``double_votes``: a term whose ``voted_for`` changed from one node to another
  within one node's hard-state records, or a term that went backwards;
- ``lost_writes``: acknowledged writes (by session pair) absent from the
  committed log (``committed_log`` fills the entries a node never held, below
  a snapshot it installed or compacted, from the other nodes);
- ``committed_prefixes_agree``: the entries up to the applied index are the
  same (term, data) on every node that holds them (Log Matching, State
  Machine Safety).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zraft.replica import entries

_HEADER = struct.Struct("<IBII")  # length, type, crc32(payload), crc32(first 9 header bytes)
_ENTRY = struct.Struct("<QQB")  # term, index, kind
_HS = struct.Struct("<QQ")  # term, commit; voted_for follows in utf-8
_META = struct.Struct("<QQ")  # snapshot index, term (voters follow)
ENTRY, HARD_STATE, SNAPSHOT_MARK, INSTALL = 1, 2, 3, 4
_SEGMENT = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")
_LEADER_LINE = re.compile(r"\bterm (\d+): leader is (\S+)")


@dataclass
class Wal:
    """What one node's WAL holds: the replayed log and every hard-state record in order."""

    log: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # index -> (term, data)
    hard_states: list[tuple[int, int, str]] = field(default_factory=list)  # term, commit, vote
    records: int = 0
    tail_bytes: int = 0  # bytes after the last good record of the last segment
    installed: int = 0  # the index of the last snapshot installed from a leader (INSTALL)
    mark: int = 0  # the highest compaction mark or install: entries up to it may be gone

    def holds(self, index: int) -> bool:
        """Whether this WAL should hold entry ``index``: it has it or never compacted it."""
        return index in self.log or index > self.mark


def read_wal(data_dir: Path) -> Wal:
    """Read ``data_dir/wal/*.wal`` in segment order; stop at the first bad record.

    An INSTALL record (a snapshot from the leader replaced the log, thesis
    §5.1) discards every entry before it; a compaction mark discards nothing
    (the archive still holds the entries) but is remembered in ``mark``.
    """
    out = Wal()
    wal_dir = Path(data_dir) / "wal"
    if not wal_dir.is_dir():
        return out
    segs = sorted(
        (int(m.group(1), 16), p)
        for p in wal_dir.iterdir()
        if (m := _SEGMENT.match(p.name)) is not None
    )
    last = 0
    for n, (_, path) in enumerate(segs):
        buf = path.read_bytes()
        off = 0
        while off + _HEADER.size <= len(buf):
            length, rtype, crc, hcrc = _HEADER.unpack_from(buf, off)
            if zlib.crc32(buf[off : off + 9]) != hcrc:
                break
            body = off + _HEADER.size
            end = body + length
            if end > len(buf) or zlib.crc32(buf[body:end]) != crc:
                break
            if rtype == ENTRY:
                term, index, _kind = _ENTRY.unpack_from(buf, body)
                for i in range(index, last + 1):  # a suffix overwrite (§5.3)
                    out.log.pop(i, None)
                out.log[index] = (term, bytes(buf[body + _ENTRY.size : end]))
                last = index
            elif rtype == HARD_STATE:
                term, commit = _HS.unpack_from(buf, body)
                vote = buf[body + _HS.size : end].decode("utf-8", "replace")
                out.hard_states.append((term, commit, vote))
            elif rtype in (SNAPSHOT_MARK, INSTALL):
                index, _term = _META.unpack_from(buf, body)
                out.mark = max(out.mark, index)
                if rtype == INSTALL:
                    out.log.clear()
                    out.installed = last = index
            out.records += 1
            off = end
        if n == len(segs) - 1:
            out.tail_bytes = len(buf) - off
    return out


def double_votes(hard_states: Iterable[tuple[int, int, str]]) -> list[str]:
    """Return violations in one node's hard-state records: two votes in a term, term going back."""
    problems = []
    votes: dict[int, str] = {}
    last_term = 0
    for term, _commit, vote in hard_states:
        if term < last_term:
            problems.append(f"term went back from {last_term} to {term}")
        last_term = max(last_term, term)
        if vote:
            first = votes.setdefault(term, vote)
            if first != vote:
                problems.append(f"term {term}: voted for {first} and then for {vote}")
    return problems


def leaders_by_term(log_texts: dict[str, str]) -> dict[int, set[str]]:
    """Map each term to every leader any node's log names for it."""
    out: dict[int, set[str]] = {}
    for text in log_texts.values():
        for m in _LEADER_LINE.finditer(text):
            out.setdefault(int(m.group(1)), set()).add(m.group(2))
    return out


def committed_log(wals: dict[str, Wal], nid: str, upto: int) -> dict[int, tuple[int, bytes]]:
    """Return node ``nid``'s entries 1..``upto``, those it does not hold taken from the others.

    A node does not hold the entries below a snapshot it installed (or that it
    compacted before the archive saw them): any other node's copy stands in,
    as committed entries are the same everywhere (``committed_prefixes_agree``).
    """
    own = wals[nid]
    out = {}
    for index in range(1, upto + 1):
        entry = own.log.get(index)
        if entry is None and not own.holds(index):
            entry = next((w.log[index] for w in wals.values() if index in w.log), None)
        if entry is not None:
            out[index] = entry
    return out


def committed_commands(
    wal: Wal | dict[int, tuple[int, bytes]], upto: int
) -> dict[tuple[str, int], dict[str, Any]]:
    """Return the client commands in entries 1..``upto`` (of a WAL or a log) by session pair."""
    log = wal.log if isinstance(wal, Wal) else wal
    out = {}
    for index in range(1, upto + 1):
        entry = log.get(index)
        if entry is None:
            continue
        try:
            p = entries.decode(entry[1])
        except ValueError:
            continue  # a no-op or membership entry: not a client command
        if p.command is not None and p.client:
            out[(p.client, p.seq)] = p.command
    return out


def lost_writes(
    acked: dict[tuple[str, int], dict[str, Any]], committed: dict[tuple[str, int], dict[str, Any]]
) -> list[str]:
    """Return the acknowledged writes missing from (or different in) the committed log."""
    lost = []
    for pair, cmd in acked.items():
        got = committed.get(pair)
        if got is None:
            lost.append(f"{pair[0]}#{pair[1]} {cmd} acknowledged but not committed")
        elif any(got.get(k) != v for k, v in cmd.items()):
            lost.append(f"{pair[0]}#{pair[1]} committed as {got}, acknowledged as {cmd}")
    return lost


def committed_prefixes_agree(wals: dict[str, Wal], upto: int) -> list[str]:
    """Return the indexes up to ``upto`` where nodes' logs differ (entries compared whole).

    A node is left out at an index it does not hold (``Wal.holds``).
    """
    problems = []
    ids = sorted(wals)
    for index in range(1, upto + 1):
        seen = {nid: wals[nid].log.get(index) for nid in ids if wals[nid].holds(index)}
        if len(set(seen.values())) > 1:
            terms = {nid: (e[0] if e else None) for nid, e in seen.items()}
            problems.append(f"entry {index} differs between nodes (terms {terms})")
            if len(problems) >= 5:
                break
    return problems
