"""Log replication, commitment and ReadIndex through the one door (Raft §5.3, §5.4, thesis §6.4)."""

from __future__ import annotations

import random

import pytest

from tests.unit.core.simnet import SimNetwork
from zraft.core import (
    CoreConfig,
    Entry,
    HardState,
    Message,
    MsgType,
    NotLeader,
    ProposalDropped,
    Raft,
    RaftLog,
    ReadContext,
    ReadPurpose,
    Role,
)

# boot_lease off: these scenarios elect nodes at tick 0 (test_boot_lease covers it).
CFG = dict(election_ticks=10, heartbeat_ticks=1, boot_lease=False)


def ctx(seq: int) -> ReadContext:
    return ReadContext(ReadPurpose.CLIENT, seq)


def follower(log: list[Entry], term: int, **cfg: object) -> Raft:
    conf = {**CFG, **cfg}
    return Raft(
        CoreConfig("n2", ("n1", "n2", "n3"), **conf),  # type: ignore[arg-type]
        random.Random(1),
        HardState(term=term),
        RaftLog(log),
    )


def test_replicated_entries_are_applied_in_order_on_every_node() -> None:
    """Raft §5.3: the leader replicates; once committed, every node applies in log order."""
    net = SimNetwork(3, seed=1, **CFG)
    net.elect("n1")
    for i in range(20):
        net.propose("n1", b"v%d" % i)
    net.tick(2)
    want = [b"v%d" % i for i in range(20)]
    for nid in net.ids:
        assert net.applied_data(nid) == want


@pytest.mark.parametrize("unsafe", [frozenset(), frozenset({"skip_prev_log_check"})])
def test_append_rejected_when_prev_entry_does_not_match(unsafe: frozenset[str]) -> None:
    """Raft §5.3: reply false if the log has no entry at prevLogIndex with prevLogTerm.
    Negative control: with the check switched off the follower's log breaks log matching."""
    f = follower([Entry(1, 1), Entry(1, 2)], term=2, unsafe=unsafe)
    f.step(Message(MsgType.APPEND, 2, "n1", "n2", index=2, log_term=2, entries=(Entry(2, 3),)))
    rd = f.ready()
    (resp,) = rd.messages
    if unsafe:
        assert not resp.reject and f.log.term(2) == 1 and f.log.term(3) == 2  # §5.3 violated
        return
    assert resp.type is MsgType.APPEND_RESP and resp.reject
    assert f.log.last_index() == 2  # nothing appended


def test_append_removes_conflicting_suffix() -> None:
    """Raft §5.3: an existing entry that conflicts with a new one is deleted with all after it."""
    f = follower([Entry(1, 1), Entry(1, 2), Entry(1, 3)], term=2)
    f.step(Message(MsgType.APPEND, 2, "n1", "n2", index=1, log_term=1, entries=(Entry(2, 2),)))
    rd = f.ready()
    assert [(e.index, e.term) for e in rd.entries] == [(2, 2)]
    assert f.log.last_index() == 2
    assert not rd.messages[0].reject and rd.messages[0].index == 2


def test_reject_hint_skips_a_whole_term() -> None:
    """Fast back-off (thesis §3.5 note): the hint lets the leader skip a conflicting term."""
    f = follower([Entry(1, 1)] + [Entry(2, i) for i in range(2, 20)], term=3)
    f.step(Message(MsgType.APPEND, 3, "n1", "n2", index=19, log_term=3))
    (resp,) = f.ready().messages
    assert resp.reject
    # The follower's entry at 19 has term 2 < 3; hint says "try 19 with term 2".
    assert (resp.reject_hint, resp.log_term) == (19, 2)


def test_conflicting_follower_log_is_repaired_in_few_round_trips() -> None:
    """Raft §5.3 + fast back-off: a long divergent suffix is fixed without one RPC per entry."""
    net = SimNetwork(3, seed=2, **CFG)
    net.elect("n1")
    net.propose("n1", b"base")
    # n1 leads alone and writes 50 entries that never commit.
    net.isolate("n1")
    for i in range(50):
        net.nodes["n1"].raft.propose(b"lost%d" % i)
    net.deliver_all()
    # The majority elects n2 and commits other entries.
    net.tick(40, only=["n2", "n3"])
    assert net.nodes["n2"].raft.role is Role.LEADER or net.nodes["n3"].raft.role is Role.LEADER
    new_leader = net.leaders()[-1] if net.leaders()[-1] != "n1" else net.leaders()[0]
    for i in range(5):
        net.propose(new_leader, b"kept%d" % i)
    net.heal()
    before = net.delivered
    net.tick(30)
    rejects_needed = net.delivered - before
    logs = {nid: [(e.index, e.term) for e in n.raft.log.entries] for nid, n in net.nodes.items()}
    assert logs["n1"] == logs["n2"] == logs["n3"]
    assert b"lost0" not in net.applied_data("n1")
    assert net.applied_data("n1")[-5:] == [b"kept%d" % i for i in range(5)]
    assert rejects_needed < 200  # one entry per round trip would take > 50 round trips x 2 peers


def test_many_entries_per_append_and_several_in_flight() -> None:
    """Batching: one AppendEntries carries many entries; REPLICATE pipelines appends."""
    net = SimNetwork(3, seed=3, max_entries_per_msg=10, max_inflight=4, **CFG)
    net.elect("n1")
    lead = net.nodes["n1"].raft
    for i in range(100):
        lead.propose(b"e%d" % i)
    rd = lead.ready()
    appends = [m for m in rd.early_messages if m.type is MsgType.APPEND and m.dst == "n2"]
    assert len(appends) == 1 and len(appends[0].entries) == 10
    lead.advance(rd)
    # After an ack the leader fills the pipeline up to max_inflight appends.
    lead.step(
        Message(MsgType.APPEND_RESP, lead.term, "n2", "n1", index=appends[0].entries[-1].index)
    )
    rd = lead.ready()
    to_n2 = [m for m in rd.early_messages + rd.messages if m.dst == "n2" and m.entries]
    assert len(to_n2) == 4


def test_appends_lost_in_a_partition_do_not_pause_a_follower_forever() -> None:
    """Raft §5.3 liveness: appends lost while a follower was cut off filled its window
    of appends in flight; once it answers heartbeats again it is caught up, so the
    leader and it form a quorum when the third node dies (regression: found by review)."""
    net = SimNetwork(3, seed=1, max_inflight=4, **CFG)
    net.elect("n1")
    net.partition(["n1", "n2"], ["n3"])
    for i in range(20):
        net.propose("n1", b"b%d" % i)
    lead = net.nodes["n1"].raft
    assert lead.progress["n3"].is_paused()
    net.heal()
    net.tick(5 * CFG["election_ticks"])
    assert net.nodes["n3"].raft.log.last_index() == lead.log.last_index()
    net.isolate("n2")
    index, _ = net.propose("n1", b"after n2 died")
    net.tick(CFG["election_ticks"], only=("n1", "n3"))
    assert lead.role is Role.LEADER and lead.log.committed >= index


def test_leader_counts_its_own_entry_only_after_it_is_durable() -> None:
    """Thesis §10.2.1: appends may leave before the leader's fsync; its own copy counts after."""
    net = SimNetwork(3, seed=4, **CFG)
    net.elect("n1")
    lead = net.nodes["n1"].raft
    idx, _ = lead.propose(b"x")
    rd = lead.ready()  # not yet advanced: not durable on the leader
    assert [m.dst for m in rd.early_messages if m.type is MsgType.APPEND] == ["n2", "n3"]
    lead.step(Message(MsgType.APPEND_RESP, lead.term, "n2", "n1", index=idx))
    assert lead.log.committed == idx - 1  # n2 alone is not a quorum of 3
    lead.advance(rd)
    assert lead.log.committed == idx


def test_leader_needs_durable_self_or_two_followers() -> None:
    """Thesis §10.2.1: before advance, the leader's unpersisted entry is not in its quorum."""
    lead = Raft(CoreConfig("n1", ("n1", "n2", "n3", "n4", "n5"), **CFG), random.Random(1))
    lead.campaign(transfer=True)
    for peer in ("n2", "n3"):
        lead.step(Message(MsgType.VOTE_RESP, lead.term, peer, "n1"))
    assert lead.role is Role.LEADER
    lead.advance(lead.ready())  # no-op durable
    idx, _ = lead.propose(b"x")
    rd = lead.ready()
    for peer in ("n2", "n3"):
        lead.step(Message(MsgType.APPEND_RESP, lead.term, peer, "n1", index=idx))
    assert lead.log.committed < idx  # 2 followers of 5 are not a quorum without the leader
    lead.advance(rd)  # now the leader's copy is durable: 3 of 5
    assert lead.log.committed == idx


def test_leader_does_not_commit_old_term_entries_by_counting() -> None:
    """Raft §5.4.2 (Figure 8): an entry of an earlier term is not committed by replica count."""
    lead = Raft(
        CoreConfig("n1", ("n1", "n2", "n3"), **CFG),
        random.Random(1),
        HardState(term=2),
        RaftLog([Entry(1, 1), Entry(2, 2)]),
    )
    lead.campaign(transfer=True)
    lead.step(Message(MsgType.VOTE_RESP, lead.term, "n2", "n1"))
    assert lead.role is Role.LEADER
    rd = lead.ready()
    lead.advance(rd)
    # n2 acknowledges index 2 (term 2) but not the new no-op at 3.
    lead.step(Message(MsgType.APPEND_RESP, lead.term, "n2", "n1", index=2))
    assert lead.log.committed == 0
    lead.step(Message(MsgType.APPEND_RESP, lead.term, "n2", "n1", index=3))
    assert lead.log.committed == 3  # the current-term no-op commits everything before it


def test_proposals_need_a_leader() -> None:
    net = SimNetwork(3, seed=5, **CFG)
    net.elect("n1")
    with pytest.raises(NotLeader) as info:
        net.nodes["n2"].raft.propose(b"x")
    assert info.value.leader_id == "n1"


def test_proposals_dropped_during_leadership_transfer() -> None:
    net = SimNetwork(3, seed=5, **CFG)
    net.elect("n1")
    net.isolate("n3")
    net.nodes["n1"].raft.transfer_leader("n3")
    with pytest.raises(ProposalDropped):
        net.nodes["n1"].raft.propose(b"x")


def test_read_index_waits_for_a_heartbeat_quorum() -> None:
    """Thesis §6.4: a read is served only after a quorum confirms the leader is still leader."""
    net = SimNetwork(3, seed=6, **CFG)
    net.elect("n1")
    net.propose("n1", b"w")
    lead = net.nodes["n1"]
    lead.raft.read_index(ctx(1))
    net.flush_ready()
    assert lead.read_states == []  # not before the heartbeat round
    net.deliver_all()
    (rs,) = lead.read_states
    assert rs.context == ctx(1) and not rs.rejected
    assert rs.index == lead.raft.log.committed


def test_read_index_on_an_isolated_leader_is_never_confirmed() -> None:
    """Thesis §6.4: a deposed leader cannot serve a read; it is rejected on step-down."""
    net = SimNetwork(3, seed=6, **CFG)
    net.elect("n1")
    net.isolate("n1")
    lead = net.nodes["n1"]
    lead.raft.read_index(ctx(2))
    net.tick(5, only=["n1"])
    assert lead.read_states == []
    net.tick(10, only=["n1"])  # CheckQuorum steps it down
    (rs,) = lead.read_states
    assert rs.rejected


def test_follower_read_index_is_forwarded_to_the_leader() -> None:
    """Thesis §6.4.1: followers obtain the read index from the leader, then read locally."""
    net = SimNetwork(3, seed=6, **CFG)
    net.elect("n1")
    idx, _ = net.propose("n1", b"w")
    f = net.nodes["n2"]
    f.raft.read_index(ctx(3))
    net.deliver_all()
    (rs,) = f.read_states
    assert rs.context == ctx(3) and not rs.rejected and rs.index >= idx


def test_reads_wait_for_first_commit_of_a_new_term() -> None:
    """Thesis §6.4: the leader must commit an entry of its term before serving reads."""
    net = SimNetwork(3, seed=6, **CFG)
    lead = net.nodes["n1"]
    lead.raft.campaign()
    # Deliver only votes: stop before the no-op commits.
    net.drop_filter = lambda m: m.type is MsgType.APPEND_RESP
    net.deliver_all()
    assert lead.raft.role is Role.LEADER
    lead.raft.read_index(ctx(4))
    net.deliver_all()
    assert lead.read_states == []
    net.drop_filter = None
    net.tick(2)
    assert [rs.context for rs in lead.read_states] == [ctx(4)]


def test_restart_keeps_term_vote_and_log() -> None:
    """Figure 2: currentTerm, votedFor and log[] survive a crash."""
    net = SimNetwork(3, seed=7, **CFG)
    net.elect("n1")
    for i in range(5):
        net.propose("n1", b"%d" % i)
    before = {nid: (n.raft.term, n.raft.log.last_index()) for nid, n in net.nodes.items()}
    for node in net.nodes.values():
        node.restart()
    after = {nid: (n.raft.term, n.raft.log.last_index()) for nid, n in net.nodes.items()}
    assert before == after
    net.tick(40)
    lead = net.leader()
    net.propose(lead.id, b"after")
    net.tick(2)
    for nid in net.ids:
        assert net.applied_data(nid) == [b"0", b"1", b"2", b"3", b"4", b"after"]
