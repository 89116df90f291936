"""What the Lambda assets and the images ship: the runtime code, and none of the developer tooling.

`cloudshop.build.DEV_ONLY_MODULES` is the one list. It is checked three ways: against the import graph
of the deployed entry points (a module is dev-only exactly when none of them reaches it), against each
Lambda asset as `build_code` lays it out, and against each image's build stage as its Dockerfile's
COPY lines and `.dockerignore` lay it out. Every module shipped must import from what is shipped.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

from cloudshop.bench_imports import handler_modules, lambda_environment
from cloudshop.build import DEV_ONLY_MODULES, build_code, dev_only_path
from cloudshop.estate import LAMBDA_SERVICES, WORKLOADS, Workload
from tests.infra import REPO
from tests.infra.test_dockerfiles import stages

pytestmark = pytest.mark.infra

# The venv's editable install would find any module in the repo: take it out of the way.
ISOLATE = (
    "import sys; sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f)]; "
    "sys.path = [p for p in sys.path if '__editable__' not in p]; "
)


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def python_files(root: Path) -> dict[str, Path]:
    """Module name -> file, for every Python file under `root` but Alembic's (it loads those by path)."""
    return {
        module_name(path, root): path
        for path in root.rglob("*.py")
        if "migrations" not in path.parts and "__pycache__" not in path.parts
    }


def imported_names(path: Path) -> set[str]:
    """Every absolute import in the file, at any depth (a function's lazy import counts)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def is_dev_only(module: str) -> bool:
    return any(module == dev or module.startswith(dev + ".") for dev in DEV_ONLY_MODULES)


def dev_only_imports(root: Path) -> dict[str, list[str]]:
    """Shipped module -> the dev-only modules it imports."""
    found = {module: sorted(filter(is_dev_only, imported_names(path))) for module, path in python_files(root).items()}
    return {module: names for module, names in found.items() if names}


def import_everything(root: Path, modules: Iterable[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Import `modules` in a fresh interpreter that sees `root` and the venv's dependencies, nothing else."""
    return subprocess.run(
        [sys.executable, "-c", ISOLATE + "; ".join(f"import {module}" for module in sorted(modules))],
        capture_output=True,
        text=True,
        cwd=root,
        env=env | {"PYTHONPATH": str(root)},
    )


def entry_points() -> set[str]:
    """What the cloud runs: the Lambda handlers and the images' uvicorn apps."""
    return set(handler_modules()) | {f"eks_services.{workload.name}.app" for workload in WORKLOADS}


def runtime_closure() -> dict[str, str]:
    """Every repository module a deployed entry point reaches -> the module that first imports it."""
    files: dict[str, Path] = {}
    for package in ("cloudshop", "functions", "eks_services", "cdk", "analytics"):
        files.update({f"{package}.{name}".rstrip("."): path for name, path in python_files(REPO / package).items()})
    migrations = [path for path in (REPO / "functions").rglob("migrations/**/*.py")]
    reached: dict[str, str] = {module: "(entry point)" for module in entry_points()}
    pending = list(reached)
    pending += [f"(migration {path.relative_to(REPO)})" for path in migrations]
    paths = files | {f"(migration {path.relative_to(REPO)})": path for path in migrations}
    while pending:
        module = pending.pop()
        for name in imported_names(paths[module]):
            if name in files and name not in reached:
                reached[name] = module
                pending.append(name)
    return reached


# --- the list itself -------------------------------------------------------------------------------


def test_every_dev_only_module_exists() -> None:
    missing = [module for module in DEV_ONLY_MODULES if not dev_only_path(module).exists()]

    assert not missing, f"DEV_ONLY_MODULES names modules that are gone: {missing}"


def test_no_deployed_entry_point_reaches_a_dev_only_module() -> None:
    closure = runtime_closure()

    reached = {module: closure[module] for module in closure if is_dev_only(module)}

    assert not reached, f"deployed code imports developer tooling (module: imported by): {reached}"


def test_every_core_module_no_entry_point_reaches_is_declared_dev_only() -> None:
    """So the list stays what the import graph says: a new tool in cloudshop/ must be declared."""
    closure = runtime_closure()
    core = {f"cloudshop.{name}".rstrip(".") for name in python_files(REPO / "cloudshop")}

    undeclared = sorted(m for m in core - set(closure) if not is_dev_only(m) and m != "cloudshop")

    assert not undeclared, f"no deployed code imports {undeclared}: add them to DEV_ONLY_MODULES or import them"


# --- the Lambda assets -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lambda_assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lambda")
    build_code(root)
    return root


@pytest.mark.parametrize("asset", [*LAMBDA_SERVICES, "platform"])
def test_a_lambda_asset_ships_no_dev_only_module_and_imports_from_what_it_ships(
    lambda_assets: Path, asset: str
) -> None:
    root = lambda_assets / asset
    shipped = [module for module in DEV_ONLY_MODULES if dev_only_path(module, root).exists()]
    handlers = [module for module, home in handler_modules().items() if home == asset]

    assert not shipped, f"{asset} ships developer tooling: {shipped}"
    assert not dev_only_imports(root), f"{asset}: shipped modules import developer tooling"
    assert handlers and all(module in python_files(root) for module in handlers)
    answer = import_everything(root, python_files(root), lambda_environment(asset))
    assert answer.returncode == 0, answer.stderr[-3000:]


# --- the images ------------------------------------------------------------------------------------


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match, plus `**`) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignored(relative: Path) -> bool:
    """Whether the build context leaves `relative` out: the last rule matching it or a parent decides."""
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, _dockerignore_regex(line.lstrip("!").strip("/"))))
    candidates = [relative.as_posix(), *(parent.as_posix() for parent in relative.parents if parent != Path("."))]
    excluded = False
    for negated, regex in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def image_layout(workload: Workload, target: Path) -> None:
    """What the build stage of the workload's image holds: its COPY sources, minus what the context drops."""
    for name, args in stages(workload)[0]:
        if name != "COPY" or args.startswith("--"):
            continue
        *sources, _ = args.split()
        for source in sources:
            if source in ("pyproject.toml", "README.md", "./"):
                continue
            files = [REPO / source] if (REPO / source).is_file() else sorted((REPO / source).rglob("*"))
            for path in files:
                relative = path.relative_to(REPO)
                if path.is_file() and not dockerignored(relative):
                    (target / relative).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target / relative)


def test_the_build_context_leaves_out_every_dev_only_module() -> None:
    kept = [module for module in DEV_ONLY_MODULES if not dockerignored(dev_only_path(module).relative_to(REPO))]

    assert not kept, f".dockerignore sends developer tooling to the image builds: {kept}"
    assert not dockerignored(Path("cloudshop/settings.py"))
    assert dockerignored(Path("cloudshop/__pycache__/settings.cpython-311.pyc"))


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda workload: workload.name)
def test_an_image_ships_no_dev_only_module_and_imports_from_what_it_ships(workload: Workload, tmp_path: Path) -> None:
    image_layout(workload, tmp_path)
    shipped = [module for module in DEV_ONLY_MODULES if dev_only_path(module, tmp_path).exists()]
    modules = [m for m in python_files(tmp_path) if m != f"eks_services.{workload.name}.app"]

    assert not shipped, f"the {workload.name} image ships developer tooling: {shipped}"
    assert not dev_only_imports(tmp_path), f"{workload.name}: shipped modules import developer tooling"
    answer = import_everything(tmp_path, modules, lambda_environment(workload.name))
    assert answer.returncode == 0, answer.stderr[-3000:]


# --- the import benchmark --------------------------------------------------------------------------


def test_the_import_bench_reports_every_lambda_handler(tmp_path: Path) -> None:
    out = tmp_path / "lambda-imports.json"
    answer = subprocess.run(
        [sys.executable, "-m", "cloudshop.bench_imports", "--runs", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )

    assert answer.returncode == 0, answer.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["handlers"]) == set(handler_modules())
    assert {f"functions.{service}.handler" for service in LAMBDA_SERVICES} <= set(report["handlers"])
    for result in report["handlers"].values():
        assert result["importtime_ms"] > 0 and result["top"]


def test_the_import_bench_names_the_handlers_when_asked_for_another_module(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cloudshop.bench_imports import main

    with pytest.raises(SystemExit) as exit_:
        main(["product"])

    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "not a Lambda handler module: product" in error
    assert "functions.product.handler" in error
