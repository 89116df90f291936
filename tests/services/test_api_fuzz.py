"""Every public operation of every service, fuzzed through the gateway (schemathesis): no 5xx, and every
4xx a problem+json, with a customer's token and with an admin's.

The platform runs in this process: each service's own app (`build_app`), served by uvicorn on a
loopback port in a thread of its own, with the gateway in front of them (`build_gateway`, proxying
over real HTTP), once on the embedded profile's stores (moto, SQLite) and once on the full
profile's (dynalite, PostgreSQL). Real servers matter here: uvicorn decodes the path
and the gateway forwards bytes, which an in-memory transport would paper over. The operations come
from the committed OpenAPI documents (`functions/*/openapi.json`, `eks_services/*/openapi.json`),
so a new public route is fuzzed without a change here. Examples are bounded per operation and the
generation is derandomized, so a run takes the same path every time.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings

from cloudshop.auth import TokenVerifier, internal_tokens_for
from cloudshop.contracts import SERVICES as CONTRACTS
from cloudshop.dynamodb import dynamodb_for
from cloudshop.gateway import build_gateway
from cloudshop.operations import create_admin, load_demo_catalog
from cloudshop.schema import apply_schema
from cloudshop.sessions import session_is_active_async
from cloudshop.settings import Settings
from cloudshop.sql import engine_for

pytestmark = pytest.mark.slow

# Per operation, token and profile: the whole run takes 45-60 s here. `CLOUDSHOP_FUZZ_EXAMPLES` digs deeper.
EXAMPLES_PER_OPERATION = int(os.environ.get("CLOUDSHOP_FUZZ_EXAMPLES", "30"))
ADMIN = ("fuzz-admin@cloudshop.test", "fuzz-admin-pass-1")
CUSTOMER = ("fuzz-customer@cloudshop.test", "fuzz-customer-pass-1")


def public_document(service: str) -> dict[str, Any]:
    """The service's committed OpenAPI document without its internal operations (not on the gateway)."""
    document = json.loads((CONTRACTS[service][1] / "openapi.json").read_text())
    paths = {}
    for path, operations in document["paths"].items():
        kept = {m: op for m, op in operations.items() if "internal" not in op.get("tags", [])}
        if kept:
            paths[path] = kept
    return {**document, "paths": paths}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ThreadServer:
    """One ASGI app under uvicorn on a loopback port, in a thread of its own (with its own loop)."""

    def __init__(self, app: Any, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@dataclass
class Stack:
    gateway: str
    tokens: dict[str, dict[str, str]]


@pytest.fixture(scope="module", params=["embedded", "full"])
def stack(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The platform on the embedded profile's stores (moto, SQLite), then on the full profile's
    (dynalite, PostgreSQL): each refuses other inputs (PostgreSQL, a NUL in text)."""
    from eks_services.order.bootstrap import build_app as order_app
    from eks_services.payment.bootstrap import build_app as payment_app
    from functions.notification.bootstrap import build_app as notification_app
    from functions.product.bootstrap import build_app as product_app
    from functions.user.bootstrap import build_app as user_app

    ports = {service: free_port() for service in CONTRACTS}
    if request.param == "full":
        postgres = request.getfixturevalue("postgres_server")
        name = f"fuzz_{uuid.uuid4().hex[:8]}"
        postgres.create_database(name)
        stores: dict[str, Any] = {"database_url": postgres.url_for(name), "dynamodb": "dynalite"}
    else:
        stores = {"database_url": f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'fuzz.db'}"}
    settings = make_settings(
        prefix=f"fuzz-{request.param}-",
        **stores,
        outbox_relay_enabled=False,
        payment_events_consumer_enabled=False,
        abandoned_order_sweeper_enabled=False,
        payment_slow_charge_seconds=0,
        **{f"{service}_service_url": f"http://127.0.0.1:{port}" for service, port in ports.items()},
    )
    engine = engine_for(settings)
    apply_schema(engine)
    load_demo_catalog(settings, engine)
    create_admin(settings, engine, email=ADMIN[0], password=ADMIN[1], name="Fuzz Admin")
    engine.dispose()
    builders = {
        "user": user_app,
        "product": product_app,
        "order": order_app,
        "payment": payment_app,
        "notification": notification_app,
    }
    servers = []
    for service, build in builders.items():
        servers.append(ThreadServer(build(settings), port=ports[service]).start())
    dynamodb = dynamodb_for(settings)

    async def session_active(session_id: str) -> bool:
        return await session_is_active_async(dynamodb, table=settings.sessions_table, session_id=session_id)

    gateway_app = build_gateway(
        upstreams={service: f"http://127.0.0.1:{port}" for service, port in ports.items()},
        verifier=TokenVerifier(settings.jwt_public_key, issuer=settings.jwt_issuer),
        session_active=session_active,
        internal_tokens=internal_tokens_for(settings, service="gateway"),
        log_level="WARNING",
    )
    gateway = ThreadServer(gateway_app).start()
    servers.append(gateway)
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            registered = http.post(
                "/api/v1/auth/register", json={"email": CUSTOMER[0], "password": CUSTOMER[1], "name": "Fuzz Buyer"}
            )
            assert registered.status_code in (201, 409), registered.text
            tokens = {}
            for role, (email, password) in (("admin", ADMIN), ("customer", CUSTOMER)):
                login = http.post("/api/v1/auth/login", json={"email": email, "password": password})
                assert login.status_code == 200, login.text
                tokens[role] = {"Authorization": f"Bearer {login.json()['access_token']}"}
        yield Stack(gateway=gateway.url, tokens=tokens)
    finally:
        for server in reversed(servers):
            server.stop()


def problem_or_success(response: Any) -> str | None:
    """What is wrong with one answer, if anything."""
    if response.status_code >= 500:
        return f"{response.status_code} {response.text[:300]}"
    content_type = (response.headers.get("content-type") or [""])[0]
    if response.status_code >= 400 and not content_type.startswith("application/problem+json"):
        return f"{response.status_code} without problem+json: {content_type or 'no content-type'}"
    return None


def fuzz_test(service: str) -> Callable[..., None]:
    schema = schemathesis.openapi.from_dict(public_document(service))

    @pytest.mark.parametrize("role", ["customer", "admin"])
    @schema.parametrize()
    @hypothesis_settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def test(case: Any, role: str, stack: Stack) -> None:
        response = case.call(base_url=stack.gateway, headers=stack.tokens[role], timeout=30)
        wrong = problem_or_success(response)
        assert wrong is None, f"{case.method} {case.formatted_path} as {role}: {wrong}"

    return test


test_user_operations = fuzz_test("user")
test_product_operations = fuzz_test("product")
test_order_operations = fuzz_test("order")
test_payment_operations = fuzz_test("payment")
test_notification_operations = fuzz_test("notification")
