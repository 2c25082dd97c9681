"""Payloads: plugin code that runs on the leader only (fenced) or on every follower.

* ``fencing``: when a payload may run (the leader's lease, its fence, the role gate); pure.
* ``context``: ``PayloadContext``, what every payload hook receives.
* ``runner``: runs payload hooks on threads of their own, never on the driver.
* ``driver``: the node's side: lease probes, the gate, feeding the runner.
* ``keeper`` and ``process``: fenced payload processes that survive nothing
  they should not, even when the node is frozen or killed.
"""

from zraft.payload.context import NodeInfo, PayloadContext

__all__ = ["NodeInfo", "PayloadContext"]
