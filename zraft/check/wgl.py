"""Linearizability checking: the Wing & Gong algorithm with Lowe's memoization.

The search (Wing & Gong 1993; Lowe, "Testing for linearizability", 2017; the
same algorithm as porcupine) walks a doubly linked list of call and return
entries sorted by time. At a call entry it tries to linearize that operation
next: if the model accepts it and the pair (set of linearized operations,
state) has not been seen, the operation's entries are unlinked and the walk
restarts from the head. Reaching a return entry means the operation returning
there was not linearized before its response, which is too late: the last
choice is undone. A configuration already in the cache is one that already
failed, so it is not explored twice: that cache is what makes the search
practical.

Operations whose outcome is unknown get return time +infinity: they may be
linearized anywhere after their invocation, and the search succeeds as soon as
every operation that did complete is linearized, leaving the unknown ones out.
Two reductions keep many unknown operations (a dozen timed-out writes is
common under partitions) from exploring every subset of them, and neither can
change a verdict: an unknown operation that would leave the state unchanged is
not linearized (it stays available for later, which is never worse), and of
two identical unknown operations the one invoked first is always used first.

The search is iterative (an explicit stack, no recursion) and checks a
deadline every few hundred steps, so a hard history ends in ``UNKNOWN``
instead of running for ever.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zraft.check.history import Operation
from zraft.check.models import ILLEGAL, Model, get_model

_CHECK_EVERY = 256  # steps between deadline checks: well under a ms of CPython search


class Verdict(enum.Enum):
    """The outcome of a check."""

    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not linearizable"
    UNKNOWN = "unknown"


LINEARIZABLE = Verdict.LINEARIZABLE
NOT_LINEARIZABLE = Verdict.NOT_LINEARIZABLE
UNKNOWN = Verdict.UNKNOWN


@dataclass(frozen=True)
class Result:
    """What ``check_history`` found.

    ``explanation`` is empty when linearizable; otherwise it says which key
    failed (or ran out of time), how long the longest linearizable prefix was
    and which operation could not be placed after it. ``key`` is that key.
    ``ops`` counts every operation given, ``keys`` the distinct keys.
    ``bool(result)`` is True only when linearizable.
    """

    verdict: Verdict
    explanation: str
    ops: int
    keys: int
    elapsed_s: float
    key: Any = None

    def __bool__(self) -> bool:
        return self.verdict is LINEARIZABLE


@dataclass(frozen=True)
class _Outcome:
    verdict: Verdict
    detail: str = ""


def check_history(
    ops: Sequence[Operation], model: str | Model = "kv", budget_s: float | None = None
) -> Result:
    """Decide whether ``ops`` is linearizable with respect to ``model``.

    ``model`` is ``"register"``, ``"kv"`` or a ``Model``. The history is split
    with the model's ``partition`` and each part is searched on its own, in
    key order; the first part that is not linearizable decides the result.
    ``budget_s`` bounds the total search time (None: no bound); a part that
    runs out of it makes the result ``UNKNOWN`` unless another part is
    found not linearizable. Raises ValueError when the model refuses the
    history (e.g. several keys for ``register``).
    """
    started = time.monotonic()
    m = get_model(model)
    parts = m.partition(ops)
    deadline = None if budget_s is None else started + budget_s
    undecided: list[str] = []
    for key in sorted(parts, key=lambda k: (k is not None, str(k))):
        part = [op for op in parts[key] if m.relevant(op)]
        outcome = _search(part, m, deadline)
        if outcome.verdict is NOT_LINEARIZABLE:
            return Result(
                NOT_LINEARIZABLE,
                f"{_name(key)}{outcome.detail}",
                len(ops),
                len(parts),
                time.monotonic() - started,
                key,
            )
        if outcome.verdict is UNKNOWN:
            undecided.append(f"{_name(key)}{outcome.detail}")
    elapsed = time.monotonic() - started
    if undecided:
        more = f" (and {len(undecided) - 1} more keys)" if len(undecided) > 1 else ""
        why = f"time budget of {budget_s:g} s exhausted: {undecided[0]}{more}"
        return Result(UNKNOWN, why, len(ops), len(parts), elapsed)
    return Result(LINEARIZABLE, "", len(ops), len(parts), elapsed)


def _name(key: Any) -> str:
    return "" if key is None else f"key {key!r}: "


def _search(ops: list[Operation], model: Model, deadline: float | None) -> _Outcome:
    """Run the WGL search over one partition; ``ops`` are already filtered by relevance."""
    n = len(ops)
    if deadline is not None and time.monotonic() > deadline:
        return _Outcome(UNKNOWN, "not started")
    # Entries 0..n-1 are calls, n..2n-1 returns (op i returns at n+i); head, tail sentinels.
    # Calls sort before returns at equal times: operations that touch are concurrent.
    order = sorted(range(2 * n), key=lambda e: (ops[e].call, 0) if e < n else (ops[e - n].ret, 1))
    head, tail = 2 * n, 2 * n + 1
    nxt = [0] * (2 * n + 2)
    prv = [0] * (2 * n + 2)
    prev = head
    for e in [*order, tail]:
        nxt[prev], prv[e] = e, prev
        prev = e
    completed = [not math.isinf(op.ret) for op in ops]
    left = sum(completed)  # completed operations not yet linearized
    if left == 0:
        return _Outcome(LINEARIZABLE)
    # Unknown-outcome operations with equal (key, f, input, output) are
    # interchangeable, except that the one invoked first is available sooner: a
    # linearization that uses a later one can use the earlier one instead. So
    # each may be linearized only after its earlier twin (twin[i], -1 for none).
    # Without this, a history with a dozen timed-out writes of five values
    # explores every subset of them.
    twin = [-1] * n
    last: dict[tuple[Any, ...], int] = {}
    for i in sorted(range(n), key=lambda i: ops[i].call):
        if not completed[i]:
            op = ops[i]
            sig = (op.key, op.f, op.input, op.output)
            twin[i] = last.get(sig, -1)
            last[sig] = i
    step = model.step
    state = model.init
    linearized = 0  # bitset of linearized operations
    seen: set[tuple[int, Any]] = set()  # configurations entered: each fails or succeeds once
    stack: list[tuple[int, Any]] = []  # (linearized op, state before it)
    best: tuple[int, list[int], int, Any] = (-1, [], 0, None)  # depth, prefix, blocker, state
    steps = 0
    e = nxt[head]
    while True:
        steps += 1
        if deadline is not None and steps % _CHECK_EVERY == 0 and time.monotonic() > deadline:
            return _Outcome(UNKNOWN, f"{n} ops, {len(seen)} configurations explored")
        if e < n:  # a call: try to linearize ops[e] now
            t = twin[e]
            new = step(state, ops[e]) if t < 0 or linearized >> t & 1 else ILLEGAL
            # An unknown-outcome op that leaves the state as it is gains nothing
            # now and could be needed later: leaving it out is never worse.
            if new is not ILLEGAL and (completed[e] or new != state):
                key = (linearized | (1 << e), new)
                if key not in seen:
                    seen.add(key)
                    stack.append((e, state))
                    state, linearized = new, key[0]
                    r = e + n
                    nxt[prv[e]], prv[nxt[e]] = nxt[e], prv[e]
                    nxt[prv[r]], prv[nxt[r]] = nxt[r], prv[r]
                    if completed[e]:
                        left -= 1
                        if left == 0:
                            return _Outcome(LINEARIZABLE)
                    e = nxt[head]
                    continue
            e = nxt[e]
            continue
        # A return entry: ops[e - n] had to be linearized by now. This configuration
        # failed; undo the last choice and try the next call after it.
        if len(stack) > best[0]:
            best = (len(stack), [i for i, _ in stack], e - n, state)
        if not stack:
            return _Outcome(NOT_LINEARIZABLE, _explain(ops, model, best))
        e, state = stack.pop()
        linearized ^= 1 << e
        if completed[e]:
            left += 1
        r = e + n
        nxt[prv[r]] = prv[nxt[r]] = r
        nxt[prv[e]] = prv[nxt[e]] = e
        e = nxt[e]


def _explain(ops: list[Operation], model: Model, best: tuple[int, list[int], int, Any]) -> str:
    """Describe the deepest dead end: the longest prefix found and the op that did not fit."""
    depth, prefix, blocker, state = best
    tail = "; ".join(ops[i].describe() for i in prefix[-3:])
    ending = f" (the last: {tail})" if prefix else ""
    return (
        f"[{ops[blocker].describe()}] cannot take effect before it returned: "
        f"at most {depth} of {len(ops)} ops linearize{ending}, "
        f"leaving the state {model.show_state(state)}"
    )
