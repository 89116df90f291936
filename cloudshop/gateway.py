"""The local API gateway: the shared route table, JWT verification, and a pooled reverse proxy.

It plays the part API Gateway plays in the cloud: one entry on 127.0.0.1:8000, routing by
`ESTATE.routes`, refusing requests without a valid access token (or of an ended session) on every
non-public route before they reach a service. Services check roles and ownership again behind it.

A path is routed only in its one normalised reading (`cloudshop.paths`: encoded dots, slashes and
control characters, dot segments and invalid UTF-8 are a 400 problem), and what is forwarded is
exactly the path that was matched. What matches no route is a 404 problem. A body is counted as it
streams in, and past `MAX_BODY_BYTES` (64 KiB, the services' own limit) it is a 413 problem; a
declared `Content-Length` above it is refused before anything is read. Internal routes admit only
the service tokens of the callers the estate declares for them (`cloudshop.auth.InternalTokens`).

Everything on the request path is async. The session check reads DynamoDB through the async
client and keeps each answer for `SESSION_CACHE_SECONDS` (2 s) per process: a logged-out session's
access token stops passing the gateway within 2 s (the user service refuses it at once itself).
Upstream calls have a 15 s budget in all, and the gateway proxies at most 256 requests at once,
refusing more at once with a 503 (see `cloudshop.web.InFlightLimiter`).
"""

from __future__ import annotations

import inspect
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from cloudshop import tracing
from cloudshop.auth import SERVICE_TOKEN_HEADER, InternalTokens, TokenVerifier, bearer_token, internal_tokens_for
from cloudshop.errors import CloudshopError, PayloadTooLarge, Unauthorized, problem
from cloudshop.estate import ESTATE, GATEWAY_HEALTH, GATEWAY_HEALTH_PATHS, Route
from cloudshop.http_pool import PooledTransport
from cloudshop.liveness import Liveness, liveness_options
from cloudshop.observability import (
    REQUEST_ID_HEADER,
    Metrics,
    configure_logging,
    count_backend_call,
    new_request_id,
    request_id_var,
)
from cloudshop.paths import encode_path
from cloudshop.sessions import SessionStatusCache
from cloudshop.storefront import Storefront
from cloudshop.web import MAX_BODY_BYTES, InFlightLimiter, PathGuard, in_flight_metrics

log = logging.getLogger("cloudshop.gateway")

# Is this session still alive? Async, or a plain function (then run in a worker thread).
SessionCheck = Callable[[str], Awaitable[bool]] | Callable[[str], bool]

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
# Every method HTTP defines: the route table, not the framework, decides which one a path takes.
HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"]
# Set by the gateway's own server on its answer; the upstream's copies would be sent twice.
NOT_FROM_UPSTREAM = HOP_BY_HOP | {"date", "server"}


@dataclass(frozen=True)
class CompiledRoute:
    route: Route
    pattern: re.Pattern[str]
    specificity: tuple[int, int]


def compile_routes(routes: tuple[Route, ...]) -> list[CompiledRoute]:
    """API Gateway's path syntax as regular expressions: `{name}` one segment, `{proxy+}` the rest."""
    compiled = []
    for route in routes:
        regex = "/".join(_segment_pattern(segment) for segment in route.path.split("/"))
        greedy = "{proxy+}" in route.path
        # API Gateway's rule: an exact path beats a greedy one, a named method beats ANY.
        compiled.append(
            CompiledRoute(route, re.compile(f"^{regex}$"), (0 if greedy else 1, 0 if route.method == "ANY" else 1))
        )
    return sorted(compiled, key=lambda c: c.specificity, reverse=True)


def _segment_pattern(segment: str) -> str:
    if segment == "{proxy+}":
        return ".+"
    if segment.startswith("{") and segment.endswith("}"):
        return "[^/]+"
    return re.escape(segment)


def match_route(routes: list[CompiledRoute], method: str, path: str) -> Route | None:
    for candidate in routes:
        if candidate.route.method in (method, "ANY") and candidate.pattern.match(path):
            return candidate.route
    return None


def build_gateway(
    *,
    upstreams: dict[str, str],
    verifier: TokenVerifier,
    session_active: SessionCheck,
    internal_tokens: InternalTokens,
    timeout_seconds: float = 15.0,
    session_cache_seconds: float = 2.0,
    max_in_flight_requests: int = 256,
    retry_after_ms: int = 200,
    log_level: str = "INFO",
    clock: Callable[[], float] = time.monotonic,
    upstream_transport: httpx.AsyncBaseTransport | None = None,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
    storefront: Storefront | None = None,
    health_port: int | None = None,
    health_host: str = "127.0.0.1",
    liveness_max_loop_lag: float = 10.0,
) -> Starlette:
    """The gateway app.

    `session_active(session_id)` is async (or a plain function, then run in a worker thread); its
    answers are kept `session_cache_seconds` per process (`SessionStatusCache`), which is the bound
    on how long a logged-out session's access token still passes the gateway. Each upstream call
    has `timeout_seconds` in all (below the gateway's callers' own timeouts, above the services'
    budgets for their own calls). At most `max_in_flight_requests` requests are proxied at once;
    the next is refused at once (503, `Retry-After`, `retry-after-ms`). `on_shutdown` closes what
    the caller built for the gateway (its DynamoDB client). `storefront` answers GET and HEAD outside
    the API prefix (`cloudshop.storefront`); without it those are 404 problems too. Given
    `health_port`, `/healthz` is also answered there by a process of its own (`cloudshop.liveness`).
    """
    configure_logging("gateway", log_level)
    routes = compile_routes(ESTATE.routes)
    metrics = Metrics("gateway")
    run_on_loop = inspect.iscoroutinefunction(session_active) or inspect.iscoroutinefunction(
        type(session_active).__call__
    )

    async def lookup(session_id: str) -> bool:
        if run_on_loop:
            answer: object = session_active(session_id)
        else:
            answer = await anyio.to_thread.run_sync(session_active, session_id)
        if inspect.isawaitable(answer):
            answer = await answer
        return bool(answer)

    sessions = SessionStatusCache(lookup, ttl_seconds=session_cache_seconds, clock=clock)
    # The connection pools never run out before the in-flight limit does; connects and waits for a
    # pooled connection get one second, since every upstream is near.
    timeouts = {"connect": min(1.0, timeout_seconds), "read": timeout_seconds, "write": timeout_seconds, "pool": 1.0}
    bases = {service: httpx.URL(url) for service, url in upstreams.items()}
    transports: dict[str, httpx.AsyncBaseTransport] = {}

    def transport_for(service: str) -> httpx.AsyncBaseTransport:
        # The transport itself rather than an httpx.AsyncClient: a proxy must not keep a cookie jar
        # (one user's cookies would ride on the next user's request), nor follow redirects.
        if service not in transports:
            transports[service] = upstream_transport or PooledTransport(
                max_connections=max_in_flight_requests, max_idle_connections=min(64, max_in_flight_requests)
            )
        return transports[service]

    async def authorise(request: Request, route: Route) -> None:
        if route.internal:
            token = request.headers.get(SERVICE_TOKEN_HEADER)
            if not token:
                raise Unauthorized("A valid service token is required.")
            internal_tokens.verify(token, callers=route.callers, audience=route.service)
            return
        principal = verifier.verify(bearer_token(request.headers.get("authorization")))
        if not await sessions.is_active(principal.session_id):
            raise Unauthorized("The session has ended; log in again.")

    async def proxy(request: Request) -> Response:
        request_id = request.headers.get(REQUEST_ID_HEADER) or new_request_id()
        request_id_var.set(request_id)
        # The one reading of the path (`PathGuard` refused any other), matched and forwarded as it is.
        path = request.scope["path"]
        route = match_route(routes, request.method, path)
        label = route.path if route else "unmatched"
        request.scope["cloudshop.route"] = label  # names the request's span (cloudshop.tracing)
        with metrics.latency.labels("gateway", request.method, label).time():
            response = await _forward(request, route, path, request_id)
        metrics.requests.labels("gateway", request.method, label, str(response.status_code)).inc()
        response.headers[REQUEST_ID_HEADER] = request_id
        return response

    async def _forward(request: Request, route: Route | None, path: str, request_id: str) -> Response:
        if route is None:
            # Outside the API: the storefront's static build, as CloudFront serves it in the cloud.
            if storefront is not None and storefront.serves(path):
                return await storefront.respond(request)
            return _problem(404, "Not found", "No route for this method and path.")
        try:
            declared = request.headers.get("content-length")
            if declared is not None and declared.strip().isdigit() and int(declared) > MAX_BODY_BYTES:
                raise PayloadTooLarge(f"The request body is larger than {MAX_BODY_BYTES} bytes.")
            if not route.public:
                await authorise(request, route)
            body = await _read_body(request)
        except CloudshopError as exc:
            return _error(exc)
        client_host = request.client.host if request.client else ""
        forwarded = ", ".join(filter(None, [request.headers.get("x-forwarded-for"), client_host]))
        replaced = HOP_BY_HOP | {REQUEST_ID_HEADER, "x-forwarded-for", tracing.TRACEPARENT}
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in replaced]
        headers += [(REQUEST_ID_HEADER, request_id), ("x-forwarded-for", forwarded)]
        query = request.scope.get("query_string", b"")
        url = bases[route.service].copy_with(raw_path=encode_path(path) + (b"?" + query if query else b""))
        outgoing = httpx.Request(request.method, url, headers=headers, content=body, extensions={"timeout": timeouts})
        count_backend_call("http", route.service)
        # The upstream's parent is this call's span: the caller's own traceparent is replaced.
        upstream_span = tracing.span(f"{request.method} {route.service}", kind=tracing.SpanKind.CLIENT)
        try:
            with upstream_span, anyio.fail_after(timeout_seconds):
                outgoing.headers.update(tracing.inject({}))
                upstream = await transport_for(route.service).handle_async_request(outgoing)
                try:
                    # Raw bytes: the body goes back exactly as encoded, with its content-encoding.
                    content = b"".join([chunk async for chunk in upstream.aiter_raw()])
                finally:
                    await upstream.aclose()
        except (httpx.TimeoutException, TimeoutError):
            return _problem(504, "Gateway timeout", f"The {route.service} service did not answer in time.")
        except httpx.TransportError:
            log.warning("upstream unreachable", extra={"fields": {"service": route.service}})
            return _problem(502, "Bad gateway", f"The {route.service} service is unreachable.")
        response = Response(content, status_code=upstream.status_code)
        kept = [(k, v) for k, v in upstream.headers.raw if k.decode("latin-1").lower() not in NOT_FROM_UPSTREAM]
        response.raw_headers = [*kept, *((k, v) for k, v in response.raw_headers if k == b"content-length")]
        return response

    async def healthz(request: Request) -> Response:
        return JSONResponse(GATEWAY_HEALTH)

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        for transport in transports.values():
            await transport.aclose()
        if on_shutdown is not None:
            await on_shutdown()

    return Starlette(
        routes=[
            *(StarletteRoute(path, healthz, methods=["GET"]) for path in GATEWAY_HEALTH_PATHS),
            StarletteRoute("/metrics", prometheus, methods=["GET"]),
            # Every method: the route table decides, and what it has no route for is a 404 problem.
            StarletteRoute("/{path:path}", proxy, methods=HTTP_METHODS),
        ],
        exception_handlers={HTTPException: _starlette_problem},
        middleware=[
            Middleware(
                Liveness,
                **liveness_options(
                    metrics.registry, host=health_host, port=health_port, max_loop_lag=liveness_max_loop_lag
                ),
            ),
            Middleware(
                tracing.ServerSpanMiddleware, exempt=frozenset({*GATEWAY_HEALTH_PATHS, "/metrics"}), respond=True
            ),
            Middleware(PathGuard),
            Middleware(
                InFlightLimiter,
                limit=max_in_flight_requests,
                retry_after_ms=retry_after_ms,
                exempt=frozenset({*GATEWAY_HEALTH_PATHS, "/metrics"}),
                **in_flight_metrics(metrics.registry),
            ),
        ],
        lifespan=lifespan,
    )


def _problem(status: int, title: str, detail: str) -> Response:
    return JSONResponse(problem(status, title, detail), status_code=status, media_type="application/problem+json")


def _error(exc: CloudshopError) -> Response:
    return JSONResponse(
        exc.problem(),
        status_code=exc.status,
        media_type="application/problem+json",
        headers={"WWW-Authenticate": "Bearer"} if exc.status == 401 else None,
    )


async def _starlette_problem(request: Request, exc: Exception) -> Response:
    # The gateway's own endpoints (`/healthz`, `/metrics`) asked with another method.
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return _problem(
        status, "Method not allowed" if status == 405 else "Not found", "No route for this method and path."
    )


async def _read_body(request: Request) -> bytes:
    """The request body, counted while it streams in: past `MAX_BODY_BYTES` the request is refused
    there and then (413), as the services would refuse it, without buffering the rest."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"The request body is larger than {MAX_BODY_BYTES} bytes.")
    return bytes(body)


def build_gateway_from_settings() -> Starlette:
    """The gateway process of `cloudshop up` (`uvicorn --factory cloudshop.gateway:build_gateway_from_settings`)."""
    from cloudshop.dynamodb import dynamodb_for
    from cloudshop.sessions import session_is_active_async
    from cloudshop.settings import get_settings

    settings = get_settings()
    tracing.configure_tracing("gateway", settings)
    dynamodb = dynamodb_for(settings)

    async def session_active(session_id: str) -> bool:
        return await session_is_active_async(dynamodb, table=settings.sessions_table, session_id=session_id)

    upstreams: dict[str, Any] = {
        "user": settings.user_service_url,
        "product": settings.product_service_url,
        "order": settings.order_service_url,
        "payment": settings.payment_service_url,
        "notification": settings.notification_service_url,
    }
    return build_gateway(
        upstreams=upstreams,
        verifier=TokenVerifier(settings.jwt_public_key, issuer=settings.jwt_issuer),
        session_active=session_active,
        internal_tokens=internal_tokens_for(settings, service="gateway"),
        timeout_seconds=settings.gateway_upstream_timeout_seconds,
        session_cache_seconds=settings.session_cache_seconds,
        max_in_flight_requests=settings.gateway_max_in_flight_requests,
        retry_after_ms=settings.overload_retry_after_ms,
        log_level=settings.log_level,
        on_shutdown=dynamodb.aclose,
        storefront=Storefront.local(settings.aws_endpoint_url),
        health_port=settings.health_port,
        health_host=settings.health_host,
        liveness_max_loop_lag=settings.liveness_max_loop_lag_seconds,
    )
