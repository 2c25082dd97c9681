"""Linearizability checking for recorded client histories.

A history records, per client process, when each operation was invoked and
how it completed: ``ok``, ``fail`` (definitely did not take effect; for a cas,
the compare did not match) or ``info`` (unknown: may have taken effect, or
not). ``check_history`` decides whether some order of the operations, each
placed between its invocation and its completion, is legal for a sequential
model: ``register`` (one value) or ``kv`` (independent registers per key).

From Python, record events and check them::

    from zraft.check import Event, check_history, pair_events

    events = [
        Event(process=1, type="invoke", f="write", key="a", value=1),
        Event(process=2, type="invoke", f="read", key="a"),
        Event(process=1, type="ok", f="write", key="a"),
        Event(process=2, type="ok", f="read", key="a", value=1),
        Event(process=3, type="invoke", f="cas", key="a", value=[1, 2]),
        Event(process=3, type="info", f="cas", key="a"),  # timed out: unknown
    ]
    result = check_history(pair_events(events), model="kv", budget_s=10)
    assert result, result.explanation  # truthy only when linearizable

Or write the same events as JSON Lines (schema in ``zraft.check.history``)
and run ``python -m zraft.check FILE.jsonl`` or ``check_file("FILE.jsonl")``.
Jepsen register logs (``*.log``) are read too.
"""

from zraft.check.cli import add_parser, check_file, main
from zraft.check.history import (
    Event,
    HistoryError,
    Operation,
    load_history,
    pair_events,
    parse_jepsen,
    parse_zraft,
)
from zraft.check.models import ILLEGAL, KV, REGISTER, Model, register_step
from zraft.check.wgl import LINEARIZABLE, NOT_LINEARIZABLE, UNKNOWN, Result, Verdict, check_history

__all__ = [
    "ILLEGAL",
    "KV",
    "LINEARIZABLE",
    "NOT_LINEARIZABLE",
    "REGISTER",
    "UNKNOWN",
    "Event",
    "HistoryError",
    "Model",
    "Operation",
    "Result",
    "Verdict",
    "add_parser",
    "check_file",
    "check_history",
    "load_history",
    "main",
    "pair_events",
    "parse_jepsen",
    "parse_zraft",
    "register_step",
]
