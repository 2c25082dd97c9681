"""One node's core parameters (``CoreConfig``); timings are in ticks (STYLE 3)."""

from __future__ import annotations

from dataclasses import dataclass

from zraft.core.messages import NodeId


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Parameters of one node's core. Timings are in ticks."""

    id: NodeId
    voters: tuple[NodeId, ...]
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_entries_per_msg: int = 1024
    max_bytes_per_msg: int = 1 << 20
    max_inflight: int = 64
    # With check_quorum, refuse non-forced votes for one election timeout after
    # start: this node may have acknowledged a leader's lease just before it
    # stopped. Off only in unit tests that elect nodes at tick 0.
    boot_lease: bool = True
    # Test-only negative controls that break safety on purpose (zraft/unsafe.py):
    # "skip_prev_log_check", "vote_on_term_only". Empty in every real deployment.
    unsafe: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.id not in self.voters:
            raise ValueError(f"node {self.id!r} is not among the voters {self.voters}")
        if self.heartbeat_ticks < 1 or self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("need 1 <= heartbeat_ticks < election_ticks")
