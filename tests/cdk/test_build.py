"""cloudshop.build: the Lambda assets, built without Docker, with the dependency download cached."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from cloudshop import build
from cloudshop.estate import LAMBDA_SERVICES

pytestmark = pytest.mark.infra


def test_runtime_dependencies_are_pyprojects() -> None:
    with (build.ROOT / "pyproject.toml").open("rb") as handle:
        assert build.runtime_dependencies() == tomllib.load(handle)["project"]["dependencies"]


def test_dependency_hash_depends_on_the_set_not_the_order() -> None:
    assert build.dependencies_hash(["a==1", "b==2"]) == build.dependencies_hash(["b==2", "a==1"])
    assert build.dependencies_hash(["a==1"]) != build.dependencies_hash(["a==2"])


def test_code_directories_hold_the_handler_packages(tmp_path: Path) -> None:
    build.build_code(tmp_path)
    for service in LAMBDA_SERVICES:
        root = tmp_path / service
        assert (root / "functions" / service / "handler.py").is_file()
        assert (root / "functions" / "__init__.py").is_file()
        assert (root / "cloudshop" / "settings.py").is_file()
        assert not list(root.rglob("__pycache__"))
        others = {p.name for p in (root / "functions").iterdir() if p.is_dir()}
        assert others == {service}
    assert (tmp_path / build.PLATFORM_ASSET / "cdk" / "runtime" / "authorizer.py").is_file()
    assert not (tmp_path / build.PLATFORM_ASSET / "cdk" / "stacks.py").exists()


def test_synth_refuses_missing_dependencies_unless_told_to_use_a_placeholder(tmp_path: Path) -> None:
    with pytest.raises(build.BuildError, match="make build"):
        build.prepare(tmp_path)
    result = build.prepare(tmp_path, allow_placeholder=True)
    assert result.deps_ready is False
    assert (result.deps_layer / "python" / build.PLACEHOLDER_FILE).is_file()


def test_cached_dependencies_are_reused_without_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    requirements = build.runtime_dependencies()
    (tmp_path / build.DEPS_DIR / "python").mkdir(parents=True)
    (tmp_path / build.DEPS_DIR / build.DEPS_HASH_FILE).write_text(build.dependencies_hash(requirements) + "\n")

    def no_pip(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("pip must not run when the cache is current")

    monkeypatch.setattr(subprocess, "run", no_pip)
    assert build.build_deps(tmp_path, requirements) is False
    assert build.prepare(tmp_path).deps_ready is True


def test_pip_installs_wheels_for_the_lambda_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_pip(command: list[str], check: bool) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        target = Path(command[command.index("--target") + 1])
        (target / "fastapi").mkdir(parents=True)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", fake_pip)
    assert build.build_deps(tmp_path, ["fastapi==0.1"]) is True
    (command,) = calls
    for flag in ("--platform", "manylinux2014_x86_64", "--python-version", "3.11", "--only-binary=:all:"):
        assert flag in command
    assert (tmp_path / build.DEPS_DIR / "python" / "fastapi").is_dir()
    assert build.deps_are_current(tmp_path, ["fastapi==0.1"])


def test_the_dependency_layer_ships_bytecode_valid_whatever_the_file_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The asset zip does not keep file times, so timestamp-checked bytecode would be recompiled at every
    cold start; unchecked hash-based bytecode is used as it is."""

    def fake_pip(command: list[str], check: bool) -> subprocess.CompletedProcess[str]:
        target = Path(command[command.index("--target") + 1])
        (target / "fastapi").mkdir(parents=True)
        (target / "fastapi" / "__init__.py").write_text("VERSION = 1\n")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", fake_pip)
    build.build_deps(tmp_path, ["fastapi==0.1"])

    (compiled,) = (tmp_path / build.DEPS_DIR / "python" / "fastapi" / "__pycache__").glob("__init__.cpython-311.pyc")
    flags = int.from_bytes(compiled.read_bytes()[4:8], "little")
    assert flags == 0b01  # hash-based, source never checked


def test_code_directories_leave_out_the_developer_tooling(tmp_path: Path) -> None:
    build.build_code(tmp_path)

    for asset in (*LAMBDA_SERVICES, build.PLATFORM_ASSET):
        shipped = [m for m in build.DEV_ONLY_MODULES if build.dev_only_path(m, tmp_path / asset).exists()]
        assert not shipped, f"{asset} ships {shipped}"
    assert (tmp_path / "user" / "cloudshop" / "lambda_entry.py").is_file()
    assert not (tmp_path / "notification" / "functions" / "notification" / "poller.py").exists()


def requirement_closure(requirements: list[str]) -> set[str]:
    """The distributions `requirements` pull in, extras included, read from the installed metadata."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    pending = [(Requirement(spec), frozenset(Requirement(spec).extras)) for spec in requirements]
    while pending:
        requirement, extras = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            declared = requires(requirement.name) or []
        except PackageNotFoundError:
            continue
        for spec in declared:
            child = Requirement(spec)
            environment = {"extra": ""}
            applies = child.marker is None or child.marker.evaluate(environment)
            applies = applies or any(child.marker.evaluate({"extra": extra}) for extra in extras)
            if applies:
                pending.append((child, frozenset(child.extras)))
    return seen


def test_the_layer_holds_what_tracing_imports_in_lambda() -> None:
    # Powertools' Tracer imports aws_xray_sdk only when tracing is on, which is in Lambda and nowhere
    # in the tests: without the `tracer` extra every traced function would fail its cold start.
    assert "aws-xray-sdk" in requirement_closure(build.runtime_dependencies())
