"""The peer transport: a socket factory, a pure wire codec and a ROUTER/DEALER mesh.

* ``sockets``: the one place ZeroMQ contexts and sockets are made (LINGER,
  limits, and later CURVE keys); the client library uses it too.
* ``codec``: ``Message``/``Forward``/``ForwardReply`` values to frames and
  back, validating every frame from a peer; pure.
* ``mesh``: ``PeerMesh`` moves opaque frames between nodes and never decodes
  them. The driver joins the two.

Import from the submodules: this package imports nothing itself, so that a
client (``zraft.api.client``) gets the socket factory without the codec and
the Raft core behind it.
"""
