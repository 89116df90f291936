"""checkov over what Kubernetes receives, the Dockerfiles, the workflows and the delivery files' secrets.

The manifests are scanned as rendered (kustomize output of every overlay, the monitoring config and
ArgoCD's objects), so the skips and patches are the ones that ship. No check may fail, and every
skipped check must carry its written reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.infra import ENVIRONMENTS, OVERLAYS, REPO, kustomize_build_text, run, tool

pytestmark = pytest.mark.infra


def checkov(*args: str) -> list[dict[str, Any]]:
    result = run(tool("checkov"), "--config-file", str(REPO / ".checkov.yaml"), "--output", "json", *args)
    assert result.returncode in (0, 1), result.stderr[-3000:]
    # One JSON document per framework and directory, or a list of them.
    decoder, text, reports = json.JSONDecoder(), result.stdout.strip(), []
    while text:
        document, end = decoder.raw_decode(text)
        reports += document if isinstance(document, list) else [document]
        text = text[end:].strip()
    return reports


def failures(reports: list[dict[str, Any]]) -> list[str]:
    return [
        f"{r['check_type']}: {c['check_id']} {c['resource']} ({c['file_path']})"
        for r in reports
        for c in r.get("results", {}).get("failed_checks", [])
    ]


def unexplained_skips(reports: list[dict[str, Any]]) -> list[str]:
    skips = [c for r in reports for c in r.get("results", {}).get("skipped_checks", [])]
    return [
        f"{c['check_id']} {c['resource']}"
        for c in skips
        if len((c.get("check_result", {}).get("suppress_comment") or "").strip()) < 20
    ]


def passed(reports: list[dict[str, Any]]) -> int:
    return sum(r.get("summary", {}).get("passed", 0) for r in reports)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("rendered")
    for overlay in OVERLAYS:
        (directory / f"overlay-{overlay}.yaml").write_text(kustomize_build_text(f"eks_services/k8s/overlays/{overlay}"))
    (directory / "monitoring.yaml").write_text(kustomize_build_text("eks_services/k8s/monitoring"))
    for env in ENVIRONMENTS:
        (directory / f"argocd-{env}.yaml").write_text(kustomize_build_text(f"eks_services/argocd/envs/{env}"))
    return directory


def test_rendered_manifests_pass_checkov(rendered: Path) -> None:
    reports = checkov("--framework", "kubernetes", "--directory", str(rendered))

    assert failures(reports) == []
    assert unexplained_skips(reports) == []
    assert passed(reports) > 100


def test_dockerfiles_pass_checkov() -> None:
    reports = checkov(
        "--framework",
        "dockerfile",
        "--file",
        "eks_services/order/Dockerfile",
        "--file",
        "eks_services/payment/Dockerfile",
    )

    assert failures(reports) == []
    assert unexplained_skips(reports) == []
    assert passed(reports) > 0


def test_workflows_pass_checkov() -> None:
    reports = checkov("--framework", "github_actions", "--directory", ".github/workflows")

    assert failures(reports) == []
    assert unexplained_skips(reports) == []
    assert passed(reports) > 0


def test_delivery_files_hold_no_secrets() -> None:
    reports = checkov(
        "--framework",
        "secrets",
        "--directory",
        "eks_services",
        "--directory",
        ".github",
        "--directory",
        "tests/load",
        "--file",
        ".ci/install-tools.sh",
    )

    assert failures(reports) == []
    assert unexplained_skips(reports) == []


def test_checkov_reports_a_privileged_pod_so_a_pass_means_something(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: cloudshop}\n"
        "spec:\n  containers:\n    - name: c\n      image: nginx\n"
        "      securityContext: {privileged: true}\n"
    )

    reports = checkov("--framework", "kubernetes", "--directory", str(tmp_path))

    assert any("CKV_K8S_16" in f for f in failures(reports))
