"""SnapshotStore: atomic publish, the newest KEEP kept, failures leave older snapshots intact."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from zraft.snapshot import store as store_mod
from zraft.snapshot.format import SnapshotHeader, read_sections, verify, write_file
from zraft.snapshot.store import KEEP, SnapshotStore, file_name
from zraft.storage import StorageError


def header(index: int, term: int = 1) -> SnapshotHeader:
    return SnapshotHeader("ens-1", index, term, ("n1", "n2", "n3"), index * 10, "n1", 0)


def state(index: int) -> bytes:
    return f"state@{index}".encode() * 10


def written(store: SnapshotStore, index: int, term: int = 1, tag: str = "taker") -> Path:
    """A complete snapshot file for ``index`` in the store's temp path ``tag``."""
    tmp = store.temp_path(tag)
    write_file(tmp, header(index, term), [("kv", [state(index)])])
    return tmp


def published(store: SnapshotStore, index: int, term: int = 1) -> Path:
    return store.publish(written(store, index, term), header(index, term))


def placed(store: SnapshotStore, index: int, term: int = 1) -> Path:
    """A snapshot file put under its final name without publish (no pruning)."""
    path = store.dir / file_name(index, term)
    write_file(path, header(index, term), [("kv", [state(index)])])
    return path


def indexes(store: SnapshotStore) -> list[int]:
    return [index for index, _, _ in store.files()]


def intact(path: Path, index: int) -> None:
    info = verify(path)
    assert info.header == header(index, info.header.term)


def test_a_new_store_creates_its_directory(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "data" / "snap")
    assert store.dir.is_dir()
    assert store.files() == [] and store.newest() is None
    assert store.remove_partials() == 0
    store.prune()
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StorageError):
        SnapshotStore(tmp_path / "file" / "snap")


def test_file_names_sort_by_index_then_term() -> None:
    assert file_name(0x2A, 3) == "000000000000002a-0000000000000003.snap"
    assert file_name(2**63 - 1, 0) == "7fffffffffffffff-0000000000000000.snap"
    names = [file_name(i, t) for i, t in [(16, 1), (2, 5), (16, 0), (255, 1), (256, 1)]]
    assert sorted(names) == [
        file_name(i, t) for i, t in [(2, 5), (16, 0), (16, 1), (255, 1), (256, 1)]
    ]


def test_files_lists_snapshots_oldest_first_and_ignores_the_rest(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    for index, term in [(16, 1), (2, 5), (16, 0)]:
        (tmp_path / file_name(index, term)).write_bytes(b"")
    for other in [
        "incoming.partial",
        "taker.partial",
        "x.snap",
        "000000000000002A-0000000000000001.snap",
        file_name(3, 1) + ".tmp",
        file_name(4, 1)[1:],
        "notes.txt",
    ]:
        (tmp_path / other).write_bytes(b"")
    assert store.files() == [
        (2, 5, tmp_path / file_name(2, 5)),
        (16, 0, tmp_path / file_name(16, 0)),
        (16, 1, tmp_path / file_name(16, 1)),
    ]
    assert store.newest() == (16, 1, tmp_path / file_name(16, 1))


def test_temp_path_takes_a_plain_tag(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    assert store.temp_path("incoming") == tmp_path / "incoming.partial"
    assert store.temp_path("take-42") == tmp_path / "take-42.partial"
    for bad in ("", "Incoming", "a/b", "../x", "a.b", "a b", "é"):
        with pytest.raises(ValueError):
            store.temp_path(bad)


def test_publish_is_atomic(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    tmp = written(store, 42, 3)
    assert os.listdir(tmp_path) == ["taker.partial"]
    final = store.publish(tmp, header(42, 3))
    assert final == tmp_path / "000000000000002a-0000000000000003.snap"
    assert not tmp.exists() and final.is_file()
    assert os.listdir(tmp_path) == [final.name]
    assert store.files() == [(42, 3, final)] and store.newest() == (42, 3, final)
    intact(final, 42)
    assert [(n, b"".join(c)) for n, c in read_sections(final)] == [("kv", state(42))]


def test_publish_keeps_the_newest_keep(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    assert KEEP == 2
    kept = []
    for index in (10, 20, 30, 40):
        published(store, index)
        kept.append(indexes(store))
    assert kept == [[10], [10, 20], [20, 30], [30, 40]]
    assert sorted(os.listdir(tmp_path)) == [file_name(30, 1), file_name(40, 1)]
    for index, _, path in store.files():
        intact(path, index)


def test_publish_never_prunes_the_snapshot_it_published(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    published(store, 20)
    published(store, 30)
    published(store, 10)  # older than both: kept all the same
    assert indexes(store) == [10, 20, 30]
    published(store, 40)
    assert indexes(store) == [30, 40]


def test_publishing_the_same_snapshot_again_replaces_it(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    first = published(store, 7)
    again = published(store, 7)
    assert first == again and os.listdir(tmp_path) == [first.name]
    intact(again, 7)


def test_publish_takes_only_files_in_its_directory(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snap")
    outside = tmp_path / "elsewhere.partial"
    write_file(outside, header(5), [])
    with pytest.raises(ValueError):
        store.publish(outside, header(5))
    assert outside.exists() and store.files() == []


def enospc(*args: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("broken", ["os.replace", "os.fsync"])
def test_a_failing_publish_leaves_the_older_snapshots_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    store = SnapshotStore(tmp_path)
    older = [published(store, 10), published(store, 20)]
    before = {p.name: p.read_bytes() for p in older}
    tmp = written(store, 30)
    monkeypatch.setattr(store_mod.os, broken.split(".")[1], enospc)
    with pytest.raises(StorageError, match="No space left"):
        store.publish(tmp, header(30))
    monkeypatch.undo()
    assert not (tmp_path / file_name(30, 1)).exists()
    assert not tmp.exists()  # removed, freeing the space
    assert sorted(os.listdir(tmp_path)) == sorted(before)
    assert {p.name: p.read_bytes() for p in older} == before
    assert indexes(store) == [10, 20]


def test_a_failing_directory_fsync_raises_before_pruning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SnapshotStore(tmp_path)
    older = [published(store, 10), published(store, 20)]
    tmp = written(store, 30)
    real_fsync = os.fsync

    def fsync_files_only(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            enospc()
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_files_only)
    with pytest.raises(StorageError):
        store.publish(tmp, header(30))
    monkeypatch.undo()
    # The rename happened but is not known to be durable: nothing older is deleted.
    assert indexes(store) == [10, 20, 30]
    for index, path in zip((10, 20), older, strict=True):
        intact(path, index)


def test_remove_partials(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    published(store, 10)
    written(store, 20, tag="taker")
    written(store, 30, tag="incoming")
    (tmp_path / "x-1.partial").write_bytes(b"half a snapshot")
    (tmp_path / "notes.txt").write_bytes(b"")
    assert store.remove_partials() == 3
    assert sorted(os.listdir(tmp_path)) == sorted([file_name(10, 1), "notes.txt"])
    assert store.remove_partials() == 0
    assert indexes(store) == [10]


def test_prune(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    for index in (1, 2, 3, 4, 5):
        placed(store, index)
    store.temp_path("incoming").write_bytes(b"partial")
    store.prune(keep=4)
    assert indexes(store) == [2, 3, 4, 5]
    store.prune()
    assert indexes(store) == [4, 5]
    store.prune(keep=1)
    assert indexes(store) == [5]
    store.prune(keep=3)
    assert indexes(store) == [5]
    with pytest.raises(ValueError):
        store.prune(keep=0)
    assert store.temp_path("incoming").exists()  # pruning leaves partials alone
    intact(store.files()[0][2], 5)


def test_a_failing_unlink_is_a_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SnapshotStore(tmp_path)
    for index in (1, 2, 3):
        placed(store, index)

    def broken_unlink(self: Path, missing_ok: bool = False) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Path, "unlink", broken_unlink)
    with pytest.raises(StorageError, match="Input/output error"):
        store.prune()
    monkeypatch.undo()
    assert indexes(store) == [1, 2, 3]


def test_a_failing_listing_is_a_storage_error(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snap")
    store.dir.rmdir()
    for call in (store.files, store.newest, store.remove_partials, store.prune):
        with pytest.raises(StorageError):
            call()
