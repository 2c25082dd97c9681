"""Snapshot capture and restore of the replicated state, section by section (no I/O).

A capture is the state at one applied index, read lazily: the session table
(dumped when the capture starts) under ``SESSIONS``, then each stateful
plugin under its own name, sorted. A plugin with the simple pair
(``zraft_snapshot``) is copied when the capture starts; a plugin with the
stream pair (``zraft_snapshot_stream``) keeps the state of that moment by
copy-on-write while the node keeps applying entries, so starting a capture
costs little however large the state. The snapshot file format
(``zraft.snapshot.format``) stores one section per name.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any

import pluggy

from zraft.plugins import snapshot_plugins
from zraft.replica.sessions import SessionTable

log = logging.getLogger("zraft.replica")

# The session table's section. No plugin can take the name: entry-point,
# module and file names do not start with "@" (``section_names`` checks).
SESSIONS = "@sessions"


def section_names(pm: pluggy.PluginManager) -> list[str]:
    """Return the sections a capture holds, in order: ``SESSIONS``, then plugins by name."""
    plugins = sorted(snapshot_plugins(pm))
    if SESSIONS in plugins:
        raise ValueError(f"a plugin is named {SESSIONS!r}, the session table's section")
    return [SESSIONS, *plugins]


def check_sections(pm: pluggy.PluginManager, names: Iterable[str]) -> None:
    """Raise ValueError unless ``names`` are exactly the sections a capture would hold.

    Order does not matter; a duplicate, a missing section (a plugin whose
    state the snapshot lacks) and an unknown one (a plugin not loaded here)
    are all errors, named in the message.
    """
    names = list(names)
    expected = set(section_names(pm))
    dupes = sorted({n for n in names if names.count(n) > 1})
    missing = sorted(expected - set(names))
    unknown = sorted(set(names) - expected)
    problems = []
    if missing:
        problems.append(f"lacks the state of {', '.join(missing)}")
    if unknown:
        problems.append(f"holds state of unknown plugin(s) {', '.join(unknown)}")
    if dupes:
        problems.append(f"repeats section(s) {', '.join(dupes)}")
    if problems:
        raise ValueError("snapshot " + "; ".join(problems))


class Capture:
    """The replicated state at ``index`` (leader time ``time_ms``), to read section by section.

    Made by ``Replica.start_capture``. Read it on the driver thread, between
    applies: ``sections()`` once, consuming each section's chunks before
    asking for the next; or ``close()`` it to abort (also a context
    manager), which ends the plugins' copy-on-write bookkeeping.
    """

    def __init__(
        self, index: int, time_ms: int, parts: list[tuple[str, bytes | None, Iterator[bytes]]]
    ) -> None:
        # parts: (name, first chunk or None when the stream is empty, the rest)
        self.index = index
        self.time_ms = time_ms
        self._parts = parts
        self._started = False
        self.closed = False

    def names(self) -> list[str]:
        """Return the section names, in the order ``sections`` yields them."""
        return [name for name, _, _ in self._parts]

    def sections(self) -> Iterator[tuple[str, Iterator[bytes]]]:
        """Yield ``(name, chunks)`` per section: ``SESSIONS`` first, then plugins by name.

        Consume each section's chunks before asking for the next: a section
        left unread is closed when the next one is asked for. Raises
        RuntimeError when called twice or after ``close``.
        """
        if self._started or self.closed:
            raise RuntimeError("a capture is read once")
        self._started = True
        return self._sections()

    def _sections(self) -> Iterator[tuple[str, Iterator[bytes]]]:
        try:
            for name, first, rest in self._parts:
                yield name, _chunks(first, rest)
                _close(rest)
        finally:
            self.close()

    def close(self) -> None:
        """Abort (or finish): close every plugin stream; idempotent."""
        self.closed = True
        for _, _, rest in self._parts:
            _close(rest)

    def __enter__(self) -> Capture:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _chunks(first: bytes | None, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first is None:
        return
    yield first
    for chunk in rest:
        yield _bytes(chunk)


def _bytes(chunk: Any) -> bytes:
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, bytearray | memoryview):
        return bytes(chunk)
    raise TypeError(f"a snapshot stream yielded a {type(chunk).__name__}, not bytes")


def _impl(pm: pluggy.PluginManager, hook: str, plugin: str) -> Any:
    """Return ``plugin``'s implementation of ``hook`` (whatever its attribute is named)."""
    for impl in getattr(pm.hook, hook).get_hookimpls():
        if impl.plugin_name == plugin:
            return impl.function
    raise LookupError(f"plugin {plugin!r} does not implement {hook}")


def _close(it: Iterator[Any]) -> None:
    close = getattr(it, "close", None)
    if close is not None:
        close()


def open_capture(pm: pluggy.PluginManager, sessions: bytes, index: int, time_ms: int) -> Capture:
    """Start a capture: copy the simple-pair plugins, open (and prime) the streams.

    A stream's first chunk is pulled at once, so that a generator function
    has run up to its first ``yield`` and fixed its view of the state. A
    plugin that raises here closes the streams already opened and the
    exception propagates (a plugin bug: the caller logs it).
    """
    streams = snapshot_plugins(pm)
    parts: list[tuple[str, bytes | None, Iterator[bytes]]] = [(SESSIONS, sessions, iter(()))]
    try:
        for name in section_names(pm)[1:]:
            if streams[name]:
                rest = iter(_impl(pm, "zraft_snapshot_stream", name)())
                parts.append((name, None, rest))  # closed below if priming fails
                first = next(rest, None)
                parts[-1] = (name, None if first is None else _bytes(first), rest)
            else:
                blob = _impl(pm, "zraft_snapshot", name)()
                if not isinstance(blob, bytes):
                    raise TypeError(
                        f"plugin {name!r} zraft_snapshot returned {type(blob).__name__}"
                    )
                parts.append((name, blob, iter(())))
    except BaseException:
        for _, _, rest in parts:
            _close(rest)
        raise
    return Capture(index, time_ms, parts)


def restore_plugins(
    pm: pluggy.PluginManager,
    sections: Iterable[tuple[str, Iterator[bytes]]],
    sessions: SessionTable,
) -> None:
    """Load the ``SESSIONS`` section into ``sessions``; hand each other one to its plugin.

    Checks each name before its section is used (unknown or repeated:
    ValueError) and, at the end, that none is missing. Each plugin's restore
    is all or nothing, and a capture puts ``SESSIONS`` first, so a bad
    session table or a bad first plugin section changes nothing; but a
    ValueError from a later plugin leaves the earlier ones restored: call
    ``check_sections`` first, and never serve a replica whose restore failed.
    """
    streams = snapshot_plugins(pm)
    expected = set(section_names(pm))
    seen: set[str] = set()
    for name, chunks in sections:
        if name not in expected or name in seen:
            why = "repeats section" if name in seen else "holds state of unknown plugin"
            raise ValueError(f"snapshot {why} {name!r}")
        seen.add(name)
        if name == SESSIONS:
            sessions.load(b"".join(chunks))
            continue
        if streams[name]:
            _impl(pm, "zraft_restore_stream", name)(chunks=chunks)
            left = sum(len(c) for c in chunks)
            if left:
                log.warning("plugin %s left %d bytes of its snapshot section unread", name, left)
        else:
            _impl(pm, "zraft_restore", name)(data=b"".join(chunks))
    check_sections(pm, seen)


def digest(capture: Capture) -> str:
    """Return the SHA-256 of a whole capture (consumes it): names and section bytes."""
    h = hashlib.sha256()
    for name, chunks in capture.sections():
        section = hashlib.sha256()
        size = 0
        for chunk in chunks:
            section.update(chunk)
            size += len(chunk)
        raw = name.encode()
        h.update(len(raw).to_bytes(8, "big") + raw + size.to_bytes(8, "big") + section.digest())
    return h.hexdigest()
