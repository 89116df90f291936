"""The local API gateway: the shared route table, JWT verification, and a pooled reverse proxy.

It plays the part API Gateway plays in the cloud: one entry on 127.0.0.1:8000, routing by
`ESTATE.routes`, refusing requests without a valid access token (or of an ended session) on every
non-public route before they reach a service. Services check roles and ownership again behind it.

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
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from cloudshop.auth import SERVICE_TOKEN_HEADER, InternalTokens, TokenVerifier, bearer_token
from cloudshop.errors import CloudshopError, Unauthorized, problem
from cloudshop.estate import ESTATE, GATEWAY_HEALTH, GATEWAY_HEALTH_PATHS, Route
from cloudshop.observability import REQUEST_ID_HEADER, Metrics, configure_logging, new_request_id, request_id_var
from cloudshop.sessions import SessionStatusCache
from cloudshop.web import InFlightLimiter, in_flight_metrics

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
# Set by the gateway's own server on its answer; the upstream's copies would be sent twice.
NOT_FROM_UPSTREAM = HOP_BY_HOP | {"date", "server"}


@dataclass(frozen=True)
class CompiledRoute:
    route: Route
    pattern: re.Pattern[str]
    specificity: tuple[int, int]


def compile_routes(routes: tuple[Route, ...]) -> list[CompiledRoute]:
    compiled = []
    for route in routes:
        regex = re.escape(route.path).replace(re.escape("{proxy+}"), ".+")
        greedy = "{proxy+}" in route.path
        # API Gateway's rule: an exact path beats a greedy one, a named method beats ANY.
        compiled.append(
            CompiledRoute(route, re.compile(f"^{regex}$"), (0 if greedy else 1, 0 if route.method == "ANY" else 1))
        )
    return sorted(compiled, key=lambda c: c.specificity, reverse=True)


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
) -> Starlette:
    """The gateway app.

    `session_active(session_id)` is async (or a plain function, then run in a worker thread); its
    answers are kept `session_cache_seconds` per process (`SessionStatusCache`), which is the bound
    on how long a logged-out session's access token still passes the gateway. Each upstream call
    has `timeout_seconds` in all (below the gateway's callers' own timeouts, above the services'
    budgets for their own calls). At most `max_in_flight_requests` requests are proxied at once;
    the next is refused at once (503, `Retry-After`, `retry-after-ms`). `on_shutdown` closes what
    the caller built for the gateway (its DynamoDB client).
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
    limits = httpx.Limits(
        max_connections=max_in_flight_requests, max_keepalive_connections=min(64, max_in_flight_requests)
    )
    timeouts = {"connect": min(1.0, timeout_seconds), "read": timeout_seconds, "write": timeout_seconds, "pool": 1.0}
    bases = {service: httpx.URL(url) for service, url in upstreams.items()}
    transports: dict[str, httpx.AsyncBaseTransport] = {}

    def transport_for(service: str) -> httpx.AsyncBaseTransport:
        # The transport itself rather than an httpx.AsyncClient: a proxy must not keep a cookie jar
        # (one user's cookies would ride on the next user's request), nor follow redirects.
        if service not in transports:
            transports[service] = upstream_transport or httpx.AsyncHTTPTransport(limits=limits, retries=0)
        return transports[service]

    async def authorise(request: Request, route: Route) -> None:
        if route.internal:
            internal_tokens.verify(request.headers.get(SERVICE_TOKEN_HEADER, ""))
            return
        principal = verifier.verify(bearer_token(request.headers.get("authorization")))
        if not await sessions.is_active(principal.session_id):
            raise Unauthorized("The session has ended; log in again.")

    async def proxy(request: Request) -> Response:
        request_id = request.headers.get(REQUEST_ID_HEADER) or new_request_id()
        request_id_var.set(request_id)
        route = match_route(routes, request.method, request.url.path)
        label = route.path if route else "unmatched"
        with metrics.latency.labels("gateway", request.method, label).time():
            response = await _forward(request, route, request_id)
        metrics.requests.labels("gateway", request.method, label, str(response.status_code)).inc()
        response.headers[REQUEST_ID_HEADER] = request_id
        return response

    async def _forward(request: Request, route: Route | None, request_id: str) -> Response:
        if route is None:
            return _problem(404, "Not found", "No route for this method and path.")
        try:
            if not route.public:
                await authorise(request, route)
        except CloudshopError as exc:
            return JSONResponse(
                exc.problem(),
                status_code=exc.status,
                media_type="application/problem+json",
                headers={"WWW-Authenticate": "Bearer"} if exc.status == 401 else None,
            )
        client_host = request.client.host if request.client else ""
        forwarded = ", ".join(filter(None, [request.headers.get("x-forwarded-for"), client_host]))
        replaced = HOP_BY_HOP | {REQUEST_ID_HEADER, "x-forwarded-for"}
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in replaced]
        headers += [(REQUEST_ID_HEADER, request_id), ("x-forwarded-for", forwarded)]
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        query = request.scope.get("query_string", b"")
        url = bases[route.service].copy_with(raw_path=raw_path + (b"?" + query if query else b""))
        body = await request.body()
        outgoing = httpx.Request(request.method, url, headers=headers, content=body, extensions={"timeout": timeouts})
        try:
            with anyio.fail_after(timeout_seconds):
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

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return Starlette(
        routes=[
            *(StarletteRoute(path, healthz, methods=["GET"]) for path in GATEWAY_HEALTH_PATHS),
            StarletteRoute("/metrics", prometheus, methods=["GET"]),
            StarletteRoute("/{path:path}", proxy, methods=methods),
        ],
        middleware=[
            Middleware(
                InFlightLimiter,
                limit=max_in_flight_requests,
                retry_after_ms=retry_after_ms,
                exempt=frozenset({*GATEWAY_HEALTH_PATHS, "/metrics"}),
                **in_flight_metrics(metrics.registry),
            )
        ],
        lifespan=lifespan,
    )


def _problem(status: int, title: str, detail: str) -> Response:
    return JSONResponse(problem(status, title, detail), status_code=status, media_type="application/problem+json")


def build_gateway_from_settings() -> Starlette:
    """The gateway process of `cloudshop up` (`uvicorn --factory cloudshop.gateway:build_gateway_from_settings`)."""
    from cloudshop.dynamodb import dynamodb_for
    from cloudshop.sessions import session_is_active_async
    from cloudshop.settings import get_settings

    settings = get_settings()
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
        internal_tokens=InternalTokens(settings.internal_token_secret.get_secret_value(), service="gateway"),
        timeout_seconds=settings.gateway_upstream_timeout_seconds,
        session_cache_seconds=settings.session_cache_seconds,
        max_in_flight_requests=settings.gateway_max_in_flight_requests,
        retry_after_ms=settings.overload_retry_after_ms,
        log_level=settings.log_level,
        on_shutdown=dynamodb.aclose,
    )
