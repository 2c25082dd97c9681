"""The node: the shell that joins the pure pieces, and the I/O that drives it.

* ``shell``: ``Shell``, the node's logic without I/O; the only caller of the
  core's door and the one Ready loop (the simulation drives it too).
* ``loop``: ``Node``, one thread and one poll loop: sockets, WAL, clock to
  ticks, metrics, payloads, the published ``NodeView``.
"""

from zraft.node.loop import Node
from zraft.node.shell import Io, Shell

__all__ = ["Io", "Node", "Shell"]
