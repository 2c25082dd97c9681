"""The KV store's snapshot stream: format, restore, and copy-on-write under concurrent writes."""

from __future__ import annotations

import copy
import gc
import io
import random
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from tests.unit.plugins.test_kv import apply, query, tick
from zraft.builtin import kv_snapshot
from zraft.builtin.kv import KVStore
from zraft.statemachine import CommandError


def snap(store: KVStore) -> bytes:
    return b"".join(store.zraft_snapshot_stream())


def restore(store: KVStore, data: bytes | list[Any]) -> None:
    store.zraft_restore_stream(chunks=iter([data] if isinstance(data, bytes) else data))


@pytest.fixture
def store() -> KVStore:
    return KVStore()


def unpack_all(data: bytes) -> list[Any]:
    return list(msgpack.Unpacker(io.BytesIO(data)))


def pack(*objs: Any) -> bytes:
    return b"".join(msgpack.packb(o) for o in objs)


def feed(store: KVStore) -> None:
    apply(store, "set", ts=1000, key="a", value={"z": 1, "a": [1, {"y": 2, "b": None}]})
    apply(store, "set", ts=1001, key="b", value="x", ttl_ms=5000)
    apply(store, "incr", ts=1002, key="n", by=3)
    apply(store, "cas", ts=1003, key="c", expected=None, value=[1.5], ttl_ms=10)
    apply(store, "set", ts=1004, key="gone", value=1)
    apply(store, "del", ts=1005, key="gone")
    apply(store, "expire", ts=1006, key="a", ttl_ms=9000)
    tick(store, 1013)


def test_equal_histories_give_equal_bytes() -> None:
    one, two = KVStore(), KVStore()
    feed(one)
    feed(two)
    assert snap(one) == snap(two) and one.digest() == two.digest()
    apply(two, "incr", ts=2000, key="n")
    assert snap(one) != snap(two) and one.digest() != two.digest()


def test_the_stream_is_a_versioned_header_then_rows_in_dict_order(store: KVStore) -> None:
    feed(store)
    objs = unpack_all(snap(store))
    assert objs[0] == {"format": "zraft.kv", "version": 2, "keys": 3}
    assert objs[1:] == [
        ["a", {"a": [1, {"b": None, "y": 2}], "z": 1}, 1006 + 9000],
        ["b", "x", 1001 + 5000],
        ["n", 3, None],
    ]


def test_chunks_end_at_4096_rows_or_one_mib() -> None:
    store = KVStore()
    for i in range(10_000):
        apply(store, "set", key=f"k{i}", value=i)
    chunks = list(store.zraft_snapshot_stream())
    rows = [len(unpack_all(c)) for c in chunks]
    assert rows == [1, 4096, 4096, 10_000 - 2 * 4096]
    big = KVStore()
    for i in range(20):
        apply(big, "set", key=f"k{i}", value="x" * 300_000)
    sizes = [len(c) for c in big.zraft_snapshot_stream()][1:]
    assert len(sizes) == 5 and all(s < kv_snapshot.CHUNK_BYTES + 400_000 for s in sizes)


def test_restore_into_a_fresh_store_gives_the_same_state(store: KVStore) -> None:
    feed(store)
    copy_ = KVStore()
    restore(copy_, list(store.zraft_snapshot_stream()))
    assert snap(copy_) == snap(store) and copy_.digest() == store.digest()
    assert copy_.zraft_next_deadline() == store.zraft_next_deadline()
    for ts in (1013, 6001):
        for key in ("a", "b", "n", "c"):
            assert query(copy_, "get", ts=ts, key=key) == query(store, "get", ts=ts, key=key)
            assert query(copy_, "ttl", ts=ts, key=key) == query(store, "ttl", ts=ts, key=key)
        assert query(copy_, "keys", ts=ts) == query(store, "keys", ts=ts)
    for s in (copy_, store):
        tick(s, 6001)
        apply(s, "set", ts=6002, key="new", value=1)
    assert snap(copy_) == snap(store)


def test_chunk_boundaries_carry_no_meaning() -> None:
    rng = random.Random(7)
    store = KVStore()
    for i in range(300):
        apply(store, "set", key=f"k{rng.randrange(100)}", value=[i, "v" * rng.randrange(50)])
    blob = snap(store)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(blob)), rng.randrange(1, 200)))
        pieces = [blob[a:b] for a, b in zip([0, *cuts], [*cuts, len(blob)], strict=True)]
        copy_ = KVStore()
        restore(copy_, [b""] + pieces + [b""])
        assert snap(copy_) == blob
    one_byte = KVStore()
    restore(one_byte, [blob[i : i + 1] for i in range(len(blob))])
    assert snap(one_byte) == blob


def test_restore_replaces_everything(store: KVStore) -> None:
    apply(store, "set", ts=1000, key="old", value=1, ttl_ms=5)
    restore(store, snap(KVStore()))
    assert query(store, "keys", ts=0) == []
    assert store.zraft_next_deadline() is None


HEAD = {"format": "zraft.kv", "version": 2, "keys": 1}
GOOD = pack(HEAD, ["a", 1, 5])


@pytest.mark.parametrize(
    "data",
    [
        [],
        b"",
        b"\xc1",
        GOOD[:-1],
        GOOD + b"\x00",
        GOOD + pack(["b", 1, None]),
        pack([1, 2]),
        pack({**HEAD, "format": "other"}, ["a", 1, 5]),
        pack({**HEAD, "version": 1}, ["a", 1, 5]),
        pack({**HEAD, "keys": -1}),
        pack({**HEAD, "keys": "1"}, ["a", 1, 5]),
        pack({**HEAD, "keys": 2}, ["a", 1, 5]),
        pack(HEAD, {"a": 1}),
        pack(HEAD, ["a", 1]),
        pack(HEAD, ["", 1, None]),
        pack(HEAD, [5, 1, None]),
        pack(HEAD, ["a", b"bin", None]),
        pack(HEAD, ["a", {"k": float("nan")}, None]),
        pack(HEAD, ["a", 1, "5"]),
        pack(HEAD, ["a", 1, -1]),
        pack(HEAD, ["a", 1, True]),
        pack({**HEAD, "keys": 2}, ["a", 1, None], ["a", 2, None]),
        ["not bytes"],
        [GOOD, 5],
    ],
)
def test_bad_data_is_a_value_error_and_the_state_is_unchanged(store: KVStore, data: Any) -> None:
    feed(store)
    before = snap(store)
    with pytest.raises(ValueError, match="kv snapshot"):
        restore(store, data)
    assert snap(store) == before


def test_a_hand_made_snapshot_restores(store: KVStore) -> None:
    restore(store, GOOD)
    assert query(store, "get", ts=4, key="a") == 1
    assert query(store, "get", ts=5, key="a") is None
    assert store.zraft_next_deadline() == 5


# -- copy-on-write ------------------------------------------------------------


def frozen_copy(store: KVStore) -> bytes:
    """The snapshot of an independent deep copy: what a capture started now must yield."""
    twin = KVStore()
    twin._data = copy.deepcopy(store._data)
    twin._deadlines = dict(store._deadlines)
    return snap(twin)


def random_write(rng: random.Random, store: KVStore, now: int) -> None:
    """One random write or tick at leader time ``now`` (errors are part of the history)."""
    key = f"k{rng.randrange(60)}"
    ttl = rng.choice([None, None, rng.randrange(1, 50)])
    value = rng.choice([rng.randrange(100), f"s{rng.randrange(9)}", [rng.randrange(5)], None])
    op = rng.randrange(7)
    try:
        if op == 0:
            apply(store, "set", ts=now, key=key, value=value, ttl_ms=ttl)
        elif op == 1:
            apply(store, "del", ts=now, key=key)
        elif op == 2:
            apply(store, "expire", ts=now, key=key, ttl_ms=rng.randrange(1, 50))
        elif op == 3:
            apply(store, "incr", ts=now, key=key, by=rng.randrange(-3, 4))
        elif op == 4:
            expected = rng.choice([None, value, rng.randrange(100)])
            apply(store, "cas", ts=now, key=key, expected=expected, value=value, ttl_ms=ttl)
        else:
            tick(store, now)
    except CommandError:
        pass


def run_history(seed: int, steps: int = 400) -> None:
    """Writes, ticks and restores interleaved with pulls on several open captures."""
    rng = random.Random(seed)
    store, plain = KVStore(), KVStore()  # ``plain`` sees the same writes, never a capture
    open_: list[tuple[Iterator[bytes], list[bytes], bytes]] = []  # (stream, pulled, expected)
    now = 1000
    for _ in range(steps):
        now += rng.randrange(0, 5)
        action = rng.random()
        if action < 0.6:
            state = rng.getstate()
            random_write(rng, store, now)
            rng.setstate(state)
            random_write(rng, plain, now)
        elif action < 0.7:
            open_.append((store.zraft_snapshot_stream(), [], frozen_copy(store)))
        elif action < 0.9 and open_:
            stream, pulled, expected = rng.choice(open_)
            pulled.extend(c for _, c in zip(range(rng.randrange(1, 3)), stream, strict=False))
        elif action < 0.95 and open_:
            stream, _, _ = open_.pop(rng.randrange(len(open_)))
            stream.close()  # abort
        elif action < 0.97:
            donor = KVStore()
            for _ in range(rng.randrange(10)):
                random_write(rng, donor, now)
            blob = snap(donor)
            restore(store, blob)
            restore(plain, blob)
    for stream, pulled, expected in open_:
        assert b"".join(pulled) + b"".join(stream) == expected, seed
    del open_, stream
    assert store._captures == [], seed
    assert snap(store) == snap(plain), seed  # copy-on-write never changes the live state


@pytest.mark.parametrize("seed", range(60))
def test_a_capture_yields_the_state_at_its_start_whatever_happens_meanwhile(seed: int) -> None:
    run_history(seed)


def test_small_chunks_interleave_with_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Chunks of 3 rows: most writes land between pulls of the same capture.
    monkeypatch.setattr(kv_snapshot, "ROWS_PER_CHUNK", 3)
    for seed in range(100, 140):
        run_history(seed, steps=300)


def test_an_aborted_or_dropped_capture_stops_its_bookkeeping(store: KVStore) -> None:
    feed(store)
    unread = store.zraft_snapshot_stream()
    half = store.zraft_snapshot_stream()
    next(half)
    dropped = store.zraft_snapshot_stream()
    assert len(store._captures) == 3
    unread.close()
    half.close()
    del dropped
    gc.collect()
    assert store._captures == []
    apply(store, "set", key="a", value=2)  # no capture left to save into


def test_only_changed_keys_are_saved(store: KVStore) -> None:
    for i in range(1000):
        apply(store, "set", key=f"k{i}", value=i)
    stream = store.zraft_snapshot_stream()
    for i in range(0, 1000, 100):
        apply(store, "set", ts=1001, key=f"k{i}", value=-i)
        apply(store, "set", ts=1001, key=f"k{i}", value=-2 * i)  # saved once, the first time
    (cow,) = store._captures
    assert {k: v for k, (v, _) in cow.saved.items()} == {f"k{i}": i for i in range(0, 1000, 100)}
    rows = unpack_all(b"".join(stream))[1:]
    assert rows == [[f"k{i}", i, None] for i in range(1000)]


def test_a_restore_leaves_open_captures_on_the_old_state(store: KVStore) -> None:
    feed(store)
    expected = snap(store)
    stream = store.zraft_snapshot_stream()
    apply(store, "del", key="a")
    restore(store, GOOD)
    assert store._captures == []
    apply(store, "set", key="a", value="new")
    assert b"".join(stream) == expected


def test_no_write_changes_a_stored_value_in_place() -> None:
    # Copy-on-write saves references: it relies on this.
    rng = random.Random(3)
    store = KVStore()
    seen: list[tuple[Any, Any]] = []
    for step in range(3000):
        random_write(rng, store, 1000 + step // 10)
        for value in list(store._data.values())[-3:]:
            seen.append((value, copy.deepcopy(value)))
    assert all(value == snapshot for value, snapshot in seen)


def test_starting_a_capture_of_200k_keys_copies_no_value() -> None:
    store = KVStore()
    store._data = {f"key-{i:06d}": {"name": "v" * 40, "n": i, "tags": [i]} for i in range(200_000)}
    tracemalloc.start()
    try:
        started = time.perf_counter()
        stream = store.zraft_snapshot_stream()
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The key list is 8 bytes a key (1.6 MB); a copy of the values would be tens of MB.
    assert peak < 3_000_000, peak
    assert elapsed < 0.5, elapsed
    apply(store, "set", key="key-000000", value=0)
    assert b"".join(stream).count(b"v" * 40) == 200_000
