"""Checks of the delivery estate: Kubernetes manifests, ArgoCD, workflows, Dockerfiles, checkov.

The CLI tools come from `.ci/install-tools.sh` (into `.cache/bin` and `.venv-checkov`); the Makefile
runs it before the tests, so a missing tool is a failure here, never a skip.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO / ".cache" / "bin"
K8S = REPO / "eks_services" / "k8s"
ARGOCD = REPO / "eks_services" / "argocd"
OVERLAYS = ("dev", "prod", "demo")
ENVIRONMENTS = OVERLAYS


def tool(name: str) -> str:
    """The path of a CLI tool from .cache/bin (or PATH); a missing tool fails the calling test."""
    candidate = TOOLS_BIN / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    assert found, f"{name} is not installed: run `bash .ci/install-tools.sh` (the Makefile does)"
    return found


def run(*args: str, cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


@functools.cache
def kustomize_build_text(path: str) -> str:
    result = run(tool("kustomize"), "build", path)
    assert result.returncode == 0, f"kustomize build {path} failed:\n{result.stderr}"
    return result.stdout


def kustomize_build(path: Path | str) -> list[dict[str, Any]]:
    """The objects `kustomize build` renders for a directory (relative to the repo or absolute)."""
    path = Path(path)
    text = kustomize_build_text(str(path.relative_to(REPO) if path.is_relative_to(REPO) else path))
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]
