"""The events of a schedule: what one step of the seeded scheduler can do.

``Events`` is mixed into ``tests.sim.schedule.Simulation``, which holds the
state these change (nodes, network, clients, the paused and dirty lists) and
picks one of them per step by weight. Each draws its choices from the
schedule's one ``random.Random``, in a fixed order, so a seed replays exactly.
Faults prefer the leader (``victim``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from tests.sim.clients import Clients
from tests.sim.config import Profile
from tests.sim.invariants import Invariants
from tests.sim.network import Network
from tests.sim.node import CrashPoint, SimNode
from zraft.core import NotLeader, Role

PARTITION_STEPS = (30, 300)  # how long a partition lasts, in steps
PAUSE_STEPS = (20, 300)  # how long a paused node stays stopped, in steps
CLOCK_RATES = (0.25, 0.5, 1.0, 1.0, 1.5)  # a node's tick rate after a clock fault
DOWN_STEPS = (5, 150)  # how long a crashed node stays down, in steps


class Events:
    """Tick, deliver, drop, duplicate, Ready, clients, and the faults: one call, one event."""

    # The schedule's state, owned by Simulation.
    rng: random.Random
    profile: Profile
    step: int
    nodes: list[SimNode]
    by_id: dict[str, SimNode]
    net: Network
    inv: Invariants
    clients: Clients
    dirty: list[SimNode]
    paused: list[SimNode]
    crashes: int
    roles: dict[str, tuple[Role, int]]
    heal_at: int
    restart_at: dict[str, int]
    resume_at: dict[str, int]
    clock: dict[str, float]

    def note(self, what: Any, suffix: str = "") -> None:
        raise NotImplementedError  # Simulation.note: the trace

    def running(self) -> list[SimNode]:
        """Return the nodes that are up and not paused, in id order."""
        return [n for n in self.nodes if n.up and n not in self.paused]

    def touched(self, node: SimNode, defer: bool = True) -> None:
        """Handle ``node``'s Readys now, or (sometimes) leave them for a "ready" event."""
        if not node.up or not node.has_work():
            return
        if defer and self.rng.random() < self.profile.defer_ready:
            if node not in self.dirty:
                self.dirty.append(node)
            return
        if node in self.dirty:
            self.dirty.remove(node)
        node.drain()

    def tick_random(self) -> None:
        running = self.running()
        node = self.rng.choices(running, [self.clock[n.id] for n in running])[0]
        node.tick()
        self.note(f"tick {node.id}")
        self.touched(node)

    def deliver_random(self, faults: bool = True) -> None:
        i = self.net.pick(self.rng, self.profile.reorder)
        m = self.net.in_flight[i]
        dst = self.by_id[m.dst]
        if dst in self.paused:
            self.note(m, f"waits ({m.dst} paused)")  # a stopped process reads nothing
            return
        del self.net.in_flight[i]
        if self.net.is_cut(m) or not dst.up:
            self.net.dropped += 1
            self.note(m, "lost (cut)" if dst.up else f"lost ({m.dst} down)")
            return
        self.net.delivered += 1
        self.note(m)
        dst.step(m)
        self.touched(dst, defer=faults)

    def drop_random(self) -> None:
        m = self.net.take(self.rng)
        self.net.dropped += 1
        self.note(m, "dropped")

    def duplicate_random(self) -> None:
        self.note(self.net.duplicate(self.rng), "duplicated")

    def ready_random(self) -> None:
        ready = [n for n in self.dirty if n not in self.paused]
        node = ready[self.rng.randrange(len(ready))]
        self.dirty.remove(node)
        self.note(f"ready {node.id}")
        node.drain()

    def client_write(self, cas: bool = False) -> None:
        up = [n.id for n in self.running()]
        node, what = self.clients.write(self.step, self.by_id, up, cas)
        self.note(what)
        if node is not None:
            self.touched(node)

    def client_cas(self) -> None:
        self.client_write(cas=True)

    def client_read(self) -> None:
        up = [n.id for n in self.running()]
        node, what = self.clients.read(self.step, self.by_id, up)
        self.note(what)
        if node is not None:
            self.touched(node)

    def partition(self) -> None:
        ids, rng, net = list(self.net.ids), self.rng, self.net
        # Long enough, often, for an election timeout or two to pass on both sides.
        self.heal_at = self.step + rng.randint(*PARTITION_STEPS)
        net.heal()
        kind = rng.choice(("split", "isolate", "one-way"))
        if kind == "split" and len(ids) > 3:
            # A minority side, with the leader in it half of the time.
            first = self.victim(self.nodes).id
            rest = [i for i in ids if i != first]
            side = [first] + rng.sample(rest, rng.randint(0, len(ids) // 2 - 1))
            net.split(side)
            self.note(f"partition {sorted(side)} | {sorted(set(ids) - set(side))}")
        elif kind in ("split", "isolate"):
            node = self.victim(self.nodes).id
            net.split([node])
            self.note(f"partition: isolate {node}")
        else:
            node = self.victim(self.nodes).id
            others = [i for i in ids if i != node]
            peers = rng.sample(others, rng.randint(1, len(others)))
            if rng.random() < 0.5:
                net.cut_one_way((node, p) for p in peers)
                self.note(f"partition: {node} cannot send to {peers}")
            else:
                net.cut_one_way((p, node) for p in peers)
                self.note(f"partition: {node} cannot hear from {peers}")

    def heal(self) -> None:
        self.heal_at = 0
        self.net.heal()
        self.note("heal")

    def victim(self, candidates: Sequence[SimNode]) -> SimNode:
        """Pick a node to hurt: a leader half of the time (the Jepsen nemesis habit),
        since faults at the leader are what loses or diverges uncommitted entries."""
        leaders = [n for n in candidates if n.up and n.raft.role is Role.LEADER]
        if leaders and self.rng.random() < 0.5:
            return self.rng.choice(leaders)
        return self.rng.choice(candidates)

    def crash_random(self) -> None:
        node = self.victim([n for n in self.nodes if n.up])
        point = self.rng.choice(list(CrashPoint))
        if node in self.paused:
            self.paused.remove(node)  # kill -9 of a stopped process
        if node in self.dirty:
            self.dirty.remove(node)
        else:
            point = CrashPoint.BEFORE_READY  # nothing pending: the point makes no difference
        node.crash(point)
        self.restart_at[node.id] = self.step + self.rng.randint(*DOWN_STEPS)
        self.crashes += 1
        self.clients.crashed(node, self.step)
        self.note(f"crash {node.id} ({point.value})")

    def pause_random(self) -> None:
        """Stop a process (SIGSTOP, a long GC pause, a VM migration): its clock and its
        inbox freeze while the others go on; its messages already sent stay in flight."""
        node = self.victim(self.running())
        self.paused.append(node)
        self.resume_at[node.id] = self.step + self.rng.randint(*PAUSE_STEPS)
        self.note(f"pause {node.id}")

    def skew_random(self) -> None:
        """Change a node's clock rate. A leader whose clock runs slow believes in its
        lease after its followers timed out and elected another: only ReadIndex's
        quorum confirmation keeps its reads linearizable (thesis §6.4, §6.4.1)."""
        node = self.victim([n for n in self.nodes if n.up])
        rate = self.rng.choice(CLOCK_RATES)
        self.clock[node.id] = rate
        self.note(f"clock of {node.id} runs at {rate}x")

    def resume(self, node: SimNode) -> None:
        self.paused.remove(node)
        self.note(f"resume {node.id}")
        self.touched(node)

    def restart(self, node: SimNode) -> None:
        node.boot()
        self.inv.booted(node)
        r = node.raft
        self.note(
            f"restart {node.id}: term {r.term} vote {r.voted_for or '-'} "
            f"log {r.log.last_index()} commit {r.log.committed}"
        )
        self.roles[node.id] = (r.role, r.term)
        self.touched(node)

    def transfer(self) -> None:
        leaders = [n for n in self.running() if n.raft.role is Role.LEADER]
        if not leaders:
            return
        node = self.rng.choice(leaders)
        target = self.rng.choice([i for i in self.net.ids if i != node.id])
        try:
            node.shell.transfer_leader(target)
        except NotLeader:  # pragma: no cover - leaders were just filtered
            return
        self.note(f"transfer leadership {node.id} -> {target}")
        self.touched(node)
