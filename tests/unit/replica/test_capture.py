"""Snapshot capture and restore of the whole replicated state, section by section (no I/O).

A capture is the state at the index where it started, even though the
replica keeps applying entries while it is read (ARCHITECTURE.md: a snapshot
is taken beside the running state machine).
"""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from zraft.builtin import kv_snapshot
from zraft.builtin.kv import KVStore
from zraft.core import Entry
from zraft.hookspecs import hookimpl
from zraft.plugins import CommandTable, PluginError, ZraftPluginManager, snapshot_plugins
from zraft.replica import SESSIONS, Capture, Replica
from zraft.statemachine import Arg, CommandSpec


class Counter:
    """A plugin with the simple pair."""

    def __init__(self) -> None:
        self.n = 0

    @hookimpl
    def zraft_commands(self) -> list[CommandSpec]:
        return [CommandSpec("add", "write", (Arg("by", "int"),))]

    @hookimpl
    def zraft_apply(self, command: dict[str, Any], ctx: Any) -> int:
        self.n += command["by"]
        return self.n

    @hookimpl
    def zraft_snapshot(self) -> bytes:
        return str(self.n).encode()

    @hookimpl
    def zraft_restore(self, data: bytes) -> None:
        self.n = int(data)  # ValueError on garbage


class Journal:
    """A plugin with the stream pair, written as a generator function."""

    def __init__(self) -> None:
        self.items: list[str] = []

    @hookimpl
    def zraft_commands(self) -> list[CommandSpec]:
        return [CommandSpec("note", "write", (Arg("text"),))]

    @hookimpl
    def zraft_apply(self, command: dict[str, Any], ctx: Any) -> int:
        self.items.append(command["text"])
        return len(self.items)

    @hookimpl
    def zraft_snapshot_stream(self) -> Iterator[bytes]:
        items = list(self.items)  # before the first yield: zraft primes the stream at once
        yield b"J"
        for item in items:
            yield item.encode() + b"\n"

    @hookimpl
    def zraft_restore_stream(self, chunks: Iterator[bytes]) -> None:
        data = b"".join(chunks)
        if not data.startswith(b"J"):
            raise ValueError("not a journal")
        self.items = data[1:].decode().splitlines()


def make(*extra: tuple[str, Any]) -> Replica:
    pm = ZraftPluginManager()
    pm.register(KVStore(), name="kv")
    pm.register(Counter(), name="counter")
    pm.register(Journal(), name="journal")
    for name, plugin in extra:
        pm.register(plugin, name=name)
    return Replica(pm, CommandTable.from_plugins(pm))


def kv(r: Replica) -> KVStore:
    return r.pm.get_plugin("kv")


def read_all(c: Capture) -> dict[str, bytes]:
    return {name: b"".join(chunks) for name, chunks in c.sections()}


class Log:
    """Random committed entries, kept to replay on a reference replica."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.entries, self.at, self.seqs = rng, [], 1000, {"a": 0, "b": 0}

    def next(self, r: Replica) -> Entry:
        rng = self.rng
        self.at += rng.randrange(0, 20)
        key = f"k{rng.randrange(30)}"
        command = rng.choice(
            [
                {"cmd": "set", "key": key, "value": [rng.randrange(9)], "ttl_ms": 30},
                {"cmd": "set", "key": key, "value": rng.randrange(9)},
                {"cmd": "del", "key": key},
                {"cmd": "incr", "key": key},
                {"cmd": "add", "by": rng.randrange(5)},
                {"cmd": "note", "text": f"n{rng.randrange(99)}"},
            ]
        )
        client = rng.choice(["", "a", "b"])
        seq = 0
        if client:
            retry = rng.random() < 0.1 and self.seqs[client] > 0
            seq = self.seqs[client] if retry else self.seqs[client] + 1
            self.seqs[client] = seq
        index = len(self.entries) + 1
        if rng.random() < 0.15:
            data = r.clock_data(self.at) or r.command_data(self.at, client, seq, command)
        else:
            data = r.command_data(self.at, client, seq, command)
        self.entries.append(Entry(1, index, data=data))
        return self.entries[-1]


def replay(entries: list[Entry]) -> Replica:
    ref = make()
    for e in entries:
        ref.apply(e)
    return ref


@pytest.mark.parametrize("seed", range(40))
def test_a_capture_holds_the_state_at_its_index_while_entries_keep_coming(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kv_snapshot, "ROWS_PER_CHUNK", 2)  # many pulls per capture
    rng = random.Random(seed)
    r, log = make(), Log(rng)
    open_: list[tuple[Capture, Iterator[tuple[str, bytes]], dict[str, bytes]]] = []
    done: list[tuple[Capture, dict[str, bytes]]] = []
    for _ in range(300):
        roll = rng.random()
        if roll < 0.7:
            r.apply(log.next(r))
        elif roll < 0.8:
            c = r.start_capture()
            assert (c.index, c.time_ms) == (r.applied_index, r.time_ms)
            flat = ((n, chunk) for n, chunks in c.sections() for chunk in chunks)
            open_.append((c, flat, {}))
        elif roll < 0.95 and open_:
            c, flat, got = rng.choice(open_)
            for name, chunk in (p for _, p in zip(range(rng.randrange(1, 4)), flat, strict=False)):
                got[name] = got.get(name, b"") + chunk
        elif open_:
            c, _, _ = open_.pop(rng.randrange(len(open_)))
            c.close()
            assert c.closed
    for c, flat, got in open_:
        for name, chunk in flat:
            got[name] = got.get(name, b"") + chunk
        done.append((c, got))
    assert kv(r)._captures == []
    for c, got in done:
        ref = replay(log.entries[: c.index])
        assert ref.capture() == {n: got.get(n, b"") for n in ref.section_names()}, seed
        restored = make()
        restored.restore(got, c.index, c.time_ms)
        assert restored.state_hash() == ref.state_hash()
        assert restored.applied_index == c.index and restored.time_ms == c.time_ms


def test_sections_come_sessions_first_then_plugins_by_name() -> None:
    r = make()
    assert r.section_names() == [SESSIONS, "counter", "journal", "kv"]
    with r.start_capture() as c:
        assert c.names() == r.section_names() == [n for n, _ in c.sections()]


def test_a_capture_is_read_once_and_close_ends_the_copy_on_write() -> None:
    r = make()
    c = r.start_capture()
    assert len(kv(r)._captures) == 1
    sections = c.sections()
    with pytest.raises(RuntimeError):
        c.sections()
    name, chunks = next(sections)
    assert name == SESSIONS and next(chunks)
    c.close()
    assert kv(r)._captures == []
    closed = r.start_capture()
    closed.close()
    with pytest.raises(RuntimeError):
        closed.sections()
    assert kv(r)._captures == []


def test_a_plugin_failing_to_start_its_stream_closes_the_others() -> None:
    class Broken:
        @hookimpl
        def zraft_snapshot_stream(self) -> Iterator[bytes]:
            raise RuntimeError("plugin bug")

        @hookimpl
        def zraft_restore_stream(self, chunks: Iterator[bytes]) -> None:
            pass

    r = make(("zz", Broken()))
    with pytest.raises(RuntimeError, match="plugin bug"):
        r.start_capture()
    assert kv(r)._captures == []


def test_starting_a_capture_of_200k_keys_is_cheap() -> None:
    r = make()
    kv(r)._data = {f"key-{i:06d}": {"value": "v" * 40, "n": i} for i in range(200_000)}
    tracemalloc.start()
    try:
        c = r.start_capture()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3_000_000, peak  # the kv key list (8 bytes a key), no value copied
    c.close()


def seeded() -> Replica:
    r, log = make(), Log(random.Random(1))
    for _ in range(50):
        r.apply(log.next(r))
    return r


def test_restore_checks_the_section_names_and_changes_nothing_when_they_are_wrong() -> None:
    good = seeded().capture()
    r = seeded()
    before = (r.state_hash(), r.applied_index)
    r.check_sections(good)
    cases = {
        "counter": {n: b for n, b in good.items() if n != "counter"},
        "ghost": {**good, "ghost": b""},
        SESSIONS: {n: b for n, b in good.items() if n != SESSIONS},
    }
    for word, captured in cases.items():
        with pytest.raises(ValueError, match=word):
            r.restore(captured, 99, 0)
        with pytest.raises(ValueError, match=word):
            r.check_sections(captured)
    with pytest.raises(ValueError, match="repeats"):
        r.check_sections([*good, "kv"])
    streamed = iter([(SESSIONS, iter([good[SESSIONS]])), ("ghost", iter([b""]))])
    with pytest.raises(ValueError, match="ghost"):
        r.restore_sections(streamed, 99, 0)  # a stream: checked as the names come
    assert (r.state_hash(), r.applied_index) == before


def test_bad_sessions_or_a_bad_first_plugin_section_change_nothing() -> None:
    good = seeded().capture()
    r = make()
    r.apply(Entry(1, 1, data=r.command_data(5, "c", 1, {"cmd": "add", "by": 7})))
    before = (r.state_hash(), r.applied_index)
    for name, junk in ((SESSIONS, b"\x93junk"), ("counter", b"not a number")):
        with pytest.raises(ValueError):
            r.restore({**good, name: junk}, 99, 0)
        assert (r.state_hash(), r.applied_index) == before


def test_restore_accepts_the_chunks_cut_anywhere() -> None:
    src = seeded()
    with src.start_capture() as c:
        sections = [(n, list(chunks)) for n, chunks in c.sections()]
    r = make()

    def threes(chunks: list[bytes]) -> Iterator[bytes]:
        data = b"".join(chunks)
        return iter([data[i : i + 3] for i in range(0, len(data), 3)])

    r.restore_sections(((n, threes(chunks)) for n, chunks in sections), 50, src.time_ms)
    assert r.state_hash() == src.state_hash()


def test_the_state_hash_follows_the_state() -> None:
    assert seeded().state_hash() == seeded().state_hash()
    a, b = seeded(), seeded()
    b.apply(Entry(1, 51, data=b.command_data(99_999, "", 0, {"cmd": "note", "text": "x"})))
    assert a.state_hash() != b.state_hash()
    assert kv(a)._captures == kv(b)._captures == []


def test_a_plugin_must_implement_exactly_one_snapshot_pair() -> None:
    class Half:
        @hookimpl
        def zraft_snapshot(self) -> bytes:
            return b""

    class Both:
        zraft_snapshot = Half.zraft_snapshot
        zraft_restore = Counter.zraft_restore
        zraft_snapshot_stream = Journal.zraft_snapshot_stream
        zraft_restore_stream = Journal.zraft_restore_stream

    for plugin in (Half(), Both()):
        r = make(("odd", plugin))
        with pytest.raises(PluginError, match="odd.*exactly one snapshot pair"):
            r.section_names()
    assert snapshot_plugins(make().pm) == {"counter": False, "journal": True, "kv": True}
