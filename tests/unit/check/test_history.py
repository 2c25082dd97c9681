"""The linearizability checker (zraft.check): parsers, WGL search, models, CLI.

The WGL search is checked three ways: against the published verdicts of the
Jepsen etcd histories, against a brute-force oracle on thousands of small
random histories, and on hand-written cases that each pin one rule.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import ROOT
from zraft.check import (
    LINEARIZABLE,
    NOT_LINEARIZABLE,
    UNKNOWN,
    Event,
    HistoryError,
    Operation,
    check_file,
    check_history,
    main,
    pair_events,
    parse_jepsen,
    parse_zraft,
)

# Size of the random histories: the oracle is exponential, so keep them small.
N_OPS, P_UNKNOWN = 7, 0.2
# Jepsen runs of etcd with known verdicts: porcupine's public test data (MIT), copied from
# the project workspace so that CI checks them from a bare clone.
JEPSEN = ROOT / "tests/data/jepsen-etcd"


def ev(process: Any, type_: str, f: str, value: Any = None, key: str | None = "x") -> Event:
    return Event(process, type_, f, key, value)


def verdict(events: list[Event], model: str = "kv") -> Any:
    return check_history(pair_events(events), model).verdict


# -- Jepsen etcd histories ----------------------------------------------------


def _jepsen_cases() -> list[Any]:
    expected = JEPSEN / "expected.txt"
    if not expected.is_file():
        reason = f"{JEPSEN} is missing: the Jepsen etcd histories are not available here"
        return [pytest.param("", False, marks=pytest.mark.skip(reason=reason), id="missing")]
    cases = []
    for line in expected.read_text().splitlines():
        if line.strip():
            name, want = line.split()
            cases.append(pytest.param(name, want == "true", id=name))
    return cases


@pytest.mark.parametrize(("name", "linearizable"), _jepsen_cases())
def test_agrees_with_the_published_verdict_on_jepsen_etcd(name: str, linearizable: bool) -> None:
    result = check_file(JEPSEN / name, budget_s=30)
    assert result.verdict is (LINEARIZABLE if linearizable else NOT_LINEARIZABLE), result
    if not linearizable:
        assert "cannot take effect" in result.explanation


# -- brute-force oracle on small random histories ------------------------------


def _spec_step(state: dict[Any, Any], op: Operation) -> dict[Any, Any] | None:
    """The kv specification on a whole map, written independently of zraft.check.models."""
    current = state.get(op.key)
    if op.f == "read":
        return state if op.status == "unknown" or op.output == current else None
    if op.f == "write":
        return {**state, op.key: op.input}
    if op.f == "del":
        if op.output is not None and op.output != (current is not None):
            return None
        return {**state, op.key: None}
    expected, new = op.input
    if op.output is None:  # unknown cas: takes effect iff the compare matches
        return {**state, op.key: new} if current == expected else state
    if op.output != (current == expected):
        return None
    return {**state, op.key: new} if op.output else state


def oracle(ops: list[Operation]) -> bool:
    """Linearizable iff some order of the completed ops plus any subset of unknown ones is legal.

    Enumerates every sequence that respects real time (a before b whenever a
    returned strictly before b was invoked) on the whole map, without the
    per-key split or any memoization: the definition, nothing more.
    """
    mandatory = [o for o in ops if o.status == "ok" or (o.status == "fail" and o.f == "cas")]
    optional = [o for o in ops if o.status == "unknown"]
    pool = mandatory + optional

    def search(state: dict[Any, Any], used: frozenset[int], needed: int) -> bool:
        if needed == 0:
            return True
        waiting = [o for o in mandatory if o.index not in used]
        for op in pool:
            if op.index in used or any(w.ret < op.call for w in waiting):
                continue
            after = _spec_step(state, op)
            if after is not None and search(
                after, used | {op.index}, needed - (op.status != "unknown")
            ):
                return True
        return False

    return search({}, frozenset(), len(mandatory))


def random_history(rng: random.Random, real: bool) -> list[Event]:
    """Up to 7 ops on 1-2 keys by up to 4 processes, interleaved at random.

    With ``real``, each op takes effect at a random moment inside its
    interval on an actual map and reports what it saw (linearizable by
    construction; unknown ops take effect or not); otherwise results are
    random. Half the histories carry timestamps with ties.
    """
    keys = ["a", "b"][: rng.randint(1, 2)]
    n_ops = rng.randint(1, N_OPS)
    store: dict[str, Any] = {}
    idle = list(range(rng.randint(1, 4)))
    flight: dict[int, dict[str, Any]] = {}
    events: list[Event] = []
    started = 0
    while started < n_ops or flight:
        choices = ["invoke"] * (started < n_ops and bool(idle)) + ["act"] * bool(flight)
        if rng.choice(choices) == "invoke":
            p = idle.pop(rng.randrange(len(idle)))
            f = rng.choice(["read", "read", "write", "cas", "cas", "del"])
            op = {"f": f, "key": rng.choice(keys), "applied": False}
            if f == "write":
                op["value"] = rng.randint(1, 3)
            elif f == "cas":
                op["value"] = [rng.choice([None, 1, 2]), rng.randint(1, 3)]
            flight[p] = op
            started += 1
            events.append(Event(p, "invoke", f, op["key"], op.get("value")))
            continue
        p = rng.choice(list(flight))
        op = flight[p]
        if real and not op["applied"] and rng.random() < 0.6:
            op["applied"] = True  # the linearization point, inside the interval
            op["result"] = _apply(store, op)
            continue
        del flight[p]
        unknown = rng.random() < P_UNKNOWN
        # An op whose client never learns the outcome takes effect or not, at random.
        if real and not op["applied"] and (not unknown or rng.random() < 0.5):
            op["result"] = _apply(store, op)
        if unknown:
            if rng.random() < 0.5:
                events.append(Event(p, "info", op["f"], op["key"]))
            idle.append(p + 10)  # as Jepsen does, a fresh process replaces the retired one
            continue
        idle.append(p)
        typ, value = _completion(rng, op, real)
        events.append(Event(p, typ, op["f"], op["key"], value))
    if rng.random() < 0.5:
        events = [
            Event(e.process, e.type, e.f, e.key, e.value, float(i // 2))
            for i, e in enumerate(events)
        ]
    return events


def _apply(store: dict[str, Any], op: dict[str, Any]) -> Any:
    key, current = op["key"], store.get(op["key"])
    if op["f"] == "write":
        store[key] = op["value"]
    elif op["f"] == "del":
        store.pop(key, None)
        return current is not None
    elif op["f"] == "cas":
        if current == op["value"][0]:
            store[key] = op["value"][1]
            return True
        return False
    return current


def _completion(rng: random.Random, op: dict[str, Any], real: bool) -> tuple[str, Any]:
    f = op["f"]
    if real:
        result = op["result"]
        if f == "cas":
            return ("ok" if result else "fail"), None
        return "ok", result if f in ("read", "del") else None
    if f == "read":
        return "ok", rng.choice([None, 1, 2, 3])
    if f == "cas":
        return rng.choice(["ok", "fail"]), None
    if f == "del":
        return "ok", rng.choice([None, True, False])
    return rng.choice(["ok", "ok", "fail"]), None


def test_wgl_agrees_with_a_brute_force_oracle_on_small_random_histories() -> None:
    rng = random.Random(20240611)
    counts = {True: 0, False: 0}
    for i in range(2400):
        events = random_history(rng, real=i % 2 == 0)
        ops = pair_events(events)
        want = oracle(ops)
        got = check_history(ops, "kv").verdict
        assert got is (LINEARIZABLE if want else NOT_LINEARIZABLE), (i, events)
        if i % 2 == 0:
            assert want, f"a history from a real execution must be linearizable: {events}"
        counts[want] += 1
    assert min(counts.values()) >= 600, counts  # both verdicts, in quantity


# -- hand-written cases ----------------------------------------------------------


def test_stale_read_after_a_completed_write_is_not_linearizable() -> None:
    # The write returned before the read began, so the read must see it.
    events = [
        ev(1, "invoke", "write", 1),
        ev(1, "ok", "write", 1),
        ev(2, "invoke", "read"),
        ev(2, "ok", "read", None),
    ]
    assert verdict(events) is NOT_LINEARIZABLE


@pytest.mark.parametrize("seen", [None, 1])
def test_a_read_concurrent_with_a_write_may_see_either_value(seen: Any) -> None:
    events = [
        ev(1, "invoke", "write", 1),
        ev(2, "invoke", "read"),
        ev(2, "ok", "read", seen),
        ev(1, "ok", "write", 1),
    ]
    assert verdict(events) is LINEARIZABLE


def test_a_timestamp_tie_between_a_return_and_an_invoke_counts_as_concurrent() -> None:
    # Clocks are coarse: equal times give no real-time order, so either order is allowed.
    events = [
        Event(1, "invoke", "write", "x", 1, time=0.0),
        Event(1, "ok", "write", "x", None, time=1.0),
        Event(2, "invoke", "read", "x", None, time=1.0),
        Event(2, "ok", "read", "x", None, time=2.0),
    ]
    assert verdict(events) is LINEARIZABLE
    later = [*events[:2], Event(2, "invoke", "read", "x", None, 1.5), events[3]]
    assert verdict(later) is NOT_LINEARIZABLE


def test_an_unknown_write_that_later_becomes_visible_is_linearizable() -> None:
    # The write timed out but took effect: a read long after may see it.
    events = [
        ev(1, "invoke", "write", 7),
        ev(1, "info", "write"),
        ev(2, "invoke", "read"),
        ev(2, "ok", "read", None),
        ev(2, "invoke", "read"),
        ev(2, "ok", "read", 7),
    ]
    assert verdict(events) is LINEARIZABLE


def test_an_unknown_write_never_visible_is_linearizable() -> None:
    # No completion line at all: the write may never have happened.
    events = [ev(1, "invoke", "write", 7), ev(2, "invoke", "read"), ev(2, "ok", "read", None)]
    assert verdict(events) is LINEARIZABLE


def test_an_unknown_write_cannot_take_effect_before_it_was_invoked() -> None:
    events = [
        ev(2, "invoke", "read"),
        ev(2, "ok", "read", 7),
        ev(1, "invoke", "write", 7),
        ev(1, "info", "write"),
    ]
    assert verdict(events) is NOT_LINEARIZABLE


def test_a_failed_cas_must_not_have_changed_the_state() -> None:
    base = [ev(1, "invoke", "write", 1), ev(1, "ok", "write", 1)]
    failed_cas = [ev(2, "invoke", "cas", [2, 3]), ev(2, "fail", "cas")]
    assert verdict([*base, *failed_cas, ev(3, "invoke", "read"), ev(3, "ok", "read", 1)]) is (
        LINEARIZABLE
    )
    assert verdict([*base, *failed_cas, ev(3, "invoke", "read"), ev(3, "ok", "read", 3)]) is (
        NOT_LINEARIZABLE
    )


def test_a_failed_cas_asserts_the_compare_did_not_match() -> None:
    # The register held 1 throughout, so a cas expecting 1 cannot report a mismatch.
    events = [ev(1, "invoke", "write", 1), ev(1, "ok", "write", 1)]
    events += [ev(2, "invoke", "cas", [1, 3]), ev(2, "fail", "cas")]
    assert verdict(events) is NOT_LINEARIZABLE


def test_a_failed_write_never_takes_effect() -> None:
    events = [ev(1, "invoke", "write", 5), ev(1, "fail", "write")]
    events += [ev(2, "invoke", "read"), ev(2, "ok", "read", 5)]
    assert verdict(events) is NOT_LINEARIZABLE


def test_del_makes_the_key_absent_and_reports_whether_it_existed() -> None:
    events = [ev(1, "invoke", "write", 1), ev(1, "ok", "write", 1)]
    events += [ev(1, "invoke", "del"), ev(1, "ok", "del", True)]
    events += [ev(1, "invoke", "cas", [None, 2]), ev(1, "ok", "cas")]
    assert verdict(events) is LINEARIZABLE
    lying = [*events[:2], ev(1, "invoke", "del"), ev(1, "ok", "del", False)]
    assert verdict(lying) is NOT_LINEARIZABLE


def test_json_values_compare_as_json() -> None:
    # true is not 1, 1.0 is 1, and objects compare whatever their key order.
    def read_after_write(written: Any, read: Any) -> Any:
        return verdict(
            [
                ev(1, "invoke", "write", written),
                ev(1, "ok", "write"),
                ev(2, "invoke", "read"),
                ev(2, "ok", "read", read),
            ]
        )

    assert read_after_write(True, 1) is NOT_LINEARIZABLE
    assert read_after_write(1.0, 1) is LINEARIZABLE
    assert read_after_write({"a": 1, "b": [2]}, {"b": [2], "a": 1}) is LINEARIZABLE


def test_kv_checks_each_key_alone_and_names_the_key_that_fails() -> None:
    # Partitioning by key: 30 keys are fine, one hides a stale read among them.
    events = []
    for i in range(30):
        key = f"k{i}"
        events += [
            ev(i, "invoke", "write", i, key),
            ev(i, "ok", "write", i, key),
            ev(100 + i, "invoke", "read", None, key),
            ev(100 + i, "ok", "read", None if key == "k17" else i, key),
        ]
    result = check_history(pair_events(events), "kv")
    assert result.verdict is NOT_LINEARIZABLE
    assert result.key == "k17" and "key 'k17'" in result.explanation
    assert (result.ops, result.keys) == (60, 30)


def test_the_register_model_refuses_a_history_on_several_keys() -> None:
    events = [ev(1, "invoke", "write", 1, "a"), ev(2, "invoke", "write", 1, "b")]
    with pytest.raises(ValueError, match="kv model"):
        check_history(pair_events(events), "register")


def test_the_budget_ends_a_hard_search_as_unknown() -> None:
    # 18 overlapping writes and a read of a value none wrote: the search must try
    # every order of the writes before it can say no, far beyond 50 ms.
    ops = pair_events(_hard_events(18))
    result = check_history(ops, "kv", budget_s=0.05)
    assert result.verdict is UNKNOWN and "budget" in result.explanation
    assert not result


def _hard_events(n: int) -> list[Event]:
    events = [ev(p, "invoke", "write", p) for p in range(n)]
    events += [ev(p, "ok", "write") for p in range(n)]
    return events + [ev(n, "invoke", "read"), ev(n, "ok", "read", -1)]


# -- parsers -------------------------------------------------------------------


def test_jepsen_parser_reads_tabs_or_spaces_and_unknown_outcomes() -> None:
    lines = [
        "INFO  jepsen.util - 0\t:invoke\t:read\tnil",
        "INFO  jepsen.util - 1   :invoke :cas    [3 0]",
        "INFO  jepsen.util - 0\t:fail\t:read\t:timed-out",
        "INFO  jepsen.util - 1\t:fail\t:cas\t[3 0]",
        "INFO  jepsen.util - 2\t:invoke\t:write\t4",
        "INFO  jepsen.util - 2\t:info\t:write\t:timed-out",
        "INFO  jepsen.util - :nemesis\t:info\t:start\tnil",
    ]
    read, cas, write = parse_jepsen(lines, "h.log")
    assert (read.status, read.ret) == ("unknown", math.inf)
    assert (cas.f, cas.input, cas.output, cas.status) == ("cas", ("3", "0"), False, "fail")
    assert (write.status, write.input, write.line) == ("unknown", "4", 5)


def test_zraft_parser_pairs_events_and_uses_timestamps() -> None:
    lines = [
        '{"process": 1, "type": "invoke", "f": "set", "key": "k", "value": [1, 2], "time": 0.5}',
        "",
        '{"process": 1, "type": "ok", "f": "set", "time": 0.75, "node": "n2"}',
        '{"process": "c2", "type": "invoke", "f": "get", "key": "k", "time": 1}',
    ]
    write, read = parse_zraft(lines, "h.jsonl")
    assert (write.f, write.input, write.call, write.ret, write.line) == (
        "write",
        "[1,2]",
        0.5,
        0.75,
        1,
    )
    assert (read.process, read.status, read.ret) == ("c2", "unknown", math.inf)


@pytest.mark.parametrize(
    ("line2", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"process": 1, "type": "ok"}', "missing field 'f'"),
        ('{"process": 1, "type": "done", "f": "read"}', "'type' must be one of"),
        ('{"process": 1, "type": "ok", "f": "incr"}', "'f' must be one of"),
        ('{"process": 1, "type": "ok", "f": "read", "key": 5}', "'key' must be a string"),
        ('{"process": 1, "type": "ok", "f": "write"}', "completes an invoked 'read'"),
        ('{"process": 9, "type": "ok", "f": "read"}', "nothing in flight"),
        ('{"process": 1, "type": "invoke", "f": "read"}', "invokes again"),
        ('{"process": 1, "type": "ok", "f": "read", "key": "y"}', "completes an operation"),
        ('{"process": 1, "type": "ok", "f": "read", "time": 3}', "on every event or on none"),
        ('{"process": 1, "type": "ok", "f": "read", "value": NaN}', "not valid JSON"),
        ('{"process": true, "type": "ok", "f": "read"}', "'process' must be"),
        ('{"process": 2, "type": "invoke", "f": "set", "key": "x"}', "needs a 'value'"),
    ],
)
def test_zraft_parser_names_the_line_and_the_problem(line2: str, message: str) -> None:
    lines = ['{"process": 1, "type": "invoke", "f": "read", "key": "x"}', line2]
    with pytest.raises(HistoryError, match=message) as exc:
        parse_zraft(lines, "h.jsonl")
    assert str(exc.value).startswith("h.jsonl:2: ")


def test_a_bad_cas_value_is_reported_on_its_invocation_line() -> None:
    lines = [
        '{"process": 1, "type": "invoke", "f": "read", "key": "x"}',
        '{"process": 2, "type": "invoke", "f": "cas", "key": "x", "value": 3}',
    ]
    with pytest.raises(HistoryError, match=r"^h.jsonl:2: a cas value must be \[expected, new\]"):
        parse_zraft(lines, "h.jsonl")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("hello", "not a Jepsen history line"),
        ("INFO  jepsen.util - 1\t:invoke\t:write\t{4}", "cannot read the value"),
        ("INFO  jepsen.util - 1\t:invoke\t:append\t4", "unknown operation :append"),
        ("INFO  jepsen.util - 1\t:ok\t:write\t5", "differs from the invoked"),
    ],
)
def test_jepsen_parser_names_the_line_and_the_problem(line: str, message: str) -> None:
    lines = ["INFO  jepsen.util - 1\t:invoke\t:write\t4", line]
    if "invoke" in line:
        lines = ["", line]
    with pytest.raises(HistoryError, match=message) as exc:
        parse_jepsen(lines, "h.log")
    assert str(exc.value).startswith("h.log:2: ")


# -- the command line ----------------------------------------------------------


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
