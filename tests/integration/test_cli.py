"""The command line as a user types it: real `zraft` processes against a real ensemble."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from tests import ROOT
from tests.support.ensemble import Ensemble

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def zraft(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``python -m zraft ARGS`` and capture its output."""
    proc = subprocess.run(
        [sys.executable, "-m", "zraft", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=90,
    )
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ensemble]:
    """One 3-node ensemble with a leader for the whole module."""
    with Ensemble(tmp_path_factory.mktemp("cli"), metrics=True) as ens:
        ens.start()
        ens.wait_leader()
        yield ens


def test_kv_commands_print_plain_results(cluster: Ensemble) -> None:
    c = ["-c", str(cluster.config)]
    assert zraft("set", "greeting", "hello", *c, check=True).stdout == "true\n"
    assert zraft("get", "greeting", *c, check=True).stdout == "hello\n"
    assert zraft("set", "gadget", "x", "--ttl-ms", "60000", *c, check=True).stdout == "true\n"
    assert 0 < int(zraft("ttl", "gadget", *c, check=True).stdout) <= 60000
    assert zraft("incr", "visits", *c, check=True).stdout == "1\n"
    assert json.loads(zraft("cas", "greeting", "hello", "hi", *c, check=True).stdout) == {
        "ok": True,
        "value": "hi",
    }
    assert zraft("keys", "g", *c, check=True).stdout == "gadget\ngreeting\n"
    assert json.loads(zraft("keys", "g", "--json", *c, check=True).stdout) == [
        "gadget",
        "greeting",
    ]
    assert zraft("get", "missing", *c, check=True).stdout == "null\n"


def test_errors_are_one_line_and_a_nonzero_exit(cluster: Ensemble) -> None:
    c = ["-c", str(cluster.config)]
    zraft("set", "word", "abc", *c, check=True)
    bad = zraft("incr", "word", *c)
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: WRONG_TYPE:") and "Traceback" not in bad.stderr
    not_json = zraft("call", "not json", *c)
    assert not_json.returncode == 2
    assert "not valid JSON" in not_json.stderr and "Traceback" not in not_json.stderr
    unknown = zraft("call", '{"cmd": "nope"}', *c)
    assert unknown.returncode == 1
    assert json.loads(unknown.stdout)["error"] == "UNKNOWN_COMMAND"


def test_status_table_and_json_agree_on_one_leader(cluster: Ensemble) -> None:
    leader = cluster.wait_leader()
    table = zraft("status", "-c", str(cluster.config), check=True).stdout.splitlines()
    assert table[0].split() == [
        "NODE",
        "ROLE",
        "TERM",
        "COMMIT",
        "APPLIED",
        "LAG",
        "LEADER",
        "CONTACT",
        "PAYLOADS",
        "ENDPOINT",
    ]
    rows = [line.split() for line in table[1:]]
    assert sorted(r[0] for r in rows) == cluster.ids
    assert [r[0] for r in rows if r[1] == "leader"] == [leader]
    assert {r[6] for r in rows} == {leader}
    as_json = json.loads(
        zraft("status", "-c", str(cluster.config), "-w", "json", check=True).stdout
    )
    assert [r["status"]["id"] for r in as_json if r["status"]["role"] == "leader"] == [leader]
    hashed = zraft("status", "-c", str(cluster.config), "--hash", check=True).stdout.splitlines()
    assert hashed[0].split()[-1] == "STATE"
    states = {line.split()[-1] for line in hashed[1:]}
    assert len(states) == 1 and len(states.pop()) == 12  # an idle ensemble: equal states
    watched = zraft(
        "status", "-c", str(cluster.config), "--watch", "--count", "2", "--interval", "0.2",
        check=True,
    ).stdout  # fmt: skip
    frames = [f for f in watched.split("\n\n") if f.strip()]
    assert len(frames) == 2 and all("3/3 nodes answering" in f for f in frames)
    contact = [line.split()[7] for line in frames[-1].splitlines()[2:]]
    assert all(c.endswith("s") and float(c[:-1]) < 2.0 for c in contact), contact


def test_status_marks_a_dead_node_unreachable(ensemble: Ensemble) -> None:
    ensemble.wait_leader()
    ensemble.kill("n3")
    out = zraft("status", "-c", str(ensemble.config), "--timeout", "0.5", check=True).stdout
    assert any("unreachable" in line and ensemble.client["n3"] in line for line in out.splitlines())


def test_up_starts_the_ensemble_and_ctrl_c_stops_every_node(
    make_ensemble: Callable[..., Ensemble],
) -> None:
    # The same ensemble file, but started by `zraft up` as one foreground command.
    c = make_ensemble()
    up = subprocess.Popen(
        [sys.executable, "-m", "zraft", "up", str(c.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 30
        assert up.stdout is not None
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            lines.append(line)
            if "zraft up: ready" in line or not line:
                break
        text = "".join(lines)
        assert "zraft up: ready" in text, text
        pids = [int(p.split("=")[1]) for p in text.split("pids ", 1)[1].split("\n")[0].split(", ")]
        assert len(pids) == 3
        rows = [line.split() for line in lines if line.split()[:1] and line.split()[0] in c.ids]
        assert [r[1] for r in rows].count("leader") == 1, text  # the table has one leader
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=20) == 0
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
