"""The built-in KV state machine behind a ``Replica``, as a node would load it (tests only)."""

from __future__ import annotations

from typing import Any

from zraft.builtin.kv import KVStore
from zraft.plugins import CommandTable, ZraftPluginManager
from zraft.replica import Replica


def kv_replica(**options: Any) -> Replica:
    """Return a fresh ``Replica`` serving the KV commands (``replica.commands``)."""
    pm = ZraftPluginManager()
    pm.register(KVStore(), name="kv")
    return Replica(pm, CommandTable.from_plugins(pm), **options)
