"""Sequential specifications for the checker, as pure step functions.

A ``Model`` is an initial state, a ``step(state, op)`` that returns the state
after ``op`` or ``ILLEGAL`` when ``op``'s recorded output is impossible from
``state``, and a ``partition`` that splits a history into independent
sub-histories. States must be hashable: the checker memoizes them.

Two models ship:

- ``register``: one value, initially absent (None), with read / write / cas /
  del. A history on more than one key is refused (use ``kv``).
- ``kv``: a map of keys, each an independent register. A history is linearizable
  iff each key's sub-history is (linearizability is compositional, Herlihy &
  Wing 1990, and per-key "P-compositionality", Horn & Kroening 2015), so the
  history is split by key first and each part is checked on its own: far
  smaller searches than one over the whole map.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from zraft.check.history import CAS, DEL, FAIL, READ, UNKNOWN, WRITE, Operation, show

# A unique sentinel: step() returns it when the operation cannot happen in this state.
ILLEGAL: Any = object()


@dataclass(frozen=True)
class Model:
    """A sequential specification: see the module docstring.

    ``step`` must be pure (no mutation of ``state``; same inputs, same result)
    and read only the op's ``f``, ``key``, ``input``, ``output`` and
    ``status``: the checker treats unknown-outcome ops equal in those as
    interchangeable.
    ``relevant(op)`` is False for operations that constrain nothing and change
    nothing in any state (the checker drops them before searching).
    ``partition`` returns ``{key: ops}`` with each list in the input's order,
    or raises ValueError when the model cannot check the history.
    """

    name: str
    init: Hashable
    step: Callable[[Any, Operation], Any]
    relevant: Callable[[Operation], bool]
    partition: Callable[[Sequence[Operation]], dict[Any, list[Operation]]]
    show_state: Callable[[Any], str]


def register_step(state: str | None, op: Operation) -> Any:
    """Apply ``op`` to a register holding ``state`` (frozen JSON, None = absent).

    Returns the new state, or ``ILLEGAL`` if the recorded output contradicts
    ``state``: a read that returned something else, a cas reported matched
    (or not matched) while the compare would not (or would) match, a del whose
    reported existence is wrong. Unknown outcomes are never illegal: an
    unknown cas takes effect exactly when its compare matches.
    """
    f = op.f
    if f == READ:
        if op.status == UNKNOWN or op.output == state:
            return state
        return ILLEGAL
    if f == WRITE:
        return op.input
    if f == CAS:
        expected, new = op.input
        matched = state == expected
        if op.output is None:  # unknown outcome
            return new if matched else state
        if op.output is not matched:
            return ILLEGAL
        return new if matched else state
    if f == DEL:
        if op.output is not None and op.output is not (state is not None):
            return ILLEGAL
        return None
    raise ValueError(f"the register model has no operation {f!r}")


def relevant(op: Operation) -> bool:
    """Return False for operations that constrain nothing: failed reads/writes/dels, unknown reads.

    A failed cas stays: it asserts the register did not hold its expected value.
    """
    if op.status == FAIL:
        return op.f == CAS
    return not (op.f == READ and op.status == UNKNOWN)


def _one_register(ops: Sequence[Operation]) -> dict[Any, list[Operation]]:
    keys = {op.key for op in ops}
    if len(keys) > 1:
        raise ValueError(
            f"the register model checks one register, but the history has {len(keys)} keys "
            "(use the kv model)"
        )
    return {next(iter(keys)): list(ops)} if ops else {}


def _by_key(ops: Sequence[Operation]) -> dict[Any, list[Operation]]:
    parts: dict[Any, list[Operation]] = {}
    for op in ops:
        parts.setdefault(op.key, []).append(op)
    return parts


REGISTER = Model("register", None, register_step, relevant, _one_register, show)
KV = Model("kv", None, register_step, relevant, _by_key, show)
MODELS: dict[str, Model] = {"register": REGISTER, "kv": KV}


def get_model(model: str | Model) -> Model:
    """Return the model named ``model`` (``register`` or ``kv``), or ``model`` itself.

    Raises ValueError for an unknown name.
    """
    if isinstance(model, Model):
        return model
    try:
        return MODELS[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r} (expected one of {', '.join(MODELS)})") from None
