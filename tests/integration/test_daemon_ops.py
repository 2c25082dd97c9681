"""What an operator's tools see of one node: sd_notify, /health, /ready, /metrics, logs."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import ROOT
from tests.support.ensemble import Ensemble, free_ports
from zraft.daemon import setup_logging, watchdog_interval


def one_node_toml(tmp_path: Path) -> tuple[Path, str]:
    raft, client, metrics = free_ports(3)
    toml = tmp_path / "one.toml"
    toml.write_text(
        '[ensemble]\nname = "solo"\n[raft]\ntick_ms = 10\nheartbeat_interval_ms = 50\n'
        'election_timeout_ms = 300\n[[node]]\nid = "s1"\n'
        f'raft = "tcp://127.0.0.1:{raft}"\nclient = "tcp://127.0.0.1:{client}"\n'
        f'data_dir = "{tmp_path / "s1"}"\nmetrics = "127.0.0.1:{metrics}"\n'
    )
    return toml, f"127.0.0.1:{metrics}"


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_sd_notify_ready_status_watchdog_and_stopping(tmp_path: Path) -> None:
    """A fake $NOTIFY_SOCKET receives what systemd would: READY=1 once the loop
    turns, STATUS= with role/term/leader, WATCHDOG=1 at a tenth of $WATCHDOG_USEC,
    and STOPPING=1 on SIGTERM."""
    toml, _ = one_node_toml(tmp_path)
    sock_path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    env = dict(os.environ, NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="1000000")
    proc = subprocess.Popen(
        [sys.executable, "-m", "zraft", "run", "-c", str(toml), "-n", "s1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    got: list[tuple[float, str]] = []

    def receive_until(pred, limit: float = 20.0) -> None:
        end = time.monotonic() + limit
        while not pred():
            assert time.monotonic() < end, f"not received; got {got}"
            try:
                got.append((time.monotonic(), sock.recv(4096).decode()))
            except TimeoutError:
                pass

    try:
        receive_until(lambda: any("STATUS=leader of term" in m for _, m in got))
        receive_until(lambda: sum("WATCHDOG=1" in m for _, m in got) >= 5)
        messages = [m for _, m in got]
        assert messages[0].startswith("READY=1\nSTATUS=")
        assert any("STATUS=leader of term" in m for m in messages), messages
        pings = [t for t, m in got if "WATCHDOG=1" in m]
        mean_gap = (pings[-1] - pings[0]) / (len(pings) - 1)
        assert 0.05 < mean_gap < 0.3, mean_gap  # a tenth of WATCHDOG_USEC: about 100 ms
        proc.send_signal(signal.SIGTERM)
        receive_until(lambda: any("STOPPING=1" in m for _, m in got))
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        sock.close()


def test_watchdog_interval_is_a_tenth_of_watchdog_usec_and_only_for_this_pid() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "10000000"}) == 1.0
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}) == 0.0
    me = str(os.getpid())
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": me}) == 0.4
    assert watchdog_interval({}) == 0.0 and watchdog_interval({"WATCHDOG_USEC": "x"}) == 0.0


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except urllib.error.URLError:
        return 0, b""  # not listening yet


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_health_and_ready_tell_a_live_loop_from_a_node_that_can_serve(
    make_ensemble: Callable[..., Ensemble],
) -> None:
    cluster = make_ensemble()
    lone = cluster.ids[0]
    cluster.start(lone)
    base = f"http://{cluster.metrics[lone]}"
    end = time.monotonic() + 20
    while _get(f"{base}/health")[0] != 200:
        assert time.monotonic() < end
        time.sleep(0.05)
    code, body = _get(f"{base}/ready")
    assert code == 503 and json.loads(body)["leader"] is None  # alone: no quorum
    cluster.start(*cluster.ids[1:])
    cluster.wait_leader()
    code, body = _get(f"{base}/ready")
    assert code == 200 and json.loads(body)["ok"] is True
    code, text = _get(f"{base}/metrics")
    assert code == 200 and b"zraft_network_peer_round_trip_time_seconds_bucket" in text
    assert _get(f"{base}/nope")[0] == 404


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _log_lines(monkeypatch: pytest.MonkeyPatch, fmt: str, **env: str) -> list[str]:
    for key in ("JOURNAL_STREAM",):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    setup_logging("info", fmt, "n7")
    log = logging.getLogger("zraft.node")
    log.info("term 3: leader is n2")
    log.warning("dropped a bad frame from peer n9")
    log.debug("per-heartbeat detail")
    return buf.getvalue().splitlines()


def test_under_journald_lines_carry_priorities_and_no_timestamp(
    monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    lines = _log_lines(monkeypatch, "auto", JOURNAL_STREAM="8:1234")
    assert lines == [
        "<6>zraft.node: term 3: leader is n2",
        "<4>zraft.node: dropped a bad frame from peer n9",
    ]


def test_on_a_terminal_lines_are_readable_text_with_timestamps(
    monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    lines = _log_lines(monkeypatch, "auto")
    assert len(lines) == 2
    stamp, rest = lines[0][:23], lines[0][24:]
    time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")
    assert rest == "[n7] INFO    zraft.node: term 3: leader is n2"


def test_json_logs_are_one_object_per_line_for_shippers(
    monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    lines = _log_lines(monkeypatch, "json", JOURNAL_STREAM="8:1234")
    objs = [json.loads(line) for line in lines]
    assert [(o["level"], o["node"], o["logger"]) for o in objs] == [
        ("info", "n7", "zraft.node"),
        ("warning", "n7", "zraft.node"),
    ]
    assert objs[0]["msg"] == "term 3: leader is n2" and objs[0]["ts"] > 1.7e9


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_startup_names_config_node_endpoints_and_plugins_and_idle_is_quiet(
    ensemble: Ensemble,
) -> None:
    """Start-up logs what an operator needs to find the node; an idle node logs
    nothing per heartbeat at info level."""
    lead = ensemble.wait_leader()
    time.sleep(3.0)  # 30 heartbeat intervals of an idle ensemble
    text = ensemble.log_text(lead)
    first = text.splitlines()[:3]
    assert any(str(ensemble.config) in line and f"node {lead}" in line for line in first)
    assert any(ensemble.raft[lead] in line and ensemble.client[lead] in line for line in first)
    assert any("plugins: kv 0.1.0 (" in line and "zraft.builtin.kv" in line for line in first)
    lines = [line for line in text.splitlines() if " INFO " in line]
    assert len(lines) < 15, "\n".join(lines)  # start, election, stop: not per heartbeat


def test_sd_notify_never_blocks_when_nobody_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It is called from the event loop: a full socket must drop a datagram, not stall
    Raft (found by the test above: the loop hung in send() after the reader stopped)."""
    from zraft.daemon import sd_notify

    path = tmp_path / "notify"
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    t0 = time.monotonic()
    results = [sd_notify("WATCHDOG=1") for _ in range(5000)]
    assert time.monotonic() - t0 < 5.0
    assert results[0] is True and results[-1] is False  # the buffer filled up: dropped
    sink.close()


def test_the_metrics_port_serves_on_ipv6_too() -> None:
    """A metrics address like "[::1]:9100" is valid config (regression: the server was
    IPv4-only and the node ran without /metrics, found by review)."""
    from prometheus_client import CollectorRegistry

    from zraft.httpd import serve

    (port,) = free_ports(1)
    try:
        server = serve("::1", port, CollectorRegistry(), lambda: (True, {}), lambda: (True, {}))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        assert _get(f"http://[::1]:{port}/health")[0] == 200
    finally:
        server.shutdown()


def test_status_watch_exits_1_when_no_node_answers_and_refuses_json() -> None:
    from zraft.cli import main as cli_main

    (port,) = free_ports(1)
    nowhere = f"tcp://127.0.0.1:{port}"
    args = ["status", "-e", nowhere, "--watch", "--count", "1", "--timeout", "0.2"]
    assert cli_main(args) == 1
    assert cli_main([*args, "-w", "json"]) == 2
