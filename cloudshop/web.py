"""The one FastAPI app factory every service uses.

It wires what every service shares: problem+json errors, request ids and JSON access logs,
Prometheus `/metrics`, `/healthz` (alive) and `/readyz` (dependencies reachable), and the auth
dependencies. Services add their routers and readiness checks; nothing else differs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloudshop.auth import SERVICE_TOKEN_HEADER, InternalTokens, Principal, TokenVerifier, bearer_token
from cloudshop.errors import PROBLEM_CONTENT_TYPE, CloudshopError, Unauthorized, problem
from cloudshop.observability import Metrics, RequestContextMiddleware, configure_logging
from cloudshop.settings import Settings

log = logging.getLogger("cloudshop.web")

MAX_BODY_BYTES = 64 * 1024

ReadinessCheck = Callable[[], object]


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
    configure_logging(service, settings.log_level)
    app = FastAPI(
        title=f"cloudshop {service} service",
        version="1.0.0",
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    metrics = Metrics(service)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.verifier = verifier
    app.state.internal_tokens = internal_tokens
    for key, value in (state or {}).items():
        setattr(app.state, key, value)
    app.add_middleware(RequestContextMiddleware, metrics=metrics, max_body_bytes=MAX_BODY_BYTES)
    install_error_handlers(app)
    checks = readiness or {}

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> Response:
        failures = {}
        for name, check in checks.items():
            try:
                check()
            except Exception as exc:  # readiness reports every failing dependency, whatever it raised
                failures[name] = type(exc).__name__
        if failures:
            body = problem(503, "Not ready", "Some dependencies are unreachable.", failing=failures)
            return problem_response(503, body)
        return JSONResponse({"status": "ready", "checks": sorted(checks)})

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    return app


def get_principal(request: Request) -> Principal:
    verifier: TokenVerifier | None = request.app.state.verifier
    if verifier is None:
        raise Unauthorized("This service does not accept access tokens.")
    principal = verifier.verify(bearer_token(request.headers.get("authorization")))
    revoked = getattr(request.app.state, "session_revoked", None)
    if revoked is not None and revoked(principal.session_id):
        raise Unauthorized("The session has ended; log in again.")
    return principal


def get_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    principal.require_admin()
    return principal


def get_internal_caller(request: Request) -> str:
    tokens: InternalTokens | None = request.app.state.internal_tokens
    token = request.headers.get(SERVICE_TOKEN_HEADER)
    if tokens is None or not token:
        raise Unauthorized("A valid service token is required.")
    return tokens.verify(token)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
AdminPrincipal = Annotated[Principal, Depends(get_admin)]
InternalCaller = Annotated[str, Depends(get_internal_caller)]
