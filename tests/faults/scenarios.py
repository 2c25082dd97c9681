"""The fault scenarios: what happens between "load is running" and "heal".

Each scenario is a function of a ``Ctx``. It picks its victims from the live
ensemble (the current leader, a random follower), draws its durations from the
run's seeded ``random.Random`` and notes every fault it injects. The runner
heals whatever is left (network rules flushed, stopped nodes continued, dead
nodes restarted) after it returns. ``E`` below is the election timeout.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.faults import snapfaults as snap
from tests.faults.ensemble import FaultEnsemble
from tests.faults.net import Network
from tests.faults.workload import Workload


@dataclass
class Ctx:
    """What a scenario may use; ``note`` every fault, ``pause`` instead of ``time.sleep``."""

    ens: FaultEnsemble
    net: Network
    load: Workload
    rng: random.Random
    params: dict[str, Any] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    cuts: set[tuple[str, str]] = field(default_factory=set)
    loss_pct: int = 0
    figures: dict[str, Any] = field(default_factory=dict)  # measured effects, into the result
    t0: float = field(default_factory=time.monotonic)

    def note(self, what: str) -> None:
        self.faults.append(f"{time.monotonic() - self.t0:6.2f}s {what}")

    def pause(self, lo: float, hi: float | None = None) -> None:
        time.sleep(lo if hi is None else self.rng.uniform(lo, hi))

    def leader(self, among: list[str] | None = None) -> str:
        return self.ens.leader(timeout=20.0, among=among)

    def followers(self, leader: str) -> list[str]:
        return [n for n in self.ens.ids if n != leader]

    def partition(self, *groups: list[str]) -> None:
        """Cut every link between nodes of different groups, both ways (replaces other cuts)."""
        where = {n: i for i, g in enumerate(groups) for n in g}
        ids = self.ens.ids
        self.cuts = {(a, b) for a in ids for b in ids if a != b and where.get(a) != where.get(b)}
        self.net.apply(self.cuts, self.loss_pct)
        self.note("partition " + " | ".join(",".join(g) for g in groups))

    def cut(self, pairs: set[tuple[str, str]], what: str) -> None:
        """Add one-way cuts: (src, dst) means src's messages to dst are lost."""
        self.cuts |= pairs
        self.net.apply(self.cuts, self.loss_pct)
        self.note(what)

    def lossy(self, pct: int) -> None:
        self.loss_pct = pct
        self.net.apply(self.cuts, pct)
        self.note(f"{pct}% packet loss between all nodes")

    def heal(self) -> None:
        if self.cuts or self.loss_pct:
            self.cuts, self.loss_pct = set(), 0
            self.net.heal()
            self.note("heal network")

    def heal_all(self) -> None:
        """Undo every fault: network rules, stopped and dead nodes."""
        self.heal()
        for nid in list(self.ens.stopped):
            self.ens.resume(nid)
            self.note(f"SIGCONT {nid}")
        dead = [n for n in self.ens.ids if not self.ens.alive(n)]
        if dead:
            self.ens.start(*dead)
            self.note(f"restart {','.join(dead)}")

    @property
    def E(self) -> float:  # noqa: N802 - the paper's letter for the election timeout
        return self.ens.election_s

    def bulk_until(self, entries: int, limit_s: float) -> int:
        """Run the bulk writer until ``entries`` more writes are acknowledged; return how many."""
        start = self.load.history.stats.bulk_acked
        self.load.start_bulk()
        deadline = time.monotonic() + limit_s
        while self.load.history.stats.bulk_acked - start < entries and time.monotonic() < deadline:
            time.sleep(0.05)
        self.load.stop_bulk()
        return self.load.history.stats.bulk_acked - start


def kill_leader(ctx: Ctx) -> None:
    """SIGKILL the leader, restart it after a while; ``rounds`` times."""
    for _ in range(ctx.params.get("rounds", 2)):
        lead = ctx.leader()
        ctx.ens.kill(lead)
        ctx.note(f"SIGKILL leader {lead}")
        ctx.pause(2 * ctx.E, 4 * ctx.E)
        ctx.ens.start(lead)
        ctx.note(f"restart {lead}")
        ctx.leader()
        ctx.pause(ctx.E, 2 * ctx.E)


def kill_follower(ctx: Ctx) -> None:
    """SIGKILL a random follower, restart it after a while; ``rounds`` times."""
    for _ in range(ctx.params.get("rounds", 2)):
        victim = ctx.rng.choice(ctx.followers(ctx.leader()))
        ctx.ens.kill(victim)
        ctx.note(f"SIGKILL follower {victim}")
        ctx.pause(2 * ctx.E, 4 * ctx.E)
        ctx.ens.start(victim)
        ctx.note(f"restart {victim}")
        ctx.pause(ctx.E, 2 * ctx.E)


def kill_all(ctx: Ctx) -> None:
    """SIGKILL every node at once under load, restart them all; ``rounds`` times.

    With ``lazy_writes`` (the ``power-loss`` scenario) a SIGKILL loses what was
    written but not fsynced, as a power loss would.
    """
    for _ in range(ctx.params.get("rounds", 2)):
        ctx.leader()
        ctx.pause(ctx.E, 2 * ctx.E)  # let the load build up acknowledged writes
        ctx.ens.kill(*ctx.ens.ids)
        ctx.note("SIGKILL all nodes")
        ctx.pause(0.1, 0.5)
        ctx.ens.start()
        ctx.note("restart all nodes")
        ctx.leader()


def stop_cont_leader(ctx: Ctx) -> None:
    """SIGSTOP the leader for several election timeouts, then SIGCONT it."""
    for _ in range(ctx.params.get("rounds", 1)):
        lead = ctx.leader()
        ctx.ens.pause(lead)
        ctx.note(f"SIGSTOP leader {lead}")
        ctx.pause(3 * ctx.E, 6 * ctx.E)
        ctx.ens.resume(lead)
        ctx.note(f"SIGCONT {lead}")
        ctx.leader()
        ctx.pause(ctx.E, 2 * ctx.E)


def stop_cont_follower(ctx: Ctx) -> None:
    """SIGSTOP a follower for a while, then SIGCONT it."""
    victim = ctx.rng.choice(ctx.followers(ctx.leader()))
    ctx.ens.pause(victim)
    ctx.note(f"SIGSTOP follower {victim}")
    ctx.pause(3 * ctx.E, 8 * ctx.E)
    ctx.ens.resume(victim)
    ctx.note(f"SIGCONT {victim}")


def isolate_leader(ctx: Ctx) -> None:
    """Cut the leader off from every other node (clients still reach it), then heal."""
    for _ in range(ctx.params.get("rounds", 1)):
        lead = ctx.leader()
        ctx.partition([lead], ctx.followers(lead))
        ctx.pause(4 * ctx.E, 7 * ctx.E)
        ctx.heal()
        ctx.leader()
        ctx.pause(ctx.E, 2 * ctx.E)


def split(ctx: Ctx) -> None:
    """A majority/minority split with the leader in the minority; then the new leader's turn.

    Two splits back to back without healing in between (the second puts the
    majority's new leader in a new minority), then heal.
    """
    ids = ctx.ens.ids
    minority_size = (len(ids) - 1) // 2
    lead = ctx.leader()
    for _ in range(ctx.params.get("rounds", 2)):
        others = [n for n in ids if n != lead]
        minority = [lead] + ctx.rng.sample(others, minority_size - 1)
        majority = [n for n in ids if n not in minority]
        ctx.partition(minority, majority)
        ctx.pause(4 * ctx.E, 6 * ctx.E)
        lead = ctx.leader(among=majority)
    ctx.heal()


def one_way(ctx: Ctx) -> None:
    """The leader cannot receive (it still sends), heal; then a leader cannot send, heal."""
    lead = ctx.leader()
    ctx.cut({(f, lead) for f in ctx.followers(lead)}, f"leader {lead} cannot receive from peers")
    ctx.pause(4 * ctx.E, 6 * ctx.E)
    ctx.heal()
    lead = ctx.leader()
    ctx.cut({(lead, f) for f in ctx.followers(lead)}, f"leader {lead} cannot send to peers")
    ctx.pause(4 * ctx.E, 6 * ctx.E)
    ctx.heal()


def loss(ctx: Ctx) -> None:
    """Random loss of a share of every packet between nodes for a while.

    Over TCP a lost packet is retransmitted, so below about 25% this only
    delays messages; from 25% on, retransmission backoff outlasts election
    timeouts and leadership changes.
    """
    ctx.lossy(ctx.params.get("pct", ctx.rng.choice([25, 35, 45])))
    ctx.pause(8 * ctx.E, 12 * ctx.E)
    ctx.heal()


def flaky(ctx: Ctx) -> None:
    """Links that come and go: every few hundred ms, each direction is cut with some odds.

    Cuts that outlast ZeroMQ's heartbeat close connections and lose the
    messages queued on them; with random packet loss on top, this is the
    closest to random message loss the network gives.
    """
    ids = ctx.ens.ids
    odds = ctx.params.get("odds", ctx.rng.choice([0.15, 0.3, 0.45]))
    pct = ctx.params.get("pct", ctx.rng.choice([0, 10, 20]))
    ctx.loss_pct = pct
    ctx.note(f"flaky links: each direction cut with odds {odds}, {pct}% packet loss")
    deadline = time.monotonic() + ctx.rng.uniform(12 * ctx.E, 20 * ctx.E)
    while time.monotonic() < deadline:
        ctx.cuts = {(a, b) for a in ids for b in ids if a != b and ctx.rng.random() < odds}
        ctx.net.apply(ctx.cuts, pct)
        ctx.faults.append(f"{time.monotonic() - ctx.t0:6.2f}s cuts {sorted(ctx.cuts)}")
        ctx.pause(0.3, 3 * ctx.E)
    ctx.heal()


def bridge(ctx: Ctx) -> None:
    """Two majorities that overlap in one node (a bridge), e.g. {a,b} and {b,c} for 3 nodes."""
    ids = list(ctx.ens.ids)
    ctx.rng.shuffle(ids)
    half = len(ids) // 2
    left, mid, right = ids[:half], ids[half], ids[half + 1 :]
    cuts = {(a, b) for a in left for b in right} | {(b, a) for a in left for b in right}
    ctx.cut(cuts, f"bridge: {','.join(left)} | {mid} | {','.join(right)}")
    ctx.pause(6 * ctx.E, 10 * ctx.E)
    ctx.heal()


def lagging_follower(ctx: Ctx) -> None:
    """Cut a follower off while bulk writes push it thousands of entries behind; heal.

    The runner's convergence check then requires it to catch up (same applied
    index and state hash as every other node).
    """
    lead = ctx.leader()
    victim = ctx.rng.choice(ctx.followers(lead))
    ctx.partition([victim], ctx.followers(victim))
    ctx.pause(2 * ctx.E)
    pushed = ctx.bulk_until(ctx.params.get("entries", 4000), 40.0)
    st = ctx.ens.statuses()
    behind = max((s["commit"] for s in st.values() if s), default=0) - (
        (st.get(victim) or {}).get("applied", 0)
    )
    ctx.note(f"{victim} is {behind} entries behind ({pushed} bulk writes acknowledged)")
    ctx.figures["behind"] = behind
    ctx.heal()


def stale_candidate(ctx: Ctx) -> None:
    """A follower falls behind; the moment it rejoins, the leader is cut off (§5.4.1).

    The lagging node F has long been campaigning. When it rejoins, the leader
    and enough others are cut off that a majority needs F plus ``n // 2``
    up-to-date voters, and those voters are cut from each other: none of them
    can win (itself and F are not a majority of 5), only F can, and only if
    they grant votes on the term alone. The §5.4.1 log check must refuse F:
    no leader until the heal (the negative control ``vote_on_term_only`` lets
    F win and overwrite committed entries). With 3 nodes there is one voter,
    which may win itself: F's chance to be granted is a race.
    """
    ids = ctx.ens.ids
    lead = ctx.leader()
    victim = ctx.rng.choice(ctx.followers(lead))
    ctx.partition([victim], ctx.followers(victim))
    ctx.pause(2 * ctx.E)
    pushed = ctx.bulk_until(ctx.params.get("entries", 1000), 20.0)
    ctx.note(f"{victim} fell behind by about {pushed} bulk writes")
    voters = ctx.rng.sample([n for n in ctx.followers(lead) if n != victim], len(ids) // 2)
    away = [n for n in ids if n != victim and n not in voters]
    cuts = {(a, b) for a in away for b in ids if b not in away}
    cuts |= {(b, a) for a, b in cuts}
    cuts |= {(a, b) for a in voters for b in voters if a != b}
    ctx.cuts = set()
    ctx.cut(cuts, f"{','.join(away)} cut off; {victim} sees voters {','.join(voters)} (cut apart)")
    ctx.pause(6 * ctx.E, 8 * ctx.E)
    ctx.heal()


def overwrite_suffix(ctx: Ctx) -> None:
    """A deposed leader's long uncommitted suffix is overwritten by a later leader (§5.3, Fig. 7).

    The leader is cut off while a bulk writer pinned to it makes it append a
    long suffix that can never commit. As soon as the majority has elected a
    new leader, that one is cut off instead and the old leader rejoins the
    rest, whose next leader has a newer last term but a shorter log. Its first
    AppendEntries lands inside the old leader's stale suffix: only the
    prev-index/term check makes the old leader reject it and back up (the
    negative control ``skip_prev_log_check`` keeps part of the stale suffix).
    """
    old = ctx.leader()
    rest = ctx.followers(old)
    ctx.partition([old], rest)
    ctx.load.start_bulk(depth=ctx.params.get("suffix", 2000), node=old)
    new = ctx.leader(among=rest)
    ctx.load.stop_bulk()
    ctx.partition([new], [n for n in ctx.ens.ids if n != new])
    ctx.pause(4 * ctx.E, 6 * ctx.E)
    ctx.heal()


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Ctx], None]
    partitions: bool = False  # needs a network that can cut links
    unsafe: str = ""  # switches the scenario itself needs (power-loss: lazy_writes)
    doc: str = ""
    raft_toml: str = ""  # added to the ensemble file's [raft] table
    extra_toml: str = ""  # added to the ensemble file before the [[node]] tables


def _scenario(name: str, fn: Callable[[Ctx], None], doc: str = "", **kw: Any) -> Scenario:
    return Scenario(name, fn, doc=doc or (fn.__doc__ or "").strip().splitlines()[0], **kw)


def _snapshots(name: str, fn: Callable[[Ctx], None], **kw: Any) -> Scenario:
    return _scenario(name, fn, raft_toml=snap.RAFT_TOML, extra_toml=snap.STORAGE_TOML, **kw)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        _scenario("kill-leader", kill_leader),
        _scenario("kill-follower", kill_follower),
        _scenario("kill-all", kill_all),
        _scenario(
            "power-loss",
            kill_all,
            unsafe="lazy_writes",
            doc="SIGKILL every node while the WAL keeps unsynced writes in memory (power loss).",
        ),
        _scenario("stop-cont-leader", stop_cont_leader),
        _scenario("stop-cont-follower", stop_cont_follower),
        _scenario("isolate-leader", isolate_leader, partitions=True),
        _scenario("split", split, partitions=True),
        _scenario("one-way", one_way, partitions=True),
        _scenario("loss", loss, partitions=True),
        _scenario("bridge", bridge, partitions=True),
        _scenario("flaky", flaky, partitions=True),
        _scenario("lagging-follower", lagging_follower, partitions=True),
        _scenario("stale-candidate", stale_candidate, partitions=True),
        _scenario("overwrite-suffix", overwrite_suffix, partitions=True),
        # Snapshots (tests/faults/snapfaults.py): small snapshot_entries and segments.
        _snapshots("snapshot-kill-writer", snap.kill_while_writing),
        _snapshots("snapshot-kill-install", snap.kill_mid_install),
        _snapshots("snapshot-lagging-follower", snap.lagging_by_snapshot, partitions=True),
        _snapshots("snapshot-power-loss", snap.power_loss_snapshot, unsafe="lazy_writes"),
        _snapshots(
            "snapshot-corrupt-transfer", snap.corrupt_transfer, unsafe="corrupt_snapshot_chunks"
        ),
    ]
}
