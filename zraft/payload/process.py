"""Run a command as a fenced payload process, through the keeper (``zraft.payload.keeper``)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from zraft.payload.keeper import NOT_STARTED_FENCED

if TYPE_CHECKING:
    from zraft.payload.context import PayloadContext

RENEW_S = 0.02  # how often the payload thread looks at the fence and renews the keeper


def _send(keeper: subprocess.Popen[bytes], line: str) -> None:
    assert keeper.stdin is not None
    try:
        keeper.stdin.write(line.encode("ascii") + b"\n")
        keeper.stdin.flush()
    except (BrokenPipeError, ValueError):
        pass  # the keeper already exited; its exit code tells why


def run_fenced(
    ctx: PayloadContext, argv: list[str], env: Mapping[str, str] | None, cwd: str | None
) -> int:
    """Run ``argv`` under a keeper for as long as ``ctx`` is valid; return its exit code.

    Called on a payload thread, never on the driver. See ``PayloadContext.run``.
    """
    if not argv:
        raise ValueError("no command given")
    deadline = ctx.deadline()
    if time.monotonic() >= deadline:
        return NOT_STARTED_FENCED
    grace = ctx.node.stop_grace_s
    full_env = dict(os.environ)
    full_env.update(ctx.environ())
    full_env.update(env or {})
    keeper = subprocess.Popen(
        [sys.executable, "-m", "zraft.payload.keeper", "--grace", repr(grace)]
        + ["--deadline", repr(deadline), "--", *argv],
        stdin=subprocess.PIPE,
        env=full_env,
        cwd=cwd,
    )
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
            return keeper.wait(timeout=grace + 5.0)
        except subprocess.TimeoutExpired:
            # The keeper itself is stuck: killing it kills the command (PDEATHSIG).
            keeper.kill()
            return 128 + 9 if keeper.wait() < 0 else keeper.returncode
    finally:
        if keeper.stdin is not None:
            try:
                keeper.stdin.close()
            except BrokenPipeError:
                pass
