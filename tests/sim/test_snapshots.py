"""The simulation's snapshot machinery (``tests.sim.snapshots``, ``tests.sim.reference``).

The random schedules rely on these pieces to judge zraft; these tests pin
them down on small, hand-made cases: a capture read chunk by chunk while
entries apply still holds the state of its index, the reference state can
go back to an earlier index, the store keeps what the real one keeps, and
start-up finishes an install the storage did not record (as
``zraft.snapshot.recovery`` does).
"""

from __future__ import annotations

from tests.sim.reference import Reference
from tests.sim.snapshots import NodeSnapshots, SimSnapshot, SnapshotStore, Taking
from tests.support.kv import kv_replica
from zraft.core import Entry, EntryKind, HardState, SnapshotMeta
from zraft.replica import Replica
from zraft.replica.entries import encode_command
from zraft.storage.memory import MemoryStorage


def _set(index: int, key: str, value: int, term: int = 1) -> Entry:
    data = encode_command(1000 + index, "c1", index, {"cmd": "set", "key": key, "value": value})
    return Entry(term, index, EntryKind.NORMAL, data)


def _log(n: int) -> list[Entry]:
    return [_set(i, "abc"[i % 3], i) for i in range(1, n + 1)]


def _replica_at(log: list[Entry], index: int) -> Replica:
    r = kv_replica()
    for e in log[:index]:
        r.apply(e)
    return r


def _snapshot(index: int, term: int = 1) -> SimSnapshot:
    r = _replica_at(_log(index), index)
    sections = tuple(r.capture().items())
    return SimSnapshot(SnapshotMeta(index, term), sections, r.time_ms, (term,) * index)


def test_a_capture_read_while_entries_apply_holds_its_index() -> None:
    """Copy-on-write: the snapshot is the state at the capture's index, whatever applied later."""
    log = _log(12)
    r = _replica_at(log, 6)
    expected = r.state_hash()
    taking = Taking(r.start_capture(), SnapshotMeta(6, 1), (1,) * 6)
    snap, applied = None, 6
    while snap is None:
        snap = taking.step()
        if applied < len(log):
            r.apply(log[applied])  # the node goes on applying between chunks
            applied += 1
    assert taking.chunks >= 3  # sessions, then the KV header and its rows
    assert snap.digest() == expected != r.state_hash()
    restored = kv_replica()
    restored.restore_sections(snap.chunks(), 6, snap.time_ms)
    assert restored.state_hash() == expected


def test_the_reference_goes_back_to_an_earlier_index() -> None:
    log = _log(20)
    ref = Reference(log)
    later, earlier = ref.hash_at(15), ref.hash_at(7)
    assert ref.rewinds == 1
    assert later == _replica_at(log, 15).state_hash()
    assert earlier == _replica_at(log, 7).state_hash()
    assert ref.hash_at(11) == _replica_at(log, 11).state_hash()
    assert ref.kv_at(3) == {"a": 3, "b": 1, "c": 2}


def test_the_store_keeps_the_newest_two_and_the_one_just_written() -> None:
    store = SnapshotStore()
    for index in (3, 6, 9):
        store.publish(_snapshot(index))
    assert [f.meta.index for f in store.files] == [6, 9]
    assert store.older_index() == 6
    store.publish(_snapshot(4))  # an older capture finished after an install: kept for now
    assert [f.meta.index for f in store.files] == [4, 6, 9]
    store.publish(_snapshot(12))
    assert [f.meta.index for f in store.files] == [9, 12]


def test_start_up_finishes_an_install_the_storage_did_not_record() -> None:
    """The snapshot was published, then the node died before the log was switched."""
    storage = MemoryStorage()
    storage.append(HardState(2, "n1", 3), [Entry(1, i) for i in range(1, 6)], sync=True)
    snaps = NodeSnapshots(every=5, trailing=0)
    snaps.store.publish(_snapshot(8, term=2))
    start = snaps.recover(storage)
    assert start.finished_install and start.snapshot is not None
    assert start.log_start.index == 8 and start.entries == []
    assert snaps.log_start.index == 8 and storage.open().entries == []


def test_start_up_keeps_the_log_that_holds_the_snapshot() -> None:
    storage = MemoryStorage()
    storage.append(HardState(1, "n1", 9), [Entry(1, i) for i in range(1, 10)], sync=True)
    storage.compact(SnapshotMeta(4, 1))
    snaps = NodeSnapshots(every=5, trailing=0)
    snaps.store.publish(_snapshot(6))
    start = snaps.recover(storage)
    assert not start.finished_install and not start.uncovered
    assert start.log_start.index == 4 and [e.index for e in start.entries] == [5, 6, 7, 8, 9]


def test_start_up_names_a_log_that_no_snapshot_covers() -> None:
    storage = MemoryStorage()
    storage.append(HardState(1, "n1", 9), [Entry(1, i) for i in range(1, 10)], sync=True)
    storage.compact(SnapshotMeta(7, 1))
    snaps = NodeSnapshots(every=5, trailing=0)
    snaps.store.publish(_snapshot(5))
    start = snaps.recover(storage)
    assert start.snapshot is None
    assert "starts after 7" in start.uncovered and "newest is 5" in start.uncovered
