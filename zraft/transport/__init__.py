"""The peer transport: a pure wire codec and a ZeroMQ ROUTER/DEALER mesh.

``codec`` turns ``Message``/``Forward``/``ForwardReply`` values into frames
and validates every frame from a peer; ``mesh`` moves opaque frames between
nodes and never decodes them. The driver joins the two.
"""

from zraft.transport.codec import (
    DEFAULT_LIMITS,
    REASONS,
    WIRE_VERSION,
    DecodeError,
    Forward,
    ForwardReply,
    Limits,
    decode,
    encode,
)
from zraft.transport.mesh import PeerMesh

__all__ = [
    "DEFAULT_LIMITS",
    "REASONS",
    "WIRE_VERSION",
    "DecodeError",
    "Forward",
    "ForwardReply",
    "Limits",
    "PeerMesh",
    "decode",
    "encode",
]
