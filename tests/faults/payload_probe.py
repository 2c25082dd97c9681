"""A leader payload for the fencing runs: logs when it starts and stops, and nothing else.

``python payload_probe.py EVENTS``: appends ``start <node> <term> <pid> <ns>``
once it runs and ``stop <node> <term> <pid> <ns>`` on SIGTERM, where ``ns`` is
``CLOCK_MONOTONIC`` (one clock for every process of the host, in every
network namespace), then exits. Each line is one ``write`` to an
``O_APPEND`` file, so lines from several nodes never interleave.
"""

import os
import signal
import sys
import time


def note(kind: str) -> None:
    line = (
        f"{kind} {os.environ['ZRAFT_NODE_ID']} {os.environ['ZRAFT_TERM']} {os.getpid()} "
        f"{time.clock_gettime_ns(time.CLOCK_MONOTONIC)}\n"
    )
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def on_term(signum: int, frame: object) -> None:
    note("stop")
    os._exit(0)


signal.signal(signal.SIGTERM, on_term)
note("start")
while True:
    signal.pause()
