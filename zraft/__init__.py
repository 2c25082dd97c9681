"""zraft: a Raft consensus daemon over ZeroMQ."""

__version__ = "0.1.0"
