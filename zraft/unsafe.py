"""Test-only switches that break zraft's safety on purpose: the negative controls.

A fault-injection suite that never sees a bug would pass a broken zraft too.
Each switch below removes one protection, and the test suite shows that its
simulation or fault scenario then fails. They are never set by configuration:
a daemon turns them on only from the environment variable ``ZRAFT_UNSAFE_TEST_ONLY``
(comma-separated names), and logs every one it turns on at CRITICAL.

The core (``zraft/core``) honours its switches (``CORE_SWITCHES``) through ``CoreConfig.unsafe`` and
never reads the environment itself.
"""

from __future__ import annotations

from collections.abc import Mapping

ENV = "ZRAFT_UNSAFE_TEST_ONLY"

SWITCHES: dict[str, str] = {
    # core
    "skip_prev_log_check": "followers accept appends without the §5.3 prev index/term check",
    "vote_on_term_only": "votes and PreVotes are granted without the §5.4.1 log check",
    "keep_tail_on_install": (
        "a follower installing a snapshot keeps the log entries after it even when its "
        "log does not hold the snapshot's last entry (thesis §5.1 says discard them)"
    ),
    # storage
    "skip_fsync": "the WAL never fsyncs: acknowledged entries live in the page cache only",
    "lazy_writes": (
        "the WAL keeps unsynced writes in process memory until fsync, so SIGKILL loses "
        "them as a power loss would (a storage double; safe by itself)"
    ),
    # snapshots
    "compact_unsnapshotted": (
        "a node compacts its log and WAL up to the applied index when a snapshot starts, "
        "before the snapshot file is durable (a crash while it is written leaves a log "
        "that no snapshot covers)"
    ),
    "skip_snapshot_verify": (
        "a follower reports a received snapshot file whole without checking its record "
        "checksums, its END record and its sha256"
    ),
    "snapshot_in_place": (
        "a follower switches a snapshot in as it arrives instead of beside its old state: "
        "it drops its log (a WAL INSTALL record) at the first chunk and writes the chunks "
        "straight to the snapshot's final file name"
    ),
    "corrupt_snapshot_chunks": (
        "a leader flips one byte in the middle of the first snapshot it sends to each "
        "follower (a fault double; safe by itself: the follower's checks refuse the file "
        "and the leader sends a snapshot again)"
    ),
    # driver
    "local_reads": "linearizable reads are served from local state without ReadIndex",
    "ack_before_commit": "a write is acknowledged when the leader proposes it",
    # payloads
    "unfenced_payloads": (
        "leader payloads run while the node believes it leads, with no lease and no "
        "keeper deadline, as the role-change scripts of older tools did"
    ),
}

CORE_SWITCHES = frozenset({"skip_prev_log_check", "vote_on_term_only", "keep_tail_on_install"})


def from_env(environ: Mapping[str, str]) -> frozenset[str]:
    """Return the switches named in ``environ[ENV]``; raise ValueError on an unknown name."""
    names = frozenset(n.strip() for n in environ.get(ENV, "").split(",") if n.strip())
    unknown = sorted(names - SWITCHES.keys())
    if unknown:
        raise ValueError(
            f"{ENV}: unknown switch(es) {', '.join(unknown)}; known: {', '.join(sorted(SWITCHES))}"
        )
    return names
