"""The node-local admin commands: answered by this node itself, never through the log.

``status``, ``ping``, ``snapshot_take`` and ``snapshot_read`` (README "Client
protocol") tell about or act on the node that receives them, so a follower
answers them too and nothing is forwarded to the leader. Driver thread only.

* ``status`` (``"hash": true`` adds the state hash and the applied index);
* ``ping`` answers ``"pong"``;
* ``snapshot_take`` asks ``Snapshots`` for a snapshot of the applied state
  now and answers once it is durable (its index, term, size, sha256 and file
  name), with ``SNAPSHOT_FAILED`` if it cannot be written, or
  ``SHUTTING_DOWN`` if the node stops first: a held request is always
  answered, because ``Snapshots`` answers every waiter when the snapshot is
  written, fails, or is aborted by the stop;
* ``snapshot_read`` returns ``length`` bytes (at most ``MAX_READ``) at
  ``offset`` of one of this node's published snapshot files, in base64. The
  name must be one that ``SnapshotStore.files`` lists (``<16 hex>-<16 hex>.snap``
  in the node's snapshot directory), so no other file can be read.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

from zraft.api import codes
from zraft.api.routes import Reply, Request, Route
from zraft.node.snapshots import Snapshots
from zraft.replica import Replica
from zraft.snapshot.format import SnapshotInfo
from zraft.statemachine import Outcome
from zraft.storage import StorageError
from zraft.view import NodeView

COMMANDS = frozenset({"status", "ping", "snapshot_take", "snapshot_read"})
MAX_READ = 1 << 20  # bytes per snapshot_read: a reply of about 1.4 MB of base64
_READ_ARGS = frozenset({"cmd", "name", "offset", "length"})


class AdminError(Exception):
    """A node-local command that cannot be served: ``code`` from ``zraft.api.codes``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def describe(info: SnapshotInfo) -> dict[str, Any]:
    """Return what ``snapshot_take`` answers about a durable snapshot file."""
    h = info.header
    return {
        "index": h.index,
        "term": h.term,
        "size": info.size,
        "sha256": info.sha256,
        "name": info.path.name,
    }


def read_args(command: dict[str, Any]) -> tuple[str, int, int]:
    """Check ``snapshot_read``'s arguments; return ``(name, offset, length)``.

    ``length`` defaults to ``MAX_READ``. Raises AdminError(BAD_REQUEST).
    """
    unknown = sorted(set(command) - _READ_ARGS)
    if unknown:
        raise AdminError(codes.BAD_REQUEST, f"snapshot_read: unknown argument {unknown[0]!r}")
    name = command.get("name")
    if not isinstance(name, str) or not name:
        raise AdminError(codes.BAD_REQUEST, 'snapshot_read needs "name": a snapshot file name')
    offset = command.get("offset", 0)
    length = command.get("length", MAX_READ)
    for arg, value, low in (("offset", offset, 0), ("length", length, 1)):
        if type(value) is not int or not low <= value < 2**63:
            raise AdminError(codes.BAD_REQUEST, f'snapshot_read: "{arg}" must be an int >= {low}')
    if length > MAX_READ:
        raise AdminError(codes.BAD_REQUEST, f'snapshot_read: "length" is over {MAX_READ}')
    return name, offset, length


class Admin:
    """Answers the node-local commands of one node (module docstring).

    ``reply`` sends an answer to its route; ``view(now)`` builds a fresh
    ``NodeView``; ``replica`` gives the state hash; ``snapshots`` takes
    snapshots and owns the snapshot directory.
    """

    def __init__(
        self,
        reply: Callable[[Reply], None],
        view: Callable[[float], NodeView],
        replica: Replica,
        snapshots: Snapshots,
    ) -> None:
        self._reply, self._view = reply, view
        self.replica, self.snapshots = replica, snapshots

    def answer(self, route: Route, req: Request) -> bool:
        """Answer ``req`` (now, or once a snapshot is durable) if it is a node-local
        command; return False, answering nothing, when it is not one."""
        cmd = req.command["cmd"]
        if cmd not in COMMANDS:
            return False
        route.rid, route.command = req.id, cmd
        try:
            if cmd == "ping":
                self._send(route, Outcome.success("pong"))
            elif cmd == "status":
                self._send(route, Outcome.success(self._status(req.command)))
            elif cmd == "snapshot_read":
                self._send(route, Outcome.success(self._read(req.command)))
            else:
                self._take(route, req.command)
        except AdminError as exc:
            self._send(route, Outcome.error(exc.code, exc.message))
        return True

    def _send(self, route: Route, outcome: Outcome) -> None:
        self._reply(Reply(route, outcome))

    def _status(self, command: dict[str, Any]) -> dict[str, Any]:
        result = self._view(time.monotonic()).status()
        if command.get("hash") is True:
            result["state_hash"] = self.replica.state_hash()
            result["applied"] = self.replica.applied_index
        return result

    def _stopping(self, or_stopped: bool = False) -> bool:
        view = self._view(time.monotonic())
        return view.stopping or (or_stopped and not view.running)

    def _take(self, route: Route, command: dict[str, Any]) -> None:
        if len(command) > 1:
            unknown = sorted(k for k in command if k != "cmd")[0]
            raise AdminError(codes.BAD_REQUEST, f"snapshot_take: unknown argument {unknown!r}")
        if self._stopping():
            raise AdminError(codes.SHUTTING_DOWN, "the node is stopping; ask another node")

        def then(info: SnapshotInfo | None, why: str | None) -> None:
            if info is not None:
                self._send(route, Outcome.success(describe(info)))
            elif self._stopping(or_stopped=True):  # a stop, or the loop ended (fatal error)
                msg = f"the node stopped before the snapshot was written ({why})"
                self._send(route, Outcome.error(codes.SHUTTING_DOWN, msg))
            else:
                msg = f"the snapshot was not written: {why}"
                self._send(route, Outcome.error(codes.SNAPSHOT_FAILED, msg))

        self.snapshots.take(time.monotonic(), then)

    def _read(self, command: dict[str, Any]) -> dict[str, Any]:
        name, offset, length = read_args(command)
        try:
            published = {path.name: path for _, _, path in self.snapshots.store.files()}
        except StorageError as exc:
            raise AdminError(codes.SNAPSHOT_FAILED, str(exc)) from None
        path = published.get(name)  # only a listed name: never a path of the caller's
        if path is None:
            raise AdminError(codes.NO_SNAPSHOT, f"this node has no snapshot file {name!r}")
        try:
            with open(path, "rb") as f:
                size = f.seek(0, 2)
                f.seek(min(offset, size))
                data = f.read(length)
        except FileNotFoundError:
            raise AdminError(codes.NO_SNAPSHOT, f"snapshot file {name!r} was pruned") from None
        except OSError as exc:
            raise AdminError(codes.SNAPSHOT_FAILED, f"cannot read {path}: {exc}") from None
        return {
            "name": name,
            "offset": offset,
            "size": size,
            "data": base64.b64encode(data).decode("ascii"),
        }
