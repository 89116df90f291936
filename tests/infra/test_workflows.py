"""The GitHub workflows: actionlint-clean, SHA-pinned, OIDC only, guarded, gated on CI, and a deliver
step that works.

deliver and deploy start from CI's `workflow_run` and act only when it passed on a push to main. Two
steps of deliver.yml run here for real, extracted from the workflow: the one that picks the services
to build (in a scratch history) and the one that commits the new images (with a local bare remote), so
the steps that move the images are proven, not only linted. Every `vars.*` the workflows read is a row
of cdk/README.md's "GitHub variables" table; tests/cdk/test_delivery.py holds the role rows equal to
the Eks stack's outputs.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
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
README = REPO / "cdk" / "README.md"
GATE = "github.event.workflow_run.conclusion == 'success'"
HEAD_SHA = "${{ github.event.workflow_run.head_sha }}"
VARIABLE = re.compile(r"\bvars\.([A-Za-z_][A-Za-z0-9_]*)")
OUTPUT = re.compile(r"output `(?P<output>\w+)` of (?:the|each environment's) `(?P<stack>\w+)` stack")
# app.py inputs a deploy job does not pass: the region comes from the OIDC credentials (AWS_REGION),
# a deploy needs the real Lambda assets, and the retired names make app.py refuse to run.
NOT_DEPLOY_INPUTS = {
    "CLOUDSHOP_REGION",
    "CLOUDSHOP_LAMBDA_ASSETS",
    "CLOUDSHOP_GIT_REPO_URL",
    "CLOUDSHOP_GIT_REVISION",
}


def load(name: str) -> dict[str, Any]:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    workflow["on"] = workflow.pop(True, workflow.get("on"))
    return workflow


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job["steps"])


def uses(job: dict[str, Any]) -> list[str]:
    return [s["uses"].split("@")[0] for s in steps(job) if "uses" in s]


def step(job: dict[str, Any], *, action: str | None = None, name: str | None = None) -> dict[str, Any]:
    found = [
        s
        for s in steps(job)
        if (action is None or s.get("uses", "").startswith(f"{action}@")) and (name is None or s.get("name") == name)
    ]
    assert len(found) == 1, f"expected one step {action or name}, found {len(found)}"
    return found[0]


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def variables_read(workflow: dict[str, Any]) -> set[str]:
    return {name for text in strings(workflow) for name in VARIABLE.findall(text)}


def gated_jobs(workflow: dict[str, Any]) -> set[str]:
    """Jobs that run only after CI passed: their own `if` says so, or a job they need is gated."""
    jobs = workflow["jobs"]
    gated = {name for name, job in jobs.items() if GATE in job.get("if", "")}
    while True:
        more = {name for name, job in jobs.items() if set(as_list(job.get("needs", []))) & gated} - gated
        if not more:
            return gated
        gated |= more


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@dataclass(frozen=True)
class Variable:
    """A row of cdk/README.md's "GitHub variables" table."""

    name: str
    where: str
    value: str
    output: str | None
    stack: str | None


def documented_variables() -> dict[str, Variable]:
    """The rows of every table of cdk/README.md whose header starts with `| variable |`."""
    found: dict[str, Variable] = {}
    in_table = False
    for line in README.read_text().splitlines():
        if line.startswith("| variable |"):
            in_table = True
            continue
        if not line.startswith("|"):
            in_table = False
        if not in_table or line.startswith("|---"):
            continue
        name, where, value = (cell.strip() for cell in line.strip("|").split("|", 2))
        output = OUTPUT.search(value)
        variable = Variable(
            name=name.strip("`"),
            where=where,
            value=value,
            output=output["output"] if output else None,
            stack=output["stack"] if output else None,
        )
        found[variable.name] = variable
    return found


def app_inputs() -> set[str]:
    """The CLOUDSHOP_* names app.py reads (string constants in its syntax tree)."""
    tree = ast.parse((REPO / "app.py").read_text())
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"CLOUDSHOP_[A-Z_]+", node.value)
    }


def test_the_workflows_exist() -> None:
    assert {f.name for f in WORKFLOW_FILES} >= {"ci.yml", "deliver.yml", "deploy.yml"}


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


@pytest.mark.parametrize(("name", "max_minutes"), [("ci.yml", 60), ("deliver.yml", 60), ("deploy.yml", 120)])
def test_workflows_read_only_by_default_and_guarded_by_concurrency(name: str, max_minutes: int) -> None:
    workflow = load(name)

    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["concurrency"]["group"]
    for job in workflow["jobs"].values():
        assert job["timeout-minutes"] <= max_minutes
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


@pytest.mark.parametrize("name", ["deliver.yml", "deploy.yml"])
def test_deliver_and_deploy_start_when_ci_completes_on_main_and_act_only_if_it_passed(name: str) -> None:
    workflow = load(name)
    jobs = workflow["jobs"]

    assert workflow["on"]["workflow_run"] == {
        "workflows": [load("ci.yml")["name"]],
        "types": ["completed"],
        "branches": ["main"],
    }
    assert "push" not in workflow["on"]
    for job in (j for n, j in jobs.items() if GATE in j.get("if", "")):
        # `branches: [main]` matches a fork's pull request from its own branch named main too.
        assert "github.event.workflow_run.event == 'push'" in job["if"]
        assert "github.event.workflow_run.head_repository.full_name == github.repository" in job["if"]
    on_main = {n for n, j in jobs.items() if "pull_request" not in j.get("if", "")}
    assert on_main and gated_jobs(workflow) == on_main


def test_deliver_runs_one_at_a_time_and_never_cancels_a_release() -> None:
    workflow = load("deliver.yml")

    assert workflow["concurrency"]["cancel-in-progress"] is False
    assert set(workflow["env"]["SERVICES"].split()) == {w.name for w in WORKLOADS}


def test_deliver_builds_and_records_the_commit_ci_passed_on() -> None:
    jobs = load("deliver.yml")["jobs"]
    commit = step(jobs["changes"], name="The commit to deliver")
    sha = "${{ needs.changes.outputs.sha }}"

    assert commit["env"]["RUN_SHA"] == HEAD_SHA
    assert jobs["changes"]["outputs"]["sha"] == "${{ steps.commit.outputs.sha }}"
    assert step(jobs["changes"], action="actions/checkout")["with"]["ref"] == "${{ steps.commit.outputs.sha }}"
    assert step(jobs["build"], action="actions/checkout")["with"]["ref"] == sha
    assert step(jobs["build"], action="docker/build-push-action")["with"]["tags"].endswith(f":{sha}")
    assert step(jobs["release"], name="Set the images in the overlays and push")["env"]["SHA"] == sha
    # By hand: only on main, and (the step's gh query) only a commit CI passed on.
    assert "github.event_name == 'workflow_dispatch' && github.ref == 'refs/heads/main'" in jobs["changes"]["if"]


def test_deliver_builds_only_the_services_whose_inputs_changed_matrix() -> None:
    jobs = load("deliver.yml")["jobs"]

    assert jobs["changes"]["outputs"]["services"] == "${{ steps.changes.outputs.services }}"
    assert jobs["build"]["strategy"]["matrix"]["service"] == "${{ fromJSON(needs.changes.outputs.services) }}"
    assert "needs.changes.outputs.services != '[]'" in jobs["build"]["if"]


def test_deliver_pushes_to_ecr_with_oidc_and_only_the_build_job_may_mint_a_token() -> None:
    jobs = load("deliver.yml")["jobs"]
    build = jobs["build"]
    credentials = step(build, action="aws-actions/configure-aws-credentials")
    push = step(build, action="docker/build-push-action")

    assert build["permissions"] == {"contents": "read", "id-token": "write"}
    assert [n for n, j in jobs.items() if j.get("permissions", {}).get("id-token") == "write"] == ["build"]
    assert credentials["with"]["role-to-assume"] == "${{ vars.AWS_DELIVER_ROLE_ARN }}"
    assert "aws-region" in credentials["with"]
    assert "aws-actions/amazon-ecr-login" in uses(build)
    assert push["with"]["file"] == "eks_services/${{ matrix.service }}/Dockerfile"
    assert push["with"]["push"] is True
    assert "/cloudshop/${{ matrix.service }}:" in push["with"]["tags"]
    assert jobs["release"]["permissions"] == {"contents": "write"}


def test_deploy_diffs_same_repository_pull_requests_with_the_read_only_role_into_the_summary() -> None:
    diff = load("deploy.yml")["jobs"]["diff"]
    credentials = step(diff, action="aws-actions/configure-aws-credentials")
    summary = step(diff, name="Summary")
    scripts = [s.get("run", "") for s in steps(diff)]

    assert "github.event_name == 'pull_request'" in diff["if"]
    assert "github.event.pull_request.head.repo.full_name == github.repository" in diff["if"]
    # A job in an environment would carry that environment's OIDC subject (and its deploy role).
    assert "environment" not in diff
    assert diff["env"]["CLOUDSHOP_ENV"] == "dev"
    assert credentials["with"]["role-to-assume"] == "${{ vars.AWS_DIFF_ROLE_ARN }}"
    diff_command = next(s for s in scripts if "cdk diff" in s)
    # A change set needs the deploy role; the lookup role reads the deployed templates.
    assert "--no-change-set" in diff_command
    assert summary["if"] == "always()" and "GITHUB_STEP_SUMMARY" in summary["run"]
    assert steps(diff).index(credentials) > next(i for i, s in enumerate(scripts) if "make build" in s)


def test_deploy_builds_then_deploys_dev_then_prod_behind_the_prod_environment() -> None:
    jobs = load("deploy.yml")["jobs"]

    assert jobs["deploy-dev"]["environment"] == "dev"
    assert jobs["deploy-prod"]["environment"] == "prod"
    assert jobs["deploy-prod"]["needs"] == "deploy-dev"
    for name, environment in (("deploy-dev", "dev"), ("deploy-prod", "prod")):
        job = jobs[name]
        scripts = [s.get("run", "") for s in steps(job)]
        build = next(i for i, s in enumerate(scripts) if "make build" in s)
        deploy = next(i for i, s in enumerate(scripts) if "cdk deploy --all" in s)
        credentials = step(job, action="aws-actions/configure-aws-credentials")

        assert job["env"]["CLOUDSHOP_ENV"] == environment
        assert step(job, action="actions/checkout")["with"]["ref"] == HEAD_SHA
        assert build < steps(job).index(credentials) < deploy
        assert "--require-approval never" in scripts[deploy]
        assert credentials["with"]["role-to-assume"] == "${{ vars.AWS_DEPLOY_ROLE_ARN }}"
        assert job["permissions"] == {"contents": "read", "id-token": "write"}


def test_two_deploys_of_one_environment_never_overlap_and_none_is_cancelled() -> None:
    jobs = load("deploy.yml")["jobs"]

    groups = {name: jobs[name]["concurrency"] for name in ("deploy-dev", "deploy-prod")}
    assert groups == {
        "deploy-dev": {"group": "deploy-dev", "cancel-in-progress": False},
        "deploy-prod": {"group": "deploy-prod", "cancel-in-progress": False},
    }


def test_every_job_that_runs_the_cdk_app_passes_every_input_of_app_py() -> None:
    jobs = load("deploy.yml")["jobs"]
    expected = app_inputs() - NOT_DEPLOY_INPUTS

    assert {"CLOUDSHOP_ENV", "CLOUDSHOP_GITHUB_REPOSITORY", "CLOUDSHOP_GITHUB_OIDC_PROVIDER_ARN"} <= expected
    for name in ("diff", "deploy-dev", "deploy-prod"):
        assert {k for k in jobs[name]["env"] if k.startswith("CLOUDSHOP_")} == expected, name
        assert jobs[name]["env"]["CLOUDSHOP_GITHUB_REPOSITORY"] == "${{ github.repository }}"


def test_every_variable_a_workflow_reads_is_documented_in_the_cdk_readme() -> None:
    read = set().union(*(variables_read(load(f.name)) for f in WORKFLOW_FILES))
    documented = documented_variables()

    assert read and read == set(documented)


def test_every_role_variable_names_the_cdk_output_it_is_set_from() -> None:
    roles = {name: row for name, row in documented_variables().items() if name.endswith("_ROLE_ARN")}

    assert set(roles) == {"AWS_DELIVER_ROLE_ARN", "AWS_DEPLOY_ROLE_ARN", "AWS_DIFF_ROLE_ARN"}
    for row in roles.values():
        assert row.output and row.output.endswith("RoleArn") and row.stack == "Eks", row


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


def _changes_script() -> str:
    return step(load("deliver.yml")["jobs"]["changes"], name="Services whose image inputs changed")["run"]


class History:
    """A scratch repository with the real Dockerfiles, .dockerignore and image overlays, in which the
    deliver workflow's `changes` step runs against `main` (the workflow reads origin/main)."""

    def __init__(self, root: Path) -> None:
        self.work = root / "work"
        self.output = root / "github_output"
        for relative in (
            ".dockerignore",
            *(f"eks_services/{w.name}/Dockerfile" for w in WORKLOADS),
            *(f"eks_services/k8s/overlays/{o}/images/kustomization.yaml" for o in OVERLAYS),
        ):
            (self.work / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / relative, self.work / relative)
        for relative in (
            "pyproject.toml",
            "README.md",
            "cloudshop/__init__.py",
            "eks_services/__init__.py",
            "analytics/__init__.py",
            "analytics/windows.py",
            *(f"eks_services/{w.name}/service.py" for w in WORKLOADS),
        ):
            (self.work / relative).parent.mkdir(parents=True, exist_ok=True)
            (self.work / relative).write_text(f"# {relative}\n")
        _git("init", "--quiet", "--initial-branch=main", cwd=self.work)

    def commit(self, message: str, files: dict[str, str] | None = None) -> str:
        for relative, text in (files or {}).items():
            (self.work / relative).write_text(text)
        _git("add", "-A", cwd=self.work)
        _git(
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.com",
            "commit",
            "--quiet",
            "-m",
            message,
            cwd=self.work,
        )
        return _git("rev-parse", "HEAD", cwd=self.work).strip()

    def release(self, sha: str, *services: str) -> str:
        """What the release job does: the followed overlays run `services` built from `sha`."""
        for overlay in load("deliver.yml")["env"]["OVERLAYS"].split():
            for service in services:
                image = f"111122223333.dkr.ecr.eu-west-1.amazonaws.com/cloudshop/{service}:{sha}@{DIGEST}"
                result = run(
                    tool("kustomize"),
                    "edit",
                    "set",
                    "image",
                    f"{service}={image}",
                    cwd=self.work / "eks_services" / "k8s" / "overlays" / overlay / "images",
                )
                assert result.returncode == 0, result.stderr
        return self.commit(f"deliver: {' '.join(services)} at {sha[:12]}")

    def changes(self, sha: str, *, force: bool = False) -> list[str]:
        self.output.write_text("")
        deliver = load("deliver.yml")
        env = {
            **os.environ,
            "OVERLAYS": deliver["env"]["OVERLAYS"],
            "SERVICES": deliver["env"]["SERVICES"],
            "SHA": sha,
            "DEPLOYED": "main",
            "FORCE": "true" if force else "false",
            "GITHUB_OUTPUT": str(self.output),
            "GIT_CONFIG_GLOBAL": "/dev/null",
        }
        result = subprocess.run(
            ["bash", "-c", _changes_script()],
            cwd=self.work,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        (line,) = self.output.read_text().splitlines()
        name, _, value = line.partition("=")
        assert name == "services"
        return list(json.loads(value))


def test_the_changes_step_builds_what_changed_since_the_running_images(tmp_path: Path) -> None:
    assert shutil.which("jq"), "jq is on GitHub's runners; install it to run this test"
    # Given a history whose overlays still run the bootstrap placeholders
    history = History(tmp_path)
    first = history.commit("the first commit")

    # Then every image is built, since none runs a commit yet
    assert history.changes(first) == ["order", "payment"]

    # Given both images released from that commit: the release commit itself changes no image input
    released = history.release(first, "order", "payment")
    assert history.changes(released) == []

    # A change to one service's code builds that service only
    payment_change = history.commit("payment", {"eks_services/payment/service.py": "# changed\n"})
    assert history.changes(payment_change) == ["payment"]
    history.release(payment_change, "payment")

    # A file only the order image copies (its Dockerfile says so) builds order only
    windows_change = history.commit("analytics windows", {"analytics/windows.py": "# changed\n"})
    assert history.changes(windows_change) == ["order"]

    # The shared core builds both, and a commit older than the running images builds nothing
    core_change = history.commit("core", {"cloudshop/__init__.py": "# changed\n"})
    assert history.changes(core_change) == ["order", "payment"]
    assert history.changes(first) == []

    # By hand with `all`, everything is rebuilt
    assert history.changes(windows_change, force=True) == ["order", "payment"]
