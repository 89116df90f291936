"""JSON logs that carry the request id through every hop, and Prometheus metrics.

The request id arrives in `X-Request-ID` (the gateway sets one when the caller did not), lives in a
context variable for the duration of the request, is stamped on every log line and is forwarded by
`cloudshop.clients` on calls to other services and by the outbox on events. With tracing on
(`cloudshop.tracing`), a line written inside a trace also carries its `trace_id`.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cloudshop.tracing import configure_tracing, current_trace_id

if TYPE_CHECKING:
    from prometheus_client import Counter

    from cloudshop.settings import Settings

REQUEST_ID_HEADER = "x-request-id"
request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

# Every call a process makes to a backend, counted where each kind of call is made: the async
# DynamoDB client (`cloudshop.dynamodb`), boto3 clients (`cloudshop.aws`, kind = the AWS service),
# SQL engines (`cloudshop.sql`), service-to-service and gateway HTTP (`cloudshop.clients`,
# `cloudshop.gateway`) and the Kafka producer (`cloudshop.stream`). One count per process, not per
# app: a process runs one service, and each app's registry exports it (`Metrics`, as the counter
# `cloudshop_backend_calls_total`), so every service's `/metrics` answers what its process called. A
# logical call counts once, retries included. Plain integers under a lock, read at scrape time: no
# prometheus_client (~20-50 ms to import) in a process that serves no `/metrics`, such as the
# notification function's sandboxes started by its queue.
_backend_calls: dict[tuple[str, str], int] = {}
_backend_calls_lock = threading.Lock()


def count_backend_call(kind: str, operation: str) -> None:
    """One call of `kind` (`dynamodb`, `sql`, `http`, ...) and `operation` (`PutItem`, `SELECT`,
    the target service, ...). An increment under an uncontended lock: cheap enough for every call."""
    key = (kind, operation)
    with _backend_calls_lock:
        _backend_calls[key] = _backend_calls.get(key, 0) + 1


def backend_calls() -> dict[tuple[str, str], int]:
    """(kind, operation) -> calls so far in this process."""
    with _backend_calls_lock:
        return dict(_backend_calls)


class _BackendCallsCollector:
    """Exports `backend_calls()` as the counter `cloudshop_backend_calls_total` at each scrape."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(
            "cloudshop_backend_calls",
            "Calls this process made to its backends, by kind (dynamodb, sql, http, s3, sqs, kafka, ses, ...)",
            labels=["kind", "operation"],
        )
        for (kind, operation), calls in sorted(backend_calls().items()):
            family.add_metric([kind, operation], calls)
        yield family


def serve_backend_calls(port: int = 0) -> int:
    """Serve `cloudshop_backend_calls_total` alone at http://127.0.0.1:`port`/metrics, from a thread,
    for a process without an HTTP app of its own (the local notification poller: the notification
    function's batches, which the bench counts per checkout). Port 0 takes a free one; returns the
    port bound."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(_BackendCallsCollector())  # type: ignore[arg-type]
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    return int(server.server_port)


def new_request_id() -> str:
    return uuid.uuid4().hex


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "request_id": request_id_var.get(),
            "message": record.getMessage(),
        }
        trace_id = current_trace_id()
        if trace_id is not None:
            entry["trace_id"] = trace_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("botocore", "boto3", "urllib3", "kafka", "httpx", "httpcore", "werkzeug", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def configure_process(service: str, settings: Settings) -> bool:
    """What every service process sets up once, whatever it serves: JSON log lines, and tracing when
    the settings ask for it (whether it is on). `cloudshop.web.create_app` calls it, and so does a
    Lambda handler that serves events before, or without, building its app."""
    configure_logging(service, settings.log_level)
    return configure_tracing(service, settings)


class Metrics:
    """Per-app registry, so several apps can live in one process (tests) without clashing. Each also
    exports the process's `cloudshop_backend_calls_total` (`count_backend_call`)."""

    def __init__(self, service: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests",
            ["service", "method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency",
            ["service", "method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.registry.register(_BackendCallsCollector())  # type: ignore[arg-type]
        self.service = service

    def counter(self, name: str, documentation: str, labels: tuple[str, ...] = ()) -> Counter:
        from prometheus_client import Counter

        return Counter(name, documentation, list(labels), registry=self.registry)


class RequestContextMiddleware:
    """Pure ASGI middleware: request id, access log, latency and count per route template."""

    def __init__(self, app: Any, *, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.log = logging.getLogger("cloudshop.access")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")[:64] or new_request_id()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status_holder = {"status": 500}

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (REQUEST_ID_HEADER.encode(), request_id.encode())]
            await send(message)

        try:
            declared = headers.get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                await _send_problem(send_with_id, 413, "Payload too large", "The request body is too large.")
                return
            if declared is None and b"chunked" in headers.get(b"transfer-encoding", b""):
                # No length up front: read the body here, within the limit, and hand it on whole.
                body = await _read_limited(receive, self.max_body_bytes)
                if body is None:
                    await _send_problem(send_with_id, 413, "Payload too large", "The request body is too large.")
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "-")
            status = status_holder["status"]
            self.metrics.requests.labels(self.metrics.service, method, template, str(status)).inc()
            self.metrics.latency.labels(self.metrics.service, method, template).observe(elapsed)
            if template not in ("/healthz", "/readyz", "/metrics"):
                self.log.info(
                    "request",
                    extra={
                        "fields": {
                            "method": method,
                            "path": scope.get("path"),
                            "status": status,
                            "duration_ms": round(elapsed * 1000, 2),
                        }
                    },
                )
            request_id_var.reset(token)


async def _read_limited(receive: Any, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    delivered = False

    async def replay() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return dict(await receive())

    return replay


async def _send_problem(send: Any, status: int, title: str, detail: str) -> None:
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
