"""The local API gateway: the shared route table, JWT verification, and a pooled reverse proxy.

It plays the part API Gateway plays in the cloud: one entry on 127.0.0.1:8000, routing by
`ESTATE.routes`, refusing requests without a valid access token (or of an ended session) on every
non-public route before they reach a service. Services check roles and ownership again behind it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from cloudshop.auth import SERVICE_TOKEN_HEADER, InternalTokens, TokenVerifier, bearer_token
from cloudshop.errors import CloudshopError, Unauthorized, problem
from cloudshop.estate import ESTATE, GATEWAY_HEALTH, GATEWAY_HEALTH_PATHS, Route
from cloudshop.observability import REQUEST_ID_HEADER, Metrics, configure_logging, new_request_id, request_id_var

log = logging.getLogger("cloudshop.gateway")

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
    session_active: Callable[[str], bool],
    internal_tokens: InternalTokens,
    timeout_seconds: float = 30.0,
    log_level: str = "INFO",
) -> Starlette:
    configure_logging("gateway", log_level)
    routes = compile_routes(ESTATE.routes)
    metrics = Metrics("gateway")
    clients: dict[str, httpx.AsyncClient] = {}

    def client_for(service: str) -> httpx.AsyncClient:
        if service not in clients:
            clients[service] = httpx.AsyncClient(
                base_url=upstreams[service],
                timeout=httpx.Timeout(timeout_seconds, connect=2.0),
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=100),
            )
        return clients[service]

    async def authorise(request: Request, route: Route) -> None:
        if route.internal:
            internal_tokens.verify(request.headers.get(SERVICE_TOKEN_HEADER, ""))
            return
        principal = verifier.verify(bearer_token(request.headers.get("authorization")))
        if not await anyio.to_thread.run_sync(session_active, principal.session_id):
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
                headers={"WWW-Authenticate": "Bearer"},
            )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers[REQUEST_ID_HEADER] = request_id
        client_host = request.client.host if request.client else ""
        headers["x-forwarded-for"] = ", ".join(filter(None, [request.headers.get("x-forwarded-for"), client_host]))
        body = await request.body()
        try:
            upstream = await client_for(route.service).request(
                request.method,
                request.url.path,
                params=request.url.query,
                content=body,
                headers=headers,
            )
        except httpx.TimeoutException:
            return _problem(504, "Gateway timeout", f"The {route.service} service did not answer in time.")
        except httpx.TransportError:
            log.warning("upstream unreachable", extra={"fields": {"service": route.service}})
            return _problem(502, "Bad gateway", f"The {route.service} service is unreachable.")
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        return Response(upstream.content, status_code=upstream.status_code, headers=out_headers)

    async def healthz(request: Request) -> Response:
        return JSONResponse(GATEWAY_HEALTH)

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        for client in clients.values():
            await client.aclose()

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return Starlette(
        routes=[
            *(StarletteRoute(path, healthz, methods=["GET"]) for path in GATEWAY_HEALTH_PATHS),
            StarletteRoute("/metrics", prometheus, methods=["GET"]),
            StarletteRoute("/{path:path}", proxy, methods=methods),
        ],
        lifespan=lifespan,
    )


def _problem(status: int, title: str, detail: str) -> Response:
    return JSONResponse(problem(status, title, detail), status_code=status, media_type="application/problem+json")


def build_gateway_from_settings() -> Starlette:
    """The gateway process of `cloudshop up` (`uvicorn --factory cloudshop.gateway:build_gateway_from_settings`)."""
    from cloudshop import aws
    from cloudshop.sessions import session_is_active
    from cloudshop.settings import get_settings

    settings = get_settings()
    dynamodb = aws.client("dynamodb", settings)
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
        session_active=lambda sid: session_is_active(dynamodb, table=settings.sessions_table, session_id=sid),
        internal_tokens=InternalTokens(settings.internal_token_secret.get_secret_value(), service="gateway"),
        log_level=settings.log_level,
    )
