"""The replicated state: entry data, client sessions, state-machine dispatch, leader time.

* ``entries``: what a log entry's opaque data holds (pure encode/decode).
* ``sessions``: the replicated session table (exactly-once writes, thesis §6.3).
* ``state``: ``Replica``, which applies committed entries and serves reads;
  the home of snapshot capture and restore.
* ``capture``: ``Capture``, the state at one index read section by section
  while entries keep being applied (plugins copy on write).
"""

from zraft.replica.capture import SESSIONS, Capture
from zraft.replica.state import Replica

__all__ = ["SESSIONS", "Capture", "Replica"]
