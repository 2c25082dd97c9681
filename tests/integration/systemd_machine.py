"""A real systemd as PID 1 in private namespaces, for test_systemd.py (root only).

Not for production. ``Machine`` boots it on an overlay of / and runs commands
inside; ``machine`` is the pytest fixture; ``_install`` performs the README's
install steps inside it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests import ROOT

UNITS = ROOT / "systemd"
SERVICE = UNITS / "zraft@.service"
TARGET = UNITS / "zraft.target"
SYSUSERS = UNITS / "zraft.sysusers"
TMPFILES = UNITS / "zraft.tmpfiles"
BINARY = "/opt/zraft/bin/zraft"
CONFIG = "/etc/zraft/zraft.toml"

T = TypeVar("T")

BOOT_SH = r"""
set -eu
T=$1
R=$T/root
mount --make-rprivate /
mkdir -p $T/layers
mount -t tmpfs -o mode=0755 tmpfs $T/layers
mkdir -p $T/layers/upper $T/layers/work $R
mount -t overlay overlay -o lowerdir=/,upperdir=$T/layers/upper,workdir=$T/layers/work $R
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup
mount -t tmpfs -o mode=0755 tmpfs $R/run
mount -t tmpfs -o mode=1777 tmpfs $R/tmp
mount -t tmpfs -o mode=0755 tmpfs $R/dev
for d in null zero full random urandom tty; do
    touch $R/dev/$d
    mount --bind /dev/$d $R/dev/$d
done
mkdir $R/dev/pts $R/dev/shm $R/dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
ln -s pts/ptmx $R/dev/ptmx
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
U=$R/usr/lib/systemd/system
mount -t tmpfs -o mode=0755 tmpfs $U
for u in $(cat $T/system-units); do
    cp /usr/lib/systemd/system/$u $U/
done
mkdir $U/sockets.target.wants
ln -s ../systemd-journald.socket ../systemd-journald-dev-log.socket $U/sockets.target.wants/
rm -rf $R/etc/systemd/system
mkdir -p $R/etc/systemd/system
cp $T/boot.target $R/etc/systemd/system/zraft-test-boot.target
mount --bind $T/stage $R/mnt
ip link set lo up
# pivot_root, not chroot: the kernel refuses new user namespaces (PrivateUsers=) to a
# chrooted process.
mkdir -p $R/.oldroot
cd $R
pivot_root . .oldroot
umount -l /.oldroot
cd /
exec /usr/bin/env -i container=zraft-test \
    /lib/systemd/systemd --unit=zraft-test-boot.target --log-target=journal
"""

SYSTEM_UNITS = """sysinit.target basic.target shutdown.target network.target
network-online.target multi-user.target sockets.target paths.target timers.target
slices.target local-fs.target swap.target final.target poweroff.target
systemd-poweroff.service halt.target systemd-halt.service exit.target
systemd-exit.service umount.target emergency.target rescue.target
systemd-journald.service systemd-journald.socket systemd-journald-dev-log.socket"""

# Test-speed knobs only: every sandbox and lifecycle directive stays as shipped.
FAST_RESTART = "[Service]\nRestartSec=1s\nTimeoutAbortSec=2s\n"
FAST_WATCHDOG = "[Service]\nWatchdogSec=2s\n"
EXIT_1 = "[Service]\nExecStart=\nExecStart=/bin/sh -c 'exit 1'\n"

ENSEMBLE = """
[ensemble]
name = "systemd-test"

[payload]
leader = ["/bin/sh", "-c", "echo leading term $ZRAFT_TERM; exec sleep 600"]
"""
NODE = """
[[node]]
id = "{id}"
raft = "tcp://127.0.0.1:{raft}"
client = "tcp://127.0.0.1:{client}"
data_dir = "/var/lib/zraft/{id}"
metrics = "127.0.0.1:{metrics}"
"""
BROKEN = '[ensemble]\nname = "systemd-test"\n[raft]\nelection_timeout_ms = "soon"\n'


def _stage(stage: Path) -> None:
    """Copy what the install steps need into ``stage`` (seen inside as /mnt): the unit
    files, and zraft with its dependencies' files for /opt/zraft's site-packages."""
    import importlib.metadata

    import zraft

    for f in (SERVICE, TARGET, SYSUSERS, TMPFILES):
        shutil.copy(f, stage / f.name)
    site = stage / "site-packages"
    shutil.copytree(
        Path(zraft.__file__).parent, site / "zraft", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyzmq", "pluggy", "tomli", "msgpack", "prometheus_client"):
        dist = importlib.metadata.distribution(name)
        base = Path(str(dist.locate_file(""))).resolve()
        for f in dist.files or []:
            src = Path(str(f.locate())).resolve()
            if base not in src.parents or "__pycache__" in src.parts or not src.is_file():
                continue  # console scripts in bin/, byte code
            dst = site / src.relative_to(base)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (namespaces, mounts, cgroups)"
    for tool in ("unshare", "nsenter", "pivot_root", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.access("/lib/systemd/systemd", os.X_OK):
        return "systemd is not installed"
    if not Path("/usr/lib/systemd/system/sysinit.target").exists():
        return "no /usr/lib/systemd/system/sysinit.target to boot with"
    filesystems = Path("/proc/filesystems").read_text()
    if "overlay" not in filesystems or "cgroup2" not in filesystems:
        return "the kernel lacks overlayfs or cgroup2"
    py = subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print(*sys.version_info[:2])"],
        capture_output=True,
        text=True,
    )
    if py.returncode or py.stdout.split() != [str(v) for v in sys.version_info[:2]]:
        return "needs /usr/bin/python3 of this Python version (the venv reuses these wheels)"
    return None


def _cgroup2_dir() -> Path | None:
    """This process's cgroup in the cgroup2 hierarchy, wherever that is mounted."""
    mount = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" - ")
        if len(fields) == 2 and fields[1].split()[0] == "cgroup2":
            mount = fields[0].split()[4]
            break
    own = next(
        (x[3:] for x in Path("/proc/self/cgroup").read_text().splitlines() if x[:3] == "0::"),
        None,
    )
    if mount is None or own is None:
        return None
    return Path(mount) / own.lstrip("/")


class Machine:
    """A systemd as PID 1 in private namespaces; commands run inside through nsenter."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.cgroup: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid1 = 0  # PID 1 of the namespace, as the host sees it

    def boot(self) -> None:
        parent = _cgroup2_dir()
        if parent is None:
            pytest.skip("no cgroup2 hierarchy mounted")
        self.cgroup = parent / f"zraft-systemd-test-{os.getpid()}"
        try:
            self.cgroup.mkdir()
        except OSError as exc:
            pytest.skip(f"cannot create a cgroup for the test systemd: {exc}")
        (self.tmp / "stage").mkdir()
        _stage(self.tmp / "stage")
        (self.tmp / "boot.sh").write_text(BOOT_SH)
        (self.tmp / "system-units").write_text(SYSTEM_UNITS)
        (self.tmp / "boot.target").write_text("[Unit]\nRequires=basic.target\nAfter=basic.target\n")
        self.log = open(self.tmp / "boot.log", "wb")
        self.proc = subprocess.Popen(
            [
                "sh",
                "-c",
                'echo $$ > "$0/cgroup.procs" && exec unshare --pid --fork --mount --net '
                '--uts --ipc --cgroup -- sh "$1" "$2"',
                str(self.cgroup),
                str(self.tmp / "boot.sh"),
                str(self.tmp),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        state = ""
        while time.monotonic() < deadline and self.proc.poll() is None:
            if not self.pid1:
                children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
                pids = children.read_text().split() if children.exists() else []
                self.pid1 = int(pids[0]) if pids else 0
            elif Path(f"/proc/{self.pid1}/comm").read_text().strip() == "systemd":
                state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.1)
        log = (self.tmp / "boot.log").read_text(errors="replace")
        pytest.skip(f"a systemd in namespaces did not boot here (state {state!r}): {log[-2000:]}")

    def run(
        self, *cmd: str, check: bool = True, timeout: float = 30, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside (all namespaces and the root of PID 1), as root."""
        proc = subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-m", "-p", "-n", "-u", "-i", "-r", "-w"]
            + ["/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C.UTF-8"]
            + ["SYSTEMD_COLORS=0", *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check:
            assert proc.returncode == 0, f"{cmd}: {proc.returncode}\n{proc.stdout}{proc.stderr}"
        return proc

    def write(self, path: str, text: str) -> None:
        self.run("sh", "-c", 'mkdir -p "$(dirname "$0")" && cat > "$0"', path, input=text)

    def show(self, unit: str) -> dict[str, str]:
        props = "ActiveState,SubState,Result,NRestarts,MainPID,ExecMainStatus,StatusText"
        out = self.run("systemctl", "show", "-p", props, unit).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str) -> str:
        return self.run("journalctl", "--no-pager", "-o", "cat", "-u", unit).stdout

    def wait(self, what: str, predicate: Callable[[], T], timeout: float) -> T:
        """Poll ``predicate`` until it returns something true; return that."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {result!r}")
            time.sleep(0.2)

    def shutdown(self) -> None:
        if self.proc is not None:
            if self.pid1 and self.proc.poll() is None:
                os.kill(self.pid1, signal.SIGRTMIN + 4)  # poweroff: PID 1 exits
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.kill(self.pid1, signal.SIGKILL)  # takes the whole pid namespace
                    self.proc.wait(10)
            elif self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self.log.close()
        if self.cgroup is not None and self.cgroup.exists():
            for _ in range(50):  # cgroups empty a moment after their last process exits
                try:
                    for d in sorted(self.cgroup.rglob("*/"), key=lambda p: -len(p.parts)):
                        if d.is_dir():
                            d.rmdir()
                    self.cgroup.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def boot_machine(tmp_path: Path) -> Iterator[Machine]:
    """Boot a machine in ``tmp_path`` (skip the test when this host cannot), yield it, stop it."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    m = Machine(tmp_path)
    try:
        m.boot()
        yield m
    finally:
        m.shutdown()


def _install(m: Machine) -> None:
    """The README's install steps, inside the machine."""
    m.run("/usr/bin/python3", "-m", "venv", "--without-pip", "/opt/zraft")
    site = "/opt/zraft/lib/python{}.{}/site-packages".format(*sys.version_info[:2])
    m.run("cp", "-r", "/mnt/site-packages/.", site)
    zraft = "#!/opt/zraft/bin/python3\nimport sys\nfrom zraft.cli import main\nsys.exit(main())\n"
    m.write(BINARY, zraft)
    m.run("chmod", "0755", BINARY)
    m.run("systemd-sysusers", f"/mnt/{SYSUSERS.name}")
    m.run("systemd-tmpfiles", "--create", f"/mnt/{TMPFILES.name}")
    for unit in (SERVICE, TARGET):
        m.run("install", "-m", "0644", f"/mnt/{unit.name}", "/etc/systemd/system/")
    m.write("/etc/systemd/system/zraft@.service.d/fast-restart.conf", FAST_RESTART)
    m.write("/etc/systemd/system/zraft@zr3.service.d/watchdog.conf", FAST_WATCHDOG)
    m.write("/etc/systemd/system/zraft@crash.service.d/exit-1.conf", EXIT_1)
    m.run("systemctl", "daemon-reload")


def _config(m: Machine, text: str) -> None:
    m.write("/tmp/zraft.toml", text)
    m.run("install", "-m", "0640", "-g", "zraft", "/tmp/zraft.toml", CONFIG)
