"""The Grafana dashboard and the alerts query only metrics the relay exports, and cover the topics
operators need: deploys by result, stage durations, queue depths, dead letters, gateway request
rates and signature failures; failed deploys, dead letters piling up, crash loops, the broker.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.ship import kube

# The relay's metric names (name -> type), as its processes export them.
RELAY_METRICS = {
    "relay_gateway_requests_total": "counter",
    "relay_signature_failures_total": "counter",
    "relay_publish_confirm_seconds": "histogram",
    "relay_deployments_total": "counter",
    "relay_stage_seconds": "histogram",
    "relay_deploys_in_flight": "gauge",
    "relay_queue_messages": "gauge",
    "relay_queue_consumers": "gauge",
    "relay_dead_letters": "gauge",
    "relay_callback_failures_total": "counter",
}
# Series the alerts read from Prometheus itself and kube-state-metrics.
EXTERNAL = {"up", "kube_pod_container_status_waiting_reason"}
METRIC = re.compile(r"\b(relay_[a-z0-9_]+|up|kube_[a-z0-9_]+)\b")


def _metrics(expr: str) -> set[str]:
    found = set()
    for name in METRIC.findall(expr):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if base != name:
            assert RELAY_METRICS.get(base) == "histogram", f"{name}: {base} is not a histogram"
        found.add(base)
    return found


@pytest.fixture(scope="module")
def dashboard(repo: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (repo / "k8s" / "observability" / "grafana-dashboard.json").read_text()
    )
    return loaded


def _exprs(dashboard: dict[str, Any]) -> dict[str, list[str]]:
    return {
        p["title"]: [t["expr"] for t in p.get("targets", [])]
        for p in dashboard["panels"]
        if p["type"] != "row"
    }


def test_the_dashboard_queries_only_known_metrics(dashboard: dict[str, Any]) -> None:
    used: set[str] = set()
    for title, exprs in _exprs(dashboard).items():
        assert exprs, f"panel {title} queries nothing"
        for expr in exprs:
            assert expr.count("(") == expr.count(")"), expr
            metrics = _metrics(expr)
            assert metrics and metrics <= set(RELAY_METRICS), (
                f"{title}: {metrics - set(RELAY_METRICS)}"
            )
            used |= metrics
    assert used == set(RELAY_METRICS), f"metrics no panel shows: {set(RELAY_METRICS) - used}"


def test_the_dashboard_covers_the_topics(dashboard: dict[str, Any]) -> None:
    exprs = _exprs(dashboard)
    joined = {title: " ".join(e) for title, e in exprs.items()}
    wanted = {
        "deploys by result": "sum by (result) (increase(relay_deployments_total",
        "stage durations": "histogram_quantile(0.95, sum by (le, stage) (rate(relay_stage_seconds_bucket",
        "queue depths": "max by (queue) (relay_queue_messages)",
        "dead letters": "relay_dead_letters",
        "request rates": "sum by (receiver, status) (rate(relay_gateway_requests_total",
        "signature failures": "rate(relay_signature_failures_total",
    }
    for topic, fragment in wanted.items():
        assert any(fragment in text for text in joined.values()), topic
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["templating"]["list"][0]["type"] == "datasource"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"


def test_the_dashboard_configmap_is_the_json_file(
    tree: kube.Tree, dashboard: dict[str, Any]
) -> None:
    (cm,) = [
        c for c in tree.of_kind("ConfigMap") if c["metadata"]["name"] == "relay-grafana-dashboard"
    ]
    assert json.loads(cm["data"]["grafana-dashboard.json"]) == dashboard
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert kube.substitution_disabled(cm)


def _rules(tree: kube.Tree) -> dict[str, dict[str, Any]]:
    (rule,) = tree.of_kind("PrometheusRule")
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}


def test_the_alerts_cover_what_the_seed_calls_critical(tree: kube.Tree) -> None:
    rules = _rules(tree)
    for alert in [
        "RelayDeploysFailing",
        "RelayDeadLettersPilingUp",
        "RelayPodCrashLooping",
        "RelayBrokerUnreachable",
    ]:
        assert alert in rules
        assert rules[alert]["annotations"]["summary"] and rules[alert]["labels"]["severity"]
    assert 'result="failed"' in rules["RelayDeploysFailing"]["expr"]
    assert "CrashLoopBackOff" in rules["RelayPodCrashLooping"]["expr"]
    assert "relay-rabbitmq" in rules["RelayBrokerUnreachable"]["expr"]
    assert {r["labels"]["severity"] for r in rules.values()} <= {"warning", "critical"}


def test_the_alerts_query_only_known_metrics(tree: kube.Tree) -> None:
    for name, rule in _rules(tree).items():
        expr = rule["expr"]
        assert expr.count("(") == expr.count(")"), name
        metrics = _metrics(expr)
        assert metrics and metrics <= set(RELAY_METRICS) | EXTERNAL, f"{name}: {metrics}"


def test_the_scrape_targets_match_the_pods(tree: kube.Tree) -> None:
    monitors = {m["metadata"]["name"]: m for m in tree.of_kind("PodMonitor")}
    relay = monitors["relay"]["spec"]
    for deployment in tree.of_kind("Deployment"):
        if deployment["metadata"]["namespace"] != "relay":
            continue
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert relay["selector"]["matchLabels"].items() <= labels.items()
        ports = {
            p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        }
        assert relay["podMetricsEndpoints"][0]["port"] in ports
    (name,) = {c["metadata"]["name"] for c in tree.of_kind("RabbitmqCluster")}
    assert monitors["relay-rabbitmq"]["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": name
    }
