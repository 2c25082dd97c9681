"""Helpers of the checker tests: events written by hand, and their verdict."""

from __future__ import annotations

from typing import Any

from zraft.check import Event, check_history, pair_events


def ev(process: Any, type_: str, f: str, value: Any = None, key: str | None = "x") -> Event:
    return Event(process, type_, f, key, value)


def verdict(events: list[Event], model: str = "kv") -> Any:
    return check_history(pair_events(events), model).verdict
