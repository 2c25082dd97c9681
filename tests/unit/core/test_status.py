"""The core's observation door (``Raft.status()``, ``transfer_target()``) and the
typed ReadIndex contexts (thesis §6.4) that cross it."""

from __future__ import annotations

import dataclasses
import random

import pytest

from tests.unit.core.simnet import SimNetwork
from zraft.core import (
    NO_NODE,
    CoreConfig,
    Message,
    MsgType,
    PeerProgress,
    Raft,
    RaftStatus,
    ReadContext,
    ReadPurpose,
    Role,
)

CFG = dict(election_ticks=10, heartbeat_ticks=1, boot_lease=False)


# -- RaftStatus ------------------------------------------------------------


def test_follower_status() -> None:
    net = SimNetwork(3, seed=1, **CFG)
    net.elect("n1")
    net.propose("n1", b"x")
    net.tick(1)
    st = net.nodes["n2"].raft.status()
    assert isinstance(st, RaftStatus)
    assert (st.id, st.role, st.leader_id, st.term) == ("n2", Role.FOLLOWER, "n1", 1)
    assert (st.commit, st.applied, st.first_index, st.last_index) == (2, 2, 1, 2)
    assert st.committed_in_term
    assert st.lead_transferee == NO_NODE
    assert st.voters == ("n1", "n2", "n3")
    assert st.progress == ()
    assert st.election_ticks == 10
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.term = 9  # type: ignore[misc]


def test_leader_status_lists_each_follower_but_not_itself() -> None:
    """Raft §5.3: the leader's nextIndex/matchIndex for each follower."""
    net = SimNetwork(3, seed=1, **CFG)
    net.elect("n1")
    net.isolate("n3")
    net.propose("n1", b"x")
    net.tick(CFG["election_ticks"] - 1, only=("n1", "n2"))
    st = net.nodes["n1"].raft.status()
    assert st.role is Role.LEADER and st.leader_id == "n1"
    assert [p.id for p in st.progress] == ["n2", "n3"]
    n2, n3 = st.progress
    assert n2 == PeerProgress("n2", 2, 3, "replicate", True)
    assert (n3.match_index, n3.state) == (1, "replicate")
    net.tick(1, only=("n1", "n2"))
    assert not net.nodes["n1"].raft.status().peer("n3").recent_active  # type: ignore[union-attr]
    assert st.peer("nx") is None


def test_committed_in_term_is_false_until_the_leaders_noop_commits() -> None:
    """Thesis §6.4: a new leader knows its commit index only once its no-op commits."""
    net = SimNetwork(3, seed=6, **CFG)
    net.drop_filter = lambda m: m.type is MsgType.APPEND_RESP
    net.elect("n1")
    st = net.nodes["n1"].raft.status()
    assert st.role is Role.LEADER and not st.committed_in_term
    net.drop_filter = None
    net.tick(2)
    assert net.nodes["n1"].raft.status().committed_in_term


def test_to_dict_keeps_the_status_reply_shape() -> None:
    net = SimNetwork(3, seed=1, **CFG)
    net.elect("n1")
    follower = net.nodes["n2"].raft.status().to_dict()
    assert follower == {
        "id": "n2",
        "role": "follower",
        "term": 1,
        "leader": "n1",
        "commit": 1,
        "applied": 1,
        "last_index": 1,
        "first_index": 1,
    }
    lead = net.nodes["n1"].raft.status().to_dict()
    assert lead["role"] == "leader"
    assert lead["progress"] == {
        "n2": {"match": 1, "next": 2, "state": "replicate"},
        "n3": {"match": 1, "next": 2, "state": "replicate"},
    }
    lone = Raft(CoreConfig("n1", ("n1", "n2", "n3"), **CFG), random.Random(1))
    assert lone.status().to_dict()["leader"] is None


def test_transfer_target_is_the_most_caught_up_follower() -> None:
    net = SimNetwork(3, seed=1, **CFG)
    net.elect("n1")
    net.isolate("n2")
    net.propose("n1", b"x")
    assert net.nodes["n1"].raft.transfer_target() == "n3"
    assert net.nodes["n3"].raft.transfer_target() == NO_NODE  # not the leader
    solo = SimNetwork(1, seed=1, **CFG)
    solo.elect("n1")
    assert solo.nodes["n1"].raft.transfer_target() == NO_NODE


# -- ReadContext -------------------------------------------------------------


@pytest.mark.parametrize("purpose", list(ReadPurpose))
@pytest.mark.parametrize("seq", [0, 1, 255, 2**32, 2**64 - 1])
def test_read_context_round_trip(purpose: ReadPurpose, seq: int) -> None:
    ctx = ReadContext(purpose, seq)
    data = ctx.encode()
    assert len(data) == 9 and data[0] == purpose
    assert ReadContext.decode(data) == ctx


@pytest.mark.parametrize(
    "data",
    [b"", b"\x01", b"\x01" + bytes(7), b"\x01" + bytes(9), b"\x00" + bytes(8), b"\x03" + bytes(8)],
)
def test_read_context_decode_refuses_bad_bytes(data: bytes) -> None:
    assert ReadContext.decode(data) is None


def test_read_context_refuses_out_of_range_values() -> None:
    with pytest.raises(ValueError):
        ReadContext(ReadPurpose.CLIENT, -1)
    with pytest.raises(ValueError):
        ReadContext(ReadPurpose.CLIENT, 2**64)
    with pytest.raises(ValueError):
        ReadContext(9, 1)  # type: ignore[arg-type]


def test_read_index_wants_a_read_context() -> None:
    net = SimNetwork(3, seed=1, **CFG)
    net.elect("n1")
    with pytest.raises(TypeError):
        net.nodes["n1"].raft.read_index(b"old-style")  # type: ignore[arg-type]


def test_forwarded_read_carries_the_encoded_context() -> None:
    """Thesis §6.4.1: the follower's tag goes to the leader and comes back."""
    net = SimNetwork(3, seed=1, **CFG)
    net.elect("n1")
    ctx = ReadContext(ReadPurpose.LEASE, 77)
    seen: list[Message] = []
    net.drop_filter = lambda m: seen.append(m) and False  # type: ignore[func-returns-value]
    net.nodes["n2"].raft.read_index(ctx)
    net.deliver_all()
    wire = [m.context for m in seen if m.type in (MsgType.READ_INDEX, MsgType.READ_INDEX_RESP)]
    assert wire == [ctx.encode(), ctx.encode()]
    (rs,) = net.nodes["n2"].read_states
    assert rs.context == ctx and not rs.rejected


@pytest.mark.parametrize("bad", [b"", b"garbage", b"\x07" + bytes(8)])
def test_read_index_with_an_undecodable_context_is_ignored(bad: bytes) -> None:
    """A READ_INDEX whose tag does not decode came from a broken or hostile peer:
    the leader neither registers nor answers it, and nobody changes term for it."""
    net = SimNetwork(3, seed=1, **CFG)
    net.elect("n1")
    lead, f = net.nodes["n1"].raft, net.nodes["n2"].raft
    term = lead.term
    net.flush_ready()
    net.deliver_all()
    for m in (
        Message(MsgType.READ_INDEX, term, "n2", "n1", context=bad),
        Message(MsgType.READ_INDEX, term + 5, "n2", "n1", context=bad),
    ):
        lead.step(m)
        assert not lead.msgs and not lead.read_heartbeat_pending and len(lead.reads) == 0
        assert lead.term == term and lead.role is Role.LEADER
    # A follower ignores it too (it would otherwise refuse it with a reply).
    f.step(Message(MsgType.READ_INDEX, term, "n3", "n2", context=bad))
    assert not f.msgs
    # And an answer whose tag does not decode is dropped, not matched.
    ctx = ReadContext(ReadPurpose.CLIENT, 5)
    f.read_index(ctx)
    f.msgs.clear()
    f.step(Message(MsgType.READ_INDEX_RESP, term, "n1", "n2", index=1, context=bad))
    assert not f.read_states and ctx in f.forwarded_reads
    f.step(Message(MsgType.READ_INDEX_RESP, term, "n1", "n2", index=1, context=ctx.encode()))
    assert [(rs.index, rs.context) for rs in f.read_states] == [(1, ctx)]
