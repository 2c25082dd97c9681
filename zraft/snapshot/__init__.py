"""Snapshots: the files, their directory, and moving them between nodes.

Above ``zraft.core`` and ``zraft.storage``, below the node. Modules:

- ``format``: the snapshot file format v2 (pure encoder, streaming verify and read);
- ``store``: the directory of snapshot files (atomic publish, pruning, partial files);
- ``transfer``: InstallSnapshot chunk streaming (sender and receiver state machines);
- ``taker``: taking a snapshot of the replica while the node runs;
- ``recovery``: choosing and loading a snapshot at start-up;
- ``policy``: when to snapshot and compact the log.
"""
