"""Deterministic simulation of the pure Raft core (Raft §5, thesis §3-§10), for tests only.

Many in-memory nodes (``tests.sim.node``: core + ``MemoryStorage`` + a KV
state machine) are driven through the core's one door by a seeded scheduler
(``tests.sim.schedule``; its events are ``tests.sim.events``) over a network
that reorders, delays, drops, duplicates and partitions (``tests.sim.network``),
with crashes that keep only what was fsynced. Clients (``tests.sim.clients``)
write, cas and read and record a history for the linearizability checker;
Raft's safety properties (``tests.sim.invariants``) are checked after every step.

Run one schedule with ``run_schedule(SimConfig(seed=..., nodes=...))``; replay
or soak from the shell with ``python -m tests.sim`` (see ``tests/sim/__main__.py``).
``test_simulation.py`` here is what pytest runs of it.
"""

from tests.sim.config import SWITCHES, Profile, Report, SimConfig, SimFailure
from tests.sim.invariants import ALL_CHECKS, Violation
from tests.sim.schedule import run_schedule

__all__ = [
    "ALL_CHECKS",
    "SWITCHES",
    "Profile",
    "Report",
    "SimConfig",
    "SimFailure",
    "Violation",
    "run_schedule",
]
