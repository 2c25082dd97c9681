"""The built-in KV state machine: commands, leader-time TTLs, ticks, determinism.

Snapshots (the streaming pair, copy-on-write): ``test_kv_snapshot.py``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from zraft.builtin.kv import KVStore
from zraft.statemachine import ApplyContext, CommandError, QueryContext


def apply(store: KVStore, cmd: str, ts: int = 1000, **args: Any) -> Any:
    return store.zraft_apply({"cmd": cmd, **args}, ApplyContext(index=1, term=1, timestamp_ms=ts))


def query(store: KVStore, cmd: str, ts: int = 1000, **args: Any) -> Any:
    return store.zraft_query({"cmd": cmd, **args}, QueryContext(applied_index=1, timestamp_ms=ts))


def tick(store: KVStore, ts: int) -> None:
    store.zraft_tick(ApplyContext(index=1, term=1, timestamp_ms=ts))


def error_code(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(CommandError) as info:
        fn(*args, **kwargs)
    assert info.value.message
    return info.value.code


@pytest.fixture
def store() -> KVStore:
    return KVStore()


@pytest.fixture
def no_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every local clock raise: the state machine may only use ctx.timestamp_ms."""

    def forbidden(*_: Any) -> float:
        raise AssertionError("the state machine read the local clock")

    for name in ("time", "time_ns", "monotonic", "monotonic_ns"):
        monkeypatch.setattr(time, name, forbidden)


def test_declares_exactly_the_kv_commands(store: KVStore) -> None:
    specs = {spec.name: spec.kind for spec in store.zraft_commands()}
    assert specs == {
        "set": "write",
        "del": "write",
        "expire": "write",
        "incr": "write",
        "cas": "write",
        "get": "read",
        "exists": "read",
        "ttl": "read",
        "mget": "read",
        "keys": "read",
    }


def test_unknown_commands_are_left_to_other_plugins(store: KVStore) -> None:
    assert apply(store, "get", key="a") is None
    assert query(store, "set", key="a", value=1) is None
    assert apply(store, "nope") is None


def test_set_get_overwrite_and_null_value(store: KVStore) -> None:
    assert apply(store, "set", key="a", value={"x": [1, 2.5, "s", None, True]}) is True
    assert query(store, "get", key="a") == {"x": [1, 2.5, "s", None, True]}
    assert apply(store, "set", key="a", value=7) is True
    assert query(store, "get", key="a") == 7
    apply(store, "set", key="n", value=None)
    assert query(store, "get", key="n") is None
    assert query(store, "exists", key="n") is True
    assert query(store, "get", key="missing") is None


def test_stored_values_are_copies(store: KVStore) -> None:
    value = {"list": [1]}
    apply(store, "set", key="a", value=value)
    value["list"].append(2)
    assert query(store, "get", key="a") == {"list": [1]}


@pytest.mark.parametrize(
    "args",
    [
        {"key": "", "value": 1},
        {"key": "k" * 1025, "value": 1},
        {"key": 5, "value": 1},
        {"key": "a"},
        {"key": "a", "value": 1, "ttl_ms": 0},
        {"key": "a", "value": 1, "ttl_ms": -5},
        {"key": "a", "value": 1, "ttl_ms": True},
        {"key": "a", "value": 1, "ttl_ms": 1.5},
        {"key": "a", "value": 1, "ttl_ms": 10**15},
        {"key": "a", "value": b"bytes"},
        {"key": "a", "value": {1: "non-str key"}},
        {"key": "a", "value": [float("nan")]},
        {"key": "a", "value": 2**64},
        {"key": "a", "value": {1, 2}},
    ],
)
def test_set_rejects_bad_arguments_without_changing_state(store: KVStore, args: dict) -> None:
    apply(store, "set", key="a", value="old")
    before = store.digest()
    assert error_code(apply, store, "set", **args) == "BAD_ARG"
    assert store.digest() == before


def test_key_of_1024_chars_is_accepted(store: KVStore) -> None:
    assert apply(store, "set", key="k" * 1024, value=1) is True


def test_del_reports_whether_the_key_existed(store: KVStore) -> None:
    apply(store, "set", key="a", value=1)
    assert apply(store, "del", key="a") is True
    assert apply(store, "del", key="a") is False
    assert query(store, "exists", key="a") is False
    assert error_code(apply, store, "del", key="") == "BAD_ARG"


def test_expire_sets_a_deadline_on_existing_keys_only(store: KVStore) -> None:
    apply(store, "set", key="a", value=1)
    assert apply(store, "expire", ts=2000, key="a", ttl_ms=300) is True
    assert query(store, "ttl", ts=2100, key="a") == 200
    assert apply(store, "expire", key="missing", ttl_ms=300) is False
    assert query(store, "exists", key="missing") is False
    assert error_code(apply, store, "expire", key="a") == "BAD_ARG"
    assert error_code(apply, store, "expire", key="a", ttl_ms=0) == "BAD_ARG"


def test_incr_counts_from_zero_and_keeps_the_deadline(store: KVStore) -> None:
    assert apply(store, "incr", key="n") == 1
    assert apply(store, "incr", key="n", by=41) == 42
    assert apply(store, "incr", key="n", by=-50) == -8
    apply(store, "set", ts=1000, key="t", value=10, ttl_ms=500)
    assert apply(store, "incr", ts=1100, key="t") == 11
    assert query(store, "ttl", ts=1100, key="t") == 400


@pytest.mark.parametrize("value", ["1", 1.0, True, None, [1], {"n": 1}])
def test_incr_of_a_non_integer_is_wrong_type(store: KVStore, value: Any) -> None:
    apply(store, "set", key="v", value=value)
    before = store.digest()
    assert error_code(apply, store, "incr", key="v") == "WRONG_TYPE"
    assert store.digest() == before


def test_incr_rejects_bad_by_and_overflow(store: KVStore) -> None:
    apply(store, "set", key="big", value=2**63 - 1)
    before = store.digest()
    assert error_code(apply, store, "incr", key="big") == "OVERFLOW"
    assert error_code(apply, store, "incr", key="n", by=True) == "BAD_ARG"
    assert error_code(apply, store, "incr", key="n", by="2") == "BAD_ARG"
    assert store.digest() == before


def test_cas_with_null_expected_creates_only_absent_keys(store: KVStore) -> None:
    assert apply(store, "cas", key="a", expected=None, value=1) == {"ok": True, "value": 1}
    assert apply(store, "cas", key="a", expected=None, value=2) == {"ok": False, "value": 1}
    apply(store, "set", key="n", value=None)
    assert apply(store, "cas", key="n", expected=None, value=2) == {"ok": False, "value": None}


def test_cas_swaps_only_on_an_equal_json_value(store: KVStore) -> None:
    apply(store, "set", key="a", value={"x": 1, "y": [True]})
    assert apply(store, "cas", key="a", expected={"y": [True], "x": 1}, value="new") == {
        "ok": True,
        "value": "new",
    }
    assert apply(store, "cas", key="a", expected="old", value="x") == {"ok": False, "value": "new"}
    assert apply(store, "cas", key="missing", expected=1, value=2) == {"ok": False, "value": None}
    assert query(store, "exists", key="missing") is False


def test_cas_never_confuses_booleans_with_numbers(store: KVStore) -> None:
    apply(store, "set", key="a", value=1)
    assert apply(store, "cas", key="a", expected=True, value=2)["ok"] is False
    assert apply(store, "cas", key="a", expected=1.0, value=2)["ok"] is True
    apply(store, "set", key="b", value=[False])
    assert apply(store, "cas", key="b", expected=[0], value=2)["ok"] is False


def test_cas_sets_and_clears_ttl(store: KVStore) -> None:
    apply(store, "cas", ts=1000, key="a", expected=None, value=1, ttl_ms=100)
    assert query(store, "ttl", ts=1000, key="a") == 100
    apply(store, "cas", ts=1000, key="a", expected=1, value=2)
    assert query(store, "ttl", ts=1000, key="a") == -1
    before = store.digest()
    assert error_code(apply, store, "cas", key="a", expected=2, value=3, ttl_ms=-1) == "BAD_ARG"
    assert error_code(apply, store, "cas", key="a", value=3) == "BAD_ARG"
    assert store.digest() == before


def test_ttl_follows_redis_semantics_in_ms(store: KVStore) -> None:
    apply(store, "set", ts=1000, key="t", value=1, ttl_ms=500)
    apply(store, "set", key="p", value=1)
    assert query(store, "ttl", ts=1200, key="t") == 300
    assert query(store, "ttl", key="p") == -1
    assert query(store, "ttl", key="missing") == -2
    assert query(store, "ttl", ts=1500, key="t") == -2
    apply(store, "set", ts=1000, key="t", value=2)  # a set without ttl_ms clears the deadline
    assert query(store, "ttl", ts=9999, key="t") == -1


def test_mget_answers_in_order_with_nulls(store: KVStore) -> None:
    apply(store, "set", key="a", value=1)
    apply(store, "set", ts=1000, key="b", value=2, ttl_ms=10)
    assert query(store, "mget", ts=1005, keys=["a", "b", "c"]) == [1, 2, None]
    assert query(store, "mget", ts=1010, keys=["b", "a"]) == [None, 1]
    assert query(store, "mget", keys=[]) == []
    assert error_code(query, store, "mget", keys=["a", ""]) == "BAD_ARG"
    assert error_code(query, store, "mget", keys="a") == "BAD_ARG"


def test_keys_lists_live_keys_by_prefix_sorted_and_limited(store: KVStore) -> None:
    for key in ["user:3", "user:1", "group:1", "user:2", "user:10"]:
        apply(store, "set", key=key, value=0)
    apply(store, "set", ts=1000, key="user:0", value=0, ttl_ms=1)
    live_users = ["user:1", "user:10", "user:2", "user:3"]
    assert query(store, "keys", ts=1001, prefix="user:") == live_users
    assert query(store, "keys", ts=1000, prefix="user:", limit=2) == ["user:0", "user:1"]
    assert query(store, "keys", ts=1001) == ["group:1", "user:1", "user:10", "user:2", "user:3"]
    assert query(store, "keys", prefix="none") == []


@pytest.mark.parametrize(
    "args",
    [{"limit": 0}, {"limit": 100_001}, {"limit": "5"}, {"prefix": 3}, {"prefix": "p" * 1025}],
)
def test_keys_rejects_bad_limit_and_prefix(store: KVStore, args: dict) -> None:
    assert error_code(query, store, "keys", **args) == "BAD_ARG"


@pytest.mark.usefixtures("no_clock")
def test_ttl_uses_only_the_leader_stamps(store: KVStore) -> None:
    apply(store, "set", ts=1000, key="a", value="v", ttl_ms=500)
    assert query(store, "get", ts=1499, key="a") == "v"
    assert query(store, "exists", ts=1499, key="a") is True
    assert query(store, "ttl", ts=1499, key="a") == 1
    assert query(store, "get", ts=1500, key="a") is None
    assert query(store, "exists", ts=1500, key="a") is False
    assert query(store, "keys", ts=1500) == []


@pytest.mark.usefixtures("no_clock")
def test_writes_see_expiry_at_their_own_stamp(store: KVStore) -> None:
    apply(store, "set", ts=1000, key="a", value=5, ttl_ms=500)
    assert apply(store, "incr", ts=1499, key="a") == 6
    assert apply(store, "incr", ts=1500, key="a") == 1  # expired: starts again, no deadline
    assert query(store, "ttl", ts=1500, key="a") == -1
    apply(store, "set", ts=1000, key="b", value=5, ttl_ms=500)
    assert apply(store, "del", ts=1500, key="b") is False
    apply(store, "set", ts=1000, key="c", value=5, ttl_ms=500)
    assert apply(store, "expire", ts=1500, key="c", ttl_ms=100) is False
    apply(store, "set", ts=1000, key="d", value=5, ttl_ms=500)
    assert apply(store, "cas", ts=1500, key="d", expected=None, value=6)["ok"] is True


@pytest.mark.usefixtures("no_clock")
def test_tick_deletes_due_keys_and_next_deadline_advances(store: KVStore) -> None:
    assert store.zraft_next_deadline() is None
    apply(store, "set", ts=1000, key="c", value=3, ttl_ms=300)
    apply(store, "set", ts=1000, key="a", value=1, ttl_ms=100)
    apply(store, "set", ts=1000, key="b", value=2, ttl_ms=200)
    apply(store, "set", ts=1000, key="forever", value=0)
    assert store.zraft_next_deadline() == 1100
    tick(store, 1099)
    assert store.zraft_next_deadline() == 1100
    tick(store, 1100)
    assert store.zraft_next_deadline() == 1200
    assert query(store, "keys", ts=0) == ["b", "c", "forever"]  # gone from the state itself
    tick(store, 1250)
    assert store.zraft_next_deadline() == 1300
    tick(store, 5000)
    assert store.zraft_next_deadline() is None
    assert query(store, "keys", ts=0) == ["forever"]


def test_next_deadline_skips_rewritten_and_deleted_deadlines(store: KVStore) -> None:
    apply(store, "set", ts=1000, key="a", value=1, ttl_ms=100)
    apply(store, "set", ts=1000, key="b", value=1, ttl_ms=200)
    apply(store, "expire", ts=1000, key="a", ttl_ms=500)
    assert store.zraft_next_deadline() == 1200
    apply(store, "del", key="b")
    assert store.zraft_next_deadline() == 1500
    apply(store, "set", key="a", value=2)
    assert store.zraft_next_deadline() is None


def test_rewritten_deadlines_do_not_grow_the_heap_without_bound(store: KVStore) -> None:
    for i in range(10_000):
        apply(store, "expire" if i else "set", ts=1000 + i, key="a", value=0, ttl_ms=1000)
    assert len(store._heap) <= 130
    assert store.zraft_next_deadline() == 1000 + 9_999 + 1000


def test_queries_never_change_the_state(store: KVStore) -> None:
    apply(store, "set", ts=1000, key="a", value=1, ttl_ms=10)
    apply(store, "set", key="b", value=2)
    before = store.digest()
    for ts in (1000, 1010, 99999):
        query(store, "get", ts=ts, key="a")
        query(store, "mget", ts=ts, keys=["a", "b"])
        query(store, "keys", ts=ts)
        query(store, "ttl", ts=ts, key="a")
    assert store.digest() == before


def test_digest_ignores_object_key_order_and_set_order() -> None:
    one, two = KVStore(), KVStore()
    apply(one, "set", key="x", value={"a": 1, "b": 2})
    apply(one, "set", key="y", value=1)
    apply(two, "set", key="y", value=1)
    apply(two, "set", key="x", value={"b": 2, "a": 1})
    assert one.digest() == two.digest()


def test_each_store_has_its_own_state() -> None:
    one, two = KVStore(), KVStore()
    apply(one, "set", key="a", value=1)
    assert query(two, "get", key="a") is None
