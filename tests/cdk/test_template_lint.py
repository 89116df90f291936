"""cfn-lint and checkov over every synthesised template.

cfn-lint: no error (warnings are CDK idioms such as explicit DependsOn). checkov: no failed check;
each skip is recorded on its resource (`Metadata.checkov.skip`) with a written reason. checkov lives in
its own virtualenv (`.venv-checkov`, made by `.ci/install-tools.sh`) because it pins an old boto3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cdk.conftest import REPO

pytestmark = pytest.mark.infra

CHECKOV = Path(os.environ.get("CLOUDSHOP_CHECKOV", REPO / ".venv-checkov" / "bin" / "checkov"))
MIN_REASON = 40


def test_cfn_lint_finds_no_error(synth) -> None:
    files = [str(path) for path in synth.template_files.values()]
    result = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), "--format", "json", *files],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode in (0, 4, 8, 12), result.stderr[-3000:]  # bit 2 = errors, bit 4 = warnings
    findings = json.loads(result.stdout or "[]")
    errors = [f"{f['Rule']['Id']} {f['Filename']}: {f['Message']}" for f in findings if f["Level"] == "Error"]
    assert errors == []


@pytest.fixture(scope="module")
def checkov_report(synth) -> dict:
    if not CHECKOV.exists():
        pytest.fail(f"checkov is missing at {CHECKOV}: run `bash .ci/install-tools.sh` (it creates .venv-checkov)")
    args = [arg for path in synth.template_files.values() for arg in ("-f", str(path))]
    result = subprocess.run(
        [str(CHECKOV), *args, "--framework", "cloudformation", "--output", "json", "--compact"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]
    return json.loads(result.stdout)


def test_checkov_has_no_failed_check(checkov_report: dict) -> None:
    failed = [
        f"{c['check_id']} {c['resource']} ({Path(c['file_path']).name}): {c['check_name']}"
        for c in checkov_report["results"]["failed_checks"]
    ]
    assert checkov_report["summary"]["parsing_errors"] == 0
    assert failed == []


def test_every_checkov_skip_is_explained(checkov_report: dict) -> None:
    skipped = checkov_report["results"]["skipped_checks"]
    unexplained = [
        f"{c['check_id']} {c['resource']}"
        for c in skipped
        if len((c.get("check_result", {}).get("suppress_comment") or "").strip()) < MIN_REASON
    ]
    assert unexplained == []
