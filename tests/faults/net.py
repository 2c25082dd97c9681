"""Where the nodes of a fault run live, and how the network between them is broken.

``Netns`` (the default; needs root and a private network and mount namespace,
which ``python -m tests.faults.run`` gets from ``unshare --net --mount``):

- a tmpfs is mounted on ``/run/netns`` (in the private mount namespace, so no
  namespace name leaks to the host), one network namespace per node, a bridge
  in the runner's own namespace and a veth pair per node; addresses from
  ``10.213.0.0/24`` exist only inside these namespaces, and the runner's
  namespace has no route anywhere else;
- every node binds its raft endpoint on ``10.213.0.N:7100`` and its client
  endpoint on ``10.213.0.N:7000``; clients run in the runner's namespace
  (``10.213.0.254``), so partitions never cut clients off, only peers;
- faults are nftables rules in each node's namespace (``table inet zfault``).

Why the rules look at the raft port: the peer mesh uses one TCP connection per
direction (node X's DEALER connects to node Y's ROUTER and carries only X->Y
messages). "X cannot send to Y" drops, in Y's namespace, every packet from X
to Y's raft port. That kills exactly the X->Y connection and leaves Y->X
working: a real one-way partition of messages, which a plain per-address drop
cannot give over TCP (the ACKs of the other direction would be lost too). A
new connection attempt (a SYN) is answered with a TCP reset rather than
dropped, so that ZeroMQ retries every second instead of waiting out the
kernel's SYN backoff: a healed partition reconnects within about a second.
Established connections are silently dropped; ZeroMQ's heartbeat (3 s) closes
them. Random loss drops that percentage of every packet between nodes; over
TCP that shows up as delay and reordered timeouts, not lost messages.

``Loopback`` (``tests.support.ensemble``, re-exported here): every node on
127.0.0.1 with its own ports; no partitions (the scenarios that need them are
skipped), for machines without root. ``Network``, the interface both follow,
lives there too.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Iterable

from tests.support.ensemble import Loopback, NetError, Network

SUBNET = "10.213.0"
RUNNER_IP = f"{SUBNET}.254"
RAFT_PORT = 7100
CLIENT_PORT = 7000
TABLE = "zfault"
BRIDGE = "zfbr0"
HOST_NS_ENV = "ZFAULT_HOST_NS"


def host_namespaces() -> str:
    """Return this process's net and mount namespace ids, for ``Netns.check_private``."""
    return ",".join(os.readlink(f"/proc/self/ns/{ns}") for ns in ("net", "mnt"))


def _run(cmd: list[str], stdin: str | None = None) -> None:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=20)
    if proc.returncode != 0:
        raise NetError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")


@functools.cache
def netns_unavailable() -> str | None:
    """Return why ``Netns`` cannot work on this machine, or None when it can.

    Checks root, the ``unshare``, ``ip`` and ``nft`` tools, and that a private
    network and mount namespace can be created with nftables working inside.
    """
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("unshare", "ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = (
        "ip link set lo up && nft add table inet zprobe && "
        "ip link add zprobe0 type bridge && ip link del zprobe0"
    )
    try:
        proc = subprocess.run(
            ["unshare", "--net", "--mount", "--", "sh", "-c", probe],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare --net --mount failed: {exc}"
    if proc.returncode != 0:
        return f"unshare --net --mount with nft failed: {proc.stderr.strip()[:200]}"
    return None


class Netns(Network):
    """One network namespace per node behind a bridge; faults by nftables (module docstring)."""

    kind = "netns"
    partitions = True

    def __init__(self) -> None:
        self._ns: dict[str, str] = {}
        self._mounted = False

    @staticmethod
    def check_private() -> None:
        """Refuse to touch the host: this process must be in its own net and mount namespace.

        Compared with the namespaces of the process that spawned the runner
        (``ZFAULT_HOST_NS``, set by ``run.spawn``) or else of the parent process.
        """
        host = os.environ.get(HOST_NS_ENV, "")
        for ns in ("net", "mnt"):
            mine = os.readlink(f"/proc/self/ns/{ns}")
            try:
                theirs = os.readlink(f"/proc/{os.getppid()}/ns/{ns}")
            except OSError:
                theirs = ""
            if mine == theirs or mine in host.split(","):
                raise NetError(
                    f"refusing to configure networking: this process shares its {ns} "
                    "namespace with its spawner (run it under unshare --net --mount)"
                )

    def setup(self, ids: list[str]) -> None:
        super().setup(ids)
        if len(ids) > 250:
            raise NetError("too many nodes")
        self.check_private()
        os.makedirs("/run/netns", exist_ok=True)
        _run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "zfault", "/run/netns"])
        self._mounted = True
        _run(["ip", "link", "set", "lo", "up"])
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        _run(["ip", "addr", "add", f"{RUNNER_IP}/24", "dev", BRIDGE])
        _run(["ip", "link", "set", BRIDGE, "up"])
        for i, nid in enumerate(ids, 1):
            ns = f"zf-{nid}"
            _run(["ip", "netns", "add", ns])
            self._ns[nid] = ns
            _run(["ip", "link", "add", f"zfv{i}", "type", "veth", "peer", "name", "eth0"])
            _run(["ip", "link", "set", "eth0", "netns", ns])
            _run(["ip", "link", "set", f"zfv{i}", "master", BRIDGE, "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{self.ip(nid)}/24", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        self.heal()

    def ip(self, nid: str) -> str:
        return f"{SUBNET}.{self.ids.index(nid) + 1}"

    def raft_endpoint(self, nid: str) -> str:
        return f"tcp://{self.ip(nid)}:{RAFT_PORT}"

    def client_endpoint(self, nid: str) -> str:
        return f"tcp://{self.ip(nid)}:{CLIENT_PORT}"

    def command_prefix(self, nid: str) -> list[str]:
        return ["ip", "netns", "exec", self._ns[nid]]

    def ruleset(self, nid: str, cuts: Iterable[tuple[str, str]], loss_pct: int) -> str:
        """Return the nft script that makes ``nid``'s inbound faults exactly these."""
        rules = []
        for src, dst in sorted(set(cuts)):
            if dst != nid:
                continue
            match = f"ip saddr {self.ip(src)} tcp dport {RAFT_PORT}"
            rules.append(f"{match} tcp flags & (syn | ack) == syn reject with tcp reset")
            rules.append(f"{match} drop")
        if loss_pct > 0:
            peers = ", ".join(self.ip(p) for p in self.ids if p != nid)
            rules.append(f"ip saddr {{ {peers} }} numgen random mod 100 < {int(loss_pct)} drop")
        body = "".join(f"    {r}\n" for r in rules)
        return (
            f"table inet {TABLE} {{}}\n"
            f"flush table inet {TABLE}\n"
            f"table inet {TABLE} {{\n"
            "  chain input {\n"
            "    type filter hook input priority 0; policy accept;\n"
            f"{body}"
            "  }\n"
            "}\n"
        )

    def apply(self, cuts: Iterable[tuple[str, str]] = (), loss_pct: int = 0) -> None:
        cuts = list(cuts)
        for src, dst in cuts:
            if src not in self._ns or dst not in self._ns or src == dst:
                raise NetError(f"bad cut {src}->{dst}")
        for nid, ns in self._ns.items():
            _run(["ip", "netns", "exec", ns, "nft", "-f", "-"], self.ruleset(nid, cuts, loss_pct))

    def heal(self) -> None:
        self.apply((), 0)

    def teardown(self) -> None:
        for ns in list(self._ns.values()):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        self._ns.clear()
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, timeout=20)
        if self._mounted:
            subprocess.run(["umount", "-l", "/run/netns"], capture_output=True, timeout=20)
            self._mounted = False


def make_network(kind: str) -> Network:
    """Return a ``Netns`` or ``Loopback`` network by name."""
    if kind == "netns":
        return Netns()
    if kind == "loopback":
        return Loopback()
    raise ValueError(f"unknown network kind {kind!r}")
