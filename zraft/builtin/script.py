"""The built-in script payloads: ``[payload] leader`` and ``follower`` commands.

Each is a plugin registered like any other (``script-leader``,
``script-follower``) when its command is set. The command runs through
``PayloadContext.run``: in its own process group, with ``ZRAFT_NODE_ID``,
``ZRAFT_ROLE``, ``ZRAFT_TERM`` and ``ZRAFT_LEADER_ID`` in its environment,
under a keeper that sends SIGTERM and then SIGKILL when the role (for the
leader: the fence) ends. A command that exits by itself is not restarted
until the role is lost and regained; its exit code is logged and counted
(``zraft_payload_process_exits_total``). For a command that must be kept
alive, see the singleton example in ``plugins/``.
"""

from __future__ import annotations

from typing import Any

from zraft import __version__
from zraft.hookspecs import hookimpl


class LeaderScript:
    """Runs ``payload.leader`` on the fenced leader."""

    __version__ = __version__

    def __init__(self, argv: tuple[str, ...]) -> None:
        self.argv = list(argv)

    @hookimpl
    def zraft_became_leader(self, ctx: Any) -> None:
        """Run the leader command until it exits or the fence ends."""
        ctx.log.info("term %d: starting leader command %s", ctx.term, self.argv)
        ctx.run(self.argv)


class FollowerScript:
    """Runs ``payload.follower`` on every follower."""

    __version__ = __version__

    def __init__(self, argv: tuple[str, ...]) -> None:
        self.argv = list(argv)

    @hookimpl
    def zraft_became_follower(self, ctx: Any) -> None:
        """Run the follower command until it exits or this node stops following."""
        ctx.log.info("following %s: starting follower command %s", ctx.leader_id, self.argv)
        ctx.run(self.argv)
