"""The keeper: a payload process held to its fence even when the node cannot act.

Real (short) processes; every wait is bounded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import ROOT
from zraft.payload.context import NodeInfo, PayloadContext
from zraft.payload.fencing import Fence
from zraft.payload.keeper import NOT_STARTED_ERROR, NOT_STARTED_FENCED

pytestmark = pytest.mark.timeout(60)
TRAP = "trap 'echo term >> {log}; exit 3' TERM; echo up >> {log}; while :; do sleep 0.02; done"


def keeper(deadline: float | str, *cmd: str, grace: float = 0.3) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "zraft.payload.keeper", "--grace", str(grace)]
        + ["--deadline", str(deadline), "--", *cmd],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )


def wait_for(path: Path, text: str, limit: float = 10.0) -> None:
    end = time.monotonic() + limit
    while not (path.exists() and text in path.read_text()):
        assert time.monotonic() < end, f"{text!r} never appeared in {path}"
        time.sleep(0.01)


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def test_the_fence_running_out_terminates_the_command(tmp_path: Path) -> None:
    log = tmp_path / "log"
    deadline = time.monotonic() + 0.6
    k = keeper(deadline, "sh", "-c", TRAP.format(log=log))
    assert k.wait(10) == 3
    assert time.monotonic() >= deadline
    assert log.read_text().split() == ["up", "term"]
    assert b"the fence ran out" in k.stderr.read()


def test_renewals_keep_it_running_past_the_first_deadline(tmp_path: Path) -> None:
    log = tmp_path / "log"
    k = keeper(time.monotonic() + 0.3, "sh", "-c", TRAP.format(log=log))
    assert k.stdin is not None
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        k.stdin.write(f"{time.monotonic() + 0.3!r}\n".encode())
        k.stdin.flush()
        time.sleep(0.05)
    assert k.poll() is None  # alive well past the first deadline
    k.stdin.write(b"stop\n")
    k.stdin.flush()
    assert k.wait(10) == 3


def test_the_node_dying_stops_the_command(tmp_path: Path) -> None:
    """SIGKILL of the node closes the keeper's stdin: EOF is a stop."""
    log = tmp_path / "log"
    k = keeper("inf", "sh", "-c", TRAP.format(log=log))
    wait_for(log, "up")
    assert k.stdin is not None
    k.stdin.close()
    assert k.wait(10) == 3
    assert b"the node is gone" in k.stderr.read()


def test_a_command_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    log = tmp_path / "log"
    k = keeper("inf", "sh", "-c", f"trap '' TERM; echo up >> {log}; sleep 30", grace=0.3)
    wait_for(log, "up")
    assert k.stdin is not None
    t0 = time.monotonic()
    k.stdin.write(b"stop\n")
    k.stdin.flush()
    assert k.wait(10) == 128 + 9
    assert 0.25 <= time.monotonic() - t0 < 5


def test_own_exit_code_is_passed_on_and_nothing_it_started_survives(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    k = keeper("inf", "sh", "-c", f"sleep 30 & echo $! > {pidfile}; exit 7")
    assert k.wait(10) == 7
    pid = int(pidfile.read_text())
    end = time.monotonic() + 5
    while not gone(pid):
        assert time.monotonic() < end, "a process of the payload's group survived it"
        time.sleep(0.01)


def test_a_lapsed_fence_starts_nothing_and_a_bad_command_is_reported(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    k = keeper(time.monotonic() - 1, "touch", str(marker))
    assert k.wait(10) == NOT_STARTED_FENCED and not marker.exists()
    k = keeper("inf", str(tmp_path / "no-such-program"))
    assert k.wait(10) == NOT_STARTED_ERROR
    assert b"cannot start" in k.stderr.read()


def test_context_run_passes_the_fencing_token_and_reports_the_exit(tmp_path: Path) -> None:
    out = tmp_path / "env"
    info = NodeInfo("n2", "ens", "tcp://127.0.0.1:9", "/etc/zraft.toml", 0.2)
    exits: list[int] = []
    ctx = PayloadContext(
        info,
        "leader",
        term=12,
        leader_id="n2",
        fence=Fence(12, time.monotonic() + 30),
        on_process_exit=exits.append,
    )
    script = (
        f'echo "$ZRAFT_NODE_ID $ZRAFT_ROLE $ZRAFT_TERM $ZRAFT_LEADER_ID $EXTRA" > {out}; exit 4'
    )
    assert ctx.run(["sh", "-c", script], env={"EXTRA": "x"}) == 4
    assert out.read_text().split() == ["n2", "leader", "12", "n2", "x"]
    assert exits == [4]


def test_context_run_stops_the_process_when_the_payload_must_stop(tmp_path: Path) -> None:
    import threading

    log = tmp_path / "log"
    info = NodeInfo("n1", "ens", "tcp://127.0.0.1:9", "-", 0.3)
    ctx = PayloadContext(info, "leader", 1, "n1", fence=Fence(1, time.monotonic() + 30))
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(ctx.run(["sh", "-c", TRAP.format(log=log)])))
    t.start()
    wait_for(log, "up")
    ctx.stop()
    t.join(10)
    assert result == [3] and log.read_text().split() == ["up", "term"]
    assert os.environ.get("ZRAFT_TERM") is None  # the node's own environment is untouched


GRANDCHILD = "trap '' TERM; sleep 60 & echo $! > {pidfile}; wait"


def alive(pid: int) -> bool:
    return not gone(pid)


def test_a_second_sigterm_during_the_grace_never_cuts_the_stop_short(tmp_path: Path) -> None:
    """systemctl kill may send SIGTERM twice; the keeper must still SIGKILL the group
    after the grace (found by review: the second one killed the keeper instead)."""
    import signal

    pidfile = tmp_path / "pid"
    k = keeper("inf", "sh", "-c", GRANDCHILD.format(pidfile=pidfile), grace=0.5)
    wait_for(pidfile, "\n")
    pid = int(pidfile.read_text())
    k.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    k.send_signal(signal.SIGTERM)
    assert k.wait(10) in (128 + 9, 128 + 15)
    end = time.monotonic() + 5
    while alive(pid):
        assert time.monotonic() < end, "a process that ignores SIGTERM outlived the keeper"
        time.sleep(0.01)


def test_if_the_keeper_is_killed_the_node_kills_what_is_left_of_the_group(
    tmp_path: Path,
) -> None:
    """PDEATHSIG takes only the keeper's direct child (found by review)."""
    import signal
    import threading

    pidfile = tmp_path / "pid"
    info = NodeInfo("n1", "ens", "tcp://127.0.0.1:9", "-", 0.3)
    ctx = PayloadContext(info, "leader", 1, "n1", fence=Fence(1, time.monotonic() + 60))
    result: list[int] = []
    script = GRANDCHILD.format(pidfile=pidfile)
    t = threading.Thread(target=lambda: result.append(ctx.run(["sh", "-c", script])))
    t.start()
    wait_for(pidfile, "\n")
    pid = int(pidfile.read_text())
    me = os.getpid()
    keepers = [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit()
        and b"zraft.payload.keeper" in _read(p / "cmdline")
        and _read(p / "stat").rsplit(b")", 1)[1].split()[1] == str(me).encode()
    ]
    assert len(keepers) == 1
    os.kill(keepers[0], signal.SIGKILL)
    t.join(10)
    assert result == [128 + 9]
    end = time.monotonic() + 5
    while alive(pid):
        assert time.monotonic() < end, "the payload's group outlived its killed keeper"
        time.sleep(0.01)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def test_a_fence_the_keeper_saw_run_out_is_lapsed_for_the_node_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A renewal that reaches the keeper too late: the command is stopped, and the
    node must learn that this run is over so it starts a new one (found by review:
    the node kept renewing a fence nothing ran under, and never restarted it)."""
    import threading

    from zraft.payload import process

    monkeypatch.setattr(process, "RENEW_S", 1.0)  # renewals far too slow
    log = tmp_path / "log"
    fence = Fence(1, time.monotonic() + 0.4)
    info = NodeInfo("n1", "ens", "tcp://127.0.0.1:9", "-", 0.2)
    ctx = PayloadContext(info, "leader", 1, "n1", fence=fence)
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(ctx.run(["sh", "-c", TRAP.format(log=log)])))
    t.start()
    wait_for(log, "up")
    fence.extend(time.monotonic() + 60, time.monotonic())  # the driver renews in time...
    t.join(10)  # ...but the keeper never heard of it and stopped the command
    assert result == [3] and fence.lapsed and not ctx.valid()


def test_when_the_node_dies_the_keeper_outlives_its_report_pipe_and_stops_the_command(
    tmp_path: Path,
) -> None:
    """The node's death closes both the keeper's stdin and its report pipe; writing the
    report must not kill the keeper (SIGPIPE) before it sent the command SIGTERM
    (found by the fencing run: the probe died by SIGKILL without logging its stop)."""
    log = tmp_path / "log"
    rfd, wfd = os.pipe()
    k = subprocess.Popen(
        [sys.executable, "-m", "zraft.payload.keeper", "--grace", "2", "--deadline", "inf"]
        + ["--report-fd", str(wfd), "--", "sh", "-c", TRAP.format(log=log)],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        pass_fds=(wfd,),
    )
    os.close(wfd)
    wait_for(log, "up")
    assert os.read(rfd, 100).startswith(b"pgid ")
    os.close(rfd)  # the node is gone: both pipes close
    assert k.stdin is not None
    k.stdin.close()
    assert k.wait(10) == 3  # the command's own exit from its SIGTERM trap
    assert log.read_text().split() == ["up", "term"]
