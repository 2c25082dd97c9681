"""Plugins at start-up: hook reference, script payloads, settings, errors that stop start-up."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import ROOT
from zraft import hookspecs
from zraft.builtin.script import FollowerScript, LeaderScript
from zraft.cli import main as cli_main
from zraft.config import ConfigError, PayloadConfig, PluginsConfig, parse_config
from zraft.metrics import Metrics
from zraft.payload.driver import Payloads
from zraft.plugins import PluginError, configure_plugins, make_plugin_manager, plugin_hooks

BASE = """
[ensemble]
name = "t"
[[node]]
id = "n1"
raft = "tcp://127.0.0.1:17101"
client = "tcp://127.0.0.1:17001"
data_dir = "d1"
"""


def hook_names() -> list[str]:
    return [
        name
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, f"{hookspecs.PROJECT}_spec")
    ]


def test_every_hook_is_in_the_readme_hook_reference() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Hook reference", 1)
    assert len(section) == 2, "README has no '### Hook reference' section"
    missing = [h for h in hook_names() if f"`{h}" not in section[1]]
    assert missing == [], f"hooks missing from the README's hook reference: {missing}"


def test_payload_and_observation_hooks_exist_and_firstresult_only_where_one_answer_wins() -> None:
    names = set(hook_names())
    assert {
        "zraft_became_leader",
        "zraft_became_follower",
        "zraft_became_candidate",
        "zraft_node_start",
        "zraft_node_stop",
        "zraft_committed",
        "zraft_applied",
        "zraft_configure",
    } <= names
    first = {n for n in names if getattr(hookspecs, n).zraft_spec.get("firstresult")}
    assert first == {"zraft_apply", "zraft_query"}


def test_script_payloads_are_plugins_registered_only_when_configured() -> None:
    pm = make_plugin_manager(entry_points=False)
    assert pm.get_plugin("script-leader") is None and pm.get_plugin("script-follower") is None
    payload = PayloadConfig(leader=("vip", "up"), follower=("true",))
    pm = make_plugin_manager(entry_points=False, payload=payload)
    assert isinstance(pm.get_plugin("script-leader"), LeaderScript)
    assert isinstance(pm.get_plugin("script-follower"), FollowerScript)
    assert plugin_hooks(pm, "script-leader") == ["became_leader"]
    pm = make_plugin_manager(
        PluginsConfig(disable=("script-leader",)), entry_points=False, payload=payload
    )
    assert pm.get_plugin("script-leader") is None


CONFIGURABLE = """
from zraft.hookspecs import hookimpl
seen = []

@hookimpl
def zraft_configure(settings, node_id):
    if not isinstance(settings.get("interval_s", 1), int):
        raise ValueError("interval_s must be an integer")
    seen.append((node_id, dict(settings)))
"""


def test_configure_gets_its_own_table_and_a_bad_setting_names_the_plugin(tmp_path: Path) -> None:
    plugin = tmp_path / "checker.py"
    plugin.write_text(CONFIGURABLE)
    pm = make_plugin_manager(PluginsConfig(files=(plugin,)), entry_points=False)
    configure_plugins(pm, {"checker": {"interval_s": 5}}, "n2")
    assert pm.get_plugin("checker").seen == [("n2", {"interval_s": 5})]
    with pytest.raises(PluginError, match=r"plugin 'checker' \(file .*checker.py\).*interval_s"):
        configure_plugins(pm, {"checker": {"interval_s": "soon"}}, "n2")
    with pytest.raises(PluginError, match=r"\[plugins.settings.chekcer\] names no loaded plugin"):
        configure_plugins(pm, {"chekcer": {}}, "n2")


def test_zraft_run_stops_with_exit_78_and_the_plugin_named(tmp_path: Path) -> None:
    plugin = tmp_path / "checker.py"
    plugin.write_text(CONFIGURABLE)
    toml = tmp_path / "e.toml"
    toml.write_text(
        BASE.replace('"d1"', json.dumps(str(tmp_path / "d1")))
        + f'[plugins]\nfiles = ["{plugin}"]\n[plugins.settings.checker]\ninterval_s = "x"\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "zraft", "run", "-c", str(toml), "-n", "n1", "--log-format", "text"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 78
    assert "plugin 'checker'" in out.stderr and "interval_s must be an integer" in out.stderr


LEADER_PAYLOAD = """
from zraft.hookspecs import hookimpl

@hookimpl
def zraft_became_leader(ctx):
    ctx.wait()
"""


def test_a_leader_payload_that_cannot_be_fenced_is_refused_at_start(tmp_path: Path) -> None:
    plugin = tmp_path / "lp.py"
    plugin.write_text(LEADER_PAYLOAD)
    pm = make_plugin_manager(PluginsConfig(files=(plugin,)), entry_points=False)
    no_cq = parse_config(BASE + "[raft]\ncheck_quorum = false\n", "x.toml")
    with pytest.raises(ValueError, match="check_quorum is false"):
        Payloads(no_cq, "n1", pm, Metrics())
    long_grace = parse_config(BASE + "[payload]\nstop_grace_ms = 900\n", "x.toml")
    with pytest.raises(ValueError, match="no room to renew the leader lease"):
        Payloads(long_grace, "n1", pm, Metrics())
    # Without a leader payload neither matters.
    Payloads(long_grace, "n1", make_plugin_manager(entry_points=False), Metrics())


@pytest.mark.parametrize(
    ("toml", "error"),
    [
        ('[payload]\nleader = "vip up"\n', "x.toml: payload.leader: must be an array of strings"),
        ('[payload]\nleader = [""]\n', "payload.leader: the first element (the program)"),
        ("[payload]\ntimeout_ms = 0\n", "payload.timeout_ms: must be at least 1"),
        (
            "[payload]\nhysteresis_s = 1\n",
            'payload.hysteresis_s: unknown key; did you mean "hysteresis_ms"',
        ),
        (
            '[raft]\ncheck_quorum = false\n[payload]\nleader = ["vip"]\n',
            "payload.leader: needs raft.check_quorum = true",
        ),
        (
            '[payload]\nleader = ["vip"]\nstop_grace_ms = 900\n',
            "payload.stop_grace_ms: 900 ms leaves no room to renew the leader lease of 980 ms",
        ),
        ("[plugins]\nsettings = 3\n", "plugins.settings: must be a table of tables"),
        ("[plugins.settings]\nurlcheck = 3\n", "plugins.settings.urlcheck: must be a table"),
    ],
)
def test_payload_and_settings_errors_name_the_key(toml: str, error: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(BASE + toml, "x.toml")
    assert error in str(exc.value)


def test_zraft_plugins_lists_versions_hooks_and_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "e.toml"
    toml.write_text(BASE + '[payload]\nleader = ["vip", "up"]\n')
    assert cli_main(["plugins", "-c", str(toml), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"kv", "script-leader"} <= rows.keys()
    assert rows["kv"]["version"] != "-" and "get" in rows["kv"]["commands"]
    assert rows["script-leader"]["hooks"] == ["became_leader"]
    assert cli_main(["plugins", "-c", str(toml)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("PLUGIN") and "script-leader" in text and "hooks: became_leader" in text
    toml.write_text(BASE + "[plugins.settings.nope]\na = 1\n")
    assert cli_main(["plugins", "-c", str(toml)]) == 78
    assert "[plugins.settings.nope] names no loaded plugin" in capsys.readouterr().err


def test_check_config_with_a_node_loads_its_plugins_as_run_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd's ExecStartPre runs `check-config FILE --node %i`: it must refuse what
    `zraft run` would, and under journald mark its errors with priority <3>."""
    plugin = tmp_path / "checker.py"
    plugin.write_text(CONFIGURABLE)
    toml = tmp_path / "e.toml"
    toml.write_text(BASE + f'[plugins]\nfiles = ["{plugin}"]\n')
    assert cli_main(["check-config", str(toml), "--node", "n1"]) == 0
    out = capsys.readouterr().out
    assert "node n1: plugins load" in out and "payload: leader none" in out
    monkeypatch.setenv("JOURNAL_STREAM", "8:1")
    assert cli_main(["check-config", str(toml), "--node", "n9"]) == 78
    assert capsys.readouterr().err.startswith("<3>no node 'n9'")
    toml.write_text(toml.read_text() + '[plugins.settings.checker]\ninterval_s = "x"\n')
    assert cli_main(["check-config", str(toml), "--node", "n1"]) == 78
    assert "<3>plugin error: plugin 'checker'" in capsys.readouterr().err


def test_check_config_refuses_a_leader_payload_plugin_that_cannot_be_fenced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin = tmp_path / "lp.py"
    plugin.write_text(LEADER_PAYLOAD)
    toml = tmp_path / "e.toml"
    toml.write_text(BASE + f'[raft]\ncheck_quorum = false\n[plugins]\nfiles = ["{plugin}"]\n')
    assert cli_main(["check-config", str(toml), "--node", "n1"]) == 78
    assert "check_quorum is false" in capsys.readouterr().err
