"""systemd: a long start-up (a large snapshot to load) extends the start timeout."""

from __future__ import annotations

import threading

from zraft.daemon import StartExtender


def test_a_long_start_sends_extend_timeout_until_stopped() -> None:
    got: list[str] = []
    two = threading.Event()

    def notify(state: str) -> None:
        got.append(state)
        if len(got) >= 2:
            two.set()

    ext = StartExtender(notify, after_s=0.0, every_s=0.001, extend_s=30.0)
    assert two.wait(5.0), "no EXTEND_TIMEOUT_USEC within 5 s"
    ext.stop()
    count = len(got)
    assert got[0] == "EXTEND_TIMEOUT_USEC=30000000"
    ext.stop()  # idempotent
    assert len(got) == count  # nothing after stop()


def test_a_quick_start_sends_nothing() -> None:
    got: list[str] = []
    ext = StartExtender(got.append, after_s=60.0)
    ext.stop()
    assert got == [] and ext.sent == 0


def test_extensions_end_at_the_limit() -> None:
    got: list[str] = []
    ext = StartExtender(got.append, after_s=0.0, every_s=0.001, limit_s=0.003)
    ext._thread.join(5.0)
    assert not ext._thread.is_alive() and 1 <= len(got) <= 4
    ext.stop()
