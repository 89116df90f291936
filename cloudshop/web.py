"""The one FastAPI app factory every service uses.

It wires what every service shares: problem+json errors, request ids and JSON access logs,
Prometheus `/metrics`, `/healthz` (alive) and `/readyz` (dependencies reachable), the auth
dependencies (a caller's service token is checked against the estate's declaration of the route:
`InternalCaller`), one reading of every path (`PathGuard`), and overload protection. Services add
their routers and readiness checks; nothing else differs.

Overload: a process works on at most `max_in_flight_requests` requests at once (`InFlightLimiter`);
the next one is refused at once with a 503 problem carrying `Retry-After` (whole seconds, the
standard header every HTTP client knows) and `retry-after-ms` (the same hint at the precision that
matters when a slot frees up in milliseconds; also in the body as `retry_after_ms`). A refused
request costs microseconds; a queued one would cost its caller a timeout. `/healthz`, `/readyz` and
`/metrics` bypass the limit and never wait behind work: they are `async def` on the event loop, and
`/readyz` answers within 0.1 s once the loop turns (see `Readiness`). Given `HEALTH_PORT`, `/healthz`
and `/readyz` are also answered on that port by a process of its own, whatever the loop is doing
(`cloudshop.liveness`; readiness from a round of checks every 2.5 s): what a pod's liveness and
readiness probes ask.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
from collections.abc import Callable, Iterable
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloudshop.auth import SERVICE_TOKEN_HEADER, InternalTokens, Principal, TokenVerifier, bearer_token
from cloudshop.errors import PROBLEM_CONTENT_TYPE, CloudshopError, Forbidden, Unauthorized, problem
from cloudshop.estate import ESTATE
from cloudshop.liveness import Liveness, liveness_options
from cloudshop.observability import Metrics, RequestContextMiddleware, configure_process
from cloudshop.paths import ID_MAX, ID_PATTERN, BadPath, request_path
from cloudshop.settings import Settings
from cloudshop.tracing import ServerSpanMiddleware

log = logging.getLogger("cloudshop.web")

MAX_BODY_BYTES = 64 * 1024

# An id in a path (`cloudshop.paths.ID_PATTERN`): anything else is a 422 before it reaches a store.
ResourceId = Annotated[str, Path(min_length=1, max_length=ID_MAX, pattern=ID_PATTERN)]

# A check is `async def` (awaited on the event loop) or a plain function (run in a worker thread of
# the readiness pool, never the request pool). It raises when its dependency is not usable.
ReadinessCheck = Callable[[], object]

# Served whatever the load: outside the in-flight limit.
OPERATIONS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# Each check's limit in the background rounds that answer `/readyz` on the probes' port. Their answer
# is published, so no probe waits for them: the limit need not fit a probe's timeout, and it must
# not mistake a busy loop for a dependency that is down (under the bench's 200 buyers a 1 s limit
# made the order service not ready in 7 of 124 samples, while every checkout's own calls succeeded).
READINESS_ROUND_TIMEOUT_SECONDS = 5.0


def problem_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=PROBLEM_CONTENT_TYPE, headers=headers)


def _validation_errors(exc: RequestValidationError) -> tuple[int, list[dict[str, Any]]]:
    errors = []
    status = 422
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            status = 400
        # Only location, message and type: the offending input is never echoed back.
        errors.append(
            {
                "loc": [str(part) for part in error.get("loc", ())],
                "msg": str(error.get("msg", "")),
                "type": str(error.get("type", "")),
            }
        )
    return status, errors


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CloudshopError)
    async def _domain(request: Request, exc: CloudshopError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return problem_response(exc.status, exc.problem(), headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, errors = _validation_errors(exc)
        title = "Malformed JSON" if status == 400 else "Validation failed"
        detail = "The request body is not valid JSON." if status == 400 else "The request is not valid."
        return problem_response(status, problem(status, title, detail, slug="validation", errors=errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {404: "Not found", 405: "Method not allowed"}
        title = titles.get(exc.status_code, "Error")
        detail = exc.detail if isinstance(exc.detail, str) else title
        return problem_response(exc.status_code, problem(exc.status_code, title, detail), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _fault(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return problem_response(500, problem(500, "Internal server error", "An unexpected error occurred."))


class InFlightLimiter:
    """Pure ASGI middleware: at most `limit` requests in flight in this process; beyond, a 503 now.

    One counter on the event loop (no lock: the ASGI app is only entered from the loop). `exempt`
    paths are never counted nor refused. `refused` counts the refusals, `in_flight` shows the level.
    """

    def __init__(
        self,
        app: Any,
        *,
        limit: int,
        retry_after_ms: int,
        refused: Counter,
        in_flight: Gauge | None = None,
        exempt: frozenset[str] = OPERATIONS_PATHS,
    ) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt
        self.active = 0
        self._refused = refused
        self._gauge = in_flight
        body = problem(
            503,
            "Overloaded",
            f"The service is at capacity; retry after {retry_after_ms} ms.",
            slug="overloaded",
            retry_after_ms=retry_after_ms,
        )
        self._body = json.dumps(body).encode()
        self._headers = [
            (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
            (b"content-length", str(len(self._body)).encode()),
            (b"retry-after", str(max(1, math.ceil(retry_after_ms / 1000))).encode()),
            (b"retry-after-ms", str(retry_after_ms).encode()),
        ]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            self._refused.inc()
            await send({"type": "http.response.start", "status": 503, "headers": self._headers})
            await send({"type": "http.response.body", "body": self._body})
            return
        self.active += 1
        if self._gauge is not None:
            self._gauge.set(self.active)
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
            if self._gauge is not None:
                self._gauge.set(self.active)


class PathGuard:
    """Pure ASGI middleware: a request whose path has no single reading is a 400 problem before routing.

    The same normalisation as the gateway's (`cloudshop.paths`): encoded dots, slashes, backslashes,
    percent signs and control characters, dot segments, malformed escapes and bytes that are not UTF-8
    are refused. It holds where no gateway of ours stands in front: in the cloud, API Gateway hands the
    raw path to the Lambda (`rawPath`) and to the pods as it arrived. Routing then uses the normalised
    path, which is what uvicorn decoded anyway once the raw path passed.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            path = request_path(scope)
        except BadPath as exc:
            body = json.dumps(exc.problem()).encode()
            headers = [(b"content-type", PROBLEM_CONTENT_TYPE.encode()), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": exc.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        scope["path"] = path
        await self.app(scope, receive, send)


def in_flight_metrics(registry: CollectorRegistry) -> dict[str, Any]:
    """The limiter's `refused` counter and `in_flight` gauge, in an app's registry."""
    return {
        "refused": Counter(
            "http_requests_refused_total",
            "Requests refused at once because the process was at its in-flight limit",
            registry=registry,
        ),
        "in_flight": Gauge(
            "http_requests_in_flight", "Requests being served (operations endpoints excluded)", registry=registry
        ),
    }


class Readiness:
    """Runs the readiness checks concurrently, each bounded by `timeout`, and answers fast.

    A probe waits for a fresh run at most `answer_within` (0.1 s); if the run is slower (a dependency
    is slow, or the process is busy), the probe answers with the last completed run and the fresh one
    goes on to completion in the background for the next probe. Only the very first probe waits for a
    whole run (at most `timeout`). Sync checks run in a small thread pool of their own, so readiness
    never queues behind request work for a worker thread.
    """

    def __init__(self, checks: dict[str, ReadinessCheck], *, timeout: float, answer_within: float = 0.08) -> None:
        self.checks = dict(checks)
        self.timeout = timeout
        self.answer_within = answer_within
        self.last: dict[str, str] | None = None
        self._run: asyncio.Future[dict[str, str]] | None = None
        self._threads = anyio.CapacityLimiter(max(1, len(self.checks)))

    async def answer(self) -> tuple[int, dict[str, Any]]:
        """`/readyz`'s status and body for the failures of a fresh round, or of the last one."""
        return self.answer_for(await self.failures())

    def answer_for(self, failures: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if failures:
            return 503, problem(503, "Not ready", "Some dependencies are unreachable.", failing=failures)
        return 200, {"status": "ready", "checks": sorted(self.checks)}

    async def failures(self) -> dict[str, str]:
        """Failing check -> why (exception type, or `Timeout`); empty when every check passed."""
        run = self._run
        if run is None or run.done() or run.get_loop() is not asyncio.get_running_loop():
            run = self._run = asyncio.ensure_future(self.run(timeout=self.timeout))
        wait = self.answer_within if self.last is not None else self.timeout + 0.5
        await asyncio.wait({run}, timeout=wait)
        if run.done():
            return run.result()
        return self.last if self.last is not None else {name: "Timeout" for name in self.checks}

    async def run(self, *, timeout: float) -> dict[str, str]:
        """A whole round of the checks, each bounded by `timeout`: failing check -> why, as `failures`."""
        results: dict[str, str | None] = {}

        async def one(name: str, check: ReadinessCheck) -> None:
            results[name] = await self._check(check, timeout)

        async with anyio.create_task_group() as group:
            for name, check in self.checks.items():
                group.start_soon(one, name, check)
        self.last = {name: why for name, why in results.items() if why is not None}
        return self.last

    async def _check(self, check: ReadinessCheck, timeout: float) -> str | None:
        try:
            with anyio.fail_after(timeout):
                if inspect.iscoroutinefunction(check):
                    await check()
                else:
                    result = await anyio.to_thread.run_sync(check, abandon_on_cancel=True, limiter=self._threads)
                    if inspect.isawaitable(result):
                        await result
        except TimeoutError:
            return "Timeout"
        except Exception as exc:  # readiness reports every failing dependency, whatever it raised
            return type(exc).__name__
        return None


def create_app(
    *,
    service: str,
    settings: Settings,
    routers: Iterable[APIRouter],
    readiness: dict[str, ReadinessCheck] | None = None,
    verifier: TokenVerifier | None = None,
    internal_tokens: InternalTokens | None = None,
    state: dict[str, Any] | None = None,
) -> FastAPI:
    tracing_on = configure_process(service, settings)
    app = FastAPI(
        title=f"cloudshop {service} service",
        version="1.0.0",
        docs_url="/docs",
        openapi_url="/openapi.json",
        # FastAPI's own OpenTelemetry (a span per dependency, endpoint and serialisation, metrics and
        # logs) stays off: `ServerSpanMiddleware` makes the one span per request we want. Off, it
        # also stops FastAPI asking for the global providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    metrics = Metrics(service)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.verifier = verifier
    app.state.internal_tokens = internal_tokens
    for key, value in (state or {}).items():
        setattr(app.state, key, value)
    # Starlette wraps the last added outermost: the path guard and the limiter sit inside the request
    # context, so a refusal still gets its request id, access log line and request metrics.
    app.add_middleware(
        InFlightLimiter,
        limit=settings.max_in_flight_requests,
        retry_after_ms=settings.overload_retry_after_ms,
        **in_flight_metrics(metrics.registry),
    )
    app.add_middleware(PathGuard)
    app.add_middleware(RequestContextMiddleware, metrics=metrics, max_body_bytes=MAX_BODY_BYTES)
    readiness_probe = Readiness(readiness or {}, timeout=settings.readiness_timeout_seconds)
    app.state.readiness = readiness_probe

    async def readiness_round() -> tuple[int, bytes]:
        failures = await readiness_probe.run(timeout=READINESS_ROUND_TIMEOUT_SECONDS)
        status, body = readiness_probe.answer_for(failures)
        return status, json.dumps(body).encode()

    app.add_middleware(
        Liveness,
        **liveness_options(
            metrics.registry,
            host=settings.health_host,
            port=settings.health_port,
            max_loop_lag=settings.liveness_max_loop_lag_seconds,
            readiness=readiness_round,
        ),
    )
    if tracing_on:
        # Outermost: the access log line and a refused request are inside the request's span.
        app.add_middleware(ServerSpanMiddleware, exempt=OPERATIONS_PATHS)
    install_error_handlers(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        status, body = await readiness_probe.answer()
        if status != 200:
            return problem_response(status, body)
        return JSONResponse(body)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    return app


# The dependencies below are `async def` although they do not wait: FastAPI runs a plain `def`
# dependency in its worker-thread pool, a thread hop per dependency per request (CPU, and a queue
# for the pool's 40 threads under load). Only the user service's session lookup does blocking I/O;
# it alone goes to a thread.
async def get_principal(request: Request) -> Principal:
    verifier: TokenVerifier | None = request.app.state.verifier
    if verifier is None:
        raise Unauthorized("This service does not accept access tokens.")
    principal = verifier.verify(bearer_token(request.headers.get("authorization")))
    revoked = getattr(request.app.state, "session_revoked", None)
    if revoked is not None and await anyio.to_thread.run_sync(revoked, principal.session_id):
        raise Unauthorized("The session has ended; log in again.")
    return principal


async def get_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    principal.require_admin()
    return principal


async def get_internal_caller(request: Request) -> str:
    """The calling service, admitted by the estate's declaration of this internal route.

    The route's callers come from `ESTATE.internal_routes` (the same declaration the gateway and the
    cloud's authorizer read); an internal route nobody declared admits nobody.
    """
    tokens: InternalTokens | None = request.app.state.internal_tokens
    token = request.headers.get(SERVICE_TOKEN_HEADER)
    if tokens is None or not token:
        raise Unauthorized("A valid service token is required.")
    template = getattr(request.scope.get("route"), "path", "")
    declared = ESTATE.internal_route(request.method, template, service=tokens.service)
    if declared is None:
        raise Forbidden("No service may call this route.")
    return tokens.verify(token, callers=declared.callers)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
AdminPrincipal = Annotated[Principal, Depends(get_admin)]
InternalCaller = Annotated[str, Depends(get_internal_caller)]
