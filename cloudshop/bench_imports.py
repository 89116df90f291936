"""How long each Lambda handler takes to import: `python -m cloudshop.bench_imports` (part of `make bench`).

The import is most of a Lambda cold start: the handler module builds the app at import. Each handler
is imported in fresh interpreters, from its built code asset (`cloudshop.build.build_code`, so exactly
what is shipped) with the dependencies of this virtualenv, in the environment a deployed function
has, minus the network: the runtime's variables (so Powertools traces and X-Ray patches, as in the
cloud), settings given as values instead of Secrets Manager ARNs, and a PostgreSQL `DATABASE_URL`
(the engine is created at import, it does not connect). Two measurements, median of `--runs` each:

- `wall_ms`: wall time of `python -c "import <handler>"` minus that of `python -c "pass"` (start-up).
  It includes the interpreter's shutdown (freeing every module: ~0.3 s for the user handler before
  the handlers froze what they build, `cloudshop.lambda_entry.cold_start`), which a Lambda
  environment never runs; `importtime_ms` is the cold-start figure;
- `importtime_ms`: the handler module's cumulative time under `python -X importtime`; the budget
  (`BUDGET_MS`) is on this figure, as in `make bench`.

Plus `cpu_ms` (user + system time of the child, start-up subtracted): steadier than wall time on a
machine shared with other work. `top` names the handler's costliest direct and indirect imports of
the median run (cumulative, nested ones included), to see where the time goes.

What a deployed function adds, not measured here: reading its secrets from Secrets Manager (a boto3
client and one call per secret). This is a benchmark; no test asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cloudshop.build import PLATFORM_ASSET, ROOT, build_code
from cloudshop.estate import ESTATE, LAMBDA_SERVICES
from cloudshop.lambda_entry import runtime_settings
from cloudshop.settings import resource_settings

DEFAULT_RUNS = 5
BUDGET_MS = 250.0
# The venv's editable install would find any module of the repository; keep only the asset's.
_ISOLATE = (
    "import sys; sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f)]; "
    "sys.path = [p for p in sys.path if '__editable__' not in p]; "
)
_IMPORTTIME = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


class UnknownHandler(ValueError):
    """A module asked for is not one of the Lambda handlers (`handler_modules`)."""


@dataclass(frozen=True)
class HandlerImport:
    module: str
    asset: str
    wall_ms: float
    cpu_ms: float
    importtime_ms: float
    top: list[dict[str, Any]]


def handler_modules() -> dict[str, str]:
    """Handler module -> the code asset it ships in: every Lambda service, and every platform function."""
    modules: dict[str, str] = {f"functions.{service}.handler": service for service in LAMBDA_SERVICES}
    for path in sorted((ROOT / "cdk" / "runtime").glob("*.py")):
        if path.stem != "__init__":
            modules[f"cdk.runtime.{path.stem}"] = PLATFORM_ASSET
    return modules


def lambda_environment(service: str) -> dict[str, str]:
    """A deployed function's environment, with secrets as values so that importing needs no network."""
    from cloudshop.auth import generate_key_pair

    private, public = generate_key_pair()
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "SYSTEMROOT")
    return {
        **{name: os.environ[name] for name in keep if name in os.environ},
        # What the Lambda runtime sets (tests/cdk/rehearsal/lambdas.py lists the same).
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
        "AWS_LAMBDA_FUNCTION_NAME": f"cloudshop-bench-{service}",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "LAMBDA_TASK_ROOT": "/var/task",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        # What CDK sets (cdk/settings_env.py), secrets given by value instead of by ARN.
        **resource_settings("cloudshop-bench-"),
        **runtime_settings(service),
        "SERVICE_NAME": service,
        "ENVIRONMENT": "dev",
        "LOG_LEVEL": "WARNING",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "DATABASE_URL": "postgresql://cloudshop.proxy.invalid:5432/cloudshop",
        "JWT_PUBLIC_KEY": public,
        "JWT_PRIVATE_KEY": private,
        "INTERNAL_TOKEN_SECRETS": json.dumps({pair: secrets.token_urlsafe(32) for pair in ESTATE.token_pairs}),
        # OpenTelemetry, as cdk/functions.py turns it on (the SDK is imported when the app is built).
        "TRACING_ENABLED": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318",
    }


def _run(code: str, *, env: dict[str, str], cwd: Path, importtime: bool = False) -> tuple[float, float, str]:
    """(wall ms, child CPU ms, stderr) of one fresh interpreter running `code`."""
    flags = ["-X", "importtime"] if importtime else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    answer = subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
        [sys.executable, *flags, "-c", _ISOLATE + code], env=env, cwd=cwd, capture_output=True, text=True
    )
    wall = (time.perf_counter() - started) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if answer.returncode != 0:
        raise RuntimeError(f"`{code}` failed in {cwd}:\n{answer.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return wall, cpu, answer.stderr


def parse_importtime(stderr: str, module: str, *, top: int = 8) -> tuple[float, list[dict[str, Any]]]:
    """The module's cumulative import time (ms), and the costliest imports beneath it (cumulative ms)."""
    rows = [
        (int(match[2]) / 1000, (len(match[3]) - 1) // 2, match[4])
        for match in map(_IMPORTTIME.match, stderr.splitlines())
        if match
    ]
    index = next(i for i, (_, _, name) in enumerate(rows) if name == module)
    # -X importtime prints a module after everything it imported: its subtree is the deeper rows just before it.
    first = index
    while first > 0 and rows[first - 1][1] > rows[index][1]:
        first -= 1
    beneath = sorted((row for row in rows[first:index] if row[1] <= rows[index][1] + 3), reverse=True)[:top]
    return rows[index][0], [
        {"module": name, "cumulative_ms": round(ms, 1), "depth": depth - rows[index][1]} for ms, depth, name in beneath
    ]


def measure(module: str, asset: Path, *, runs: int = DEFAULT_RUNS) -> HandlerImport:
    env = lambda_environment(asset.name) | {"PYTHONPATH": str(asset)}
    start_up, plain, timed = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-imports-") as directory:
        cwd = Path(directory)
        # Unmeasured: compiles the asset's bytecode (as the deployed layer ships it) and warms the page cache.
        _run(f"import {module}", env=env, cwd=cwd)
        # Interleaved, so that a change in the machine's load affects every measurement alike.
        for _ in range(runs):
            start_up.append(_run("pass", env=env, cwd=cwd))
            plain.append(_run(f"import {module}", env=env, cwd=cwd))
            timed.append(parse_importtime(_run(f"import {module}", env=env, cwd=cwd, importtime=True)[2], module))
    base_wall = statistics.median(wall for wall, _, _ in start_up)
    base_cpu = statistics.median(cpu for _, cpu, _ in start_up)
    median_run = sorted(timed, key=lambda result: result[0])[len(timed) // 2]
    return HandlerImport(
        module=module,
        asset=asset.name,
        wall_ms=round(statistics.median(wall for wall, _, _ in plain) - base_wall, 1),
        cpu_ms=round(statistics.median(cpu for _, cpu, _ in plain) - base_cpu, 1),
        importtime_ms=round(median_run[0], 1),
        top=median_run[1],
    )


def measure_all(*, runs: int = DEFAULT_RUNS, modules: list[str] | None = None, source: Path = ROOT) -> dict[str, Any]:
    """Every handler's import, from code assets freshly built from `source`; the JSON `make bench` writes."""
    wanted = handler_modules()
    if modules:
        unknown = [module for module in modules if module not in wanted]
        if unknown:
            raise UnknownHandler(f"not a Lambda handler module: {', '.join(unknown)}; one of: {', '.join(wanted)}")
        wanted = {module: wanted[module] for module in modules}
    with tempfile.TemporaryDirectory(prefix="bench-assets-") as build_root:
        build_code(Path(build_root), source)
        results = [measure(module, Path(build_root) / asset, runs=runs) for module, asset in wanted.items()]
    return {
        "source": str(source),
        "runs": runs,
        "budget_ms": BUDGET_MS,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "handlers": {result.module: asdict(result) for result in results},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloudshop.bench_imports", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="fresh interpreters per measurement")
    parser.add_argument("--out", type=Path, help="write the JSON here as well as to stdout")
    parser.add_argument("--source", type=Path, default=ROOT, help="build the assets from this tree (to compare)")
    parser.add_argument("modules", nargs="*", help="handler modules (default: every Lambda handler)")
    args = parser.parse_args(argv)
    try:
        report = measure_all(runs=args.runs, modules=args.modules or None, source=args.source)
    except UnknownHandler as exc:
        parser.error(str(exc))
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    for module, result in report["handlers"].items():
        # The budget is on `importtime_ms`, the cold-start figure (as `make bench` reports it).
        over = result["importtime_ms"] > BUDGET_MS
        print(
            f"{module:34} importtime {result['importtime_ms']:7.1f} ms  wall {result['wall_ms']:7.1f} ms  "
            f"cpu {result['cpu_ms']:7.1f} ms  ({'over budget' if over else 'ok'}, budget {BUDGET_MS:.0f} ms)",
            file=sys.stderr,
        )
        if over:
            costliest = ", ".join(f"{entry['module']} {entry['cumulative_ms']:.0f}" for entry in result["top"][:4])
            print(f"{'':34} costliest imports (ms): {costliest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
