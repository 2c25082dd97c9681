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
from tests.sim.snapshots import RETRY_STEPS, SimSnapshot, Stream
from zraft.core import Message, MsgType, NotLeader, Role

PARTITION_STEPS = (30, 300)  # how long a partition lasts, in steps
PAUSE_STEPS = (20, 300)  # how long a paused node stays stopped, in steps
CLOCK_RATES = (0.25, 0.5, 1.0, 1.0, 1.5)  # a node's tick rate after a clock fault
DOWN_STEPS = (5, 150)  # how long a crashed node stays down, in steps
# A long outage (crash or partition, with the profile's odds): the others go on and
# compact past what the node holds, so it catches up by InstallSnapshot (Raft §7).
OUTAGE_STEPS = (300, 1500)
INSTALL_CRASH_POINTS = (*CrashPoint, CrashPoint.MID_INSTALL, CrashPoint.MID_INSTALL)


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
    long_partition: bool = False  # the current partition is a long outage
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
            self.stream_lost(m)
            return
        if isinstance(m, Stream):
            self.deliver_stream(m, dst, faults)
            return
        self.net.delivered += 1
        self.note(m)
        dst.step(m)
        self.touched(dst, defer=faults)

    def drop_random(self) -> None:
        m = self.net.take(self.rng)
        self.net.dropped += 1
        self.note(m, "dropped")
        self.stream_lost(m)

    # -- snapshots (tests.sim.snapshots) -------------------------------------

    def stream(self, node: SimNode, request: Message) -> None:
        """Put ``node``'s newest durable snapshot on the network to ``request.dst``
        (``Snapshots.request``): its core asked (a SNAPSHOT message)."""
        snap = node.snaps.store.newest()
        if snap is None or snap.meta.index < request.index:
            # Snapshots.request: nothing to send; the core asks again after the report.
            node.snaps.report(self.step + RETRY_STEPS, request.dst, request.index, False)
            node.snaps.stats.refused += 1
            self.note(f"{node.id} has no snapshot of at least {request.index} for {request.dst}")
            return
        meta = snap.meta
        node.snaps.stats.streams += 1
        stream = Stream(
            MsgType.SNAPSHOT,
            request.term,
            node.id,
            request.dst,
            meta.index,
            meta.term,
            snapshot=snap,
            life=node.life,
        )
        self.net.send([stream])

    def snapshot_taken(self, node: SimNode, snap: SimSnapshot, compacted: int) -> None:
        meta, taking = snap.meta, f"{snap.size} bytes"
        self.note(
            f"{node.id} wrote snapshot {meta.index}/t{meta.term} ({taking})"
            + (f", compacted to {compacted}" if compacted else "")
        )
        self.inv.snapshot_taken(node, snap)

    def installed(self, node: SimNode, snap: SimSnapshot) -> None:
        self.note(f"{node.id} installed snapshot {snap.meta.index}/t{snap.meta.term}")
        self.inv.synced(node, snap.meta.index + 1)  # the durable log after it went
        self.inv.restored(node, "installed a snapshot")

    def deliver_stream(self, m: Stream, dst: SimNode, faults: bool) -> None:
        """A whole snapshot arrives: the follower steps its core, the leader's core hears."""
        if m.term < dst.raft.term:
            self.net.dropped += 1  # Snapshots.on_chunk ignores a deposed leader's transfer
            self.note(m, f"stream refused (stale term: {m.dst} is in term {dst.raft.term})")
            self.stream_lost(m)
            return
        self.net.delivered += 1
        self.note(m, "stream arrives")
        dst.receive(m)
        if faults and dst.raft.pending_snapshot is not None:
            if self.rng.random() < self.profile.install_crash:
                # SIGKILL mid-install: before it, inside it (the snapshot published but
                # the storage not switched: start-up must finish it), or just after it.
                self.crash(dst, self.rng.choice(INSTALL_CRASH_POINTS))
        self.touched(dst, defer=faults)
        sender = self.by_id[m.src]
        if sender.up and sender.life == m.life:
            if sender in self.paused:
                sender.snaps.report(self.step, m.dst, m.index, True)  # at its next tick
            else:
                sender.shell.report_snapshot(m.dst, m.index, True)
                self.touched(sender, defer=faults)

    def stream_lost(self, m: Any) -> None:
        """A snapshot stream was lost: its sender's core hears so ``RETRY_STEPS`` later."""
        if not isinstance(m, Stream):
            return
        sender = self.by_id[m.src]
        sender.snaps.stats.streams_lost += 1
        if sender.up and sender.life == m.life:
            sender.snaps.report(self.step + RETRY_STEPS, m.dst, m.index, False)

    def snapshot_random(self) -> None:
        """One loop round of a node writing a snapshot: its Readys first, then a chunk."""
        busy = [n for n in self.nodes if n.snaps.taking is not None and n.up]
        busy = [n for n in busy if n not in self.paused]
        node = busy[self.rng.randrange(len(busy))]
        self.touched(node, defer=False)  # the loop handles Readys before snapshot work
        node.snapshot_step()
        self.note(f"snapshot work {node.id}")

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
        if self.long_partition:
            self.note("partition: the long one holds")
            return
        # Long enough, often, for an election timeout or two to pass on both sides.
        steps = self.outage(PARTITION_STEPS)
        self.long_partition = steps is OUTAGE_STEPS  # no other partition replaces it
        self.heal_at = self.step + rng.randint(*steps)
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

    def outage(self, usual: tuple[int, int]) -> tuple[int, int]:
        """Return the range a fault's length is drawn from: ``usual``, or a long outage."""
        return OUTAGE_STEPS if self.rng.random() < self.profile.outage else usual

    def heal(self) -> None:
        self.heal_at = 0
        self.long_partition = False
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
        if node not in self.dirty:
            point = CrashPoint.BEFORE_READY  # nothing pending: the point makes no difference
        self.crash(node, point)

    def crash(self, node: SimNode, point: CrashPoint) -> None:
        """Crash ``node`` at ``point`` of its pending Ready; it restarts some steps later."""
        if node in self.paused:
            self.paused.remove(node)  # kill -9 of a stopped process
        if node in self.dirty:
            self.dirty.remove(node)
        node.crash(point)
        self.restart_at[node.id] = self.step + self.rng.randint(*self.outage(DOWN_STEPS))
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
        r = node.raft
        snap = f" snapshot {node.applied_index}" if node.applied_index else ""
        finish = " (finished its install)" if node.finished_install else ""
        self.note(
            f"restart {node.id}: term {r.term} vote {r.voted_for or '-'}{snap}{finish} "
            f"log {r.log.first_index()}..{r.log.last_index()} commit {r.log.committed}"
            + (f"; {node.uncovered}" if node.uncovered else "")
        )
        self.inv.booted(node)
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
