"""Process life of one node: logging, signals, sd_notify, graceful stop, exit codes.

Exit codes: 0 after a clean stop, 1 after a fatal storage error (systemd
restarts the node, which recovers from what is durable), 78 (EX_CONFIG) for a
configuration or plugin error (restarting cannot help).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

EX_OK = 0
EX_FATAL = 1
EX_CONFIG = 78

log = logging.getLogger("zraft.daemon")

_JOURNAL_LEVELS = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class _JournalFormatter(logging.Formatter):
    """``<N>`` syslog priority prefixes, no timestamp: journald adds its own."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _JOURNAL_LEVELS.get(record.levelno, 6)
        return f"<{prio}>{record.name}: {super().format(record)}"


class _JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers: ts, level, node, logger, msg (, exc)."""

    def __init__(self, node_id: str = "") -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "node": self.node_id,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str = "info", fmt: str = "auto", node_id: str = "") -> None:
    """Configure the root logger: journald prefixes, human text, or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter(node_id))
    elif fmt == "journal" or (fmt == "auto" and os.environ.get("JOURNAL_STREAM")):
        handler.setFormatter(_JournalFormatter("%(message)s"))
    else:
        prefix = f"[{node_id}] " if node_id else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {prefix}%(levelname)-7s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def watchdog_interval(environ: dict[str, str] | os._Environ[str]) -> float:
    """Return how often to send WATCHDOG=1 (a tenth of $WATCHDOG_USEC), or 0 when not asked.

    $WATCHDOG_PID, when set, must be this process (systemd sets it for the main process).
    """
    usec, pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return 0.0
    # A tenth, not the half sd_watchdog_enabled(3) suggests: then a loop stall
    # must last nine tenths of WatchdogSec, not possibly just half, to be killed.
    return int(usec) / 1e7


def sd_notify(state: str) -> bool:
    """Send ``state`` (e.g. "READY=1") to systemd's $NOTIFY_SOCKET; False when not under systemd."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]  # abstract socket namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(path)
            # Never block the event loop: a receiver that is not reading loses a
            # datagram (the next WATCHDOG=1 follows), not the node's heartbeats.
            s.send(state.encode(), socket.MSG_DONTWAIT)
        return True
    except OSError as exc:
        log.debug("sd_notify(%s) failed: %s", state, exc)
        return False


class StartExtender:
    """Tells systemd, while start-up runs long, that it is still loading.

    Loading a large snapshot can take longer than TimeoutStartSec. After
    ``after_s`` seconds, and every ``every_s`` seconds after that, it sends
    ``EXTEND_TIMEOUT_USEC`` for ``extend_s`` seconds more, up to ``limit_s``
    in all (a start-up stuck for that long is a failure). A quick start sends
    nothing. ``stop()`` when start-up is over.
    """

    def __init__(
        self,
        notify: Any,
        *,
        after_s: float = 5.0,
        every_s: float = 5.0,
        extend_s: float = 30.0,
        limit_s: float = 3600.0,
    ) -> None:
        self._notify = notify
        self._done = threading.Event()
        self._args = (after_s, every_s, extend_s, limit_s)
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="zraft-start", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        after_s, every_s, extend_s, limit_s = self._args
        waited = after_s
        if self._done.wait(after_s):
            return
        while waited <= limit_s:
            self._notify(f"EXTEND_TIMEOUT_USEC={int(extend_s * 1e6)}")
            self.sent += 1
            if self._done.wait(every_s):
                return
            waited += every_s

    def stop(self) -> None:
        """Start-up is over (ready or failed): send nothing more."""
        self._done.set()
        self._thread.join(timeout=1.0)


def run_node(config_path: str | None, node_id: str) -> int:
    """Load the ensemble file, start node ``node_id`` and serve until SIGTERM/SIGINT."""
    from zraft.config import ConfigError, load_config, load_default
    from zraft.node import Node
    from zraft.plugins import PluginError
    from zraft.storage import CorruptionError, StorageError
    from zraft.unsafe import SWITCHES
    from zraft.unsafe import from_env as unsafe_switches

    try:
        config = load_config(config_path) if config_path else load_default()
        config.node(node_id)
    except ConfigError as exc:
        log.critical("invalid configuration:\n%s", exc)
        return EX_CONFIG
    except KeyError as exc:
        log.critical("%s", exc.args[0] if exc.args else exc)
        return EX_CONFIG
    try:
        unsafe = unsafe_switches(os.environ)
    except ValueError as exc:
        log.critical("%s", exc)
        return EX_CONFIG
    for name in sorted(unsafe):
        log.critical("UNSAFE TEST SWITCH ON: %s: %s", name, SWITCHES[name])
    extender = StartExtender(sd_notify)  # a long snapshot load is not a hung start
    try:
        node = Node(config, node_id, unsafe=unsafe)
    except PluginError as exc:
        log.critical("plugin error: %s", exc)
        return EX_CONFIG
    except CorruptionError as exc:
        log.critical("refusing to start: %s", exc)
        return EX_FATAL
    except StorageError as exc:
        log.critical("storage error at start-up: %s", exc)
        return EX_FATAL
    except OSError as exc:  # e.g. address already in use, permission denied
        log.critical("cannot start node %s: %s", node_id, exc)
        return EX_FATAL
    finally:
        extender.stop()
    if node.me.metrics:
        from zraft.httpd import serve

        host, _, port = node.me.metrics.rpartition(":")
        try:
            serve(host.strip("[]"), int(port), node.metrics.registry, node.health, node.ready)
        except OSError as exc:
            log.error("metrics endpoint %s unavailable: %s", node.me.metrics, exc)
    from zraft.plugins import plugin_list

    log.info(
        "config %s, node %s: raft %s, client %s, metrics %s, data %s",
        config.path,
        node_id,
        node.me.raft,
        node.me.client,
        node.me.metrics or "off",
        node.me.data_dir,
    )
    log.info("plugins: %s", ", ".join(f"{n} {v} ({src})" for n, v, src in plugin_list(node.pm)))

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        sd_notify("STOPPING=1")
        node.stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    # READY=1, STATUS= and WATCHDOG=1 come from the event loop itself (node.py).
    node.notify = sd_notify
    node.watchdog_s = watchdog_interval(os.environ)
    try:
        node.run()
    except StorageError:
        return EX_FATAL
    log.info("node %s stopped", node_id)
    return EX_OK
