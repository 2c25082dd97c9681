"""The systemd units in systemd/: what `systemd-analyze` says about them, the directives
the daemon relies on, and (as root, where the kernel allows it) a real systemd as PID 1
in private namespaces running three instances of zraft@.service.

The units name /opt/zraft/bin/zraft and /etc/zraft/zraft.toml; nothing here touches
the real /etc or /opt: `systemd-analyze --root` reads a copy of the units from a
temporary tree holding a stub executable, and the PID 1 test works on an overlay of /
that lives and dies with its own mount namespace.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.integration.systemd_machine import (
    BINARY,
    BROKEN,
    CONFIG,
    ENSEMBLE,
    NODE,
    SERVICE,
    SYSUSERS,
    TARGET,
    TMPFILES,
    Machine,
    _config,
    _install,
    boot_machine,
)

# `systemd-analyze security` rates zraft@.service 1.2 ("OK") on systemd 252. What
# keeps it above 0 is what a networked daemon needs: the host's network (PrivateNetwork,
# IPAddressDeny, AF_INET/AF_INET6/AF_UNIX/AF_NETLINK), @resources (libzmq calls
# sched_setscheduler), plus the host's root directory, full /proc (payloads read
# /proc/meminfo) and read access to the RTC (from ProtectClock). A regression that
# drops, say, PrivateUsers= or SystemCallFilter= pushes it past this.
MAX_EXPOSURE = 1.5

T = TypeVar("T")

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def directives(path: Path) -> list[tuple[str, str, str]]:
    """Return (section, key, value) for every assignment in a unit file, in order.

    Keys may repeat (SystemCallFilter=), so this is a list, not configparser's dict.
    """
    section, out = "", []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not an assignment: {raw!r}"
        out.append((section, key.strip(), value.strip()))
    return out


def values(path: Path, section: str, key: str) -> list[str]:
    return [v for s, k, v in directives(path) if (s, k) == (section, key)]


def one(path: Path, section: str, key: str) -> str:
    found = values(path, section, key)
    assert len(found) == 1, f"{path.name}: [{section}] {key}= set {len(found)} times: {found}"
    return found[0]


def seconds(span: str) -> float:
    """Parse a systemd time span such as "30s", "2min", "10min 30s" or "90"."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "ms": 0.001}
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)\s*([a-z]*)", span):
        total += float(number) * units[unit]
    return total


# -- the unit text ------------------------------------------------------------


def test_service_has_the_directives_the_daemon_relies_on() -> None:
    s = "Service"
    assert one(SERVICE, s, "Type") == "notify"
    assert one(SERVICE, s, "NotifyAccess") == "main"
    assert 0 < seconds(one(SERVICE, s, "WatchdogSec")) <= 30
    assert one(SERVICE, s, "Restart") == "on-failure"
    assert "78" in one(SERVICE, s, "RestartPreventExitStatus").split()
    assert one(SERVICE, s, "KillMode") == "mixed"
    # Leadership transfer and payload stop (payload.timeout_ms, 5 s) must fit.
    assert seconds(one(SERVICE, s, "TimeoutStopSec")) >= 30
    assert one(SERVICE, s, "User") == "zraft"
    assert one(SERVICE, s, "Group") == "zraft"
    assert one(SERVICE, s, "StateDirectory") == "zraft"
    assert int(one(SERVICE, s, "LimitNOFILE")) >= 65536
    assert one(SERVICE, s, "CapabilityBoundingSet") == ""
    assert one(SERVICE, "Unit", "PartOf") == "zraft.target"
    assert int(one(SERVICE, "Unit", "StartLimitBurst")) > 0
    assert seconds(one(SERVICE, "Unit", "StartLimitIntervalSec")) > 5 * seconds(
        one(SERVICE, s, "RestartSec")
    ), "the start limit could never be reached"
    assert one(SERVICE, "Install", "WantedBy") == "zraft.target"
    assert one(TARGET, "Install", "WantedBy") == "multi-user.target"


def test_exec_lines_run_the_config_check_and_the_instance_node() -> None:
    (pre,) = values(SERVICE, "Service", "ExecStartPre")
    start = one(SERVICE, "Service", "ExecStart")
    # "-": RestartPreventExitStatus= never applies to ExecStartPre= (systemd #11868); the
    # main process exits 78 on the same file, so the check only reports (see the unit).
    assert pre == f"-{BINARY} check-config {CONFIG} --node %i"
    assert start == f"{BINARY} run --config {CONFIG} --node %i"


def test_hardening_leaves_libzmq_what_it_needs() -> None:
    families = one(SERVICE, "Service", "RestrictAddressFamilies").split()
    assert set(families) == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}, families
    filters = values(SERVICE, "Service", "SystemCallFilter")
    assert "@system-service" in filters
    for f in filters:
        if f.startswith("~"):
            assert "@resources" not in f and "sched_setscheduler" not in f, f
    for key in (
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "RestrictNamespaces",
        "LockPersonality",
        "MemoryDenyWriteExecute",
        "RestrictRealtime",
        "RestrictSUIDSGID",
    ):
        assert one(SERVICE, "Service", key) == "yes", key
    assert one(SERVICE, "Service", "ProtectSystem") == "strict"
    assert one(SERVICE, "Service", "SystemCallArchitectures") == "native"
    assert one(SERVICE, "Service", "UMask") == "0077"


def test_sysusers_and_tmpfiles_lines() -> None:
    lines = [x for x in SYSUSERS.read_text().splitlines() if x and not x.startswith("#")]
    assert lines == ['u zraft - "zraft Raft daemon" /var/lib/zraft']
    lines = [x for x in TMPFILES.read_text().splitlines() if x and not x.startswith("#")]
    assert lines == ["d /etc/zraft 0750 root zraft -"]


@pytest.mark.timeout(60)
@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="no systemd-sysusers")
def test_sysusers_and_tmpfiles_apply_to_a_root(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(SYSUSERS)], check=True, timeout=30
    )
    (user,) = [x for x in (tmp_path / "etc/passwd").read_text().splitlines() if "zraft" in x]
    name, _, uid, gid, gecos, home, shell = user.split(":")
    assert (name, gecos, home, uid == gid) == ("zraft", "zraft Raft daemon", "/var/lib/zraft", True)
    assert shell.endswith("nologin")
    if os.geteuid() != 0 or shutil.which("systemd-tmpfiles") is None:
        return  # chown to root:zraft needs root
    subprocess.run(
        ["systemd-tmpfiles", f"--root={tmp_path}", "--create", str(TMPFILES)],
        check=True,
        timeout=30,
    )
    st = (tmp_path / "etc/zraft").stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o750, 0, int(gid))


# -- systemd-analyze ------------------------------------------------------------


def system_unit_dir() -> Path:
    for d in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if Path(d, "sysinit.target").exists():
            return Path(d)
    pytest.skip("no distribution unit directory (sysinit.target) to verify against")


def make_root(tmp: Path, service_text: str | None = None) -> Path:
    """Build an alternate root for `systemd-analyze --root`: our units in
    /etc/systemd/system, the distribution's units (default dependencies such as
    sysinit.target must resolve) and a stub /opt/zraft/bin/zraft, because verify
    checks that every Exec*= command is executable."""
    root = tmp / "root"
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    shutil.copytree(system_unit_dir(), root / "usr/lib/systemd/system", symlinks=True)
    for unit in (SERVICE, TARGET):
        shutil.copy(unit, etc / unit.name)
    if service_text is not None:
        (etc / SERVICE.name).write_text(service_text)
    stub = root / BINARY.lstrip("/")
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    return root


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, *args], capture_output=True, text=True, timeout=60, env=_c_locale()
    )


def _c_locale() -> dict[str, str]:
    return {**os.environ, "LC_ALL": "C.UTF-8", "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""}


@needs_analyze
@pytest.mark.timeout(60)
def test_verify_prints_nothing(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    proc = analyze("verify", f"--root={root}", "zraft@zr1.service", "zraft.target")
    # verify exits 0 on warnings ("Unknown key", "Failed to parse"): only an empty
    # output means the units are clean.
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


@needs_analyze
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("\nKillMode=mixed\n", "\nKillMode=mixd\n"), "Failed to parse kill mode"),
        (("\nWatchdogSec=10s\n", "\nWatchdogSecs=10s\n"), "Unknown key"),
    ],
)
def test_verify_would_see_a_mistake(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    # Negative control: the same harness on a broken copy must print something.
    text = SERVICE.read_text()
    assert change[0] in text
    root = make_root(tmp_path, text.replace(change[0], change[1], 1))
    proc = analyze("verify", f"--root={root}", "zraft@zr1.service")
    assert expected in proc.stdout + proc.stderr


@needs_analyze
@pytest.mark.timeout(60)
def test_verify_sees_a_missing_binary(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    (root / BINARY.lstrip("/")).unlink()
    proc = analyze("verify", f"--root={root}", "zraft@zr1.service")
    assert "is not executable" in proc.stdout + proc.stderr


@needs_analyze
@pytest.mark.timeout(60)
def test_security_exposure_is_low(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    proc = analyze("security", "--offline=true", f"--root={root}", "zraft@zr1.service")
    out = proc.stdout + proc.stderr
    match = re.search(r"Overall exposure level for zraft@zr1\.service: ([\d.]+) (\w+)", out)
    assert match, out
    exposure, level = float(match[1]), match[2]
    print(f"systemd-analyze security zraft@zr1.service: exposure {exposure} {level}")
    assert exposure <= MAX_EXPOSURE, out
    # systemd's own reading of the filters: what libzmq needs is really allowed.
    rows = {m[2]: m[1] for m in re.finditer(r"^([✓✗]) (\S+)", out, re.MULTILINE)}
    assert rows.get("SystemCallFilter=~@resources") == "✗", "libzmq needs sched_setscheduler"
    assert rows.get("RestrictAddressFamilies=~AF_NETLINK") == "✗", "libzmq needs AF_NETLINK"
    assert rows.get("SystemCallFilter=~@privileged") == "✓"
    assert rows.get("MemoryDenyWriteExecute=") == "✓"


# -- a real systemd as PID 1 ------------------------------------------------------
#
# unshare(1) gives a shell new pid, mount, net, uts, ipc and cgroup namespaces in a
# cgroup of its own; the shell (PID 1 there) mounts an overlay of / with a tmpfs as
# its upper layer, fresh /proc, /sys, cgroup2, /run, /tmp and a minimal /dev, hides
# the distribution's units behind the few targets that default dependencies need
# (plus journald), and pivots into systemd. The overlay is where the install steps
# write /etc/zraft, /opt/zraft and /var/lib/zraft; all of it vanishes with the mount
# namespace. The network namespace has only loopback.


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    yield from boot_machine(tmp_path)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_units_under_a_real_systemd(machine: Machine) -> None:
    m = machine
    t0 = time.monotonic()
    _install(m)
    m.run("systemctl", "enable", "zraft@zr1", "zraft@zr2", "zraft@zr3", "zraft.target")
    wants = m.run("ls", "/etc/systemd/system/zraft.target.wants").stdout.split()
    assert wants == ["zraft@zr1.service", "zraft@zr2.service", "zraft@zr3.service"]
    m.run("test", "-L", "/etc/systemd/system/multi-user.target.wants/zraft.target")

    # A broken ensemble file: the check reports it (ignored, "-"), `zraft run` exits 78
    # and RestartPreventExitStatus=78 keeps it down: no restart loop.
    _config(m, BROKEN)
    assert m.run("systemctl", "start", "zraft@zr1", check=False).returncode != 0
    time.sleep(2.5)  # RestartSec is 1 s here: a restart would have happened
    s = m.show("zraft@zr1")
    assert (s["ActiveState"], s["ExecMainStatus"], s["NRestarts"]) == ("failed", "78", "0"), s
    journal = m.journal("zraft@zr1")
    assert "raft.election_timeout_ms" in journal, journal  # printed by check-config
    m.run("systemctl", "reset-failed", "zraft@zr1")

    nodes = "".join(
        NODE.format(id=f"zr{i}", raft=7100 + i, client=7000 + i, metrics=9100 + i)
        for i in (1, 2, 3)
    )
    _config(m, ENSEMBLE + nodes)
    # Type=notify: `systemctl start` of the target returns once every instance has sent
    # READY=1 (the target is ordered after what it wants).
    m.run("systemctl", "start", "zraft.target", timeout=60)
    started = time.monotonic()
    for i in (1, 2, 3):
        s = m.show(f"zraft@zr{i}")
        assert (s["ActiveState"], s["SubState"]) == ("active", "running"), s
        assert s["StatusText"], f"zraft@zr{i} sent no STATUS="
        print(f"zraft@zr{i}: {s['StatusText']}")
    pid = m.show("zraft@zr1")["MainPID"]
    status = m.run("cat", f"/proc/{pid}/status").stdout
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M), status
    assert re.search(r"^Seccomp:\s+2$", status, re.M), status
    assert re.search(r"^CapEff:\s+0+$", status, re.M), status

    def leader() -> str:
        out = m.run(BINARY, "status", "-c", CONFIG, "-w", "json", check=False).stdout
        rows = json.loads(out) if out.startswith("[") else []
        leaders = {r.get("status", {}).get("leader") for r in rows if r.get("status")}
        return leaders.pop() if len(leaders) == 1 and None not in leaders else ""

    lead = m.wait("a leader", leader, 20)
    print(f"leader {lead} after {time.monotonic() - started:.1f} s")
    # The leader payload runs in the leader's cgroup, under the same sandbox.
    m.wait(
        "the leader payload",
        lambda: "sleep" in m.run("systemd-cgls", "--no-pager", "-u", f"zraft@{lead}").stdout,
        10,
    )
    metrics = m.run(
        "/opt/zraft/bin/python3",
        "-c",
        "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9101/metrics').status)",
    )
    assert metrics.stdout.strip() == "200"

    # Watchdog (2 s on zr3): a live event loop keeps it fed...
    time.sleep(max(0.0, started + 5 - time.monotonic()))
    s = m.show("zraft@zr3")
    assert (s["ActiveState"], s["NRestarts"]) == ("active", "0"), s
    # ... a frozen one gets killed (SIGABRT, then SIGKILL after TimeoutAbortSec) and
    # restarted by Restart=on-failure.
    m.run("kill", "-STOP", s["MainPID"])

    def restarted() -> bool:
        s = m.show("zraft@zr3")
        return s["NRestarts"] == "1" and s["ActiveState"] == "active"

    m.wait("a watchdog restart of zraft@zr3", restarted, 20)
    journal = m.journal("zraft@zr3")
    assert "Watchdog timeout" in journal and "Failed with result 'watchdog'" in journal
    # PYTHONFAULTHANDLER=1: SIGABRT dumps every thread's stack into the journal first.
    assert "Fatal Python error: Aborted" in journal and "Current thread" in journal, journal

    # Exit 78 (no such node) is not restarted; exit 1 is (the negative control).
    assert m.run("systemctl", "start", "zraft@nosuch", check=False).returncode != 0
    assert m.run("systemctl", "start", "zraft@crash", check=False).returncode != 0
    time.sleep(2.5)
    s = m.show("zraft@nosuch")
    assert (s["ExecMainStatus"], s["NRestarts"]) == ("78", "0"), s
    assert int(m.show("zraft@crash")["NRestarts"]) >= 1
    m.run("systemctl", "stop", "zraft@crash")

    # Stopping the target stops every instance (PartOf=); each exits 0 by itself,
    # having stopped its payload: KillMode=mixed finds nothing left to SIGKILL. The
    # target, ordered after its instances, stops first: `systemctl stop zraft.target`
    # does not wait for them.
    stopping = time.monotonic()
    m.run("systemctl", "stop", "zraft.target", timeout=60)
    for i in (1, 2, 3):

        def stopped(unit: str = f"zraft@zr{i}") -> dict[str, str] | None:
            s = m.show(unit)
            return s if s["ActiveState"] != "deactivating" else None

        s = m.wait(f"zraft@zr{i} to stop", stopped, 40)
        assert (s["ActiveState"], s["Result"], s["ExecMainStatus"]) == (
            "inactive",
            "success",
            "0",
        ), s
        journal = m.journal(f"zraft@zr{i}")
        assert "SIGKILL" not in journal.split("Watchdog timeout")[-1], journal
    print(f"graceful stop of 3 nodes: {time.monotonic() - stopping:.1f} s")
    for i in (1, 2):
        assert m.show(f"zraft@zr{i}")["NRestarts"] == "0"
    print(f"PID 1 scenario: {time.monotonic() - t0:.1f} s")
