"""Pure Raft: no sockets, files, clocks, threads, global randomness, pluggy or Prometheus.

The one door is ``Raft`` (see ``zraft.core.raft``): ``tick``, ``step``,
``propose``, ``read_index``, ``campaign``, ``transfer_leader`` in;
``ready``/``advance`` out; ``status()`` (a ``RaftStatus``) and
``transfer_target()`` to observe.
"""

from zraft.core.config import CoreConfig
from zraft.core.log import RaftLog
from zraft.core.messages import (
    NO_NODE,
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    NodeId,
    ReadContext,
    ReadPurpose,
    ReadState,
    Ready,
    Role,
    SnapshotMeta,
    SoftState,
)
from zraft.core.quorum import MajorityConfig, VoteResult
from zraft.core.raft import NotLeader, ProposalDropped, Raft
from zraft.core.status import PeerProgress, RaftStatus

__all__ = [
    "NO_NODE",
    "CoreConfig",
    "Entry",
    "EntryKind",
    "HardState",
    "MajorityConfig",
    "Message",
    "MsgType",
    "NodeId",
    "NotLeader",
    "PeerProgress",
    "ProposalDropped",
    "Raft",
    "RaftLog",
    "RaftStatus",
    "ReadContext",
    "ReadPurpose",
    "ReadState",
    "Ready",
    "Role",
    "SnapshotMeta",
    "SoftState",
    "VoteResult",
]
