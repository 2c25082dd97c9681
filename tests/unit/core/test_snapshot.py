"""Log compaction and InstallSnapshot in the pure core (Raft §7, thesis §5)."""

from __future__ import annotations

import random

import pytest

from tests.unit.core.simnet import SimNetwork
from zraft.core import CoreConfig, Entry, HardState, Message, MsgType, Raft, RaftLog, SnapshotMeta
from zraft.core.progress import ProgressState

CFG = {"pre_vote": False, "check_quorum": False}


def _net_with_entries(n_entries: int, seed: int = 1) -> SimNetwork:
    net = SimNetwork(3, seed=seed, **CFG)
    net.elect("n1")
    for i in range(n_entries):
        net.propose("n1", f"v{i}".encode())
    return net


def test_compact_drops_only_applied_durable_entries() -> None:
    log = RaftLog([Entry(1, i) for i in range(1, 11)], committed=10, applied=6)
    log.compact(4)
    assert (log.first_index(), log.last_index(), log.snapshot_term) == (5, 10, 1)
    assert log.term(4) == 1 and log.term(3) is None
    log.compact(2)  # below the start: nothing
    assert log.first_index() == 5
    with pytest.raises(AssertionError):
        log.compact(7)  # not applied yet: no snapshot can hold it


def test_restore_replaces_the_whole_log() -> None:
    log = RaftLog([Entry(1, i) for i in range(1, 6)], committed=3, applied=3)
    log.restore(20, 4)
    assert (log.first_index(), log.last_index(), log.last_term()) == (21, 20, 4)
    assert log.committed == log.applied == log.stable_index == 20
    with pytest.raises(AssertionError):
        log.restore(10, 4)  # at or below commit: never go back


def test_lagging_follower_catches_up_by_snapshot() -> None:
    net = _net_with_entries(5)
    net.isolate("n3")
    for i in range(20):
        net.propose("n1", f"w{i}".encode())
    lead = net.nodes["n1"]
    meta = lead.take_snapshot(keep=2)
    assert lead.raft.log.first_index() == meta.index - 1
    net.heal()
    net.tick(3)
    n3 = net.nodes["n3"]
    assert net.snapshots_sent == 1
    assert n3.snapshot is not None and n3.snapshot[0].index == meta.index
    assert net.applied_data("n3") == net.applied_data("n1")
    assert n3.raft.log.last_index() == lead.raft.log.last_index()
    # Replication goes on normally after the install.
    net.propose("n1", b"after")
    assert net.applied_data("n3")[-1] == b"after"
    assert lead.raft.progress["n3"].state is ProgressState.REPLICATE


def test_follower_in_snapshot_state_gets_no_appends() -> None:
    net = _net_with_entries(3)
    net.isolate("n3")
    for i in range(10):
        net.propose("n1", f"w{i}".encode())
    net.nodes["n1"].take_snapshot(keep=0)
    net.snapshot_fails = True
    net.heal()
    sent: list[Message] = []
    net.drop_filter = lambda m: sent.append(m) or False  # type: ignore[func-returns-value]
    net.tick(2)
    to_n3 = [m for m in sent if m.dst == "n3" and m.type is MsgType.APPEND and m.entries]
    assert to_n3 == [] and net.snapshots_sent == 0
    # A failed transfer is retried once the driver can send again.
    net.snapshot_fails = False
    net.tick(3)
    assert net.snapshots_sent == 1
    assert net.applied_data("n3") == net.applied_data("n1")


def test_wiped_follower_is_rebuilt_from_a_snapshot() -> None:
    net = _net_with_entries(8)
    net.nodes["n1"].take_snapshot(keep=0)
    n2 = net.nodes["n2"]
    n2.durable_log.clear()  # the operator wiped its data directory
    n2.durable_hs = type(n2.durable_hs)()
    n2.snapshot, n2.log_start = None, SnapshotMeta()
    n2.restart()
    net.tick(3)
    net.propose("n1", b"next")  # its rejection of this append starts the probe
    net.tick(3)
    assert net.applied_data("n2") == net.applied_data("n1")


def test_snapshot_matching_the_log_keeps_its_tail() -> None:
    net = _net_with_entries(6)
    n2 = net.nodes["n2"]
    last = n2.raft.log.last_index()
    # Deliver a snapshot n2 already holds the last entry of (same index and term).
    lead = net.nodes["n1"]
    index = last - 2
    n2.incoming = (SnapshotMeta(index, lead.raft.term), [])
    n2.raft.step(Message(MsgType.SNAPSHOT, lead.raft.term, "n1", "n2", index, 0))
    assert not n2.raft.has_ready() or n2.raft.ready().snapshot is None
    assert n2.raft.log.last_index() == last


def test_stale_snapshot_is_answered_with_the_commit_index() -> None:
    net = _net_with_entries(6)
    n2 = net.nodes["n2"]
    committed = n2.raft.log.committed
    n2.raft.step(Message(MsgType.SNAPSHOT, n2.raft.term, "n1", "n2", committed - 3, 1))
    rd = n2.raft.ready()
    assert rd.snapshot is None
    (resp,) = [m for m in rd.messages if m.type is MsgType.APPEND_RESP]
    assert resp.index == committed


def test_install_discards_a_divergent_tail() -> None:
    """Thesis §5.1: a log that does not hold the snapshot's last entry goes entirely."""
    net = SimNetwork(3, seed=4, **CFG)
    net.elect("n1")
    net.propose("n1", b"a")
    # n1 appends entries only it holds, then loses leadership to n2.
    net.isolate("n1")
    for i in range(4):
        net.nodes["n1"].raft.propose(f"lost{i}".encode())
    net.flush_ready()
    net.queue.clear()
    net.elect("n2")
    for i in range(10):
        net.propose("n2", f"b{i}".encode())
    n2 = net.nodes["n2"]
    n2.take_snapshot(keep=0)
    n1 = net.nodes["n1"]
    stale_term = n1.raft.log.last_term()
    net.heal()
    net.tick(4)
    assert net.snapshots_sent >= 1
    assert all(e.term != stale_term or e.index <= 2 for e in n1.raft.log.entries)
    assert net.applied_data("n1") == net.applied_data("n2")
    assert n1.durable_log == [] or n1.durable_log[0].index == n1.log_start.index + 1


def test_restart_after_compaction_replays_only_the_tail() -> None:
    net = _net_with_entries(12)
    lead = net.nodes["n1"]
    meta = lead.take_snapshot(keep=3)
    net.propose("n1", b"tail")
    before = net.applied_data("n1")
    lead.restart()
    assert lead.raft.log.first_index() == meta.index - 2
    net.tick(12)
    assert net.applied_data("n1") == before or net.applied_data("n1")[: len(before)] == before


@pytest.mark.parametrize("unsafe", [frozenset(), frozenset({"keep_tail_on_install"})])
def test_install_drops_entries_after_a_snapshot_the_log_does_not_hold(
    unsafe: frozenset[str],
) -> None:
    """Thesis §5.1: the log after a snapshot goes unless it holds the snapshot's last entry.
    Negative control: with the tail kept, stale term-1 entries follow a term-2 snapshot."""
    cfg = CoreConfig(id="n2", voters=("n1", "n2", "n3"), unsafe=unsafe)
    log = RaftLog([Entry(1, i) for i in range(1, 21)], committed=2, applied=2)
    f = Raft(cfg, random.Random(1), HardState(2, "", 2), log)
    f.step(Message(MsgType.SNAPSHOT, 2, "n1", "n2", index=10, log_term=2))
    rd = f.ready()
    assert rd.snapshot == SnapshotMeta(10, 2, ("n1", "n2", "n3"))
    if unsafe:
        assert f.log.last_index() == 20 and f.log.term(11) == 1  # §5.1 violated
        return
    assert f.log.last_index() == 10 and f.log.entries == []
    (resp,) = rd.messages
    assert resp.type is MsgType.APPEND_RESP and resp.index == 10
