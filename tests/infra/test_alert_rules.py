"""The alerting rules as Prometheus sees them: valid (`promtool check rules`), each alert proven to fire
and to stay silent by `promtool test rules`, and each pointing at its entry in the runbook.

One source of truth: the PrometheusRule that kustomize renders; its `spec` is a plain rules file, which
the test writes beside a copy of eks_services/k8s/monitoring/tests/alerts.test.yaml. promtool comes
from Debian's `prometheus` package (`make system-deps`).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra import K8S, kustomize_build, one, run, tool

pytestmark = pytest.mark.infra

MONITORING = K8S / "monitoring"
RUNBOOK = K8S / "RUNBOOK.md"
RUNBOOK_URL = "https://github.com/cloudshop/cloudshop/blob/main/eks_services/k8s/RUNBOOK.md#"


def _rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = one(kustomize_build(str(MONITORING)), "PrometheusRule", "cloudshop")["spec"][
        "groups"
    ]
    return groups


def _alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in _rule_groups() for r in g["rules"] if "alert" in r}


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": _rule_groups()}, sort_keys=False))
    for test_file in (MONITORING / "tests").glob("*.yaml"):
        shutil.copy(test_file, tmp_path / test_file.name)
    return tmp_path


def test_promtool_accepts_the_rules(rules_dir: Path) -> None:
    result = run(tool("promtool"), "check", "rules", "rules.yaml", cwd=rules_dir)

    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass(rules_dir: Path) -> None:
    tests = sorted(p.name for p in (MONITORING / "tests").glob("*.yaml"))
    result = run(tool("promtool"), "test", "rules", *tests, cwd=rules_dir)

    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for test_file in (MONITORING / "tests").glob("*.yaml"):
        for case in yaml.safe_load(test_file.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])

    assert set(_alerts()) <= firing, f"never seen firing: {set(_alerts()) - firing}"
    assert set(_alerts()) <= silent, f"never seen silent: {set(_alerts()) - silent}"


def test_burn_rate_outbox_dlq_and_hpa_alerts_exist() -> None:
    assert {
        "CloudshopCheckoutAvailabilityFastBurn",
        "CloudshopCheckoutAvailabilitySlowBurn",
        "CloudshopCheckoutLatencyFastBurn",
        "CloudshopCheckoutLatencySlowBurn",
        "CloudshopOutboxLag",
        "CloudshopDeadLetterQueueNotEmpty",
        "CloudshopAutoscalerAtMaximum",
    } <= set(_alerts())


def test_every_alert_links_an_entry_of_the_runbook() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("## ")
    }

    for name, alert in _alerts().items():
        url = alert["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_URL), name
        assert url.removeprefix(RUNBOOK_URL) in anchors, f"{name}: no runbook heading for {url}"
