"""InstallSnapshot streaming (Raft §7): the sender and receiver, alone and over a bad link.

Nothing sleeps: every call gets ``now``. The link is in memory and seeded.
"""

from __future__ import annotations

import errno
import os
import random
from dataclasses import replace
from pathlib import Path

import pytest

from zraft.snapshot.format import SnapshotHeader, write_file
from zraft.snapshot.store import SnapshotStore
from zraft.snapshot.transfer import DROP_REASONS, INCOMING, RECEIVED, Received, Receiver, Sender
from zraft.transport.codec import decode, encode
from zraft.transport.wire import SnapAck, SnapChunk, SnapStatus

ENSEMBLE = "ens-a"
INDEX, SNAP_TERM, TERM = 100, 4, 5
CHUNK = 4096


def header(**changes: object) -> SnapshotHeader:
    base = SnapshotHeader(ENSEMBLE, INDEX, SNAP_TERM, ("n1", "n2", "n3"), 1_000, "n1", 2_000)
    return replace(base, **changes)


def make_file(path: Path, size_hint: int = 40_000, seed: int = 0, **changes: object) -> bytes:
    """Write a real snapshot file of about ``size_hint`` bytes; return its bytes."""
    rng = random.Random(seed)
    sections = [
        ("@sessions", [rng.randbytes(300)]),
        ("kv", [rng.randbytes(1000) for _ in range(size_hint // 1000)]),
    ]
    write_file(path, header(**changes), sections)
    return path.read_bytes()


@pytest.fixture
def src(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "leader" / "src.snap"
    path.parent.mkdir()
    return path, make_file(path)


def partials(store: SnapshotStore) -> list[str]:
    return sorted(p.name for p in store.dir.glob("*.partial"))


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "follower")


def sender(src: tuple[Path, bytes], peer: str = "n2", term: int = TERM, **kw: object) -> Sender:
    path, data = src
    kw.setdefault("chunk_bytes", CHUNK)
    return Sender(peer, path, INDEX, SNAP_TERM, term, len(data), **kw)  # type: ignore[arg-type]


def run_clean(tx: Sender, rx: Receiver, leader: str = "n1", now: float = 0.0) -> list[Received]:
    """Drive a perfect link until the sender finishes; return what arrived."""
    got: list[Received] = []
    for _ in range(10_000):
        if tx.finished:
            break
        for chunk in tx.pump(now):
            ack, rec = rx.on_chunk(leader, chunk, now)
            if rec is not None:
                got.append(rec)
            if ack is not None:
                tx.on_ack(ack, now)
        now += 0.01
    return got


# ---------------------------------------------------------------- a clean link


def test_a_clean_transfer_delivers_the_same_verified_file(src, store) -> None:
    tx, rx = sender(src), Receiver(store, ENSEMBLE)
    (got,) = run_clean(tx, rx)
    assert tx.done and tx.failed is None and tx.acked == len(src[1])
    assert got.path == got.info.path == store.temp_path(RECEIVED)
    assert got.path.read_bytes() == src[1] and not store.temp_path(INCOMING).exists()
    assert (got.leader, got.term) == ("n1", TERM)
    assert got.info.header == header() and got.info.size == len(src[1])
    assert tx.bytes_sent == rx.bytes_received == len(src[1]) and tx.resends == 0
    assert rx.in_progress is None and not rx.drops
    final = store.publish(got.path, got.info.header)
    assert final.read_bytes() == src[1]


def test_chunks_survive_the_codec(src, store) -> None:
    tx, rx = sender(src), Receiver(store, ENSEMBLE)
    now, got = 0.0, []
    while not tx.finished:
        for chunk in tx.pump(now):
            ack, rec = rx.on_chunk("n1", decode(encode(chunk)), now)  # type: ignore[arg-type]
            got += [rec] if rec else []
            tx.on_ack(decode(encode(ack)), now)  # type: ignore[arg-type]
        now += 0.01
    assert tx.done and got[0].path.read_bytes() == src[1]


def test_sender_reads_chunk_by_chunk_and_keeps_the_window(src, store, monkeypatch) -> None:
    reads: list[int] = []
    real_pread = os.pread

    def pread(fd: int, n: int, offset: int) -> bytes:
        reads.append(n)
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)
    tx, rx = sender(src, window=3), Receiver(store, ENSEMBLE)
    first = tx.pump(0.0)
    assert [c.offset for c in first] == [0, CHUNK, 2 * CHUNK] and tx.in_flight == 3
    assert tx.pump(0.1) == []  # the window is full until an ack
    tx.on_ack(rx.on_chunk("n1", first[0], 0.1)[0], 0.1)  # type: ignore[arg-type]
    assert [c.offset for c in tx.pump(0.2)] == [3 * CHUNK]
    assert max(reads) == CHUNK and sum(reads) == 4 * CHUNK


def test_a_gap_makes_the_sender_go_back_once(src, store) -> None:
    tx, rx = sender(src, window=4), Receiver(store, ENSEMBLE)
    c0, _lost, c2, c3 = tx.pump(0.0)
    acks = [rx.on_chunk("n1", c, 0.0)[0] for c in (c0, c2, c3)]
    # Go-back-N: the receiver drops what follows a gap and names the next byte it expects.
    assert [a.offset for a in acks] == [CHUNK, CHUNK, CHUNK]  # type: ignore[union-attr]
    for ack in acks:
        tx.on_ack(ack, 0.0)  # type: ignore[arg-type]
    assert tx.acked == CHUNK and tx.resends == 1  # one rewind, not one per duplicate
    assert [c.offset for c in tx.pump(0.0)] == [CHUNK * i for i in range(1, 5)]


def test_the_sender_resends_after_silence_and_fails_without_progress(src) -> None:
    tx = sender(src, window=2, resend_s=1.0, ack_timeout_s=3.0)
    assert len(tx.pump(10.0)) == 2
    assert tx.pump(10.9) == []
    assert [c.offset for c in tx.pump(11.0)] == [0, CHUNK] and tx.resends == 1
    assert tx.pump(12.5) and tx.resends == 2
    assert tx.pump(13.0) == [] and tx.failed is not None and "no progress" in tx.failed
    assert tx.pump(99.0) == []


def test_the_sender_ignores_foreign_stale_and_nonsense_acks(src, store) -> None:
    tx, rx = sender(src), Receiver(store, ENSEMBLE)
    chunks = tx.pump(0.0)
    ack = rx.on_chunk("n1", chunks[0], 0.0)[0]
    assert ack is not None
    for other in (replace(ack, term=TERM + 1), replace(ack, index=INDEX + 1),
                  replace(ack, snap_term=SNAP_TERM - 1), replace(ack, offset=len(src[1]) + 1),
                  replace(ack, term=TERM + 1, status=SnapStatus.ABORT)):  # fmt: skip
        tx.on_ack(other, 0.0)
    assert tx.acked == 0 and not tx.finished
    tx.on_ack(ack, 0.0)
    tx.on_ack(replace(ack, offset=0), 0.0)  # older than what is acknowledged: stale
    assert tx.acked == CHUNK and tx.resends == 0


def test_the_sender_reports_a_file_it_cannot_read(src, tmp_path) -> None:
    missing = Sender("n2", tmp_path / "nope.snap", INDEX, SNAP_TERM, TERM, 10)
    assert missing.pump(0.0) == [] and "cannot read" in (missing.failed or "")
    short = Sender("n2", src[0], INDEX, SNAP_TERM, TERM, len(src[1]) + 1, chunk_bytes=CHUNK)
    while chunks := short.pump(0.0):
        short.on_ack(SnapAck(TERM, INDEX, SNAP_TERM, chunks[-1].offset + len(chunks[-1].data)), 0)
    assert short.failed is not None and "ends before" in short.failed
    with pytest.raises(ValueError):
        Sender("n2", src[0], INDEX, SNAP_TERM, TERM, 0)


def test_an_abort_fails_the_sender(src) -> None:
    tx = sender(src)
    tx.pump(0.0)
    tx.on_ack(SnapAck(TERM, INDEX, SNAP_TERM, 0, SnapStatus.ABORT), 0.0)
    assert tx.failed is not None and "aborted" in tx.failed and tx.pump(0.1) == []


# ---------------------------------------------------------------- the receiver


def test_a_finished_transfer_answers_duplicates_without_a_second_file(src, store) -> None:
    tx, rx = sender(src), Receiver(store, ENSEMBLE)
    chunks = []
    while not tx.finished:
        batch = tx.pump(0.0)
        chunks += batch
        for c in batch:
            tx.on_ack(rx.on_chunk("n1", c, 0.0)[0], 0.0)  # type: ignore[arg-type]
    for c in (chunks[-1], chunks[0], chunks[3]):
        assert rx.on_chunk("n1", c, 1.0) == (SnapAck(TERM, INDEX, SNAP_TERM, len(src[1])), None)
    again = sender(src)  # the leader retries the same snapshot: done at the first answer
    ack, rec = rx.on_chunk("n1", again.pump(2.0)[0], 2.0)
    again.on_ack(ack, 2.0)  # type: ignore[arg-type]
    assert again.done and rec is None and rx.in_progress is None


def test_a_newer_leader_replaces_the_transfer_in_progress(src, store, tmp_path) -> None:
    # Raft §5.1: the leader of a newer term wins; the old one's stragglers are turned away.
    old, rx = sender(src, term=5), Receiver(store, ENSEMBLE)
    early = old.pump(0.0)
    for c in early[:2]:
        old.on_ack(rx.on_chunk("n1", c, 0.0)[0], 0.0)  # type: ignore[arg-type]
    assert rx.in_progress == ("n1", INDEX, 2 * CHUNK, len(src[1]))
    new_path = tmp_path / "leader" / "new.snap"
    new_data = make_file(new_path, size_hint=30_000, seed=7, index=120, term=6)
    new = Sender("n3", new_path, 120, 6, 6, len(new_data), chunk_bytes=CHUNK)
    got: list[Received] = []
    now = 0.1
    while not new.finished:
        for c in new.pump(now):
            ack, rec = rx.on_chunk("n3", c, now)
            got += [rec] if rec else []
            new.on_ack(ack, now)  # type: ignore[arg-type]
            # the old leader keeps going, interleaved, until it hears ABORT
            for oc in old.pump(now):
                old.on_ack(rx.on_chunk("n1", oc, now)[0], now)  # type: ignore[arg-type]
        now += 0.01
    assert new.done and old.failed is not None and "aborted" in old.failed
    (rec,) = got
    assert (rec.leader, rec.term, rec.info.header.index) == ("n3", 6, 120)
    assert rec.path.read_bytes() == new_data
    assert rx.drops["replaced"] == 1 and rx.drops["stale"] >= 1


def test_a_newer_snapshot_from_the_same_leader_replaces_an_older_one(src, store) -> None:
    rx = Receiver(store, ENSEMBLE)
    first = sender(src).pump(0.0)
    rx.on_chunk("n1", first[0], 0.0)
    newer = replace(first[0], index=INDEX + 50)
    assert rx.on_chunk("n1", newer, 0.1)[0] == SnapAck(TERM, INDEX + 50, SNAP_TERM, CHUNK)
    assert rx.drops["replaced"] == 1
    # the older snapshot is stale now, whatever its offset
    for c in first:
        assert rx.on_chunk("n1", c, 0.2)[0].status is SnapStatus.ABORT  # type: ignore[union-attr]
    assert rx.in_progress == ("n1", INDEX + 50, CHUNK, len(src[1]))


@pytest.mark.parametrize("which", ["first", "middle", "last"])
def test_a_flipped_byte_in_transit_is_caught_by_verify(src, store, which: str) -> None:
    # The chunks carry no checksum: the file's CRCs and END sha256 must catch it.
    tx, rx = sender(src), Receiver(store, ENSEMBLE)
    n_chunks = -(-len(src[1]) // CHUNK)
    target = {"first": 0, "middle": n_chunks // 2, "last": n_chunks - 1}[which]
    got, acks = [], []
    while not tx.finished:
        for c in tx.pump(0.0):
            if c.offset == target * CHUNK:
                data = bytearray(c.data)
                data[len(data) // 2] ^= 0x10
                c = replace(c, data=bytes(data))
            ack, rec = rx.on_chunk("n1", c, 0.0)
            got += [rec] if rec else []
            acks.append(ack)
            tx.on_ack(ack, 0.0)  # type: ignore[arg-type]
    assert not got and tx.failed is not None
    assert acks[-1].status is SnapStatus.ABORT and rx.drops["bad_file"] == 1
    assert not store.temp_path(INCOMING).exists() and rx.in_progress is None
    assert "offset" in (rx.last_error or "")


@pytest.mark.parametrize(
    ("changes", "chunk_index", "chunk_snap_term"),
    [({"ensemble": "ens-b"}, INDEX, SNAP_TERM), ({}, INDEX + 1, SNAP_TERM), ({}, INDEX, 3)],
    ids=["other ensemble", "other index", "other term"],
)
def test_a_file_that_is_not_the_snapshot_named_is_refused(
    tmp_path, store, changes: dict, chunk_index: int, chunk_snap_term: int
) -> None:
    path = tmp_path / "other.snap"
    data = make_file(path, **changes)
    tx = Sender("n2", path, chunk_index, chunk_snap_term, TERM, len(data), chunk_bytes=CHUNK)
    rx = Receiver(store, ENSEMBLE)
    assert run_clean(tx, rx) == []
    assert tx.failed is not None and rx.drops == {"mismatch": 1}
    assert not partials(store)


def fail_after(monkeypatch: pytest.MonkeyPatch, name: str, calls: int, code: int) -> list[int]:
    """Make ``os.<name>`` raise OSError(code) after ``calls`` successful calls."""
    real, count = getattr(os, name), [0]

    def fake(*args: object) -> object:
        count[0] += 1
        if count[0] > calls:
            raise OSError(code, os.strerror(code))
        return real(*args)

    monkeypatch.setattr(os, name, fake)
    return count


@pytest.mark.parametrize(("name", "calls"), [("pwrite", 0), ("pwrite", 3), ("fsync", 0)])
def test_a_full_disk_aborts_and_deletes_the_partial(src, store, monkeypatch, name, calls):
    tx, rx = sender(src), Receiver(store, ENSEMBLE)
    fail_after(monkeypatch, name, calls, errno.ENOSPC)
    assert run_clean(tx, rx) == []  # never raises
    assert tx.failed is not None and rx.drops == {"disk": 1}
    assert "No space left" in (rx.last_error or "")
    assert not partials(store)
    monkeypatch.undo()  # space was freed: the leader's retry starts over and succeeds
    retry = sender(src)
    (got,) = run_clean(retry, rx, now=5.0)
    assert retry.done and got.path.read_bytes() == src[1]


def test_an_unopenable_partial_aborts(src, store, monkeypatch) -> None:
    tx, rx = sender(src), Receiver(store, ENSEMBLE)
    fail_after(monkeypatch, "open", 1, errno.EACCES)  # the sender's open succeeds
    assert run_clean(tx, rx) == [] and rx.drops == {"disk": 1}


def test_expire_and_abort_drop_the_partial(src, store) -> None:
    rx = Receiver(store, ENSEMBLE)
    chunks = sender(src).pump(0.0)
    rx.on_chunk("n1", chunks[0], 0.0)
    partial = store.temp_path(INCOMING)
    assert partial.exists() and not rx.expire(9.9, idle_s=10.0)
    assert rx.expire(10.0, idle_s=10.0) and not partial.exists() and rx.drops["expired"] == 1
    assert not rx.expire(99.0, idle_s=10.0) and rx.abort("stopping") is None
    rx.on_chunk("n1", chunks[0], 20.0)  # a retry from offset 0 starts again
    peer, ack = rx.abort("stepping down")  # type: ignore[misc]
    assert peer == "n1" and ack == SnapAck(TERM, INDEX, SNAP_TERM, 0, SnapStatus.ABORT)
    assert not partial.exists() and rx.drops["aborted"] == 1 and rx.last_error == "stepping down"
    # the rest of an aborted transfer is answered ABORT
    assert rx.on_chunk("n1", chunks[1], 30.0)[0].status is SnapStatus.ABORT  # type: ignore[union-attr]
    assert set(rx.drops) <= DROP_REASONS


def test_a_restarted_receiver_asks_for_the_start(src, store) -> None:
    chunks = sender(src).pump(0.0)
    rx = Receiver(store, ENSEMBLE)
    assert rx.on_chunk("n1", chunks[2], 0.0) == (SnapAck(TERM, INDEX, SNAP_TERM, 0), None)
    assert not store.temp_path(INCOMING).exists()  # nothing written before offset 0


def test_a_chunk_past_its_total_is_refused(store) -> None:
    rx = Receiver(store, ENSEMBLE)
    bad = SnapChunk(TERM, INDEX, SNAP_TERM, 0, 3, b"toolong", True)  # the codec forbids it
    ack, rec = rx.on_chunk("n1", bad, 0.0)
    assert ack.status is SnapStatus.ABORT and rec is None and rx.drops == {"bad_chunk": 1}  # type: ignore[union-attr]


# ---------------------------------------------------------------- a bad link, many seeds


class Link:
    """One direction of an in-memory link that loses, duplicates, reorders and corrupts."""

    def __init__(self, rng: random.Random, loss: float, dup: float, delay: float, flip: float):
        self.rng, self.loss, self.dup, self.delay, self.flip = rng, loss, dup, delay, flip
        self.queue: list = []

    def send(self, item: object) -> None:
        if self.rng.random() < self.loss:
            return
        copies = 2 if self.rng.random() < self.dup else 1
        for _ in range(copies):
            if type(item) is SnapChunk and item.data and self.rng.random() < self.flip:
                data = bytearray(item.data)
                data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)
                item = replace(item, data=bytes(data))
            self.queue.append(item)

    def deliver(self) -> list:
        """Return what arrives this round, in a random order; the rest is delayed."""
        out, kept = [], []
        for item in self.queue:
            (kept if self.rng.random() < self.delay else out).append(item)
        self.queue = kept
        self.rng.shuffle(out)
        return out


def run_lossy(seed: int, src: tuple[Path, bytes], store: SnapshotStore, flip: float = 0.0):
    rng = random.Random(seed)
    loss, dup, delay = rng.uniform(0, 0.3), rng.uniform(0, 0.2), rng.uniform(0, 0.5)
    down = Link(rng, loss, dup, delay, flip)
    up = Link(rng, loss, dup, delay, 0.0)
    tx = sender(src, window=rng.randint(1, 6), resend_s=0.5, ack_timeout_s=rng.choice([2.0, 30.0]))
    rx = Receiver(store, ENSEMBLE)
    published: list[bytes] = []
    now, quiet = 0.0, 0
    for _ in range(20_000):
        for c in tx.pump(now):
            down.send(c)
        for c in down.deliver():
            ack, rec = rx.on_chunk("n1", c, now)
            if rec is not None:  # what a node does: verify passed, publish it
                published.append(store.publish(rec.path, rec.info.header).read_bytes())
            if ack is not None:
                up.send(ack)
        for ack in up.deliver():
            tx.on_ack(ack, now)
        now += 0.05
        quiet = quiet + 1 if tx.finished else 0
        if quiet > 50 and not down.queue and not up.queue:
            break  # finished, and every straggler delivered or lost
    assert tx.finished, f"seed {seed}: never finished"
    return tx, rx, published


def test_a_bad_link_delivers_the_same_file_or_reports_failure(src, store) -> None:
    outcomes = {"done": 0, "failed": 0}
    for seed in range(150):
        tx, rx, published = run_lossy(seed, src, store)
        # Never a wrong file, never two; done means the follower holds it.
        assert all(data == src[1] for data in published), f"seed {seed}"
        assert len(published) <= 1 and (len(published) == 1 or not tx.done), f"seed {seed}"
        assert set(rx.drops) <= DROP_REASONS - {"bad_file", "mismatch", "disk"}, rx.drops
        outcomes["done" if tx.done else "failed"] += 1
        for _, _, path in store.files():
            path.unlink()
        rx.close()
    assert outcomes["done"] >= 120, outcomes


def test_a_corrupting_link_never_gets_a_wrong_file_accepted(src, store) -> None:
    outcomes = {"done": 0, "failed": 0, "bad_file": 0}
    for seed in range(100):
        tx, rx, published = run_lossy(seed, src, store, flip=0.02)
        assert all(data == src[1] for data in published), f"seed {seed}: a wrong file"
        assert len(published) <= 1 and (len(published) == 1 or not tx.done), f"seed {seed}"
        outcomes["done" if tx.done else "failed"] += 1
        outcomes["bad_file"] += rx.drops["bad_file"]
        for _, _, path in store.files():
            path.unlink()
        rx.close()
    assert outcomes["bad_file"] > 0 and outcomes["done"] > 0, outcomes


def test_a_new_sender_resumes_where_the_receiver_is(src, store) -> None:
    # The leader's first sender gave up (its answers were lost); its retry is
    # told the next byte expected and skips what the follower already holds.
    rx = Receiver(store, ENSEMBLE)
    for c in sender(src).pump(0.0)[:3]:
        rx.on_chunk("n1", c, 0.0)
    retry = sender(src, window=1)
    (got,) = run_clean(retry, rx, now=1.0)
    assert got.path.read_bytes() == src[1]
    assert retry.bytes_sent == CHUNK + len(src[1]) - 3 * CHUNK  # chunk 0, then from the 4th


def test_a_resumed_transfer_of_a_different_file_is_caught(src, store, tmp_path) -> None:
    # Same snapshot name and size, other bytes (taken again): the halves do not
    # match, END's sha256 says so, and the clean retry from offset 0 succeeds.
    other_path = tmp_path / "retaken.snap"
    other = make_file(other_path, seed=1)
    assert len(other) == len(src[1]) and other != src[1]
    rx = Receiver(store, ENSEMBLE)
    for c in sender(src).pump(0.0)[:3]:
        rx.on_chunk("n1", c, 0.0)
    mixed = sender((other_path, other))
    assert run_clean(mixed, rx, now=1.0) == []
    assert mixed.failed is not None and rx.drops == {"bad_file": 1}
    clean = sender((other_path, other))
    (got,) = run_clean(clean, rx, now=2.0)
    assert got.path.read_bytes() == other


def test_a_received_file_outlives_the_start_of_a_newer_transfer(src, store, tmp_path) -> None:
    rx = Receiver(store, ENSEMBLE)
    (got,) = run_clean(sender(src), rx)
    newer_path = tmp_path / "newer.snap"
    make_file(newer_path, seed=3, index=INDEX + 10)
    newer = Sender("n2", newer_path, INDEX + 10, SNAP_TERM, TERM, 9000, chunk_bytes=CHUNK)
    rx.on_chunk("n1", newer.pump(1.0)[0], 1.0)  # truncates INCOMING, not the received file
    assert partials(store) == ["incoming.partial", "received.partial"]
    assert got.path.read_bytes() == src[1]
    assert store.publish(got.path, got.info.header).read_bytes() == src[1]
