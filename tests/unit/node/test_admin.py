"""The node-local admin commands (zraft/node/admin.py) with a stand-in node: no sockets.

``Admin`` gets the node's reply function, view builder, replica and snapshots;
here they are recorders and a real ``SnapshotStore`` in a temporary directory.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.unit.node.test_loop import ask, replicate_a_write
from tests.unit.node.test_loop import follower as follower  # the fixture, shared
from zraft.api.routes import Reply, Request, Route
from zraft.core import Role
from zraft.node.admin import MAX_READ, Admin, AdminError, read_args
from zraft.snapshot.format import SnapshotHeader, SnapshotInfo, write_file
from zraft.snapshot.store import SnapshotStore, file_name

HEADER = SnapshotHeader("t", 7, 2, ("n1", "n2", "n3"), 1000, "n1", 1_700_000_000_000)


class FakeSnapshots:
    """What Admin uses of ``Snapshots``: ``store`` and ``take(now, then)``."""

    def __init__(self, store: SnapshotStore) -> None:
        self.store = store
        self.waiters: list[Callable[[SnapshotInfo | None, str | None], None]] = []

    def take(self, now: float, then: Callable[[SnapshotInfo | None, str | None], None]) -> None:
        self.waiters.append(then)

    def finish(self, info: SnapshotInfo | None, why: str | None) -> None:
        waiters, self.waiters = self.waiters, []
        for then in waiters:
            then(info, why)


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.replies: list[Reply] = []
        self.stopping = False
        self.store = SnapshotStore(tmp_path / "snap")
        self.snapshots = FakeSnapshots(self.store)
        view = SimpleNamespace(status=lambda: {"id": "n1", "snapshot_index": 7}, running=True)
        self.admin = Admin(
            self.replies.append,
            lambda now: SimpleNamespace(**vars(view), stopping=self.stopping),  # type: ignore[arg-type]
            SimpleNamespace(state_hash=lambda: "ab" * 32, applied_index=9),  # type: ignore[arg-type]
            self.snapshots,  # type: ignore[arg-type]
        )

    def ask(self, **command: Any) -> bool:
        return self.admin.answer(Route(), Request(command, id=5))

    def last(self) -> tuple[bool, Any, str]:
        o = self.replies[-1].outcome
        return o.ok, o.result, o.code

    def publish(self) -> SnapshotInfo:
        tmp = self.store.temp_path("t")
        info = write_file(tmp, HEADER, [("@sessions", [b"s" * 100]), ("kv", [b"k" * 3000])])
        final = self.store.publish(tmp, HEADER)
        return SnapshotInfo(final, HEADER, info.sections, info.size, info.sha256)


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_other_commands_are_left_to_the_shell(h: Harness) -> None:
    assert h.ask(cmd="get", key="a") is False
    assert h.replies == []


def test_ping_and_status_are_answered_with_the_request_id(h: Harness) -> None:
    assert h.ask(cmd="ping")
    assert h.last() == (True, "pong", "")
    assert h.replies[-1].route.rid == 5 and h.replies[-1].route.command == "ping"
    h.ask(cmd="status", hash=True)
    ok, result, _ = h.last()
    assert ok and result["snapshot_index"] == 7
    assert result["state_hash"] == "ab" * 32 and result["applied"] == 9


def test_snapshot_take_answers_when_the_snapshot_is_durable(h: Harness) -> None:
    h.ask(cmd="snapshot_take")
    assert h.replies == []  # held until the file is published
    info = h.publish()
    h.snapshots.finish(info, None)
    ok, result, _ = h.last()
    assert ok and result == {
        "index": 7,
        "term": 2,
        "size": info.size,
        "sha256": info.sha256,
        "name": file_name(7, 2),
    }


def test_snapshot_take_failure_and_stop_are_error_replies(h: Harness) -> None:
    h.ask(cmd="snapshot_take")
    h.snapshots.finish(None, "cannot write: ENOSPC")
    ok, _, code = h.last()
    assert not ok and code == "SNAPSHOT_FAILED" and "ENOSPC" in h.replies[-1].outcome.message
    h.ask(cmd="snapshot_take")
    h.stopping = True
    h.snapshots.finish(None, "node stopping")  # what Snapshots.close() does to its waiters
    assert h.last()[2] == "SHUTTING_DOWN"


def test_snapshot_take_on_a_stopping_node_is_answered_at_once(h: Harness) -> None:
    h.stopping = True
    h.ask(cmd="snapshot_take")
    assert h.last()[2] == "SHUTTING_DOWN" and h.snapshots.waiters == []


def test_snapshot_take_refuses_arguments(h: Harness) -> None:
    h.ask(cmd="snapshot_take", index=3)
    assert h.last()[2] == "BAD_REQUEST" and h.snapshots.waiters == []


def test_snapshot_read_returns_base64_pieces_of_a_published_file(h: Harness) -> None:
    info = h.publish()
    whole = info.path.read_bytes()
    h.ask(cmd="snapshot_read", name=info.path.name, offset=10, length=100)
    ok, result, _ = h.last()
    assert ok and result["size"] == len(whole) and result["offset"] == 10
    assert base64.b64decode(result["data"]) == whole[10:110]
    h.ask(cmd="snapshot_read", name=info.path.name, offset=len(whole) + 5)
    assert h.last()[1]["data"] == ""


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "../snap/" + file_name(7, 2), "/etc/passwd", "t.partial", "x.snap",
     file_name(8, 2), file_name(7, 2) + "/", "." ],
)  # fmt: skip
def test_snapshot_read_refuses_anything_but_a_published_snapshot_name(
    h: Harness, name: str
) -> None:
    h.publish()
    (h.store.dir / "t.partial").write_bytes(b"partial")
    h.ask(cmd="snapshot_read", name=name)
    assert h.last()[2] == "NO_SNAPSHOT"


@pytest.mark.parametrize(
    "command",
    [
        {"name": 3},
        {},
        {"name": "x", "offset": -1},
        {"name": "x", "offset": True},
        {"name": "x", "length": 0},
        {"name": "x", "length": MAX_READ + 1},
        {"name": "x", "length": 1.5},
        {"name": "x", "path": "/"},
    ],
)
def test_snapshot_read_arguments_are_checked(command: dict[str, Any]) -> None:
    with pytest.raises(AdminError) as err:
        read_args({"cmd": "snapshot_read", **command})
    assert err.value.code == "BAD_REQUEST"


def test_snapshot_read_length_defaults_to_the_limit() -> None:
    assert read_args({"cmd": "snapshot_read", "name": "a"}) == ("a", 0, MAX_READ)


# -- on a Node with the real Snapshots (a follower, as in tests/unit/node/test_loop.py) --


def test_a_nodes_snapshot_take_is_answered_once_the_file_is_published(follower) -> None:
    node, replies = follower
    replicate_a_write(node)  # entry 1 (the no-op) is committed and applied
    ask(node, {"cmd": "snapshot_take"})
    assert replies == [] and node.snapshots.taker is not None
    taker = node.snapshots.taker
    while taker.state == "running":
        node.snapshots.round(time.monotonic(), Role.FOLLOWER, 1)  # encodes a few chunks
        if taker.encoded:
            taker.join(5.0)  # bounded: the writer fsyncs and publishes
    node.snapshots.round(time.monotonic(), Role.FOLLOWER, 1)
    assert [(r["ok"], r["result"]["index"], r["result"]["name"]) for r in replies] == [
        (True, 1, file_name(1, 1))
    ]
    assert (node.store.dir / file_name(1, 1)).exists()


def test_a_nodes_pending_snapshot_take_is_answered_when_it_stops(follower) -> None:
    node, replies = follower
    replicate_a_write(node)
    ask(node, {"cmd": "snapshot_take"})
    assert replies == []
    node._shutdown()  # the loop ended before the snapshot was written
    assert [r["error"] for r in replies] == ["SHUTTING_DOWN"]
