"""The checker's history parsers (zraft.check): Jepsen logs and zraft's JSON lines.

Every malformed line is refused with its file, its line number and the problem.
"""

from __future__ import annotations

import math

import pytest

from zraft.check import HistoryError, parse_jepsen, parse_zraft


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
