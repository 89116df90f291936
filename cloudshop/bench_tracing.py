"""What tracing costs a request in CPU: `python -m cloudshop.bench_tracing` (issue 9's CPU budget).

A service app from `cloudshop.web.create_app` is called in-process as uvicorn would call it (an
ASGI scope with a `traceparent`, no network), `--requests` times, with tracing off and then on
(spans exported to a JSON-lines file, as `cloudshop up` does). Each request makes its server span
plus `--client-spans` client spans (a checkout makes ~10 DynamoDB, HTTP and SQL calls per service).
The figure is process CPU time (every thread: the exporter's too) per request, best of `--runs`.
This is a benchmark; no test asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from cloudshop import tracing
from cloudshop.settings import Settings
from cloudshop.web import create_app

CALLER = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _app(client_spans: int, settings: Settings) -> Any:
    router = APIRouter()

    @router.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        for _ in range(client_spans):
            with tracing.span("dynamodb.GetItem", kind=tracing.SpanKind.CLIENT, attributes={"rpc.method": "GetItem"}):
                pass
        return {"id": thing_id}

    return create_app(service="bench", settings=settings, routers=[router])


async def _requests(app: Any, count: int) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/things/t-1",
        "raw_path": b"/things/t-1",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"traceparent", CALLER)],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    for _ in range(count):
        await app(dict(scope), receive, send)


def cpu_per_request(*, traced: bool, requests: int, client_spans: int, directory: Path) -> float:
    """CPU microseconds per request, exporter included (spans are flushed before the clock stops)."""
    tracing.reset_for_tests()
    settings = Settings(log_level="WARNING", tracing_enabled=traced, trace_file=str(directory / "spans.jsonl"))
    app = _app(client_spans, settings)
    asyncio.run(_requests(app, 200))  # warm up: routes compiled, caches filled
    tracing.flush()
    started = time.process_time()
    asyncio.run(_requests(app, requests))
    tracing.flush()
    elapsed = time.process_time() - started
    tracing.reset_for_tests()
    return elapsed / requests * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--client-spans", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the JSON here as well as to stdout")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        results: dict[str, float] = {}
        for label, traced, spans in (
            ("off", False, args.client_spans),
            ("on, server span only", True, 0),
            (f"on, server span + {args.client_spans} client spans", True, args.client_spans),
            ("off, no client spans", False, 0),
        ):
            results[label] = min(
                cpu_per_request(traced=traced, requests=args.requests, client_spans=spans, directory=Path(directory))
                for _ in range(args.runs)
            )
    base = results["off, no client spans"]
    report = {
        "cpu_us_per_request": {k: round(v, 1) for k, v in results.items()},
        "added_us": {
            "server span": round(results["on, server span only"] - base, 1),
            f"server span + {args.client_spans} client spans": round(
                results[f"on, server span + {args.client_spans} client spans"] - results["off"], 1
            ),
        },
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
