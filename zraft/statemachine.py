"""Values passed to state-machine hooks (see ``zraft.hookspecs``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


class CommandError(Exception):
    """A command that cannot be applied; the client receives ``code`` and the message.

    Raise it before changing any state: the state machine must be unchanged.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Arg:
    """One argument of a client command: its name, JSON type and whether it may be left out.

    ``type`` is one of ``str``, ``int``, ``number``, ``any``, ``list[str]``.
    """

    name: str
    type: str = "str"
    required: bool = True


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """A client command a plugin serves (returned from ``zraft_commands``)."""

    name: str
    kind: Literal["read", "write"]
    args: tuple[Arg, ...] = ()
    help: str = ""


@dataclass(frozen=True, slots=True)
class ApplyContext:
    """Where a committed entry sits in the log, and the leader time stamped into it."""

    index: int
    term: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class QueryContext:
    """The applied state a read sees: its last index and leader time."""

    applied_index: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class AppliedEntry:
    """One client command applied on this node, as ``zraft_applied`` observes it.

    ``ok`` tells whether the state machine accepted it; ``result`` is its
    reply when it did, else ``{"code": ..., "message": ...}``.
    """

    index: int
    term: int
    timestamp_ms: int
    command: dict[str, Any]
    ok: bool
    result: Any


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command returned: ``result`` when ``ok``, else an error ``code`` and ``message``.

    The replicated session table keeps outcomes in their wire form
    (``to_wire``), so that a retried write is answered exactly as the first time.
    """

    ok: bool
    result: Any = None
    code: str = ""
    message: str = ""

    @staticmethod
    def success(result: Any) -> Outcome:
        """Return a successful outcome carrying ``result``."""
        return Outcome(True, result)

    @staticmethod
    def error(code: str, message: str) -> Outcome:
        """Return a failed outcome with a protocol error ``code``."""
        return Outcome(False, None, code, message)

    def to_wire(self) -> list[Any]:
        """Return ``[True, result]`` or ``[False, code, message]`` (msgpack-ready)."""
        return [True, self.result] if self.ok else [False, self.code, self.message]

    @staticmethod
    def from_wire(obj: Any) -> Outcome:
        """Parse what ``to_wire`` returned; raise ValueError when it is not one."""
        if isinstance(obj, (list, tuple)) and len(obj) == 2 and obj[0] is True:
            return Outcome(True, obj[1])
        if isinstance(obj, (list, tuple)) and len(obj) == 3 and obj[0] is False:
            return Outcome(False, None, str(obj[1]), str(obj[2]))
        raise ValueError(f"not an outcome: {obj!r}")
