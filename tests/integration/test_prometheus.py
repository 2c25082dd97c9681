"""Metrics, alerts and dashboard against a real Prometheus server and real zraft nodes.

* the alert rules and the dashboard's queries, as Prometheus parsed them,
  name only metrics a live node exports (names read from its /metrics, so the
  check follows zraft/metrics.py as metrics are added), and every alert has
  its labels, annotations and unit tests;
* a real Prometheus scrapes a real 3-node ensemble, sees one leader, the
  leader is SIGKILLed, and it sees the target down and a new single leader.

Needs `promtool` and `prometheus` (Debian: apt-get install prometheus);
skipped with a reason without them. ``test_promtool.py`` has the offline checks.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.promql import (
    ALERTS,
    ALERTS_TEST,
    DASHBOARD,
    PAYLOAD_TOML,
    Prometheus,
    dashboard_exprs,
    exported_names,
    metric_names,
    needs_prometheus,
    rules_by_group,
    unknown_names,
    write_recording_rules,
)
from tests.support.ensemble import Ensemble


@pytest.fixture(scope="module")
def loaded_rules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The alert rules and the dashboard's queries as a real Prometheus parsed them."""
    work = tmp_path_factory.mktemp("rules")
    dash = dashboard_exprs(json.loads(DASHBOARD.read_text()))
    records = write_recording_rules(dash, work / "dashboard-rules.yml")
    prom = Prometheus(
        work,
        f"global:\n  evaluation_interval: 1m\nrule_files:\n"
        f"  - {json.dumps(str(ALERTS))}\n  - {json.dumps(str(work / 'dashboard-rules.yml'))}\n",
    )
    try:
        groups = rules_by_group(prom)
    finally:
        prom.stop()
    alerts = [r for name, rules in groups.items() if name != "dashboard" for r in rules]
    return {"alerts": alerts, "dashboard": groups["dashboard"], "records": records}


# -- alert rules -------------------------------------------------------------


@needs_prometheus
@pytest.mark.integration
@pytest.mark.timeout(60)
def test_every_alert_has_a_severity_a_summary_a_description_and_unit_tests(
    loaded_rules: dict[str, Any],
) -> None:
    alerts = loaded_rules["alerts"]
    assert len(alerts) >= 15
    names = [r["name"] for r in alerts]
    assert len(set(names)) == len(names), names
    test_text = ALERTS_TEST.read_text()
    for r in alerts:
        assert r["type"] == "alerting", r
        assert re.fullmatch(r"Zraft[A-Z]\w+", r["name"]), r["name"]
        assert r["labels"].get("severity") in ("critical", "warning"), r
        assert r["annotations"].get("summary") and r["annotations"].get("description"), r
        # A case that must fire and a case that must not, for every alert.
        name = re.escape(r["name"])
        assert re.search(rf"alertname: {name}\n\s+exp_alerts:\n\s+- exp_labels:", test_text), (
            f"{r['name']}: no unit test in which it fires"
        )
        assert re.search(rf"alertname: {name}\n\s+exp_alerts: \[\]", test_text), (
            f"{r['name']}: no unit test in which it must not fire"
        )
    # The ones the README promises.
    for must in (
        "ZraftEnsembleNoLeader",
        "ZraftMetricsAbsent",
        "ZraftNodeNoLeader",
        "ZraftMultipleLeaders",
        "ZraftFrequentLeaderChanges",
        "ZraftSlowWalFsync",
        "ZraftSlowPeer",
        "ZraftProposalsFailing",
        "ZraftPayloadErrors",
        "ZraftPayloadTimeouts",
        "ZraftPayloadProcessFailed",
        "ZraftNodeDown",
        "ZraftEventLoopLag",
        "ZraftPeerDecodeErrors",
        "ZraftUnknownPeerMessages",
    ):
        assert must in names, must


# -- queries name only exported metrics, as Prometheus parsed them ---------


@needs_prometheus
@pytest.mark.integration
@pytest.mark.timeout(90)
def test_dashboard_and_alerts_query_only_metrics_a_live_node_exports(
    live_metrics: dict[str, str], loaded_rules: dict[str, Any]
) -> None:
    exported = set().union(*(exported_names(b) for b in live_metrics.values()))
    assert {"zraft_server_is_leader", "zraft_disk_wal_fsync_duration_seconds_bucket"} <= exported
    exprs = dashboard_exprs(json.loads(DASHBOARD.read_text()))
    # The same queries as Prometheus printed them after parsing (one canonical form).
    records = loaded_rules["records"]
    assert len(loaded_rules["dashboard"]) == len(exprs) == len(records)
    for r in loaded_rules["dashboard"]:
        exprs[f"{records[r['name']]} (parsed)"] = r["query"]
    for r in loaded_rules["alerts"]:
        exprs[f"alert {r['name']}"] = r["query"]
    named = set().union(*(metric_names(e) for e in exprs.values()))
    print(f"{len(exprs)} queries name {len(named)} metrics; a live node exports {len(exported)}")
    assert unknown_names(exprs, exported) == {}
    # Every alert and dashboard query names at least one zraft metric (or up).
    assert all(metric_names(e) for e in exprs.values())
    # zraft exports nothing that neither a panel nor an alert shows, apart from these.
    unused = {
        n
        for n in exported - named
        if not n.endswith(("_created", "_sum", "_count")) and n.startswith("zraft_")
    }
    print("exported, in no query:", sorted(unused))


# -- a real Prometheus, a real ensemble, a real leader kill --------------------


def _value(result: list[dict[str, Any]]) -> float | None:
    return float(result[0]["value"][1]) if len(result) == 1 else None


@needs_prometheus
@pytest.mark.integration
@pytest.mark.timeout(90)
def test_prometheus_sees_one_leader_then_the_dead_target_and_a_new_leader(
    tmp_path: Path, make_ensemble: Callable[..., Ensemble]
) -> None:
    (tmp_path / "ensemble").mkdir()
    cluster = make_ensemble(workdir=tmp_path / "ensemble", extra_toml=PAYLOAD_TOML)
    exprs = dashboard_exprs(json.loads(DASHBOARD.read_text()))
    records = write_recording_rules(exprs, tmp_path / "dashboard-rules.yml")
    targets = ", ".join(json.dumps(cluster.metrics[n]) for n in cluster.ids)
    # 1 s scrapes and rule evaluations; the shipped rules plus the dashboard's
    # queries as recording rules, so both are evaluated against real series.
    config = (
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {json.dumps(str(ALERTS))}\n"
        f"  - {json.dumps(str(tmp_path / 'dashboard-rules.yml'))}\n"
        "scrape_configs:\n  - job_name: zraft\n    static_configs:\n"
        f"      - targets: [{targets}]\n        labels:\n          ensemble: test\n"
    )
    instance = {cluster.metrics[n]: n for n in cluster.ids}
    t_start = time.monotonic()
    prom = None
    try:
        cluster.start()
        prom = Prometheus(tmp_path / "prometheus", config)
        lead = cluster.wait_leader()

        # 1. Prometheus reports exactly one leader, the one the nodes agree on.
        deadline = time.monotonic() + 20
        while True:
            leaders = prom.query("zraft_server_is_leader == 1")
            up = prom.query('sum(up{job="zraft"})')
            if len(leaders) == 1 and _value(prom.query("sum(zraft_server_is_leader)")) == 1:
                if _value(up) == 3:
                    break
            assert time.monotonic() < deadline, f"leaders {leaders}, up {up}"
            time.sleep(0.2)
        t_one_leader = time.monotonic() - t_start
        assert instance[leaders[0]["metric"]["instance"]] == lead
        assert leaders[0]["metric"]["job"] == "zraft"
        assert leaders[0]["metric"]["ensemble"] == "test"

        # Every rule (alerts and dashboard queries) evaluates without error on real series.
        deadline = time.monotonic() + 10
        while True:
            rules = [r for rs in rules_by_group(prom).values() for r in rs]
            if all(r["health"] == "ok" for r in rules):
                break
            bad = [(r["name"], r["health"], r.get("lastError")) for r in rules]
            assert time.monotonic() < deadline, [b for b in bad if b[1] != "ok"]
            time.sleep(0.2)
        assert sorted(r["name"] for r in rules if r["type"] == "recording") == sorted(records)
        # Some traffic while Prometheus watches, for the rate() and histogram panels.
        with cluster.client_for(timeout=2.0, retry_for=10) as c:
            deadline = time.monotonic() + 10
            i = 0
            while len(prom.query("rate(zraft_server_proposals_committed_total[1m]) > 0")) < 3:
                assert time.monotonic() < deadline, "no commit rate from 3 nodes"
                c.set(f"k{i}", i)
                c.get(f"k{i}")
                i += 1
                time.sleep(0.05)
        no_data = [w for w, e in exprs.items() if not prom.query(e)]
        print(f"dashboard queries without data before the kill: {len(no_data)}/{len(exprs)}")
        for w in no_data:
            print("   ", w)
        firing = prom.query('ALERTS{alertstate="firing"}')
        assert firing == [], firing
        payloads = prom.query('sum by (plugin) (zraft_payload_running{role="leader"})')
        print("leader payloads before the kill:", [(p["metric"], p["value"][1]) for p in payloads])

        # 2. SIGKILL the leader: its target goes down, its series go stale, a new leader.
        cluster.kill(lead)
        t_kill = time.monotonic()
        dead = cluster.metrics[lead]
        seen_leaders: set[float] = set()
        t_down = t_new = None
        deadline = t_kill + 30
        while t_down is None or t_new is None:
            assert time.monotonic() < deadline, (
                t_down,
                t_new,
                prom.query("zraft_server_is_leader"),
            )
            if t_down is None and _value(prom.query(f'up{{instance="{dead}"}}')) == 0:
                t_down = time.monotonic() - t_kill
            total = _value(prom.query("sum(zraft_server_is_leader)"))
            if total is not None:
                seen_leaders.add(total)
            leaders = prom.query("zraft_server_is_leader == 1")
            live = prom.query("zraft_server_is_leader")
            if (
                t_new is None
                and total == 1
                and len(leaders) == 1
                and leaders[0]["metric"]["instance"] != dead
                and {s["metric"]["instance"] for s in live} == set(instance) - {dead}
            ):
                t_new = time.monotonic() - t_kill
            time.sleep(0.1)
        new_lead = instance[leaders[0]["metric"]["instance"]]
        assert new_lead == cluster.wait_leader(exclude=(lead,))

        # The rules see it too: ZraftNodeDown pending for the dead node, nothing else amiss.
        deadline = time.monotonic() + 10
        while not prom.query(f'ALERTS{{alertname="ZraftNodeDown", instance="{dead}"}}'):
            assert time.monotonic() < deadline, prom.query("ALERTS")
            time.sleep(0.2)
        t_alert = time.monotonic() - t_kill
        alerts = {
            (a["metric"]["alertname"], a["metric"]["alertstate"]) for a in prom.query("ALERTS")
        }
        print("alerts after the kill:", sorted(alerts))
        assert ("ZraftNodeDown", "pending") in alerts
        # Nothing fires (every rule waits longer than this test); what may be
        # pending is what a leader change explains: the election, and the dead
        # leader's last scrape still counting as current until its next one fails.
        assert {name for name, state in alerts if state == "firing"} == set()
        assert {name for name, _ in alerts} <= {
            "ZraftNodeDown",
            "ZraftEnsembleNoLeader",
            "ZraftNodeNoLeader",
            "ZraftMultipleLeaders",
            "ZraftTwoLeadersInOneTerm",
        }, alerts
        payloads = prom.query('sum by (plugin) (zraft_payload_running{role="leader"})')
        print("leader payloads after the kill:", [(p["metric"], p["value"][1]) for p in payloads])
        print(
            f"timings: one leader in Prometheus {t_one_leader:.2f}s after start; after the "
            f"SIGKILL of {lead}: up=0 in {t_down:.2f}s, new leader {new_lead} in {t_new:.2f}s, "
            f"ZraftNodeDown pending in {t_alert:.2f}s; sum(is_leader) seen: {sorted(seen_leaders)}"
        )
    finally:
        if prom is not None:
            prom.stop()
        cluster.stop_all()
