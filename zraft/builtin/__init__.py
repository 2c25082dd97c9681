"""Plugins that ship with zraft, registered exactly like third-party ones.

``zraft.builtin.kv.KVStore`` is the replicated key-value state machine; it is
listed under the ``zraft`` entry-point group as ``kv`` and ``zraft.plugins``
registers it directly when the package is not installed.
"""
