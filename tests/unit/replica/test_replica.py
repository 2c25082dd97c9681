"""The replicated state: apply, sessions, leader time, capture and restore (no I/O)."""

from __future__ import annotations

import pytest

from tests.support.kv import kv_replica
from zraft.api import codes
from zraft.core import Entry, EntryKind
from zraft.plugins import CommandTable
from zraft.replica import SESSIONS, Replica
from zraft.replica.sessions import RESPONSES_PER_CLIENT, Duplicate, Expired, SessionTable
from zraft.statemachine import Outcome


def make_replica(observe: bool = False) -> Replica:
    return kv_replica(observe_applied=observe)


def entry(r: Replica, index: int, command: dict, client: str = "", seq: int = 0, at: int = 0):
    return Entry(1, index, data=r.command_data(at, client, seq, command))


def test_apply_runs_commands_in_log_order_and_reads_see_them() -> None:
    r = make_replica(observe=True)
    assert r.apply(Entry(1, 1, EntryKind.NOOP)) is None and r.applied_index == 1
    assert r.apply(entry(r, 2, {"cmd": "set", "key": "a", "value": 1})) == Outcome.success(True)
    assert r.query({"cmd": "get", "key": "a"}) == Outcome.success(1)
    (seen,) = r.take_applied()
    assert (seen.index, seen.command["key"], seen.ok) == (2, "a", True)
    assert r.take_applied() == []


def test_a_retried_write_returns_the_first_answer_without_applying_again() -> None:
    r = make_replica()
    first = r.apply(entry(r, 1, {"cmd": "incr", "key": "n"}, "c", 1))
    again = r.apply(entry(r, 2, {"cmd": "incr", "key": "n"}, "c", 1))
    assert first == again == Outcome.success(1)
    assert r.query({"cmd": "get", "key": "n"}) == Outcome.success(1)


def test_a_write_older_than_the_session_remembers_gets_session_expired() -> None:
    r = make_replica()
    for seq in range(1, RESPONSES_PER_CLIENT + 2):
        r.apply(entry(r, seq, {"cmd": "incr", "key": "n"}, "c", seq))
    old = r.apply(entry(r, 9999, {"cmd": "incr", "key": "n"}, "c", 1))
    assert old is not None and old.code == codes.SESSION_EXPIRED


def test_unreadable_entries_and_failing_plugins_become_errors_never_exceptions() -> None:
    r = make_replica()
    bad = r.apply(Entry(1, 1, data=b"\xc1garbage"))
    assert bad is not None and bad.code == codes.INTERNAL and r.errors == 1

    class Broken:
        from zraft.hookspecs import hookimpl

        @hookimpl
        def zraft_commands(self):
            from zraft.statemachine import CommandSpec

            return [CommandSpec("boom", "write")]

        @hookimpl
        def zraft_apply(self, command, ctx):
            raise RuntimeError("plugin bug")

    r.pm.register(Broken(), name="broken")
    r.commands = CommandTable.from_plugins(r.pm)
    out = r.apply(entry(r, 2, {"cmd": "boom"}))
    assert out == Outcome.error(codes.INTERNAL, "RuntimeError: plugin bug") and r.errors == 2


def test_leader_time_is_monotonic_and_comes_from_the_entries() -> None:
    r = make_replica()
    assert r.stamp(1000) == 1000 and r.stamp(900) == 1000  # a clock step back is ignored
    r.apply(entry(r, 1, {"cmd": "set", "key": "a", "value": 1, "ttl_ms": 50}, at=5000))
    assert r.time_ms == 5000
    assert r.clock_data(5049) is None  # no deadline has passed yet
    data = r.clock_data(5050)
    assert data is not None
    r.apply(Entry(1, 2, data=data))
    assert r.query({"cmd": "exists", "key": "a"}) == Outcome.success(False)


def test_capture_and_restore_carry_the_whole_replicated_state() -> None:
    r = make_replica()
    r.apply(entry(r, 1, {"cmd": "set", "key": "a", "value": [1]}, "c", 1, at=10))
    captured = r.capture()
    assert list(captured) == [SESSIONS, "kv"]
    other = make_replica()
    other.restore(captured, index=1, time_ms=10)
    assert other.state_hash() == r.state_hash() and other.applied_index == 1
    assert other.apply(entry(other, 2, {"cmd": "set", "key": "a", "value": 2}, "c", 1)) == (
        Outcome.success(True)  # the session came along: a duplicate, not a second apply
    )
    assert other.query({"cmd": "get", "key": "a"}) == Outcome.success([1])
    with pytest.raises(ValueError, match="kv"):
        make_replica().restore({SESSIONS: SessionTable().dump()}, 1, 0)
    with pytest.raises(ValueError, match="session table"):
        make_replica().restore({**captured, SESSIONS: b"\x93garbage"}, 1, 0)


def test_the_state_hash_differs_when_the_state_does() -> None:
    a, b = make_replica(), make_replica()
    assert a.state_hash() == b.state_hash()
    a.apply(entry(a, 1, {"cmd": "set", "key": "k", "value": 1}))
    assert a.state_hash() != b.state_hash()


def test_the_session_table_dumps_deterministically_and_refuses_garbage() -> None:
    t = SessionTable()
    t.record("c", 1, [True, 1], 100)
    with pytest.raises(Duplicate) as dup:
        t.check("c", 1, 100)
    assert dup.value.reply == [True, 1]
    t2 = SessionTable()
    t2.load(t.dump())
    assert t2.dump() == t.dump() and len(t2) == 1
    for bad in (b"", b"\x92\x02\x90", b"\x92\x01\x91\x93"):
        with pytest.raises(ValueError, match="session table"):
            SessionTable().load(bad)
    big = SessionTable()
    for seq in range(1, RESPONSES_PER_CLIENT + 3):
        big.record("c", seq, [True, seq], 1)
    with pytest.raises(Expired):
        big.check("c", 1, 1)


def test_a_restored_session_table_evicts_exactly_like_the_captured_one() -> None:
    """Pipelined seqs reach the log out of order; eviction follows log order, so a
    table from a snapshot must keep that order (it once sorted by seq: the hashes
    of a restarted node and the others then differed)."""
    import random

    from zraft.replica.sessions import RESPONSES_PER_CLIENT, SessionTable

    rng = random.Random(7)
    seqs = list(range(1, 3 * RESPONSES_PER_CLIENT))
    for i in range(0, len(seqs) - 8, 8):  # shuffled within windows, as pipelining does
        window = seqs[i : i + 8]
        rng.shuffle(window)
        seqs[i : i + 8] = window
    live = SessionTable()
    half = len(seqs) // 2
    for n, seq in enumerate(seqs[:half]):
        live.record("c", seq, [True, n], n)
    restored = SessionTable()
    restored.load(live.dump())
    for n, seq in enumerate(seqs[half : half + 40], half):
        live.record("c", seq, [True, n], n)
        restored.record("c", seq, [True, n], n)
        assert restored.dump() == live.dump()
