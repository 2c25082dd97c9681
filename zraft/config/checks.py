"""Value checkers that report with key paths, and the ``[[node]]`` tables (endpoints,
hosts, ports, and clashes between nodes); ``parse.py`` applies them.

A checker raises ``Invalid`` with the problem; the ``Collector`` records it
under its key path, so that every problem in a file is reported at once.
"""

import difflib
import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Any

MAX_NODES = 15
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # patterns are used with fullmatch
_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_WILDCARDS = {"0.0.0.0", "::"}  # listen on every address; cannot be connected to
_IPC_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL


class Invalid(Exception):
    """Raised by a value checker; its message is the problem, without the key path."""


class Collector:
    """Accumulates errors and remembers which key paths were invalid."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.errors: list[str] = []
        self.bad: set[str] = set()

    def error(self, key: str, problem: str) -> None:
        self.errors.append(f"{self.path}: {key}: {problem}")
        self.bad.add(key)

    def check(self, key: str, checker: Any, value: Any) -> Any:
        """Returns checker(value), or records the problem and returns None."""
        try:
            return checker(value)
        except Invalid as e:
            self.error(key, str(e))
            return None


def got(value: Any) -> str:
    """Describes a TOML value by type and, for scalars, as written in TOML."""
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, list | dict):
        return "an array" if isinstance(value, list) else "a table"
    kind = {str: "string", int: "integer", float: "float"}.get(type(value), type(value).__name__)
    return f"{kind} {quote(value) if isinstance(value, str) else value}"


def quote(text: str) -> str:
    """Quotes `text` as a JSON string, the way messages show names and values."""
    return json.dumps(text, ensure_ascii=False)


def unknown_keys(c: Collector, prefix: str, table: dict, known: list[str]) -> None:
    """Records every key of `table` not in `known`, suggesting the closest known key."""
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"did you mean {quote(close[0])}?" if close else "known: " + ", ".join(known)
            c.error(f"{prefix}.{key}" if prefix else key, f"unknown key; {hint}")


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a string (got {got(value)})")
    return value


def check_name(value: Any) -> str:
    """Checks a node id, ensemble name or plugin name: 1-64 of A-Z a-z 0-9 _ . -"""
    text = _string(value)
    if not _NAME.fullmatch(text):
        raise Invalid(f"{quote(text)} must be 1-64 characters from A-Z a-z 0-9 _ . -")
    return text


def _host_port(text: str, shown: str) -> tuple[str, int]:
    """Splits "host:port" or "[v6]:port"; raises Invalid naming `shown`."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise Invalid(f'{shown} has an unclosed "["')
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise Invalid(f"{shown}: {quote(host)} is not an IPv6 address") from None
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise Invalid(f'{shown}: expected ":port" after "]"')
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            host, port_text = text, ""
        if ":" in host:
            raise Invalid(f"{shown}: write an IPv6 address in brackets, as in [::1]:7000")
        if host == "*":
            raise Invalid(f'{shown}: "*" is not a host; name one (or 0.0.0.0 for metrics)')
        if host and not _HOSTNAME.fullmatch(host):
            raise Invalid(f"{shown}: {quote(host)} is not a host name or address")
    if not host:
        raise Invalid(f"{shown} has no host")
    if not port_text:
        raise Invalid(f"{shown} has no port")
    if not (port_text.isascii() and port_text.isdigit()):
        raise Invalid(f"{shown}: port {quote(port_text)} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise Invalid(f"{shown}: port {port} is out of range 1..65535")
    return host.lower(), port


def _endpoint(value: Any) -> str:
    """Checks a ZeroMQ endpoint that peers or clients connect to."""
    text = _string(value)
    if text.startswith("ipc://"):
        ipc = text[len("ipc://") :]
        if not ipc:
            raise Invalid(f"{quote(text)} has no path")
        if len(ipc.encode()) > _IPC_PATH_MAX:
            raise Invalid(f"{quote(text)}: path is longer than {_IPC_PATH_MAX} bytes")
        return text
    if not text.startswith("tcp://"):
        raise Invalid(f'must be "tcp://host:port" or "ipc://path" (got {quote(text)})')
    host, _ = _host_port(text[len("tcp://") :], quote(text))
    if host in _WILDCARDS:
        raise Invalid(f"{quote(text)}: other nodes cannot connect to {host}; name the host")
    return text


def _metrics(value: Any) -> str:
    text = _string(value)
    _host_port(text, quote(text))
    return text


def _machine(raft: str) -> str:
    """Names the host a node runs on; loopback and ipc nodes share one machine."""
    if raft.startswith("ipc://"):
        return "<local>"
    host, _ = _host_port(raft.removeprefix("tcp://"), raft)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    return "<local>" if loopback else host


def _clashes(a: str, b: str, machine_a: str | None, machine_b: str | None) -> bool:
    """Tells whether sockets bound at endpoints `a` and `b` would collide."""
    if a.startswith("ipc://") or b.startswith("ipc://"):
        return a == b
    host_a, port_a = _host_port(a.removeprefix("tcp://"), a)
    host_b, port_b = _host_port(b.removeprefix("tcp://"), b)
    if port_a != port_b:
        return False
    # A wildcard listener takes the port on every address of its own host.
    if _WILDCARDS & {host_a, host_b}:
        return machine_a is not None and machine_a == machine_b
    return host_a == host_b


def check_nodes(c: Collector, raw: Any) -> list[dict[str, Any]]:
    """Checks every [[node]] table and the constraints between them."""
    if isinstance(raw, dict):
        c.error("node", "must be an array of tables: write [[node]], not [node]")
        return []
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        c.error("node", f"must be an array of tables, [[node]] (got {got(raw)})")
        return []
    if not raw:
        c.error("node", "at least one [[node]] is required")
    elif len(raw) > MAX_NODES:
        c.error("node", f"at most {MAX_NODES} nodes are supported (got {len(raw)})")
    checkers = {
        "id": check_name,
        "raft": _endpoint,
        "client": _endpoint,
        "data_dir": _directory,
        "metrics": _metrics,
    }
    nodes: list[dict[str, Any]] = []
    for i, table in enumerate(raw):
        unknown_keys(c, f"node[{i}]", table, list(checkers))
        node: dict[str, Any] = {}
        for key, checker in checkers.items():
            if key in table:
                value = c.check(f"node[{i}].{key}", checker, table[key])
                if value is not None:
                    node[key] = value
            elif key != "metrics":
                c.error(f"node[{i}].{key}", "missing required key")
        nodes.append(node)

    ids: dict[str, str] = {}
    bound: list[tuple[str, str, str | None]] = []  # (key path, endpoint, machine)
    dirs: dict[tuple[str, str], str] = {}
    for i, node in enumerate(nodes):
        if "id" in node:
            if node["id"] in ids:
                c.error(
                    f"node[{i}].id", f"{quote(node['id'])} is already the id of {ids[node['id']]}"
                )
            ids.setdefault(node["id"], f"node[{i}]")
        # Without a valid raft endpoint the node's host is unknown (None).
        machine = _machine(node["raft"]) if "raft" in node else None
        for key in ("raft", "client", "metrics"):
            if key in node:
                other = next((p for p, e, m in bound if _clashes(node[key], e, machine, m)), None)
                if other:
                    c.error(f"node[{i}].{key}", f"{quote(node[key])} is already used by {other}")
                bound.append((f"node[{i}].{key}", node[key], machine))
        if machine is not None and "data_dir" in node:
            where = (machine, os.path.normpath(node["data_dir"]))
            if where in dirs:
                c.error(
                    f"node[{i}].data_dir",
                    f"{quote(str(node['data_dir']))} on the same host "
                    f"is already used by {dirs[where]}",
                )
            dirs.setdefault(where, f"node[{i}].data_dir")
    return nodes


def _directory(value: Any) -> Path:
    text = _string(value)
    if not text:
        raise Invalid("must not be empty")
    return Path(text).expanduser()
