"""A leader-only URL checker for zraft (a payload plugin).

The targets live in zraft's own KV store, so every node sees the same list:

    zraft set urlcheck/target/homepage '"https://example.org/"'

While this node is the fenced leader it GETs every target each ``interval_s``
seconds and writes the result next to it, as a JSON object:

    urlcheck/status/homepage = {"ok": true, "status": 200, "latency_ms": 12.3,
                                "checked_at": 1700000000.0, "node": "n1", "term": 4,
                                "url": "https://example.org/", "error": null}

Only one node checks at a time: zraft calls ``zraft_became_leader`` on the
leader alone and tells it (``ctx.wait`` returns True) as soon as it must stop.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

from zraft.api.client import Client, ZraftError
from zraft.hookspecs import hookimpl
from zraft.payload import PayloadContext

TARGET_PREFIX = "urlcheck/target/"
STATUS_PREFIX = "urlcheck/status/"
SETTINGS = {"interval_s": 5.0, "timeout_s": 2.0}  # name -> default


def check_url(url: Any, timeout_s: float, user_agent: str) -> dict[str, Any]:
    """GET ``url`` once; return ok, status (None without an HTTP answer), latency and error."""
    result: dict[str, Any] = {"url": url, "ok": False, "status": None, "error": None}
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        result["error"] = "target is not an http(s) URL"
        return result
    request = urllib.request.Request(url, headers={"User-Agent": user_agent})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            result["status"] = response.status
    except urllib.error.HTTPError as exc:  # 4xx, 5xx: an answer, but not a good one
        result["status"] = exc.code
    except (OSError, ValueError) as exc:  # refused, timed out, bad URL, DNS...
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
    result["ok"] = result["status"] is not None and 200 <= result["status"] < 400
    return result


class UrlCheck:
    """The plugin: one instance per node, registered under the entry point ``urlcheck``."""

    def __init__(self) -> None:
        self.interval_s = SETTINGS["interval_s"]
        self.timeout_s = SETTINGS["timeout_s"]

    @hookimpl
    def zraft_configure(self, settings: dict[str, Any], node_id: str) -> None:
        """Check ``[plugins.settings.urlcheck]``: positive numbers ``interval_s``, ``timeout_s``."""
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise ValueError(f"unknown setting(s) {unknown}; known: {sorted(SETTINGS)}")
        for name, default in SETTINGS.items():
            value = settings.get(name, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
            setattr(self, name, float(value))

    @hookimpl
    def zraft_became_leader(self, ctx: PayloadContext) -> None:
        """Check every target each ``interval_s`` until this node must stop leading."""
        ctx.log.info("term %d: checking urls every %gs", ctx.term, self.interval_s)
        # Give up on a call quickly: we must return soon after losing leadership. The
        # leader's client fences its writes to ctx.term (a late one fails with FENCED).
        with ctx.client(timeout=self.timeout_s, retry_for=self.timeout_s) as client:
            while True:
                try:
                    self.check_all(ctx, client)
                except ZraftError as exc:  # e.g. TIMEOUT while an election runs
                    ctx.log.warning("term %d: check round failed: %s", ctx.term, exc)
                if ctx.wait(self.interval_s):
                    return

    def check_all(self, ctx: PayloadContext, client: Client) -> None:
        """Run one round: read the targets, check each, write its status, drop stale ones."""
        target_keys = client.keys(prefix=TARGET_PREFIX)
        urls = client.mget(target_keys) if target_keys else []
        names = [key.removeprefix(TARGET_PREFIX) for key in target_keys]
        user_agent = f"zraft-urlcheck ({ctx.node_id}; term {ctx.term})"
        for name, url in zip(names, urls, strict=True):
            result = check_url(url, self.timeout_s, user_agent)
            result.update(checked_at=round(time.time(), 3), node=ctx.node_id, term=ctx.term)
            if not ctx.valid():  # lost the lease while checking: another leader may run now
                return
            client.set(STATUS_PREFIX + name, result)
        for key in client.keys(prefix=STATUS_PREFIX):
            if key.removeprefix(STATUS_PREFIX) not in names and ctx.valid():
                client.delete(key)  # its target was removed
