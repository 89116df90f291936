"""`cloudshop up --observability`: a real Prometheus scrapes every service, and every query of the two
dashboards and of the alerting rules names a metric that a live scrape of the services exports
(or one of the external metrics listed below, each with where it comes from)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from cloudshop.local.runner import PROMETHEUS_OFFSET, SERVICES
from cloudshop.local.servers import PROMETHEUS_BIN
from tests.fixtures.platform import cloudshop_up, free_port_range

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MONITORING = Path(__file__).resolve().parents[2] / "eks_services" / "k8s" / "monitoring"
# Metrics no cloudshop process exports, by source. A stale entry (used by no query) fails the test.
EXTERNAL = {
    "kube_horizontalpodautoscaler_status_current_replicas": "kube-state-metrics",
    "kube_horizontalpodautoscaler_status_desired_replicas": "kube-state-metrics",
    "kube_horizontalpodautoscaler_spec_max_replicas": "kube-state-metrics",
    "kube_pod_container_resource_requests": "kube-state-metrics",
    "kube_pod_container_status_restarts_total": "kube-state-metrics",
    "container_cpu_usage_seconds_total": "cAdvisor (kubelet)",
    "container_memory_working_set_bytes": "cAdvisor (kubelet)",
    "aws_sqs_approximate_number_of_messages_visible_maximum": "CloudWatch (cloudwatch_exporter): DLQ depth",
}
PROMQL_WORDS = {
    "sum", "rate", "increase", "irate", "histogram_quantile", "by", "without", "and", "or", "unless", "on",
    "ignoring", "group_left", "group_right", "max", "min", "avg", "count", "vector", "bool", "offset",
    "max_over_time", "min_over_time", "avg_over_time", "clamp_min", "clamp_max", "topk", "bottomk", "abs",
    "label_replace", "absent", "time", "scalar", "le", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """Identifiers of a PromQL expression that are metric names: not inside {…} or (…) after by/without,
    not string literals, durations, functions, keywords or recording rules (`a:b:c`)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "{}", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "[]", expr)
    names = set(re.findall(r"(?<![\w:$.])([a-zA-Z_][a-zA-Z0-9_]*)(?![\w:(])", expr))
    return {n for n in names if n.lower() not in PROMQL_WORDS and not re.fullmatch(r"\d+\w*", n)}


def promql_expressions() -> list[str]:
    exprs: list[str] = []
    for dashboard in MONITORING.glob("dashboards/*.json"):
        for panel in json.loads(dashboard.read_text())["panels"]:
            if (panel.get("datasource") or {}).get("type") == "prometheus":
                exprs += [t["expr"] for t in panel.get("targets", []) if "expr" in t]
    rules = yaml.safe_load((MONITORING / "prometheus-rules.yaml").read_text())["spec"]["groups"]
    exprs += [r["expr"] for group in rules for r in group["rules"]]
    return [e.replace("$__rate_interval", "5m").replace("$__interval", "1m") for e in exprs]


def test_metric_names_are_read_out_of_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (service, le) (rate(http_request_duration_seconds_bucket{route!~"/x"}[5m])))'
        " / on(service) cloudshop:http_requests:rate5m and vector(0.995) > 0.5"
    )
    assert metric_names(expr) == {"http_request_duration_seconds_bucket"}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    if not Path(PROMETHEUS_BIN).is_file():
        pytest.fail(f"{PROMETHEUS_BIN} missing: `make system-deps` installs Debian's prometheus package")
    state = tmp_path_factory.mktemp("observability")
    base = free_port_range()
    with cloudshop_up(state, "--observability", base_port=base, wait_seconds=120):
        prometheus = f"http://127.0.0.1:{base + PROMETHEUS_OFFSET}"
        assert f"prometheus    {prometheus}" in (state / "up.log").read_text()
        yield f"http://127.0.0.1:{base}", prometheus


def test_prometheus_scrapes_every_service_and_every_query_names_an_exported_metric(platform: tuple[str, str]) -> None:
    gateway, prometheus = platform
    api = httpx.Client(base_url=f"{gateway}/api/v1", timeout=30)
    for _ in range(5):
        assert api.get("/products").status_code == 200
    api.post("/orders", json={})  # a refused checkout still counts POST /orders

    deadline = time.monotonic() + 30
    while True:
        targets = httpx.get(f"{prometheus}/api/v1/targets").json()["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        if set(health.values()) == {"up"} or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert health == dict.fromkeys(SERVICES, "up")

    exported: set[str] = set()
    for name, (offset, _, _) in SERVICES.items():
        text = httpx.get(f"{gateway.rsplit(':', 1)[0]}:{int(gateway.rsplit(':', 1)[1]) + offset}/metrics").text
        exported |= {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"}
    used = set().union(*(metric_names(e) for e in promql_expressions()))

    assert used - exported - set(EXTERNAL) == set(), "queried but neither exported nor known external"
    assert set(EXTERNAL) <= used, f"stale allow-list entries: {set(EXTERNAL) - used}"
    assert not set(EXTERNAL) & exported, "listed as external but exported by a service"
