"""The GitHub workflows: actionlint-clean, SHA-pinned, OIDC only, guarded, and a deliver step that works.

The last test runs the deliver workflow's own commit step (extracted from deliver.yml) in a scratch
repository with a local bare remote, so the step that moves the images is proven, not only linted.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudshop.estate import WORKLOADS
from tests.infra import OVERLAYS, REPO, TOOLS_BIN, kustomize_build, run, tool

pytestmark = pytest.mark.infra

WORKFLOWS = REPO / ".github" / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml"))
USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)(?P<comment>\s+#.*)?$")
DIGEST = "sha256:" + "ab" * 32


def load(name: str) -> dict[str, Any]:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    workflow["on"] = workflow.pop(True, workflow.get("on"))
    return workflow


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job["steps"])


def uses(job: dict[str, Any]) -> list[str]:
    return [s["uses"].split("@")[0] for s in steps(job) if "uses" in s]


def test_the_workflows_exist() -> None:
    assert {f.name for f in WORKFLOW_FILES} >= {"ci.yml", "deliver.yml"}


def test_actionlint_and_shellcheck_find_nothing() -> None:
    actionlint = tool("actionlint")
    tool("shellcheck")  # actionlint checks every `run:` script with it when it is on PATH
    env = {**os.environ, "PATH": f"{TOOLS_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}

    result = subprocess.run(
        [actionlint, "-color=false", *map(str, WORKFLOW_FILES)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_full_commit_sha_with_its_version(path: Path) -> None:
    refs = [m for line in path.read_text().splitlines() if (m := USES.match(line))]

    assert refs
    for match in refs:
        action, _, sha = match["ref"].partition("@")
        assert re.fullmatch(r"[0-9a-f]{40}", sha), f"{action} is not pinned to a commit SHA"
        assert match["comment"] and re.search(r"#\s*v\d", match["comment"]), f"{action}: add `# vX.Y.Z`"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_no_workflow_holds_static_cloud_keys(path: Path) -> None:
    text = path.read_text()

    for forbidden in (
        "aws-access-key-id",
        "aws-secret-access-key",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
    ):
        assert forbidden not in text
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)


@pytest.mark.parametrize("name", ["ci.yml", "deliver.yml"])
def test_workflows_read_only_by_default_and_guarded_by_concurrency(name: str) -> None:
    workflow = load(name)

    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["concurrency"]["group"]
    for job in workflow["jobs"].values():
        assert job["timeout-minutes"] <= 60
        assert job["runs-on"].startswith("ubuntu-")


def test_ci_lints_types_tests_synthesises_and_checks_the_manifests_on_push_and_pull_request() -> None:
    workflow = load("ci.yml")
    scripts = "\n".join(s.get("run", "") for job in workflow["jobs"].values() for s in steps(job))

    assert set(workflow["on"]) == {"push", "pull_request"}
    assert workflow["concurrency"]["cancel-in-progress"] is True
    for command in (
        "ruff check",
        "mypy",
        "make test",
        "make synth",
        "bash .ci/install-tools.sh",
        "pytest -m infra",
    ):
        assert command in scripts


def test_deliver_runs_on_main_one_at_a_time_and_never_cancels_a_release() -> None:
    workflow = load("deliver.yml")

    assert workflow["on"]["push"]["branches"] == ["main"]
    assert workflow["concurrency"]["cancel-in-progress"] is False
    watched = workflow["on"]["push"]["paths"]
    for workload in WORKLOADS:
        assert f"eks_services/{workload.name}/**" in watched
    assert "eks_services/k8s/**" not in watched, "the release commit must not start another delivery"


def test_deliver_builds_only_the_services_whose_inputs_changed() -> None:
    jobs = load("deliver.yml")["jobs"]
    flt = next(s for s in steps(jobs["changes"]) if s.get("uses", "").startswith("dorny/paths-filter@"))
    filters = yaml.safe_load(flt["with"]["filters"])

    assert set(filters) == {w.name for w in WORKLOADS}
    for workload in WORKLOADS:
        assert f"eks_services/{workload.name}/**" in filters[workload.name]
        assert "cloudshop/**" in filters[workload.name]
    assert jobs["changes"]["outputs"]["services"] == "${{ steps.filter.outputs.changes }}"
    assert jobs["build"]["strategy"]["matrix"]["service"] == "${{ fromJSON(needs.changes.outputs.services) }}"
    assert "needs.changes.outputs.services != '[]'" in jobs["build"]["if"]


def test_deliver_pushes_to_ecr_with_oidc_and_only_the_build_job_may_mint_a_token() -> None:
    jobs = load("deliver.yml")["jobs"]
    build = jobs["build"]
    credentials = next(s for s in steps(build) if "configure-aws-credentials" in s.get("uses", ""))
    push = next(s for s in steps(build) if "build-push-action" in s.get("uses", ""))

    assert build["permissions"] == {"contents": "read", "id-token": "write"}
    assert [n for n, j in jobs.items() if j.get("permissions", {}).get("id-token") == "write"] == ["build"]
    assert set(credentials["with"]) >= {"role-to-assume", "aws-region"}
    assert "aws-actions/amazon-ecr-login" in uses(build)
    assert push["with"]["file"] == "eks_services/${{ matrix.service }}/Dockerfile"
    assert push["with"]["push"] is True
    assert "/cloudshop/${{ matrix.service }}:${{ github.sha }}" in push["with"]["tags"]
    assert jobs["release"]["permissions"] == {"contents": "write"}


def _release_script() -> str:
    release = load("deliver.yml")["jobs"]["release"]
    return next(s["run"] for s in steps(release) if "kustomize edit set image" in s.get("run", ""))


def _git(*args: str, cwd: Path) -> str:
    result = run("git", *args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_release_step_commits_tag_and_digest_into_the_followed_overlays(tmp_path: Path) -> None:
    # Given a clone of a repository holding the manifests, with a bare remote as `origin`
    remote, work = tmp_path / "remote.git", tmp_path / "work"
    _git("init", "--quiet", "--bare", "--initial-branch=main", str(remote), cwd=tmp_path)
    shutil.copytree(
        REPO / "eks_services" / "k8s",
        work / "eks_services" / "k8s",
        ignore=shutil.ignore_patterns("README.md"),
    )
    identity = ("-c", "user.name=test", "-c", "user.email=test@example.com")
    _git("init", "--quiet", "--initial-branch=main", cwd=work)
    _git("add", ".", cwd=work)
    _git(*identity, "commit", "--quiet", "-m", "manifests", cwd=work)
    _git("remote", "add", "origin", str(remote), cwd=work)
    _git("push", "--quiet", "origin", "main", cwd=work)
    # and the image the build job recorded for the order service
    image = f"111122223333.dkr.ecr.eu-west-1.amazonaws.com/cloudshop/order:0123abcd@{DIGEST}"
    (work / "images").mkdir()
    (work / "images" / "order").write_text(f"order={image}\n")

    # When the deliver workflow's release step runs
    env = {
        **os.environ,
        "PATH": f"{Path(tool('kustomize')).parent}{os.pathsep}{os.environ['PATH']}",
        "OVERLAYS": load("deliver.yml")["env"]["OVERLAYS"],
        "SHA": "0123abcd" * 5,
        "GIT_CONFIG_GLOBAL": "/dev/null",
    }
    result = subprocess.run(
        ["bash", "-c", _release_script()],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    # Then origin/main has one commit that moved order, in the followed overlays only
    assert result.returncode == 0, result.stdout + result.stderr
    log = _git("log", "--format=%s", "main", cwd=remote).splitlines()
    assert log == ["deliver: order at 0123abcd0123", "manifests"]
    changed = _git("diff", "--name-only", "main~1", "main", cwd=remote).split()
    followed = env["OVERLAYS"].split()
    assert changed == sorted(f"eks_services/k8s/overlays/{o}/images/kustomization.yaml" for o in followed)
    _git("pull", "--quiet", "origin", "main", cwd=work)
    for overlay in OVERLAYS:
        images = {
            c["name"]: c["image"]
            for d in kustomize_build(work / "eks_services" / "k8s" / "overlays" / overlay)
            if d["kind"] == "Deployment"
            for c in d["spec"]["template"]["spec"]["containers"]
        }
        assert (images["order"] == image) is (overlay in followed)
        assert images["payment"].endswith(":bootstrap")
