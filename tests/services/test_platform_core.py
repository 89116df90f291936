"""The shared core: gateway routing, health and metrics endpoints, request ids and JSON logs."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from cloudshop.estate import ESTATE
from cloudshop.gateway import compile_routes, match_route
from cloudshop.observability import JsonFormatter
from cloudshop.settings import Settings
from functions.product.bootstrap import build_app, build_catalog, migrate_schema

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
    internal = {(r.method, r.path, r.service) for r in ESTATE.routes if r.internal}
    assert internal == {
        ("POST", "/api/v1/internal/reservations", "product"),
        ("POST", "/api/v1/internal/reservations/{proxy+}", "product"),
    }
    assert not any(r.internal and r.public for r in ESTATE.routes)
