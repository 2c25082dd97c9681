"""Pure Raft: no sockets, files, clocks, threads, global randomness, pluggy or Prometheus.

The one door is ``Raft`` (see ``zraft.core.raft``): ``tick``, ``step``,
``propose``, ``read_index``, ``campaign``, ``transfer_leader`` in;
``ready``/``advance`` out.
"""

from zraft.core.log import RaftLog
from zraft.core.messages import (
    NO_NODE,
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    NodeId,
    ReadState,
    Ready,
    Role,
    SnapshotMeta,
    SoftState,
)
from zraft.core.raft import CoreConfig, NotLeader, ProposalDropped, Raft

__all__ = [
    "NO_NODE",
    "CoreConfig",
    "Entry",
    "EntryKind",
    "HardState",
    "Message",
    "MsgType",
    "NodeId",
    "NotLeader",
    "ProposalDropped",
    "Raft",
    "RaftLog",
    "ReadState",
    "Ready",
    "Role",
    "SnapshotMeta",
    "SoftState",
]
