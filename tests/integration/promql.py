"""PromQL and promtool helpers for test_promtool.py and test_prometheus.py.

Not for production: metric names out of PromQL expressions and out of a
/metrics body, the dashboard's queries as recording rules, a Prometheus
server on loopback run by pid.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import ROOT
from tests.support.ensemble import Ensemble, free_ports

PROM_DIR = ROOT / "configs" / "prometheus"
SCRAPE_CONFIG = PROM_DIR / "prometheus.yml"
ALERTS = PROM_DIR / "zraft-alerts.yml"
ALERTS_TEST = PROM_DIR / "zraft-alerts.test.yml"
DASHBOARD = ROOT / "configs" / "grafana" / "zraft-dashboard.json"
PRODUCTION_EXAMPLE = ROOT / "configs" / "production-example.toml"

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)"
)
needs_prometheus = pytest.mark.skipif(
    PROMTOOL is None or PROMETHEUS is None,
    reason="prometheus/promtool not installed (Debian: apt-get install prometheus)",
)

# Series Prometheus itself makes for every target or rule, not exported by zraft.
PROMETHEUS_SERIES = {
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
    "ALERTS",
    "ALERTS_FOR_STATE",
}
# What the dashboard's Grafana variables stand for when its queries run outside Grafana.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "${instance}": ".+",
    "$instance": ".+",
}
ENSEMBLE_WIDE = "Whole ensemble: not filtered by instance."


def run(argv: list[str], cwd: Path = PROM_DIR, stdin: str | None = None) -> tuple[int, str]:
    """Run a command; return its exit code and stdout+stderr, printed for the test log."""
    p = subprocess.run(argv, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=60)
    out = p.stdout + p.stderr
    print(f"$ {' '.join(argv)}  -> {p.returncode}\n{out}")
    return p.returncode, out


# -- PromQL: which metric names an expression reads --------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)\s*(\()?")
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
}
_AGGREGATIONS = {
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    if re.search(r"__name__\s*(=~|!=|!~)", expr):
        raise ValueError(f"cannot tell which metrics a __name__ regex selects: {expr}")
    names = set(re.findall(r'__name__\s*=\s*"([^"]*)"', expr))
    e = _STRING.sub('""', expr)
    e = re.sub(r"\{[^{}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\[\]]*\]", " ", e)  # ranges and subqueries
    e = _GROUPING.sub(" ", e)  # label lists of by/without/on/ignoring/group_*
    for m in _IDENT.finditer(e):
        ident, call = m.group(1), m.group(2)
        if call or ident.lower() in _KEYWORDS or ident in _AGGREGATIONS:
            continue  # a function, an aggregation or a keyword
        names.add(ident)
    return names


def exported_names(body: str) -> set[str]:
    """The series names a /metrics body makes available to queries.

    From every sample line, and from the TYPE lines too: a metric with labels
    has no samples until its first labelled child exists (a payload that
    never failed), but it is exported. A histogram's base name is not a
    series (only ``_bucket``, ``_sum``, ``_count``), nor a counter's without ``_total``.
    """
    names: set[str] = set()
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            elif kind == "summary":
                names |= {name, f"{name}_sum", f"{name}_count"}
            elif kind == "counter":
                names.add(name if name.endswith("_total") else f"{name}_total")
            else:
                names.add(name)
        elif line and not line.startswith("#"):
            m = re.match(r"[A-Za-z_:][\w:]*", line)
            assert m, f"not a sample line: {line!r}"
            names.add(m.group(0))
    return names


def unknown_names(exprs: dict[str, str], exported: set[str]) -> dict[str, set[str]]:
    """{where: names} for each expression naming a metric neither zraft nor Prometheus makes."""
    allowed = exported | PROMETHEUS_SERIES
    bad = {where: metric_names(e) - allowed for where, e in exprs.items()}
    return {where: names for where, names in bad.items() if names}


def dashboard_exprs(dashboard: dict[str, Any], substitute: bool = True) -> dict[str, str]:
    """{where: PromQL} for every target, annotation and variable query of a dashboard."""
    out: dict[str, str] = {}

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(dashboard["panels"]):
        for t in p.get("targets", []):
            out[f"panel {p['id']} {p['title']!r} target {t['refId']}"] = t["expr"]
    for a in dashboard.get("annotations", {}).get("list", []):
        if "expr" in a:
            out[f"annotation {a['name']!r}"] = a["expr"]
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((?:(.+),\s*)?(\w+)\)", q.strip())
            assert m, f"variable {v['name']}: unexpected query {q!r}"
            if m.group(1):
                out[f"variable {v['name']}"] = m.group(1)
    if substitute:
        for where, e in out.items():
            for var, value in GRAFANA_VARIABLES.items():
                e = e.replace(var, value)
            assert "$" not in e, f"{where}: unknown Grafana variable in {e!r}"
            out[where] = e
    return out


def write_recording_rules(exprs: dict[str, str], path: Path) -> dict[str, str]:
    """Write each expression as a recording rule (so promtool and Prometheus parse it)."""
    names = {}
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, (where, e) in enumerate(exprs.items()):
        record = f"dashboard:expr_{i}"
        names[record] = where
        lines += [f"      - record: {record}", f"        expr: {json.dumps(e)}"]
    path.write_text("\n".join(lines) + "\n")
    return names


# -- processes ---------------------------------------------------------------


def http_get(url: str, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


class Prometheus:
    """A Prometheus server on a free loopback port, stopped by pid."""

    def __init__(self, workdir: Path, config: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "prometheus.yml").write_text(config)
        self.url = f"http://127.0.0.1:{free_ports(1)[0]}"
        self.log = open(workdir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
        )
        self.logfile = workdir / "prometheus.log"
        try:
            deadline = time.monotonic() + 15
            while True:
                assert self.proc.poll() is None, f"prometheus exited: {self.logfile.read_text()}"
                try:
                    http_get(f"{self.url}/-/ready", timeout=0.5)
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"not ready: {self.logfile.read_text()}"
                    time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        reply = json.loads(http_get(f"{self.url}/api/v1/{path}{query}"))
        assert reply["status"] == "success", reply
        return reply["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return data["result"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.log.close()


def rules_by_group(prom: Prometheus) -> dict[str, list[dict[str, Any]]]:
    return {g["name"]: g["rules"] for g in prom.api("rules")["groups"]}


# A leader payload (the built-in script plugin) so the payload metrics have children.
PAYLOAD_TOML = '[payload]\nleader = ["sleep", "600"]\nhysteresis_ms = 100\n'


def scrape(ensemble: Ensemble, nid: str) -> str:
    return http_get(f"http://{ensemble.metrics[nid]}/metrics")
