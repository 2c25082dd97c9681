"""The linearizability checker's WGL search and models (zraft.check).

The search is checked three ways: against the published verdicts of the
Jepsen etcd histories, against a brute-force oracle on thousands of small
random histories, and on hand-written cases that each pin one rule.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests import ROOT
from tests.unit.check.histories import ev, verdict
from zraft.check import (
    LINEARIZABLE,
    NOT_LINEARIZABLE,
    UNKNOWN,
    Event,
    Operation,
    check_file,
    check_history,
    pair_events,
)

# Size of the random histories: the oracle is exponential, so keep them small.
N_OPS, P_UNKNOWN = 7, 0.2
# Jepsen runs of etcd with known verdicts: porcupine's public test data (MIT), copied from
# the project workspace so that CI checks them from a bare clone.
JEPSEN = ROOT / "tests/data/jepsen-etcd"


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
