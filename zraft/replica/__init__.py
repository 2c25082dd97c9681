"""The replicated state: entry data, client sessions, state-machine dispatch, leader time.

* ``entries``: what a log entry's opaque data holds (pure encode/decode).
* ``sessions``: the replicated session table (exactly-once writes, thesis §6.3).
* ``state``: ``Replica``, which applies committed entries and serves reads;
  the home of snapshot capture and restore.
"""

from zraft.replica.state import Replica, pack_capture, unpack_capture

__all__ = ["Replica", "pack_capture", "unpack_capture"]
