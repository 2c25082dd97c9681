"""Majority arithmetic (zraft.core.quorum): commit index (Raft §5.3, §5.4.2),
election results (§5.2, thesis §9.6), CheckQuorum contact (thesis §6.2)."""

from __future__ import annotations

import pytest

from zraft.core import MajorityConfig, VoteResult


def voters(n: int) -> MajorityConfig:
    return MajorityConfig(frozenset(f"n{i + 1}" for i in range(n)))


@pytest.mark.parametrize(("n", "q"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 4)])
def test_quorum_is_a_strict_majority(n: int, q: int) -> None:
    assert voters(n).quorum() == q


def test_an_empty_configuration_is_refused() -> None:
    with pytest.raises(ValueError):
        MajorityConfig(frozenset())


def test_committed_index_single_voter() -> None:
    assert voters(1).committed_index({"n1": 7}) == 7
    assert voters(1).committed_index({}) == 0


def test_committed_index_three_voters_is_the_median() -> None:
    """Raft §5.3: an entry is committed once a majority stores it."""
    c = voters(3)
    assert c.committed_index({"n1": 9, "n2": 5, "n3": 2}) == 5
    assert c.committed_index({"n1": 9, "n2": 9, "n3": 0}) == 9
    assert c.committed_index({"n1": 9}) == 0  # missing voters count as 0


def test_committed_index_five_voters_needs_three() -> None:
    c = voters(5)
    assert c.committed_index({"n1": 10, "n2": 8, "n3": 6, "n4": 4, "n5": 2}) == 6
    assert c.committed_index({"n1": 10, "n2": 10}) == 0


def test_committed_index_ignores_ids_that_are_not_voters() -> None:
    c = voters(3)
    assert c.committed_index({"n1": 9, "x": 9, "y": 9}) == 0


def test_vote_results() -> None:
    """Raft §5.2: a candidate wins with a majority of grants; a majority of refusals loses."""
    c = voters(3)
    assert c.vote_result({}) is VoteResult.PENDING
    assert c.vote_result({"n1": True}) is VoteResult.PENDING
    assert c.vote_result({"n1": True, "n2": True}) is VoteResult.WON
    assert c.vote_result({"n1": True, "n2": False}) is VoteResult.PENDING
    assert c.vote_result({"n1": True, "n2": False, "n3": False}) is VoteResult.LOST
    assert voters(1).vote_result({"n1": True}) is VoteResult.WON
    five = voters(5)
    assert five.vote_result({"n1": True, "n2": True, "n3": False}) is VoteResult.PENDING
    assert five.vote_result({"n1": False, "n2": False, "n3": False}) is VoteResult.LOST
    # Grants from outside the configuration never count.
    assert c.vote_result({"n1": True, "x": True, "y": True}) is VoteResult.PENDING


def test_quorum_contact_is_the_tick_by_which_a_quorum_was_heard() -> None:
    """Thesis §6.2: CheckQuorum needs a majority heard within an election timeout."""
    c = voters(3)
    assert c.quorum_contact({"n1": 50, "n2": 41, "n3": 12}) == 41
    five = voters(5)
    assert five.quorum_contact({"n1": 50, "n2": 49, "n3": 3, "n4": 2, "n5": 1}) == 3
    assert voters(1).quorum_contact({"n1": 50}) == 50


def test_has_quorum_counts_distinct_voters_only() -> None:
    """Thesis §6.4: a read is confirmed once a majority acknowledged the heartbeat."""
    c = voters(3)
    assert not c.has_quorum({"n1"})
    assert c.has_quorum({"n1", "n3"})
    assert not c.has_quorum({"n1", "x"})
    assert voters(1).has_quorum(("n1",))
