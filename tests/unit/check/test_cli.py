"""The checker's command line (``zraft check-history``, ``python -m zraft.check``): exit codes."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import ROOT
from tests.unit.check.histories import ev
from zraft.check import Event, main


def _jsonl(path: Path, events: list[Event]) -> Path:
    rows = [
        {"process": e.process, "type": e.type, "f": e.f, "key": e.key, "value": e.value}
        for e in events
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


GOOD = [ev(1, "invoke", "write", 1), ev(1, "ok", "write", 1)]
BAD = [*GOOD, ev(2, "invoke", "read"), ev(2, "ok", "read", 2)]


def test_cli_exit_0_when_every_history_is_linearizable(tmp_path: Path, capsys: Any) -> None:
    a, b = _jsonl(tmp_path / "a.jsonl", GOOD), _jsonl(tmp_path / "b.jsonl", GOOD)
    assert main([str(a), str(b)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert out[0].startswith(f"{a}: linearizable (1 ops, 1 key, ")


def test_cli_exit_1_when_one_is_not(tmp_path: Path, capsys: Any) -> None:
    good, bad = _jsonl(tmp_path / "good.jsonl", GOOD), _jsonl(tmp_path / "bad.jsonl", BAD)
    assert main([str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}: NOT linearizable: key 'x': [process 2, line 3: read -> 2]" in out


def test_cli_exit_2_for_a_malformed_line_naming_file_and_line(tmp_path: Path, capsys: Any) -> None:
    path = _jsonl(tmp_path / "h.jsonl", GOOD)
    path.write_text(path.read_text() + '{"process": 1, "type": "invoke"\n')
    bad = _jsonl(tmp_path / "bad.jsonl", BAD)
    assert main([str(path), str(bad)]) == 2  # undecided outranks a violation
    err = capsys.readouterr().err
    assert f"{path}:3: error: not valid JSON" in err


def test_cli_exit_2_when_the_budget_runs_out(tmp_path: Path, capsys: Any) -> None:
    # 22 writes, all concurrent, completing in random order, then a read of a
    # value nobody wrote: refuting it means trying ~2^22 sets of writes.
    rng = random.Random(7)
    procs = list(range(22))
    rng.shuffle(procs)
    events = [ev(p, "invoke", "write", rng.randrange(1000)) for p in procs]
    rng.shuffle(procs)
    events += [ev(p, "ok", "write") for p in procs]
    events += [ev(99, "invoke", "read"), ev(99, "ok", "read", -1)]
    path = _jsonl(tmp_path / "hard.jsonl", events)
    assert main(["--budget", "0.02", str(path)]) == 2
    assert f"{path}: unknown: time budget of 0.02 s exhausted" in capsys.readouterr().out


def test_cli_exit_2_for_a_missing_file_and_usage_errors(tmp_path: Path, capsys: Any) -> None:
    assert main([str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl: error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--budget", "-1", "x.jsonl"])
    assert exc.value.code == 2


def test_cli_format_and_model_options_override_the_defaults(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "history.txt"  # no telling extension: the first line decides
    path.write_text(
        "INFO  jepsen.util - 0\t:invoke\t:read\tnil\nINFO  jepsen.util - 0\t:ok\t:read\t3\n"
    )
    assert main([str(path)]) == 1
    assert main(["--format", "zraft", str(path)]) == 2
    assert main(["--format", "jepsen", "--model", "kv", str(path)]) == 1
    capsys.readouterr()


def test_add_parser_wires_into_an_argparse_cli(tmp_path: Path) -> None:
    import argparse

    from zraft.check import add_parser

    parser = argparse.ArgumentParser(prog="zraft")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["check-history", "--model", "kv", str(_jsonl(tmp_path / "g.jsonl", GOOD))]
    )
    assert args.func(args) == 0


def test_python_dash_m_zraft_check_runs_standalone(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "bad.jsonl", BAD)
    proc = subprocess.run(
        [sys.executable, "-m", "zraft.check", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert "NOT linearizable" in proc.stdout and not proc.stderr
