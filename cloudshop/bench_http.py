"""CPU per outgoing HTTP call, httpx's pool against ours: `python -m cloudshop.bench_http` (issue 9).

The callers as they run in a service: `AsyncServiceClient.request("GET", ...)` against a real
uvicorn server (a trivial Starlette JSON endpoint, in its own process on 127.0.0.1) and
`DynamoDB.call` (PutItem and consistent GetItem of ~150-byte items) against dynalite, each with
three transports: `httpx.AsyncHTTPTransport` (httpcore + h11; the callers then build an
`httpx.Request` and read an `httpx.Response` per call, as they did before), our
`cloudshop.http_pool.PooledTransport` still driven through those httpx objects (the pool's share),
and `PooledTransport` driven by `cloudshop.http_pool.Endpoint` without them (what the callers do
now). Calls are issued one after another and from 25 concurrent coroutines. The figure is
`time.process_time()` of this (the client) process only, per call; the servers' CPU is not in it.
Rounds are interleaved (the three in turn, each round starting with the next) and the median of
`--rounds` is reported, with the spread. Each measurement runs on a new event loop (uvloop, as
uvicorn runs the services, unless `--loop asyncio`), after a warm-up.

Writes `http-cpu.json` and `http-cpu.md` into `--out` (default `bench-results/`). A benchmark: no
test asserts a time. Developer tooling (`cloudshop.build.DEV_ONLY_MODULES`), not shipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx

from cloudshop.auth import InternalTokens
from cloudshop.clients import MAX_IDLE_CONNECTIONS, AsyncServiceClient
from cloudshop.dynamodb import DEFAULT_MAX_CONNECTIONS, DynamoDB
from cloudshop.estate import ESTATE
from cloudshop.http_pool import PooledTransport

BEFORE = "httpx.AsyncHTTPTransport"
MIDDLE = "PooledTransport, httpx objects"
AFTER = "PooledTransport + Endpoint"
TRANSPORTS = (BEFORE, MIDDLE, AFTER)
TABLE = "bench-http"
PRODUCT = {
    "product_id": "p-1",
    "name": "Basmati rice, 5 kg",
    "price": {"amount": 129900, "currency": "INR"},
    "stock": 42,
    "tags": ["grocery", "rice"],
}


def build_server_app() -> Any:
    """The uvicorn server's app (`uvicorn --factory cloudshop.bench_http:build_server_app`)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def product(request: Request) -> JSONResponse:
        return JSONResponse({**PRODUCT, "product_id": request.path_params["product_id"]})

    return Starlette(routes=[Route("/internal/products/{product_id}", product)])


def _progress(message: str) -> None:
    print(f"[bench_http] {message}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _start_uvicorn() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "cloudshop.bench_http:build_server_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        "--timeout-keep-alive",
        "75",
    ]
    process = subprocess.Popen(command)  # noqa: S603 - fixed argv
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("uvicorn did not start")


class _ThroughHttpx(httpx.AsyncBaseTransport):
    """Our pool behind a transport that is not a `PooledTransport`, so `Endpoint` builds an
    `httpx.Request` and reads an `httpx.Response` per call: the pool's share of the saving alone."""

    def __init__(self, inner: PooledTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _transport(name: str, max_connections: int) -> httpx.AsyncBaseTransport:
    idle = min(max_connections, MAX_IDLE_CONNECTIONS)
    if name == BEFORE:
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=idle)
        return httpx.AsyncHTTPTransport(limits=limits, retries=0)
    pooled = PooledTransport(max_connections=max_connections, max_idle_connections=idle)
    return _ThroughHttpx(pooled) if name == MIDDLE else pooled


class _StaticCredentials:
    access_key = "bench"
    secret_key = "bench-secret"  # noqa: S105 - dynalite accepts any
    token = None

    def get_frozen_credentials(self) -> _StaticCredentials:
        return self


def _dynamodb(endpoint: str, transport: httpx.AsyncBaseTransport) -> DynamoDB:
    return DynamoDB(endpoint=endpoint, region="us-east-1", credentials=_StaticCredentials, transport=transport)


async def _measure(
    client: Any, call: Callable[[Any, int], Awaitable[None]], *, calls: int, concurrency: int, warmup: int
) -> tuple[float, float]:
    """(CPU µs, wall µs) per call."""
    try:
        for n in range(warmup):
            await call(client, n)
        started, wall = time.process_time(), time.perf_counter()
        if concurrency <= 1:
            for n in range(calls):
                await call(client, n)
        else:

            async def worker(first: int) -> None:
                for n in range(first, calls, concurrency):
                    await call(client, n)

            await asyncio.gather(*(worker(first) for first in range(concurrency)))
        cpu, elapsed = time.process_time() - started, time.perf_counter() - wall
    finally:
        await client.aclose()
    return cpu / calls * 1e6, elapsed / calls * 1e6


async def _service_get(client: AsyncServiceClient, n: int) -> None:
    answer = await client.request("GET", f"/internal/products/p-{n % 50}")
    assert answer["product_id"] == f"p-{n % 50}"


async def _dynamodb_put_get(db: DynamoDB, n: int) -> None:
    # Even calls write an item, odd ones read it back: half PutItem, half consistent GetItem.
    key = {"pk": {"S": f"item-{n // 2 % 400}"}}
    if n % 2 == 0:
        item: dict[str, Any] = {**key, "name": {"S": "Basmati rice, 5 kg"}, "price": {"N": "129900"}}
        item |= {"stock": {"N": str(n)}, "tags": {"SS": ["grocery", "rice"]}}
        await db.call("PutItem", {"TableName": TABLE, "Item": item})
    else:
        answer = await db.call("GetItem", {"TableName": TABLE, "Key": key, "ConsistentRead": True})
        assert answer["Item"]["pk"] == key["pk"]


async def _create_table(endpoint: str) -> None:
    db = _dynamodb(endpoint, PooledTransport())
    try:
        await db.call(
            "CreateTable",
            {
                "TableName": TABLE,
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "BillingMode": "PAY_PER_REQUEST",
            },
        )
    finally:
        await db.aclose()


def _runner(loop: str) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    if loop == "uvloop":
        import uvloop

        return uvloop.run
    return asyncio.run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=1000, help="calls per measurement")
    parser.add_argument("--concurrency", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--no-dynalite", action="store_true", help="measure the service client only")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args(argv)
    run = _runner(args.loop)
    secrets = {pair: "s" * 40 for pair in ESTATE.token_pairs}

    process, base_url = _start_uvicorn()
    dynalite = None
    scenarios: dict[str, Callable[[str], Coroutine[Any, Any, tuple[float, float]]]] = {}
    try:

        def service_scenario(concurrency: int) -> Callable[[str], Coroutine[Any, Any, tuple[float, float]]]:
            def start(name: str) -> Coroutine[Any, Any, tuple[float, float]]:
                client = AsyncServiceClient(
                    name="product",
                    base_url=base_url,
                    tokens=InternalTokens(secrets, service="order"),
                    timeout_seconds=5.0,
                    retries=0,
                    transport=_transport(name, 64),
                )
                return _measure(client, _service_get, calls=args.calls, concurrency=concurrency, warmup=args.warmup)

            return start

        scenarios["service GET, sequential"] = service_scenario(1)
        scenarios[f"service GET, {args.concurrency} concurrent"] = service_scenario(args.concurrency)
        if not args.no_dynalite:
            from cloudshop.local.servers import DynaliteServer

            _progress("starting dynalite ...")
            dynalite = DynaliteServer(tempfile.mkdtemp(prefix="bench-http-dynalite-"))
            dynalite.start()
            endpoint = dynalite.endpoint_url
            run(_create_table(endpoint))

            def dynamodb_scenario(concurrency: int) -> Callable[[str], Coroutine[Any, Any, tuple[float, float]]]:
                def start(name: str) -> Coroutine[Any, Any, tuple[float, float]]:
                    db = _dynamodb(endpoint, _transport(name, DEFAULT_MAX_CONNECTIONS))
                    return _measure(
                        db, _dynamodb_put_get, calls=args.calls, concurrency=concurrency, warmup=args.warmup
                    )

                return start

            scenarios["DynamoDB PutItem/GetItem, sequential"] = dynamodb_scenario(1)
            scenarios[f"DynamoDB PutItem/GetItem, {args.concurrency} concurrent"] = dynamodb_scenario(args.concurrency)

        samples: dict[str, dict[str, list[tuple[float, float]]]] = {
            scenario: {name: [] for name in TRANSPORTS} for scenario in scenarios
        }
        for round_ in range(args.rounds):
            order = TRANSPORTS[round_ % 3 :] + TRANSPORTS[: round_ % 3]
            for scenario, start in scenarios.items():
                for name in order:
                    cpu, wall = run(start(name))
                    samples[scenario][name].append((cpu, wall))
                    _progress(f"round {round_ + 1}/{args.rounds} {scenario} {name}: {cpu:.0f} µs CPU per call")
    finally:
        process.terminate()
        process.wait(timeout=10)
        if dynalite is not None:
            dynalite.stop()

    report = _report(samples, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "http-cpu.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "http-cpu.md").write_text(_markdown(report))
    print(_markdown(report))
    _progress(f"wrote {args.out / 'http-cpu.json'} and {args.out / 'http-cpu.md'}")
    return 0


def _report(samples: dict[str, dict[str, list[tuple[float, float]]]], args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for scenario, by_transport in samples.items():
        rows: dict[str, Any] = {}
        for name, runs in by_transport.items():
            cpu = [c for c, _ in runs]
            rows[name] = {
                "cpu_us_per_call_median": round(statistics.median(cpu), 1),
                "cpu_us_per_call_min": round(min(cpu), 1),
                "cpu_us_per_call_max": round(max(cpu), 1),
                "wall_us_per_call_median": round(statistics.median(w for _, w in runs), 1),
                "rounds_cpu_us": [round(c, 1) for c in cpu],
            }
        before, after = rows[BEFORE]["cpu_us_per_call_median"], rows[AFTER]["cpu_us_per_call_median"]
        rows["cpu_saved_percent"] = round(100 * (1 - after / before), 1) if before else None
        results[scenario] = rows
    return {
        "what": "time.process_time() of the client process per call, median of interleaved rounds",
        "loop": args.loop,
        "rounds": args.rounds,
        "calls_per_round": args.calls,
        "python": sys.version.split()[0],
        "httpx": httpx.__version__,
        "results": results,
    }


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        "# CPU per outgoing HTTP call (client process only)",
        "",
        f"`python -m cloudshop.bench_http`: {report['rounds']} interleaved rounds of {report['calls_per_round']}"
        f" calls, event loop {report['loop']}, median (min-max) of `time.process_time()` per call.",
        "",
        f"| scenario | {BEFORE} (before) | {MIDDLE} | {AFTER} (after) | CPU saved |",
        "|---|---|---|---|---|",
    ]
    for scenario, rows in report["results"].items():
        cells = [
            f"{rows[name]['cpu_us_per_call_median']:.0f} µs"
            f" ({rows[name]['cpu_us_per_call_min']:.0f}-{rows[name]['cpu_us_per_call_max']:.0f})"
            for name in TRANSPORTS
        ]
        lines.append(f"| {scenario} | {' | '.join(cells)} | {rows['cpu_saved_percent']}% |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
