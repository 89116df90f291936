"""Builds the Lambda assets without Docker: `python -m cloudshop.build` (= `make build`).

Layout under `build/lambda/`:

- `deps/python/...` - the runtime dependencies of `[project].dependencies` in pyproject.toml, installed
  by pip for the Lambda platform (manylinux2014 x86_64, CPython 3.11, binary wheels only). It becomes
  one Lambda layer shared by every function. The download is the slow part, so it is cached: the
  directory is reused as long as `deps/.deps-hash` matches the hash of the dependency list and the pip
  platform flags.
  The layer ships bytecode: pip's own bytecode carries source timestamps, which the asset zip does not
  keep, so Lambda would compile every module on every cold start (~2 s of a handler's import here).
  The layer is compiled with unchecked hash-based `.pyc` files instead: valid whatever the timestamps.
- `<service>/` - for each of `LAMBDA_SERVICES`: `cloudshop/`, `functions/__init__.py` and
  `functions/<service>/`. Handler `functions.<service>.handler.handler`.
- `platform/` - the infrastructure's own Lambda code (`cdk/runtime/`: the gateway authorizers, the
  gateway health answer, the JWT key generator, the database-ops function, the Kafka ACL function,
  the analytics windows consumer) plus `cloudshop/`, whose settings it reads, the services that own
  SQL tables (`ESTATE.sql_schemas`: their migrations, and the code that creates the first admin and
  loads the catalog), and the Spark-free modules of `analytics/` the windows consumer runs
  (`PLATFORM_ANALYTICS_MODULES`).

No asset holds developer tooling: `DEV_ONLY_MODULES` (the local runner, the CLI, this builder, ...) is
left out of every code directory, and the images leave out the same modules through `.dockerignore`
(tests/infra/test_shipped_code.py checks both, and that no shipped module imports one).

The storefront (`web/dist`) is not built here but by `make web` (npm and Vite); `prepare_storefront`
finds it for synth and, like `prepare`, refuses a missing build unless told to use a placeholder.

Code directories are rebuilt on every call (they are small and must never be stale); CDK synth calls
`build_code` itself, so `cdk deploy` always ships the working tree's code.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import py_compile
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cloudshop.estate import ESTATE, LAMBDA_SERVICES

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUILD_ROOT = ROOT / "build" / "lambda"

PYTHON_VERSION = "3.11"
PIP_PLATFORM_FLAGS = (
    "--platform",
    "manylinux2014_x86_64",
    "--implementation",
    "cp",
    "--python-version",
    PYTHON_VERSION,
    "--only-binary=:all:",
)
DEPS_DIR = "deps"
DEPS_HASH_FILE = ".deps-hash"
PLACEHOLDER_FILE = "PLACEHOLDER"
PLATFORM_ASSET = "platform"
# The storefront's static build (`make web`: npm ci and Vite in web/), uploaded by the Api stack.
WEB_DIST = ROOT / "web" / "dist"
STOREFRONT_PLACEHOLDER = "storefront-placeholder"

# Modules no deployed code imports: developer and operator tooling. Left out of the Lambda assets here
# and of the images by `.dockerignore`; a module is dev-only when nothing a handler or a service's app
# imports reaches it (tests/infra/test_shipped_code.py computes that and checks this list against it).
DEV_ONLY_MODULES: tuple[str, ...] = (
    "cloudshop.analytics_cli",
    "cloudshop.bench",
    "cloudshop.bench_http",
    "cloudshop.bench_imports",
    "cloudshop.bench_tracing",
    "cloudshop.build",
    "cloudshop.cli",
    "cloudshop.contracts",
    "cloudshop.diagram",
    "cloudshop.gateway",
    "cloudshop.hpa_replay",
    "cloudshop.local",
    "cloudshop.provision",
    "cloudshop.remote",
    "cloudshop.storefront",
    "functions.notification.poller",
)
# The windows consumer (cdk/runtime/windows_consumer.py) runs these; the rest of `analytics/` is the
# Spark job, which ships to Dataproc, not to Lambda.
PLATFORM_ANALYTICS_MODULES = ("__init__.py", "windows.py", "results_consumer.py")
# Compiled for the Lambda runtime's Python (`PYTHON_VERSION`): the builder must be that Python.
BYTECODE = py_compile.PycInvalidationMode.UNCHECKED_HASH

_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".mypy_cache", ".pytest_cache")


class BuildError(RuntimeError):
    """The Lambda assets cannot be built or are missing."""


@dataclass(frozen=True)
class LambdaBuild:
    """Where the built assets are. `deps_ready` is false for a placeholder dependency layer."""

    root: Path
    deps_ready: bool

    @property
    def deps_layer(self) -> Path:
        return self.root / DEPS_DIR

    def code(self, name: str) -> Path:
        return self.root / name


@dataclass(frozen=True)
class StorefrontBuild:
    """Where the storefront's build is. `ready` is false for a placeholder page."""

    site: Path
    ready: bool


def runtime_dependencies(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The runtime requirement specifiers, read from `[project].dependencies`."""
    with pyproject.open("rb") as handle:
        return list(tomllib.load(handle)["project"]["dependencies"])


def dev_only_path(module: str, source: Path = ROOT) -> Path:
    """Where a dotted module of `DEV_ONLY_MODULES` lives: its package directory or its `.py` file."""
    path = source.joinpath(*module.split("."))
    return path if path.is_dir() else path.with_suffix(".py")


def dependencies_hash(requirements: list[str]) -> str:
    payload = json.dumps({"requirements": sorted(requirements), "pip": PIP_PLATFORM_FLAGS, "bytecode": BYTECODE.name})
    return hashlib.sha256(payload.encode()).hexdigest()


def deps_are_current(root: Path, requirements: list[str]) -> bool:
    marker = root / DEPS_DIR / DEPS_HASH_FILE
    return marker.is_file() and marker.read_text().strip() == dependencies_hash(requirements)


def build_deps(root: Path, requirements: list[str], *, force: bool = False) -> bool:
    """Install the runtime dependencies into the layer directory; returns False when the cache was used."""
    if not force and deps_are_current(root, requirements):
        return False
    if f"{sys.version_info.major}.{sys.version_info.minor}" != PYTHON_VERSION:
        raise BuildError(f"build with Python {PYTHON_VERSION}: the layer's bytecode is for the Lambda runtime's")
    target = root / DEPS_DIR
    staging = root / f".{DEPS_DIR}-staging"
    shutil.rmtree(staging, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        *PIP_PLATFORM_FLAGS,
        "--target",
        str(staging / "python"),
        *requirements,
    ]
    result = subprocess.run(command, check=False)  # noqa: S603 - fixed argv, no shell
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise BuildError(f"pip could not install the Lambda dependencies (exit {result.returncode})")
    _prune(staging / "python")
    if not compileall.compile_dir(staging / "python", quiet=2, invalidation_mode=BYTECODE):
        shutil.rmtree(staging, ignore_errors=True)
        raise BuildError("the Lambda dependencies could not be compiled to bytecode")
    (staging / DEPS_HASH_FILE).write_text(dependencies_hash(requirements) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return True


def _prune(site: Path) -> None:
    # Lambda never runs these; dropping them keeps the layer well under the 250 MB unzipped limit.
    for pattern in ("**/__pycache__", "**/tests", "bin"):
        for path in site.glob(pattern):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def placeholder_deps(root: Path) -> None:
    """An empty dependency layer, for synthesising templates that will not be deployed (tests, lint)."""
    target = root / DEPS_DIR
    if (target / DEPS_HASH_FILE).is_file():
        return  # real dependencies are there: keep them
    (target / "python").mkdir(parents=True, exist_ok=True)
    (target / "python" / PLACEHOLDER_FILE).write_text(
        "Placeholder layer: run `make build` before deploying; this asset is not deployable.\n"
    )


def _copy_tree(source: Path, destination: Path, *, skip: frozenset[Path] = frozenset()) -> None:
    def ignore(directory: str, names: list[str]) -> set[str]:
        return set(_IGNORED(directory, names)) | {name for name in names if Path(directory, name) in skip}

    shutil.copytree(source, destination, ignore=ignore, dirs_exist_ok=True)


def build_code(root: Path, source: Path = ROOT) -> None:
    """(Re)build the code directory of every Lambda service and of the platform functions."""
    dev_only = frozenset(dev_only_path(module, source) for module in DEV_ONLY_MODULES)
    for service in LAMBDA_SERVICES:
        target = root / service
        shutil.rmtree(target, ignore_errors=True)
        _copy_tree(source / "cloudshop", target / "cloudshop", skip=dev_only)
        (target / "functions").mkdir(parents=True)
        shutil.copy2(source / "functions" / "__init__.py", target / "functions" / "__init__.py")
        _copy_tree(source / "functions" / service, target / "functions" / service, skip=dev_only)
    target = root / PLATFORM_ASSET
    shutil.rmtree(target, ignore_errors=True)
    _copy_tree(source / "cloudshop", target / "cloudshop", skip=dev_only)
    (target / "cdk").mkdir(parents=True)
    shutil.copy2(source / "cdk" / "__init__.py", target / "cdk" / "__init__.py")
    _copy_tree(source / "cdk" / "runtime", target / "cdk" / "runtime", skip=dev_only)
    (target / "functions").mkdir(parents=True)
    shutil.copy2(source / "functions" / "__init__.py", target / "functions" / "__init__.py")
    for schema in ESTATE.sql_schemas:
        package = Path(*schema.package.split("."))
        _copy_tree(source / package, target / package, skip=dev_only)
    (target / "analytics").mkdir(parents=True)
    for module in PLATFORM_ANALYTICS_MODULES:
        shutil.copy2(source / "analytics" / module, target / "analytics" / module)


def prepare(root: Path = DEFAULT_BUILD_ROOT, *, allow_placeholder: bool = False) -> LambdaBuild:
    """What synth calls: fresh code directories, and the cached dependency layer (never downloads).

    Without a current dependency layer this fails, unless `allow_placeholder` is set, in which case the
    layer is a placeholder and the synthesised templates are for inspection only.
    """
    root.mkdir(parents=True, exist_ok=True)
    build_code(root)
    requirements = runtime_dependencies()
    if deps_are_current(root, requirements):
        return LambdaBuild(root=root, deps_ready=True)
    if not allow_placeholder:
        raise BuildError(
            f"{root / DEPS_DIR} is missing or stale for the dependencies in pyproject.toml: run `make build`"
            " (or synthesise with CLOUDSHOP_LAMBDA_ASSETS=placeholder for templates that are not deployed)"
        )
    placeholder_deps(root)
    return LambdaBuild(root=root, deps_ready=False)


def prepare_storefront(
    root: Path = ROOT / "build", *, dist: Path = WEB_DIST, allow_placeholder: bool = False
) -> StorefrontBuild:
    """What synth uploads to the storefront's bucket: `web/dist` as `make web` built it (never built here).

    Without a build this fails, unless `allow_placeholder` is set: then the site is one placeholder page
    under `root`, and the synthesised templates are for inspection only, as with the dependency layer.
    """
    if (dist / "index.html").is_file():
        return StorefrontBuild(site=dist, ready=True)
    if not allow_placeholder:
        raise BuildError(
            f"{dist} holds no storefront build: run `make web` (or synthesise with CLOUDSHOP_LAMBDA_ASSETS=placeholder"
            " for templates that are not deployed)"
        )
    site = root / STOREFRONT_PLACEHOLDER
    site.mkdir(parents=True, exist_ok=True)
    (site / "index.html").write_text(
        "<!doctype html><title>cloudshop</title><p>Placeholder: run `make web` before deploying.</p>\n"
    )
    return StorefrontBuild(site=site, ready=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloudshop.build", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_BUILD_ROOT, help="build directory")
    parser.add_argument("--force", action="store_true", help="reinstall dependencies even if cached")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        downloaded = build_deps(args.out, runtime_dependencies(), force=args.force)
        build_code(args.out)
    except BuildError as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        return 1
    state = "installed" if downloaded else "cached"
    print(f"Lambda assets in {args.out} (dependencies {state}; services: {', '.join(LAMBDA_SERVICES)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
