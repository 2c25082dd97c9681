"""Keep one command running on the zraft leader, restarting it when it exits (a payload plugin).

zraft's built-in ``[payload] leader`` command runs once per leadership: when
it exits it stays down until another node leads. This plugin restarts it,
waiting ``restart_delay_s`` and doubling the wait after each quick exit, up to
``max_restart_delay_s``. A run that lasted at least ``max_restart_delay_s``
counts as healthy and resets the wait.

The command runs through ``ctx.run``: a separate keeper process kills it when
the leader's lease runs out, even if the node is frozen or killed, so at most
one node runs it at any time.
"""

from __future__ import annotations

import time
from typing import Any

from zraft.hookspecs import hookimpl
from zraft.payload import PayloadContext

DELAYS = {"restart_delay_s": 1.0, "max_restart_delay_s": 30.0}  # name -> default


class Singleton:
    """The plugin: one instance per node, registered under the entry point ``singleton``."""

    def __init__(self) -> None:
        self.command: list[str] = []
        self.restart_delay_s = DELAYS["restart_delay_s"]
        self.max_restart_delay_s = DELAYS["max_restart_delay_s"]

    @hookimpl
    def zraft_configure(self, settings: dict[str, Any], node_id: str) -> None:
        """Check ``[plugins.settings.singleton]``: ``command`` (argv list) and the delays."""
        unknown = sorted(set(settings) - {"command", *DELAYS})
        if unknown:
            raise ValueError(f"unknown setting(s) {unknown}; known: command, {', '.join(DELAYS)}")
        command = settings.get("command")
        if (
            not isinstance(command, list)
            or not command
            or not all(isinstance(arg, str) for arg in command)
        ):
            raise ValueError(
                'command is required: a non-empty list of strings, e.g. ["/usr/bin/mytool", "-v"]'
            )
        self.command = command
        for name, default in DELAYS.items():
            value = settings.get(name, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
            setattr(self, name, float(value))
        if self.max_restart_delay_s < self.restart_delay_s:
            raise ValueError("max_restart_delay_s must be at least restart_delay_s")

    @hookimpl
    def zraft_became_leader(self, ctx: PayloadContext) -> None:
        """Run the command, and again after each exit, until this node must stop leading."""
        delay = self.restart_delay_s
        while True:
            ctx.log.info("term %d: starting %s", ctx.term, self.command)
            started = time.monotonic()
            code = ctx.run(self.command)  # returns when it exits or when we must stop
            if ctx.stopping:
                return
            if time.monotonic() - started >= self.max_restart_delay_s:
                delay = self.restart_delay_s  # it ran a good while: start the backoff over
            ctx.log.warning("command exited with code %d; restarting in %.1fs", code, delay)
            if ctx.wait(delay):
                return
            delay = min(delay * 2, self.max_restart_delay_s)
