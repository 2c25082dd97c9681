"""Metrics, alerts and dashboard, checked without a Prometheus server.

* promtool checks the scrape config (configs/prometheus/) and the alert rules,
  runs the rules' unit tests (zraft-alerts.test.yml) and lints a live node's
  /metrics;
* every PromQL expression of the dashboard (configs/grafana/) parses, and the
  check that queries name only exported metrics can fail;
* the dashboard's variables, datasources, layout and per-node filters.

Needs `promtool` (Debian: apt-get install prometheus); skipped with a reason
without it. ``test_prometheus.py`` runs the real server.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from tests.integration.promql import (
    ALERTS,
    ALERTS_TEST,
    DASHBOARD,
    ENSEMBLE_WIDE,
    PRODUCTION_EXAMPLE,
    PROMTOOL,
    SCRAPE_CONFIG,
    dashboard_exprs,
    exported_names,
    metric_names,
    needs_promtool,
    run,
    unknown_names,
    write_recording_rules,
)

# -- promtool ----------------------------------------------------------------


@needs_promtool
@pytest.mark.timeout(60)
def test_promtool_checks_the_scrape_config_and_its_rule_file() -> None:
    # Run from the config's directory: rule_files is relative to it.
    code, out = run(
        [str(PROMTOOL), "check", "config", "--lint=all", "--lint-fatal", "prometheus.yml"]
    )
    assert code == 0 and "SUCCESS: prometheus.yml is valid" in out, out
    assert re.search(r"SUCCESS: \d+ rules found", out), out


def test_scrape_config_lists_every_node_of_the_production_example() -> None:
    text = SCRAPE_CONFIG.read_text()
    nodes = tomllib.loads(PRODUCTION_EXAMPLE.read_text())["node"]
    assert len(nodes) == 3
    for node in nodes:
        assert re.search(rf"^\s*- {re.escape(node['metrics'])}\b", text, re.M), node
    assert re.search(r"^\s*- job_name: zraft$", text, re.M)
    assert re.search(r"^rule_files:\n\s*(#.*\n\s*)*- zraft-alerts.yml$", text, re.M)
    assert "file_sd_configs" in text  # the documented alternative to static targets


@needs_promtool
@pytest.mark.timeout(60)
def test_promtool_checks_the_alert_rules_and_runs_their_unit_tests() -> None:
    code, out = run([str(PROMTOOL), "check", "rules", "--lint=all", "--lint-fatal", ALERTS.name])
    assert code == 0 and "SUCCESS" in out, out
    code, out = run([str(PROMTOOL), "test", "rules", ALERTS_TEST.name])
    assert code == 0 and "SUCCESS" in out, out


@needs_promtool
@pytest.mark.timeout(60)
def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    exprs = dashboard_exprs(json.loads(DASHBOARD.read_text()))
    assert len(exprs) > 30
    write_recording_rules(exprs, tmp_path / "dashboard-rules.yml")
    code, out = run([str(PROMTOOL), "check", "rules", "dashboard-rules.yml"], cwd=tmp_path)
    assert code == 0 and f"SUCCESS: {len(exprs)} rules found" in out, out


@needs_promtool
@pytest.mark.timeout(60)
def test_promtool_rejects_a_broken_query(tmp_path: Path) -> None:
    """The parse check above can fail: a query with a syntax error is refused."""
    write_recording_rules({"broken": "sum by (instance (up)"}, tmp_path / "broken.yml")
    code, out = run([str(PROMTOOL), "check", "rules", "broken.yml"], cwd=tmp_path)
    assert code != 0 and "FAILED" in out, out


@needs_promtool
@pytest.mark.integration
@pytest.mark.timeout(90)
def test_promtool_lints_a_live_nodes_metrics_clean(live_metrics: dict[str, str]) -> None:
    for nid, body in live_metrics.items():
        code, out = run([str(PROMTOOL), "check", "metrics"], stdin=body)
        assert code == 0 and not out.strip(), f"{nid}: promtool check metrics:\n{out}"


# -- queries name only exported metrics --------------------------------------


def test_metric_names_reads_selectors_not_functions_labels_or_keywords() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (instance, le) (rate(a_bucket{instance=~"$i"}[5m])))'
    ) == {"a_bucket"}
    assert metric_names('max by (job, ensemble) (b) - on (job, ensemble) group_right c{x="}"}') == {
        "b",
        "c",
    }
    assert metric_names(
        'count_values by (job) ("term", d and on (job, instance) (e == 1)) > 1'
    ) == {
        "d",
        "e",
    }
    assert metric_names("sum(f) by (instance) or vector(0)") == {"f"}
    assert metric_names("g > bool 1e3 unless g offset 10m and h @ start()") == {"g", "h"}
    assert metric_names('label_replace(up, "x", "$1", "instance", "(.*)") > Inf') == {"up"}
    assert metric_names('{__name__="zraft_server_term", job="zraft"}') == {"zraft_server_term"}
    assert metric_names("rate(i_total[5m:1m]) * 0x10 + j:recorded:rate5m") == {
        "i_total",
        "j:recorded:rate5m",
    }
    with pytest.raises(ValueError):
        metric_names('{__name__=~"zraft_.*"}')


def test_exported_names_reads_samples_and_types() -> None:
    body = (
        '# TYPE a_seconds histogram\na_seconds_bucket{le="+Inf"} 1.0\na_seconds_count 1.0\n'
        "a_seconds_sum 0.5\n# TYPE b_total counter\n# TYPE c gauge\nc 1.0\n"
        "# TYPE d counter\nd_total 2.0\nd_created 1.7e9\n# TYPE e_seconds histogram\n"
    )
    assert exported_names(body) == {
        "a_seconds_bucket",
        "a_seconds_count",
        "a_seconds_sum",
        "b_total",
        "c",
        "d_total",
        "d_created",
        "e_seconds_bucket",
        "e_seconds_sum",
        "e_seconds_count",
    }


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_the_name_check_fails_on_a_metric_zraft_does_not_export(
    live_metrics: dict[str, str],
) -> None:
    exported = set().union(*(exported_names(b) for b in live_metrics.values()))
    dashboard = json.loads(DASHBOARD.read_text())
    bogus = {
        "type": "timeseries",
        "id": 999,
        "title": "bogus",
        "targets": [
            {"refId": "A", "expr": 'rate(zraft_server_bogus_total{instance=~"$instance"}[5m])'},
            # A histogram's base name is no series: only its _bucket/_sum/_count are.
            {"refId": "B", "expr": "rate(zraft_disk_wal_fsync_duration_seconds[5m])"},
            {"refId": "C", "expr": "zraft_server_is_leader"},
        ],
    }
    dashboard["panels"].append(bogus)
    bad = unknown_names(dashboard_exprs(dashboard), exported)
    assert bad == {
        "panel 999 'bogus' target A": {"zraft_server_bogus_total"},
        "panel 999 'bogus' target B": {"zraft_disk_wal_fsync_duration_seconds"},
    }
    assert unknown_names({"alert": "zraft_server_leader_changes_seen > 3"}, exported) == {
        "alert": {"zraft_server_leader_changes_seen"}
    }


# -- the dashboard's shape ---------------------------------------------------


def test_dashboard_variables_datasources_and_instance_filters() -> None:
    d = json.loads(DASHBOARD.read_text())
    assert 36 <= d["schemaVersion"] <= 39
    assert d["uid"] and d["title"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    ds, inst = variables["datasource"], variables["instance"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    assert inst["type"] == "query" and inst["multi"] and inst["includeAll"]
    assert inst["definition"] == "label_values(zraft_server_term, instance)"
    assert inst["query"]["query"] == inst["definition"]
    assert inst["datasource"] == {"type": "prometheus", "uid": "${datasource}"}

    ids, cells = set(), set()
    for p in d["panels"]:
        assert p["id"] not in ids, p["title"]
        ids.add(p["id"])
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and p.get("description"), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert t["refId"] and t["legendFormat"], p["title"]
            # Per-node queries follow the Node picker; ensemble-wide ones say so.
            if ENSEMBLE_WIDE not in p["description"]:
                assert 'instance=~"$instance"' in t["expr"], (p["title"], t["expr"])
    for a in d["annotations"]["list"]:
        if "expr" in a:
            assert a["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    exprs = " ".join(dashboard_exprs(d, substitute=False).values())
    for metric in (
        "zraft_server_is_leader",
        "zraft_server_has_leader",
        "zraft_server_term",
        "zraft_server_leader_changes_seen_total",
        "zraft_server_commit_index",
        "zraft_server_applied_index",
        "zraft_server_proposals_committed_total",
        "zraft_server_proposals_failed_total",
        "zraft_server_proposals_pending",
        "zraft_disk_wal_fsync_duration_seconds_bucket",
        "zraft_network_peer_round_trip_time_seconds_bucket",
        "zraft_client_requests_total",
        "zraft_server_event_loop_lag_seconds_bucket",
        "zraft_payload_running",
        "zraft_payload_runs_total",
        "zraft_network_decode_errors_total",
    ):
        assert metric in exprs, f"no panel shows {metric}"
    assert 'sum by (job, ensemble, plugin) (zraft_payload_running{role="leader"})' in exprs
