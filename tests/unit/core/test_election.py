"""Elections through the core's one door: Raft §5.2, §5.4.1, thesis §9.6 (PreVote, CheckQuorum)."""

from __future__ import annotations

import dataclasses

import pytest

from tests.unit.core.simnet import SimNetwork
from zraft.core import (
    CoreConfig,
    Entry,
    HardState,
    Message,
    MsgType,
    Raft,
    RaftLog,
    ReadContext,
    ReadPurpose,
    Role,
)

# boot_lease off: these scenarios elect nodes at tick 0 (test_boot_lease covers it).
CFG = dict(election_ticks=10, heartbeat_ticks=1, boot_lease=False)


def test_one_node_elects_itself_on_timeout_and_others_follow() -> None:
    """Raft §5.2: a follower that hears nothing for an election timeout starts an election."""
    net = SimNetwork(3, seed=7, **CFG)
    net.tick(30)
    assert len(net.leaders()) == 1
    lead = net.leader()
    for node in net.nodes.values():
        assert node.raft.term == lead.raft.term
        assert node.raft.leader_id == lead.id


def test_at_most_one_leader_per_term_across_many_seeds() -> None:
    """Raft §5.2 Election Safety: at most one leader can be elected in a given term."""
    for seed in range(30):
        net = SimNetwork(5, seed=seed, **CFG)
        leaders_by_term: dict[int, set[str]] = {}
        for _ in range(80):
            net.tick(1)
            for nid in net.leaders():
                leaders_by_term.setdefault(net.nodes[nid].raft.term, set()).add(nid)
        assert all(len(v) == 1 for v in leaders_by_term.values()), (seed, leaders_by_term)
        assert leaders_by_term, seed


def test_vote_is_durable_before_the_reply_leaves() -> None:
    """Figure 2: votedFor is persisted before responding; the reply is never an early message."""
    node = Raft(
        CoreConfig("n2", ("n1", "n2", "n3"), pre_vote=False, **CFG),
        rng=__import__("random").Random(1),
    )
    node.step(Message(MsgType.VOTE, 1, "n1", "n2", index=0, log_term=0))
    rd = node.ready()
    assert rd.hard_state == HardState(term=1, voted_for="n1", commit=0)
    assert rd.must_sync
    assert not rd.early_messages
    assert [m.type for m in rd.messages] == [MsgType.VOTE_RESP]
    assert not rd.messages[0].reject


@pytest.mark.parametrize("unsafe", [frozenset(), frozenset({"vote_on_term_only"})])
def test_vote_refused_to_a_candidate_with_a_stale_log(unsafe: frozenset[str]) -> None:
    """Raft §5.4.1: deny a vote if the candidate's log is less up to date than ours.
    Negative control: granting on term alone gives the vote to the stale candidate."""
    import random

    log = RaftLog([Entry(1, 1), Entry(2, 2)])
    node = Raft(
        CoreConfig("n2", ("n1", "n2", "n3"), pre_vote=False, unsafe=unsafe, **CFG),
        random.Random(1),
        HardState(term=2),
        log,
    )
    # Same last term, shorter log.
    node.step(Message(MsgType.VOTE, 3, "n1", "n2", index=1, log_term=2))
    # Longer log, but older last term.
    node.step(Message(MsgType.VOTE, 3, "n3", "n2", index=5, log_term=1))
    rd = node.ready()
    if unsafe:
        assert [(m.dst, m.reject) for m in rd.messages] == [("n1", False), ("n3", True)]
        return
    assert [(m.dst, m.reject) for m in rd.messages] == [("n1", True), ("n3", True)]
    assert rd.hard_state is not None and rd.hard_state.voted_for == ""


def test_grants_only_one_vote_per_term() -> None:
    """Raft §5.2: each server votes for at most one candidate in a given term."""
    import random

    node = Raft(CoreConfig("n3", ("n1", "n2", "n3"), pre_vote=False, **CFG), random.Random(1))
    node.step(Message(MsgType.VOTE, 1, "n1", "n3"))
    node.step(Message(MsgType.VOTE, 1, "n2", "n3"))
    rd = node.ready()
    assert [(m.dst, m.reject) for m in rd.messages] == [("n1", False), ("n2", True)]


def test_candidate_with_stale_log_cannot_win() -> None:
    """Raft §5.4.1: the up-to-date check keeps committed entries in every future leader."""
    net = SimNetwork(3, seed=3, **CFG)
    net.elect("n1")
    net.isolate("n3")
    net.propose("n1", b"committed-without-n3")
    net.heal()
    # n3 (missing the entry) campaigns: it must lose to voters that hold it.
    net.cut.update({("n1", "n3"), ("n3", "n1")})  # n1 is silent (e.g. crashed)
    net.nodes["n3"].raft.campaign(transfer=True)  # real vote, no PreVote
    net.deliver_all()
    assert net.nodes["n3"].raft.role is not Role.LEADER


def test_prevote_keeps_a_rejoining_node_from_disrupting() -> None:
    """Thesis §9.6: an isolated node's PreVotes fail, so its term stays and the leader stays."""
    net = SimNetwork(3, seed=11, **CFG)
    net.elect("n1")
    term = net.nodes["n1"].raft.term
    net.isolate("n3")
    net.tick(100)  # n3 times out again and again but cannot win a PreVote
    assert net.nodes["n3"].raft.term == term
    net.heal()
    net.tick(30)
    assert net.leaders() == ["n1"]
    assert all(n.raft.term == term for n in net.nodes.values())


def test_without_prevote_a_rejoining_node_disrupts_the_leader() -> None:
    """Negative control for the test above: with PreVote and CheckQuorum off, terms inflate."""
    net = SimNetwork(3, seed=11, pre_vote=False, check_quorum=False, **CFG)
    net.elect("n1")
    term = net.nodes["n1"].raft.term
    net.isolate("n3")
    net.tick(100)
    assert net.nodes["n3"].raft.term > term
    net.heal()
    net.tick(25)  # n3 times out once more and its higher term deposes n1
    assert net.nodes["n1"].raft.term > term


def test_vote_requests_ignored_while_a_leader_is_heard_from() -> None:
    """Thesis §4.2.3 (with CheckQuorum): a node in contact with a leader ignores candidates."""
    net = SimNetwork(3, seed=5, **CFG)
    net.elect("n1")
    term = net.nodes["n2"].raft.term
    net.nodes["n2"].raft.step(Message(MsgType.VOTE, term + 1, "n3", "n2", index=99, log_term=term))
    assert net.nodes["n2"].raft.term == term
    assert not net.nodes["n2"].raft.has_ready() or not [
        m for m in net.nodes["n2"].raft.msgs if m.type is MsgType.VOTE_RESP
    ]


def test_vote_after_a_prevote_win_does_not_override_the_lease() -> None:
    """Thesis §9.6 + §4.2.3: only a leadership transfer may override a receiver's leader
    lease. A node that won its PreVote with a grant that has since gone stale sends an
    ordinary VOTE, which a leader still in contact with a quorum ignores (regression:
    the VOTE after a PreVote win used to carry the transfer context)."""
    net = SimNetwork(3, seed=3, **CFG)
    net.elect("n1")
    net.tick(3)
    n1, n2, n3 = (net.nodes[i].raft for i in net.ids)
    n2.election_elapsed = CFG["election_ticks"]  # n2 missed the leader: it grants PreVote
    net.partition(["n1", "n2"], ["n2", "n3"])
    net.cut -= {("n2", "n3"), ("n3", "n2")}
    held: list[Message] = []
    net.drop_filter = lambda m: m.type is MsgType.VOTE and (held.append(m) or True)
    n3.campaign()
    net.deliver_all()
    assert n3.role is Role.CANDIDATE and held, "n3 won its PreVote with n2's grant"
    assert all(m.context == b"" for m in held)
    net.drop_filter = None
    net.isolate("n3")
    net.tick(1, only=("n1",))  # n2 hears from the leader again
    to_n1 = dataclasses.replace(held[0], dst="n1")  # the VOTE n3 sends to n1 as well
    n1.step(to_n1)
    assert n1.role is Role.LEADER and n1.term == to_n1.term - 1


def test_check_quorum_partitioned_leader_steps_down_within_election_timeout() -> None:
    """Thesis §6.2: a leader that cannot reach a quorum steps down within an election timeout."""
    net = SimNetwork(3, seed=9, **CFG)
    net.elect("n1")
    net.isolate("n1")
    for tick in range(1, 11):  # noqa: B007 - read after the loop
        net.tick(1, only=["n1"])
        if net.nodes["n1"].raft.role is not Role.LEADER:
            break
    assert net.nodes["n1"].raft.role is Role.FOLLOWER
    assert tick <= CFG["election_ticks"]


def test_without_check_quorum_a_partitioned_leader_lingers() -> None:
    """Negative control: with CheckQuorum off the isolated leader never steps down."""
    net = SimNetwork(3, seed=9, check_quorum=False, **CFG)
    net.elect("n1")
    net.isolate("n1")
    net.tick(50, only=["n1"])
    assert net.nodes["n1"].raft.role is Role.LEADER


def test_majority_side_elects_new_leader_and_old_one_rejoins_as_follower() -> None:
    """Raft §5.2/§5.1: the majority elects; the old leader adopts the higher term on rejoin."""
    net = SimNetwork(5, seed=4, **CFG)
    net.elect("n1")
    net.partition(["n1", "n2"], ["n3", "n4", "n5"])
    net.tick(60)
    new = [nid for nid in net.leaders() if nid in ("n3", "n4", "n5")]
    assert len(new) == 1
    assert net.nodes["n1"].raft.role is not Role.LEADER
    net.heal()
    net.tick(30)
    assert len(net.leaders()) == 1
    assert len({n.raft.term for n in net.nodes.values()}) == 1


def test_leader_appends_noop_on_election() -> None:
    """Raft §5.4.2 / thesis §6.4: a new leader commits a no-op of its term."""
    net = SimNetwork(3, seed=2, **CFG)
    net.elect("n1")
    lead = net.nodes["n1"]
    assert lead.raft.log.committed == 1
    assert lead.applied[0].kind.name == "NOOP"
    assert lead.applied[0].term == lead.raft.term


@pytest.mark.parametrize("n", [1, 3, 5, 7])
def test_ensembles_of_every_size_elect(n: int) -> None:
    net = SimNetwork(n, seed=n, **CFG)
    net.tick(60)
    assert len(net.leaders()) == 1


def test_transfer_leadership() -> None:
    """Thesis §3.10: the leader catches the target up and sends TimeoutNow."""
    net = SimNetwork(3, seed=8, **CFG)
    net.elect("n1")
    net.propose("n1", b"x")
    net.nodes["n1"].raft.transfer_leader("n3")
    net.deliver_all()
    assert net.leaders() == ["n3"]


@pytest.mark.parametrize("boot_lease", [True, False])
def test_boot_lease_a_restarted_voter_honours_the_lease_it_may_have_acked(
    boot_lease: bool,
) -> None:
    """A voter that just started may have acknowledged the current leader before it
    stopped; for one election timeout it refuses votes, so the leader's lease (which
    fences leader payloads) holds across the restart. Negative control: without the
    boot lease the fresh node votes at once and a second leader can be elected inside
    the first one's lease."""
    import random

    cfg = dict(CFG, boot_lease=boot_lease)
    fresh = Raft(CoreConfig("n2", ("n1", "n2", "n3"), **cfg), rng=random.Random(3))
    for vote_type in (MsgType.PRE_VOTE, MsgType.VOTE):
        fresh.step(Message(vote_type, 5, "n3", "n2", index=9, log_term=4))
    msgs = fresh.ready().messages if fresh.has_ready() else ()
    granted = [m for m in msgs if not m.reject]
    if boot_lease:
        assert granted == [] and fresh.term == 0
        # Still refused one tick before the election timeout; granted once it is over.
        for _ in range(CFG["election_ticks"] - 1):
            fresh.tick()
        fresh.step(Message(MsgType.VOTE, 5, "n3", "n2", index=9, log_term=4))
        assert fresh.voted_for == "" and fresh.term == 0
        fresh.tick()
        fresh.step(Message(MsgType.VOTE, 5, "n3", "n2", index=9, log_term=4))
        assert fresh.voted_for == "n3" and fresh.term == 5
    else:
        assert {m.type for m in granted} == {MsgType.PRE_VOTE_RESP, MsgType.VOTE_RESP}
        assert fresh.voted_for == "n3"


@pytest.mark.parametrize("own_lease", [True, False])
def test_a_leader_deposed_by_a_reply_honours_its_own_lease(own_lease: bool) -> None:
    """A leader counts itself in the quorum that grants its lease. Deposed by a
    higher term seen in a reply, it must keep refusing votes until that lease is
    over, or {candidate, old leader} elect a second leader inside it (found by
    review, with PreVote off). Control: forget the own lease and that happens."""
    net = SimNetwork(3, seed=1, pre_vote=False, **CFG)
    net.elect("n1")
    net.tick(3)
    net.isolate("n3")
    net.tick(3 * CFG["election_ticks"])  # n3 campaigns alone, again and again
    n1, n2, n3 = (net.nodes[n].raft for n in ("n1", "n2", "n3"))
    assert n1.role is Role.LEADER and n3.term > n1.term
    n1.read_index(ReadContext(ReadPurpose.LEASE, 1))
    net.deliver_all()  # n2 acknowledges: the lease runs for an election timeout
    assert [rs.rejected for rs in net.nodes["n1"].read_states] == [False]
    net.heal()
    net.tick(1, only=("n1",))  # n3's reply to the heartbeat carries its higher term
    assert n1.role is Role.FOLLOWER and n1.leader_id == ""
    if not own_lease:
        n1.own_lease_until = 0
    n3.campaign()
    net.deliver_all()
    if own_lease:
        assert n3.role is not Role.LEADER  # n2 is in lease and so is n1
        assert n1.voted_for != "n3" and n2.voted_for != "n3"
    else:
        assert n3.role is Role.LEADER and n2.voted_for != "n3"
