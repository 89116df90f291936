"""The service Dockerfiles, checked statically (no Docker engine here): hadolint, then what we require.

Multi-stage, base pinned by digest, runtime dependencies only, non-root with the uid the pods run
as, a HEALTHCHECK on /healthz, uvicorn on the workload's port; and a build context trimmed to what
the images copy.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from cloudshop.estate import WORKLOADS, Workload
from tests.infra import REPO, kustomize_build, run, tool

pytestmark = pytest.mark.infra


def dockerfile(workload: Workload) -> Path:
    return REPO / "eks_services" / workload.name / "Dockerfile"


def instructions(workload: Workload) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile(workload).read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def stages(workload: Workload) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions(workload):
        if instruction[0] == "FROM":
            result.append([])
        result[-1].append(instruction)
    return result


def workload_ids(workload: Workload) -> str:
    return workload.name


def test_hadolint_finds_nothing() -> None:
    result = run(tool("hadolint"), *(str(dockerfile(w)) for w in WORKLOADS))

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("workload", WORKLOADS, ids=workload_ids)
def test_builds_in_stages_from_a_base_pinned_by_digest(workload: Workload) -> None:
    froms = [args for name, args in instructions(workload) if name == "FROM"]

    assert len(froms) >= 2
    for args in froms:
        assert re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*@sha256:[0-9a-f]{64} AS \w+", args), args


@pytest.mark.parametrize("workload", WORKLOADS, ids=workload_ids)
def test_installs_runtime_dependencies_only_and_keeps_no_pip_cache(workload: Workload) -> None:
    runs = [args for name, args in instructions(workload) if name == "RUN" and "pip install" in args]
    envs = " ".join(args for name, args in instructions(workload) if name == "ENV")

    assert runs
    assert all("--no-cache-dir" in r for r in runs)
    assert "PIP_NO_CACHE_DIR=1" in envs
    assert "['project']['dependencies']" in " ".join(runs)
    assert not any(re.search(r"\.\[|optional-dependencies", r) for r in runs), "no extras in an image"


@pytest.mark.parametrize("workload", WORKLOADS, ids=workload_ids)
def test_copies_only_the_shared_core_and_its_own_service(workload: Workload) -> None:
    build, runtime = stages(workload)[0], stages(workload)[-1]
    copied = {args.split()[0] for name, args in build if name == "COPY"}

    # The order service also serves GET /analytics/windows, through analytics/windows.py alone.
    extra = {"analytics/__init__.py"} if workload.name == "order" else set()
    assert (
        copied
        == {
            "pyproject.toml",
            "cloudshop",
            "eks_services/__init__.py",
            f"eks_services/{workload.name}",
        }
        | extra
    )
    assert [args for name, args in runtime if name == "COPY"] == ["--from=build /opt/venv /opt/venv"]


@pytest.mark.parametrize("workload", WORKLOADS, ids=workload_ids)
def test_the_copied_files_are_enough_to_import_every_module_of_the_service(workload: Workload, tmp_path: Path) -> None:
    """Lay out exactly what the build stage copies, then import the whole service from it."""
    import shutil
    import subprocess
    import sys

    for name, args in stages(workload)[0]:
        if name != "COPY" or args.startswith("--"):
            continue
        *sources, _ = args.split()
        for source in sources:
            if source in ("pyproject.toml", "README.md", "./"):
                continue
            target = tmp_path / source
            target.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if (REPO / source).is_dir() else shutil.copy)(REPO / source, target)
    modules = sorted(
        f"eks_services.{workload.name}.{path.stem}"
        for path in (REPO / "eks_services" / workload.name).glob("*.py")
        if path.stem not in ("__init__", "app")
    )
    answer = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            # The venv's editable install would find any module in the repo: take it out of the way.
            "import sys; sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f)]; "
            f"sys.path = [p for p in sys.path if '__editable__' not in p]; sys.path.insert(0, {str(tmp_path)!r}); "
            + "; ".join(f"import {m}" for m in modules),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert answer.returncode == 0, answer.stderr


@pytest.mark.parametrize("workload", WORKLOADS, ids=workload_ids)
def test_runs_as_the_non_root_uid_the_pods_declare(workload: Workload) -> None:
    runtime = stages(workload)[-1]
    user = [args for name, args in runtime if name == "USER"]
    deployment = next(
        d
        for d in kustomize_build("eks_services/k8s/overlays/prod")
        if d["kind"] == "Deployment" and d["metadata"]["name"] == workload.name
    )
    pod_security = deployment["spec"]["template"]["spec"]["securityContext"]

    assert user == [f"{pod_security['runAsUser']}:{pod_security['runAsGroup']}"]
    assert pod_security["runAsUser"] != 0


@pytest.mark.parametrize("workload", WORKLOADS, ids=workload_ids)
def test_serves_uvicorn_on_the_workload_port_with_a_healthcheck(workload: Workload) -> None:
    runtime = dict(stages(workload)[-1])
    entrypoint = shlex.split(runtime["ENTRYPOINT"].replace('", "', " ").strip('[]"'))

    assert runtime["EXPOSE"] == str(workload.port)
    assert f"http://127.0.0.1:{workload.port}/healthz" in runtime["HEALTHCHECK"]
    assert entrypoint[:2] == ["uvicorn", f"eks_services.{workload.name}.app:app"]
    assert entrypoint[entrypoint.index("--port") + 1] == str(workload.port)
    assert entrypoint[entrypoint.index("--host") + 1] == "0.0.0.0"


def test_the_build_context_is_an_allow_list_of_what_the_images_copy() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    assert lines[0] == "*"
    assert {line for line in lines if line.startswith("!")} == {
        "!pyproject.toml",
        "!README.md",
        "!cloudshop/",
        "!eks_services/",
        "!analytics/__init__.py",
        "!analytics/windows.py",
    }
    assert "eks_services/k8s/" in lines and "eks_services/argocd/" in lines
