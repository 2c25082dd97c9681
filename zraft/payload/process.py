"""Run a command as a fenced payload process, through the keeper (``zraft.payload.keeper``)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Protocol

from zraft.payload.keeper import NOT_STARTED_FENCED, exit_code

RENEW_S = 0.02  # how often the payload thread looks at the fence and renews the keeper


class Fenced(Protocol):
    """What ``run_fenced`` needs from the payload it runs for (``PayloadContext`` is one).

    Called from the payload thread that runs the command.
    """

    def deadline(self) -> float:
        """Return the ``time.monotonic()`` at which the command must stop (inf: none)."""
        ...

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds; True once the command must stop."""
        ...

    def fence_lapsed(self) -> None:
        """Record that the keeper saw the fence run out: this run is over."""
        ...

    def environ(self) -> dict[str, str]:
        """Return the ``ZRAFT_*`` variables the command gets."""
        ...


def _send(keeper: subprocess.Popen[bytes], line: str) -> None:
    assert keeper.stdin is not None
    try:
        keeper.stdin.write(line.encode("ascii") + b"\n")
        keeper.stdin.flush()
    except (BrokenPipeError, ValueError):
        pass  # the keeper already exited; its exit code tells why


class _Reports:
    """The keeper's report lines: ``pgid N`` and ``stop REASON``."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.pgid = 0
        self.stop_reason = ""

    def read(self) -> None:
        """Read whatever the keeper reported so far (non-blocking)."""
        while True:
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                break
            if not data:
                break
            self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            key, _, value = line.decode("ascii", "replace").partition(" ")
            if key == "pgid" and value.isdigit():
                self.pgid = int(value)
            elif key == "stop":
                self.stop_reason = value


def run_fenced(
    ctx: Fenced,
    argv: list[str],
    env: Mapping[str, str] | None,
    cwd: str | None,
    grace_s: float,
) -> int:
    """Run ``argv`` under a keeper for as long as ``ctx`` is valid; return its exit code.

    Called on a payload thread, never on the driver. See ``PayloadContext.run``.
    The keeper sends SIGKILL ``grace_s`` after SIGTERM.
    When the keeper stopped the command because the fence ran out by its
    clock, the context's fence is marked lapsed too, so the node starts a new
    run (with a new fence) rather than believing this one still runs. When
    the keeper itself was killed, what is left of the command's process group
    is killed here.
    """
    if not argv:
        raise ValueError("no command given")
    deadline = ctx.deadline()
    if time.monotonic() >= deadline:
        return NOT_STARTED_FENCED
    full_env = dict(os.environ)
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        full_env.pop(key, None)  # systemd's notify protocol is the node's, not the payload's
    full_env.update(ctx.environ())
    full_env.update(env or {})
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    try:
        keeper = subprocess.Popen(
            [sys.executable, "-m", "zraft.payload.keeper", "--grace", repr(grace_s)]
            + ["--deadline", repr(deadline), "--report-fd", str(wfd), "--", *argv],
            stdin=subprocess.PIPE,
            env=full_env,
            cwd=cwd,
            pass_fds=(wfd,),
        )
    finally:
        os.close(wfd)
    reports = _Reports(rfd)
    sent = deadline
    try:
        while keeper.poll() is None:
            must_stop = ctx.wait(RENEW_S)
            deadline = ctx.deadline()
            if must_stop:
                _send(keeper, "stop")
                break
            if deadline != sent:
                _send(keeper, "inf" if math.isinf(deadline) else repr(deadline))
                sent = deadline
        try:
            code = keeper.wait(timeout=grace_s + 5.0)
        except subprocess.TimeoutExpired:
            keeper.kill()  # the keeper itself is stuck
            code = keeper.wait()
        reports.read()
        if reports.stop_reason == "fence":
            ctx.fence_lapsed()  # its clock saw the fence run out: this run is over
        if code < 0 and reports.pgid:
            # The keeper was killed (OOM killer, kill -9): PDEATHSIG took the command,
            # but what the command started must not outlive the fence either.
            try:
                os.killpg(reports.pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            return exit_code(code)
        return code
    finally:
        os.close(rfd)
        if keeper.stdin is not None:
            try:
                keeper.stdin.close()
            except BrokenPipeError:
                pass
