"""The keeper: a tiny process that holds a payload command to its fence.

``python -m zraft.payload.keeper --grace S --deadline D -- CMD [ARG...]``

It starts ``CMD`` in a new session (its own process group) and then waits
for whichever comes first:

* the command exits: the keeper kills what is left of its process group
  and exits with the command's code;
* ``time.monotonic()`` reaches the deadline (the fence ran out), ``stop`` is
  read from stdin, or stdin reaches EOF (the node died): the keeper sends the
  process group SIGTERM, then SIGKILL ``S`` seconds later, and exits.

The node renews the deadline by writing one line per renewal to stdin: an
absolute ``CLOCK_MONOTONIC`` time in seconds (``inf`` for none). Because the
keeper is a separate process, the fence holds even when the node is frozen
(SIGSTOP) or killed (SIGKILL): that is its whole reason to exist. The
command gets ``PR_SET_PDEATHSIG`` = SIGKILL, so it dies if the keeper does;
what it started is killed by the node (``process.py``), which learns the
process group from ``--report-fd``: ``pgid N`` once the command runs, then
``stop REASON`` (``fence``, ``eof``, ``asked``, ``sigterm``) if the keeper
stops it. The command's stdout and stderr are the keeper's (the node's
log). A second SIGTERM never cuts the stop sequence short.

Exit codes: the command's own code; 128 + n when signal n ended it; 125
when the fence had already run out before the command could start; 127 when
it could not be started. Standard library only, so it starts quickly.
"""

from __future__ import annotations

import argparse
import math
import os
import select
import signal
import subprocess
import sys
import time

NOT_STARTED_FENCED = 125
NOT_STARTED_ERROR = 127
_PR_SET_PDEATHSIG = 1


_terminated = False  # SIGTERM reached the keeper (e.g. systemd stopping the unit)


def _on_sigterm(signum: int, frame: object) -> None:
    # Only a flag: the wakeup fd (main) makes the select return, and nothing is
    # interrupted, so a second SIGTERM can never cut the stop sequence short.
    global _terminated
    _terminated = True


_report_fd = -1  # --report-fd: where the node reads "pgid N" and "stop REASON"


def _tell(line: str) -> None:
    if _report_fd < 0:
        return
    try:
        os.write(_report_fd, line.encode() + b"\n")
    except OSError:
        pass  # the node is gone; the stop goes on


def _die_with_keeper() -> None:
    """In the child before exec: get SIGKILL when the keeper exits (Linux prctl)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def exit_code(returncode: int) -> int:
    """Map a Popen return code to a shell-style exit code (128 + n for signal n)."""
    return 128 - returncode if returncode < 0 else returncode


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _say(msg: str) -> None:
    print(f"zraft keeper[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


def _read_commands(buf: bytearray, deadline: float) -> tuple[float, tuple[str, str] | None]:
    """Read what the node wrote; return the new deadline and a stop reason, if any."""
    try:
        data = os.read(0, 4096)
    except BlockingIOError:
        return deadline, None
    except OSError:
        return deadline, ("eof", "the node's pipe failed")
    if not data:
        return deadline, ("eof", "the node is gone (EOF)")
    buf.extend(data)
    while b"\n" in buf:
        line, _, rest = bytes(buf).partition(b"\n")
        buf[:] = rest
        text = line.decode("ascii", "replace").strip()
        if text == "stop":
            return deadline, ("asked", "asked to stop")
        try:
            value = float(text)
        except ValueError:
            _say(f"ignored a bad renewal line {text!r}")
            continue
        if not math.isnan(value):
            deadline = value
    return deadline, None


def keep(cmd: list[str], deadline: float, grace: float, wakeup: int = -1) -> int:
    """Run ``cmd`` under the fence described in the module docstring; return the exit code.

    ``wakeup`` is the read end of the signal wakeup pipe (-1: none).
    """
    if time.monotonic() >= deadline:
        _say(f"fence already ran out; not starting {cmd[0]!r}")
        return NOT_STARTED_FENCED
    try:
        child = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_keeper
        )
    except OSError as exc:
        _say(f"cannot start {cmd[0]!r}: {exc}")
        return NOT_STARTED_ERROR
    pgid = child.pid  # start_new_session: the child leads its own group
    _tell(f"pgid {pgid}")
    pidfd = os.pidfd_open(child.pid)
    os.set_blocking(0, False)
    buf = bytearray()
    watch = [pidfd, 0] + ([wakeup] if wakeup >= 0 else [])
    reason: tuple[str, str] | None = None
    while reason is None:
        left = deadline - time.monotonic()
        if _terminated:
            reason = ("sigterm", "got SIGTERM")
        elif left <= 0:
            reason = ("fence", "the fence ran out")
        else:
            ready, _, _ = select.select(watch, [], [], None if math.isinf(left) else left)
            if pidfd in ready:
                # Exited by itself. Its zombie still holds the group id, so killing the
                # group now cannot hit a reused id: nothing it started outlives it.
                _killpg(pgid, signal.SIGKILL)
                return exit_code(child.wait())
            if wakeup in ready:
                _drain(wakeup)
            if 0 in ready:
                deadline, reason = _read_commands(buf, deadline)
    _tell(f"stop {reason[0]}")
    _say(f"{reason[1]}: SIGTERM to process group {pgid}")
    _killpg(pgid, signal.SIGTERM)
    if not select.select([pidfd], [], [], grace)[0]:
        _say(f"still running after {grace:g}s: SIGKILL to process group {pgid}")
    _killpg(pgid, signal.SIGKILL)  # before reaping: the zombie keeps the group id ours
    return exit_code(child.wait())


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the keeper."""
    p = argparse.ArgumentParser(prog="python -m zraft.payload.keeper")
    p.add_argument("--grace", type=float, required=True, help="SIGTERM to SIGKILL, seconds")
    p.add_argument("--deadline", type=float, required=True, help="CLOCK_MONOTONIC seconds")
    p.add_argument("--report-fd", type=int, default=-1, help="write pgid/stop lines here")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    global _report_fd
    _report_fd = args.report_fd
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        p.error("no command given after --")
    # SIGPIPE stays ignored (Python's default): when the node dies, writing the
    # report fails with EPIPE, which _tell ignores, instead of killing the keeper
    # before it has stopped the command.
    # Ctrl-C in a terminal reaches the node's whole process group: the node
    # then stops its payloads itself. SIGTERM stops the command as "stop" does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rfd, wfd = os.pipe()
    for fd in (rfd, wfd):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, _on_sigterm)
    return keep(cmd, args.deadline, args.grace, rfd)


if __name__ == "__main__":
    sys.exit(main())
