"""`python app.py` (= `make synth`): every stack's template in cdk.out, in under a minute, with no
Docker, no AWS credentials and no network (a placeholder layer when `make build` has not run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cdk.conftest import REPO, STACKS

pytestmark = pytest.mark.infra

BUDGET_SECONDS = 60


def test_app_synthesises_every_stack_within_the_budget(tmp_path: Path) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "CDK_DEFAULT_")) and key not in {"DOCKER_HOST"}
    }
    env.update(
        {
            "CDK_OUTDIR": str(tmp_path / "cdk.out"),
            "CLOUDSHOP_LAMBDA_ASSETS": "placeholder",
            "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
            # No credentials anywhere: a lookup would fail instead of silently using someone's account.
            "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "PATH": os.environ.get("PATH", ""),
        }
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "app.py"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-4000:]
    assert elapsed < BUDGET_SECONDS, f"synth took {elapsed:.1f}s"
    manifest = json.loads((tmp_path / "cdk.out" / "manifest.json").read_text())
    stacks = {
        name for name, artifact in manifest["artifacts"].items() if artifact["type"] == "aws:cloudformation:stack"
    }
    assert stacks == {f"Cloudshop-Dev-{name}" for name in STACKS}
    for name in stacks:
        assert (tmp_path / "cdk.out" / f"{name}.template.json").is_file()
    # Assets are files only: nothing asks for a Docker image build.
    for name in stacks:
        assets = json.loads((tmp_path / "cdk.out" / f"{name}.assets.json").read_text())
        assert not assets.get("dockerImages")
