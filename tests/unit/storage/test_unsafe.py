"""The power-loss double and the skip_fsync negative control (zraft/storage/unsafe.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.unit.storage.walfiles import ents, recover
from zraft.core.messages import HardState
from zraft.storage.unsafe import UnsafeWalStorage
from zraft.storage.wal import WalStorage

# -- the power-loss double and the skip_fsync negative control (zraft/storage/unsafe.py)


def _killed(wal: WalStorage) -> None:
    """Drop the object without close(): what SIGKILL does to the process."""
    os.close(wal._fd)  # the kernel closes the fd; the process's memory is gone
    wal._fd = None


def test_lazy_writes_lose_exactly_what_was_not_fsynced(tmp_path: Path) -> None:
    wal = UnsafeWalStorage(tmp_path, lazy_writes=True)
    wal.open()
    wal.append(HardState(1, "n1", 0), ents(1, 5), sync=True)
    wal.append(HardState(2, "n2", 3), ents(6, 9), sync=False)
    _killed(wal)
    recovered = recover(tmp_path)
    assert recovered.entries == ents(1, 5)
    assert recovered.hard_state == HardState(1, "n1", 0)


def test_skip_fsync_under_power_loss_loses_acknowledged_entries(tmp_path: Path) -> None:
    # The negative control: an append with sync=True (a vote or an ack follows it)
    # is not durable, which the fault suite must then catch as lost writes.
    wal = UnsafeWalStorage(tmp_path, lazy_writes=True, skip_fsync=True)
    wal.open()
    wal.append(HardState(1, "n1", 0), ents(1, 5), sync=True)
    _killed(wal)
    assert recover(tmp_path).entries == []


def test_lazy_writes_reach_the_file_on_a_clean_close(tmp_path: Path) -> None:
    wal = UnsafeWalStorage(tmp_path, lazy_writes=True, skip_fsync=True)
    wal.open()
    wal.append(HardState(1, "n1", 0), ents(1, 5), sync=True)
    wal.close()
    assert recover(tmp_path).entries == ents(1, 5)


def test_unknown_unsafe_switch_is_refused() -> None:
    from zraft.unsafe import ENV, from_env

    assert from_env({ENV: "lazy_writes, skip_fsync"}) == {"lazy_writes", "skip_fsync"}
    assert from_env({}) == frozenset()
    with pytest.raises(ValueError, match="unknown switch.*skip_fsnyc"):
        from_env({ENV: "skip_fsnyc"})
