"""The shared core: gateway routing, health and metrics endpoints, request ids and JSON logs."""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from cloudshop.contracts import service_apps
from cloudshop.estate import ESTATE
from cloudshop.gateway import compile_routes, match_route
from cloudshop.observability import JsonFormatter
from cloudshop.settings import Settings
from cloudshop.web import get_internal_caller
from functions.product.bootstrap import build_app, build_catalog, migrate_schema
from tests.helpers import assert_problem

ROUTES = compile_routes(ESTATE.routes)


@pytest.mark.parametrize(
    ("method", "path", "service", "public"),
    [
        ("GET", "/api/v1/products", "product", True),
        ("GET", "/api/v1/products/p1", "product", True),
        ("POST", "/api/v1/products", "product", False),
        ("DELETE", "/api/v1/products/p1", "product", False),
        ("POST", "/api/v1/products/p1/image", "product", False),
        ("POST", "/api/v1/auth/login", "user", True),
        ("GET", "/api/v1/users/me", "user", False),
        ("PUT", "/api/v1/cart/items/p1", "order", False),
        ("POST", "/api/v1/orders", "order", False),
        ("POST", "/api/v1/payments/pay_1/refunds", "payment", False),
        ("GET", "/api/v1/notifications", "notification", False),
        ("GET", "/api/v1/analytics/windows", "order", False),
        ("POST", "/api/v1/internal/reservations", "product", False),
        ("POST", "/api/v1/internal/reservations/o1/release", "product", False),
    ],
)
def test_gateway_routes_follow_the_shared_route_table(method: str, path: str, service: str, public: bool) -> None:
    route = match_route(ROUTES, method, path)
    assert route is not None and (route.service, route.public) == (service, public)


@pytest.mark.parametrize("path", ["/api/v1/internal/orders/o1", "/api/v1/internal/payments", "/metrics", "/api/v2/x"])
def test_internal_and_unknown_paths_are_not_routed(path: str) -> None:
    assert match_route(ROUTES, "POST", path) is None and match_route(ROUTES, "GET", path) is None


@pytest.fixture
def product_app(make_settings: Callable[..., Settings], tmp_path: object) -> TestClient:
    settings = make_settings(database_url=f"sqlite:///{tmp_path}/core.db")
    migrate_schema(build_catalog(settings).products.engine)
    return TestClient(build_app(settings), raise_server_exceptions=False)


def test_health_readiness_and_metrics(product_app: TestClient) -> None:
    assert product_app.get("/healthz").json()["status"] == "ok"
    assert product_app.get("/readyz").json()["status"] == "ready"
    product_app.get("/api/v1/products")
    metrics = product_app.get("/metrics").text
    assert 'http_requests_total{method="GET",route="/api/v1/products",service="product",status="200"}' in metrics
    assert "http_request_duration_seconds_bucket" in metrics


def test_request_id_is_echoed_and_stamped_on_json_logs(product_app: TestClient) -> None:
    lines: list[dict[str, object]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(JsonFormatter("product").format(record)))

    handler = Collect(level=logging.INFO)
    logger = logging.getLogger("cloudshop.access")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        answer = product_app.get("/api/v1/products", headers={"x-request-id": "trace-me-123"})
    finally:
        logger.removeHandler(handler)
    assert answer.headers["x-request-id"] == "trace-me-123"
    access = [line for line in lines if line.get("path") == "/api/v1/products"]
    assert access and access[-1]["request_id"] == "trace-me-123" and access[-1]["status"] == 200


def test_unknown_paths_and_methods_are_problems_without_internals(product_app: TestClient) -> None:
    for answer in (product_app.get("/nope"), product_app.put("/api/v1/products")):
        assert answer.status_code in (404, 405)
        assert answer.headers["content-type"] == "application/problem+json"


def test_reservations_are_internal_routes_and_nothing_else_is() -> None:
    internal = {(r.method, r.path, r.service, r.callers) for r in ESTATE.routes if r.internal}
    assert internal == {(r.method, r.path, r.service, r.callers) for r in ESTATE.internal_routes if r.via_gateway}
    assert {service for _, path, service, _ in internal} == {"product"}
    assert all(path.startswith("/api/v1/internal/reservations") for _, path, _, _ in internal)
    assert not any(r.internal and r.public for r in ESTATE.routes)


# --- internal routes: one declaration (issue 10) ----------------------------------------------------


def depends_on(dependant: Any, call: Callable[..., Any]) -> bool:
    return dependant.call is call or any(depends_on(d, call) for d in dependant.dependencies)


def api_routes(routes: list[Any]) -> list[APIRoute]:
    """Every APIRoute of an app, through its included routers (each included without a prefix)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):
            found += api_routes(route.original_router.routes)
    return found


@pytest.fixture(scope="module")
def apps() -> dict[str, Any]:
    return service_apps()


def test_the_estate_declares_every_internal_route_of_every_service_with_its_callers(apps: dict[str, Any]) -> None:
    # The routes that take a service token, as the services' code has them
    guarded = {
        (method, route.path, service)
        for service, app in apps.items()
        for route in api_routes(app.routes)
        if depends_on(route.dependant, get_internal_caller)
        for method in route.methods
    }

    # are exactly the estate's internal routes, the one declaration the gateway and authorizer read,
    assert guarded == {(r.method, r.path, r.service) for r in ESTATE.internal_routes}
    # every `/internal/` route takes a service token, and each caller holds the secret of its pair.
    paths = {(route.path, service) for service, app in apps.items() for route in api_routes(app.routes)}
    assert {(p, s) for p, s in paths if "/internal/" in p} == {(r.path, r.service) for r in ESTATE.internal_routes}
    assert ESTATE.token_pairs == ("order-payment", "order-product")


def test_no_gateway_route_reaches_an_internal_route_but_its_own(apps: dict[str, Any]) -> None:
    for route in ESTATE.internal_routes:
        path = route.path.replace("{order_id}", "o1").replace("{payment_id}", "pay_1")
        matched = match_route(ROUTES, route.method, path)
        if route.via_gateway:
            assert matched is not None and matched.internal and matched.callers == route.callers
        else:
            assert matched is None, f"{route.path} is reachable through the gateway"


def test_every_public_operation_is_routed_to_its_own_service(apps: dict[str, Any]) -> None:
    for service, app in apps.items():
        for path, operations in app.openapi()["paths"].items():
            concrete = re.sub(r"\{\w+\}", "x1", path)
            for method, operation in operations.items():
                matched = match_route(ROUTES, method.upper(), concrete)
                internal = "internal" in operation.get("tags", [])
                assert matched is not None or (internal and service == "payment"), f"{method} {path}"
                if matched is not None:
                    assert (matched.service, matched.internal) == (service, internal), f"{method} {path}"


# --- paths: one reading, in every service (issue 10) ------------------------------------------------


def asgi_get(app: Any, raw_path: bytes | None, *, event_path: str | None = None) -> tuple[int, dict[str, Any]]:
    """GET with exactly these path bytes, as uvicorn hands them over; or, with `event_path`, as Mangum
    does (no raw path, the API Gateway event's `rawPath`)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    raw = raw_path if raw_path is not None else (event_path or "").encode()
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": urllib.parse.unquote(raw.decode("latin-1")),
        "raw_path": raw_path,
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"product")],
        "client": ("127.0.0.1", 5000),
        "server": ("product", 80),
    }
    if event_path is not None:
        scope["aws.event"] = {"rawPath": event_path}
    anyio.run(app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {"headers": dict(start["headers"]), "body": json.loads(body)}


@pytest.mark.parametrize(
    "raw_path",
    [
        b"/api/v1/products/%2e%2e/%2e%2e/%2e%2e/openapi.json",
        b"/api/v1/products/../../../openapi.json",
        b"/api/v1/products/%2e%2e%2f%2e%2e%2fopenapi.json",
        b"/api/v1/products/p1%00",
        b"/api/v1/products/p1%1b",
        b"/api/v1/products/%c3%28",
        b"/api/v1/products/p1%5c",
    ],
)
def test_a_service_refuses_a_path_with_more_than_one_reading(product_app: TestClient, raw_path: bytes) -> None:
    app = product_app.app
    served, answer = asgi_get(app, raw_path)
    # In the cloud the Lambda gets no raw path from Mangum: the API Gateway event's `rawPath` is checked.
    in_lambda, lambda_answer = asgi_get(app, None, event_path=raw_path.decode())

    assert (served, in_lambda) == (400, 400)
    assert answer["headers"][b"content-type"] == b"application/problem+json"
    assert answer["body"]["type"].endswith("/bad-path") and lambda_answer["body"]["status"] == 400
    assert answer["headers"][b"x-request-id"]


def test_a_service_still_routes_a_path_with_ordinary_escapes(product_app: TestClient) -> None:
    assert asgi_get(product_app.app, b"/api/v1/%70roducts")[0] == 200
    assert_problem(product_app.get("/api/v1/products/" + "a" * 65), 422)
