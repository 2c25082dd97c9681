"""The example plugins in plugins/: installed with pip, found by entry point, run by real nodes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests import ROOT
from tests.support.ensemble import Ensemble
from zraft.api.client import ZraftError
from zraft.status import collect

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

DISTS = {"urlcheck": "zraft-urlcheck", "singleton": "zraft-singleton", "queue": "zraft-queue"}


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``probe`` until it returns something truthy; return that, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def plugins_toml(enable: str, settings: str = "") -> str:
    """Return a ``[plugins]`` table that keeps only ``enable`` of the examples, plus settings."""
    disable = json.dumps(sorted(set(DISTS) - {enable}))
    return f"[plugins]\ndisable = {disable}\n{settings}"


def pythonpath(site: Path) -> str:
    """Return PYTHONPATH with ``site`` first: node processes find the plugins' dist-info there."""
    return os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install the three distributions into one target directory, as a user would with pip.

    pip builds in the source tree, so it builds copies: the repository gets no build/ litter.
    """
    base = tmp_path_factory.mktemp("example-plugins")
    sources = []
    for dist in DISTS.values():
        source = base / "src" / dist
        ignore = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
        shutil.copytree(ROOT / "plugins" / dist, source, ignore=ignore)
        sources.append(str(source))
    target = base / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
    done = subprocess.run(
        [*pip, "--no-build-isolation", *sources], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:  # no setuptools (or wheel) here: pip fetches it for the build
        done = subprocess.run([*pip, *sources], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    return target


@pytest.fixture
def make_cluster(
    site: Path, make_ensemble: Callable[..., Ensemble], monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], Ensemble]:
    """Start 3-node ensembles whose processes find the installed plugins on PYTHONPATH."""
    monkeypatch.setenv("PYTHONPATH", pythonpath(site))
    for name in ("no_proxy", "NO_PROXY"):  # urllib must reach our test server directly
        monkeypatch.setenv(name, "127.0.0.1,localhost")

    def make(extra_toml: str) -> Ensemble:
        cluster = make_ensemble(extra_toml=extra_toml)
        cluster.start()
        return cluster

    return make


# -- zraft plugins -----------------------------------------------------------


def run_plugins_cli(site: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """Run ``zraft plugins --json`` as a user would, with the plugins installed."""
    env = dict(os.environ, PYTHONPATH=pythonpath(site))
    return subprocess.run(
        [sys.executable, "-m", "zraft", "plugins", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=30,
    )


def test_zraft_plugins_lists_the_installed_examples_with_versions(
    site: Path, make_ensemble: Callable[..., Ensemble]
) -> None:
    settings = '[plugins.settings.singleton]\ncommand = ["true"]\n'
    cluster = make_ensemble(extra_toml=settings)  # writes the file; starts nothing
    done = run_plugins_cli(site, cluster.config)
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    for name, dist in DISTS.items():
        assert rows[name]["version"] == "0.1.0"
        assert dist in rows[name]["source"]
    assert rows["queue"]["commands"] == ["qlen", "qpeek", "qpop", "qpush"]
    assert any("became_leader" in hook for hook in rows["urlcheck"]["hooks"])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("", "command is required"),  # singleton without its command
        (
            '[plugins.settings.singleton]\ncommand = ["true"]\n'
            "[plugins.settings.urlcheck]\ninterval_s = 0\n",
            "interval_s must be a positive number",
        ),
        (
            '[plugins.settings.singleton]\ncommand = ["true"]\n'
            "[plugins.settings.queue]\nmax_len = 0\n",
            "max_len must be a positive integer",
        ),
    ],
)
def test_bad_settings_stop_start_up_with_a_clear_message(
    site: Path, make_ensemble: Callable[..., Ensemble], settings: str, message: str
) -> None:
    cluster = make_ensemble(extra_toml=settings)
    done = run_plugins_cli(site, cluster.config)
    assert done.returncode == 78
    assert message in done.stderr and "zraft_configure" in done.stderr


# -- urlcheck ------------------------------------------------------------------


class TargetServer(ThreadingHTTPServer):
    """Answers /ok with 200 and anything else with 500; remembers each hit's User-Agent."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), TargetHandler)
        self.hits: list[str] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class TargetHandler(BaseHTTPRequestHandler):
    server: TargetServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.server.hits.append(self.headers.get("User-Agent", ""))
        self.send_response(200 if self.path == "/ok" else 500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def hit_terms(hits: list[str]) -> dict[int, set[str]]:
    """Return, per term, the nodes that sent a check (from "zraft-urlcheck (n1; term 4)")."""
    out: dict[int, set[str]] = {}
    for agent in hits:
        m = re.fullmatch(r"zraft-urlcheck \((\S+); term (\d+)\)", agent)
        assert m, agent
        out.setdefault(int(m[2]), set()).add(m[1])
    return out


def test_urlcheck_checks_from_the_leader_only_and_moves_with_leadership(
    make_cluster: Callable[[str], Ensemble],
) -> None:
    server = TargetServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = "[plugins.settings.urlcheck]\ninterval_s = 0.2\ntimeout_s = 1\n"
        cluster = make_cluster(plugins_toml("urlcheck", settings))
        lead = cluster.wait_leader()
        c = cluster.client_for(timeout=1.0)
        c.set("urlcheck/target/good", server.url("/ok"))
        c.set("urlcheck/target/bad", server.url("/fail"))
        c.set("urlcheck/target/junk", "file:///etc/passwd")

        def statuses() -> dict[str, Any] | None:
            got = c.mget([f"urlcheck/status/{n}" for n in ("good", "bad", "junk")])
            return None if None in got else dict(zip(("good", "bad", "junk"), got, strict=True))

        first = wait_for("the first statuses", statuses)
        assert first["good"]["ok"] is True and first["good"]["status"] == 200
        assert first["bad"]["ok"] is False and first["bad"]["status"] == 500
        assert first["junk"]["ok"] is False and "not an http(s) URL" in first["junk"]["error"]
        term = first["good"]["term"]
        assert {s["node"] for s in first.values()} == {lead}
        wait_for("a few rounds", lambda: len(server.hits) >= 6)
        assert hit_terms(server.hits) == {term: {lead}}

        cluster.kill(lead)
        new = cluster.wait_leader(exclude=(lead,))
        c = cluster.client_for(*(n for n in cluster.ids if n != lead), timeout=1.0)

        def newer() -> dict[str, Any] | None:
            got = statuses()
            return got if got and min(got["good"]["term"], got["bad"]["term"]) > term else None

        again = wait_for("checks by the new leader", newer)
        assert again["good"]["node"] == again["bad"]["node"] == new
        assert again["good"]["status"] == 200 and again["bad"]["status"] == 500
        # At most one node checked in each term: never two checkers at once.
        assert all(len(nodes) == 1 for nodes in hit_terms(server.hits).values())

        c.delete("urlcheck/target/bad")  # a removed target loses its status
        wait_for("the stale status to go", lambda: c.get("urlcheck/status/bad") is None)
    finally:
        server.shutdown()
        server.server_close()


# -- singleton -------------------------------------------------------------------

JOB = """\
import os, signal, sys, time
log, run_s = sys.argv[1], float(sys.argv[2])
me = f"{os.environ['ZRAFT_NODE_ID']} {os.environ['ZRAFT_TERM']} {os.getpid()}"

def note(what):
    with open(log, "a") as f:
        f.write(f"{what} {me} {time.time():.4f}\\n")

def on_term(signum, frame):
    note("end")
    sys.exit(143)

signal.signal(signal.SIGTERM, on_term)
note("start")
time.sleep(run_s)
note("end")
sys.exit(3)
"""


def read_runs(log: Path) -> list[dict[str, Any]]:
    """Return one run per pid: node, term, start and end time (end None while running)."""
    runs: dict[str, dict[str, Any]] = {}
    text = log.read_text() if log.exists() else ""
    for line in text.splitlines():
        what, node, term, pid, at = line.split()
        run = runs.setdefault(pid, {"node": node, "term": int(term), "end": None})
        run[what] = float(at)
    return sorted(runs.values(), key=lambda r: r["start"])


def assert_never_two_at_once(runs: list[dict[str, Any]]) -> None:
    for before, after in zip(runs, runs[1:], strict=False):
        assert before["end"] is not None and before["end"] <= after["start"], (before, after)


def test_singleton_restarts_its_command_on_the_leader_only(
    make_cluster: Callable[[str], Ensemble], tmp_path: Path
) -> None:
    job, log = tmp_path / "job.py", tmp_path / "runs.log"
    job.write_text(JOB)
    command = json.dumps([sys.executable, str(job), str(log), "0.3"])
    settings = (
        f"[plugins.settings.singleton]\ncommand = {command}\n"
        "restart_delay_s = 0.05\nmax_restart_delay_s = 0.2\n"
    )
    cluster = make_cluster(plugins_toml("singleton", settings))
    lead = cluster.wait_leader()
    runs = wait_for("three runs", lambda: len(read_runs(log)) >= 3 and read_runs(log))
    assert {r["node"] for r in runs} == {lead}
    assert "command exited with code 3; restarting" in cluster.log_text(lead)

    cluster.kill(lead)
    new = cluster.wait_leader(exclude=(lead,))
    wait_for(
        "two runs on the new leader", lambda: sum(r["node"] == new for r in read_runs(log)) >= 2
    )
    runs = read_runs(log)
    assert {r["node"] for r in runs} == {lead, new}
    # The keeper ended the killed leader's last run when its lease ran out, before anyone
    # else could lead: one run at a time across the ensemble, each node in its own term.
    assert_never_two_at_once(runs)
    assert max(r["term"] for r in runs if r["node"] == lead) < min(
        r["term"] for r in runs if r["node"] == new
    )


# -- queue ----------------------------------------------------------------------


def hashes_agree(cluster: Ensemble) -> dict[str, Any] | None:
    """Return each live node's (applied, state_hash) once all are equal, else None."""
    live = [n for n in cluster.ids if cluster.alive(n)]
    rows = collect([cluster.client[n] for n in live], timeout=1.0, state_hash=True)
    got = {n: (r["status"] or {}) for n, r in zip(live, rows, strict=True)}
    pairs = {(s.get("applied"), s.get("state_hash")) for s in got.values()}
    return got if len(pairs) == 1 and None not in next(iter(pairs)) else None


def test_queue_is_fifo_bounded_and_the_same_on_every_node(
    make_cluster: Callable[[str], Ensemble],
) -> None:
    cluster = make_cluster(plugins_toml("queue", "[plugins.settings.queue]\nmax_len = 3\n"))
    cluster.wait_leader()
    c = cluster.client_for(timeout=1.0)
    assert [c.call("qpush", queue="jobs", item=i) for i in ("a", {"y": 2, "x": [1]}, 3)] == [
        1,
        2,
        3,
    ]
    with pytest.raises(ZraftError) as full:
        c.call("qpush", queue="jobs", item="d")
    assert full.value.code == "QUEUE_FULL"
    with pytest.raises(ZraftError) as null:
        c.call("qpush", queue="jobs", item=None)
    assert null.value.code == "BAD_ARG"
    assert c.call("qlen", queue="jobs") == 3 and c.call("qpeek", queue="jobs") == "a"
    assert c.call("qpop", queue="jobs") == "a"
    assert c.call("qpop", queue="jobs") == {"x": [1], "y": 2}
    assert c.call("qlen", queue="nothing") == 0 and c.call("qpop", queue="nothing") is None
    assert c.call("qpush", queue="other", item=True) == 1
    first = wait_for("equal state hashes", lambda: hashes_agree(cluster))

    # A follower killed while the queues change catches up after its restart.
    victim = next(n for n in cluster.ids if first[n]["role"] != "leader")
    cluster.kill(victim)
    for i in range(3):
        c.call("qpush", queue="later", item=i)
    assert c.call("qpop", queue="later") == 0
    cluster.start(victim)
    agreed = wait_for("the restarted node to agree", lambda: hashes_agree(cluster), timeout=15)
    assert agreed[victim]["applied"] > first[victim]["applied"]
    with cluster.client_for(victim) as one:
        assert one.call("qpeek", queue="later", stale=True) == 1
        assert one.call("qlen", queue="jobs", stale=True) == 1


def test_queue_snapshot_round_trips_and_restore_refuses_bad_data(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zraft.statemachine import ApplyContext

    monkeypatch.syspath_prepend(str(site))
    from zraft_queue import Queues

    q = Queues()
    ctx = ApplyContext(index=1, term=1, timestamp_ms=0)
    for item in ({"b": 1, "a": 2}, "x"):
        q.zraft_apply({"cmd": "qpush", "queue": "q", "item": item}, ctx)
    copy = Queues()
    copy.zraft_restore(q.zraft_snapshot())
    assert copy.zraft_snapshot() == q.zraft_snapshot()
    assert copy.zraft_apply({"cmd": "qpop", "queue": "q"}, ctx) == {"a": 2, "b": 1}
    for bad in (b"\xff", b"[]", b'{"format":"zraft-queue/1","queues":{"q":[]}}'):
        with pytest.raises(ValueError):
            copy.zraft_restore(bad)
    assert copy.zraft_query({"cmd": "qlen", "queue": "q"}, None) == 1  # unchanged
