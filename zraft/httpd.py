"""The metrics port of a node: ``/metrics`` for Prometheus, ``/health`` and ``/ready`` for checks.

* ``/metrics``: every metric of the node's registry (Prometheus text format).
* ``/health``: 200 while the node's event loop is turning (it ran within the
  last few election timeouts), 503 when it is stuck or stopped. For a
  liveness check: restarting a node that fails it is right.
* ``/ready``: 200 when the node is healthy and knows a leader, so it can
  serve linearizable requests; 503 otherwise. For a load balancer: do not
  send clients to a node that fails it, but do not restart it either.

Both answer a small JSON body with the facts behind the verdict. The server
runs on its own daemon thread and only reads the node's state.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("zraft.httpd")

Check = Callable[[], tuple[bool, dict[str, Any]]]


def serve(
    host: str, port: int, registry: CollectorRegistry, health: Check, ready: Check
) -> ThreadingHTTPServer:
    """Start serving on ``host:port`` in a daemon thread; return the server (``shutdown()``)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
            elif path in ("/health", "/ready"):
                ok, facts = (health if path == "/health" else ready)()
                body = json.dumps({"ok": ok, **facts}).encode() + b"\n"
                self._send(200 if ok else 503, "application/json", body)
            else:
                self._send(404, "text/plain", b"not found: try /metrics, /health or /ready\n")

        def _send(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), fmt % args)

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = Server((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="zraft-httpd", daemon=True).start()
    return server
