"""The gateway: async session checks with a bounded cache, a raw reverse proxy, overload refusals."""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import jwt
import pytest
from starlette.applications import Starlette

from cloudshop.auth import InternalTokens, TokenIssuer, TokenVerifier, internal_tokens_for
from cloudshop.aws import to_item
from cloudshop.dynamodb import dynamodb_for
from cloudshop.estate import ESTATE
from cloudshop.gateway import build_gateway
from cloudshop.sessions import session_is_active_async, session_key
from cloudshop.settings import Settings
from cloudshop.web import MAX_BODY_BYTES
from tests.helpers import assert_problem

pytestmark = pytest.mark.anyio

SECRETS = {pair: f"{pair}-" + "i" * 40 for pair in ESTATE.token_pairs}
SERVICES = ("user", "product", "order", "payment", "notification")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sessions:
    """The session table as the gateway sees it, counting reads."""

    def __init__(self) -> None:
        self.active: dict[str, bool] = {}
        self.reads = 0

    async def __call__(self, session_id: str) -> bool:
        self.reads += 1
        return self.active.get(session_id, False)


class Upstream:
    """Every service behind the gateway: records what arrives, answers what `answer` says."""

    def __init__(self) -> None:
        self.seen: list[httpx.Request] = []
        self.answer: Callable[[httpx.Request], Any] = lambda request: httpx.Response(200, json={"ok": True})

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        answer = self.answer(request)
        response = await answer if not isinstance(answer, httpx.Response) else answer
        # Unread, as a real transport hands it over (the gateway forwards the raw bytes).
        return httpx.Response(response.status_code, headers=response.headers, stream=httpx.ByteStream(response.content))


def gateway_tokens() -> InternalTokens:
    return internal_tokens_for(Settings(internal_token_secrets=SECRETS), service="gateway")


@pytest.fixture
def issuer(key_pair: tuple[str, str]) -> TokenIssuer:
    return TokenIssuer(key_pair[0], issuer="cloudshop", access_ttl_seconds=900)


def gateway(
    key_pair: tuple[str, str],
    sessions: Sessions,
    upstream: Upstream,
    *,
    clock: FakeClock | None = None,
    **options: Any,
) -> Starlette:
    return build_gateway(
        upstreams={service: f"http://{service}.internal:80" for service in SERVICES},
        verifier=TokenVerifier(key_pair[1], issuer="cloudshop"),
        session_active=sessions,
        internal_tokens=gateway_tokens(),
        clock=clock or FakeClock(),
        upstream_transport=httpx.MockTransport(upstream.handle),
        log_level="WARNING",
        **options,
    )


@asynccontextmanager
async def http(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client


def bearer(issuer: TokenIssuer, session_id: str) -> dict[str, str]:
    token = issuer.access_token(user_id="u-1", role="customer", email="u@example.com", session_id=session_id)
    return {"Authorization": f"Bearer {token}"}


async def test_a_revoked_session_stops_working_once_the_cache_bound_has_passed(
    key_pair: tuple[str, str], issuer: TokenIssuer
) -> None:
    clock, sessions, upstream = FakeClock(), Sessions(), Upstream()
    sessions.active["s-1"] = True
    app = gateway(key_pair, sessions, upstream, clock=clock, session_cache_seconds=2.0)
    auth = bearer(issuer, "s-1")
    async with http(app) as client:
        # Given an active session, checked once and then served from the cache,
        assert [(await client.get("/api/v1/users/me", headers=auth)).status_code for _ in range(5)] == [200] * 5
        assert sessions.reads == 1
        # when it is revoked, it may pass for what is left of the bound,
        sessions.active["s-1"] = False
        clock.now += 1.9
        within = await client.get("/api/v1/users/me", headers=auth)
        # and is refused once the bound has passed, from then on.
        clock.now += 0.1
        after = await client.get("/api/v1/users/me", headers=auth)
        clock.now += 60
        later = await client.get("/api/v1/users/me", headers=auth)
    assert within.status_code == 200
    assert after.status_code == 401 and later.status_code == 401
    assert after.headers["www-authenticate"] == "Bearer"
    assert after.headers["content-type"] == "application/problem+json"
    assert len(upstream.seen) == 6


async def test_without_a_cache_a_revocation_is_seen_on_the_next_request(
    key_pair: tuple[str, str], issuer: TokenIssuer
) -> None:
    sessions, upstream = Sessions(), Upstream()
    sessions.active["s-2"] = True
    app = gateway(key_pair, sessions, upstream, session_cache_seconds=0)
    async with http(app) as client:
        assert (await client.get("/api/v1/orders", headers=bearer(issuer, "s-2"))).status_code == 200
        sessions.active["s-2"] = False
        assert (await client.get("/api/v1/orders", headers=bearer(issuer, "s-2"))).status_code == 401


async def test_concurrent_requests_of_one_session_share_one_read(
    key_pair: tuple[str, str], issuer: TokenIssuer
) -> None:
    gate = anyio.Event()
    reads = 0

    async def slow_sessions(session_id: str) -> bool:
        nonlocal reads
        reads += 1
        await gate.wait()
        return True

    upstream = Upstream()
    app = build_gateway(
        upstreams={service: f"http://{service}.internal" for service in SERVICES},
        verifier=TokenVerifier(key_pair[1], issuer="cloudshop"),
        session_active=slow_sessions,
        internal_tokens=gateway_tokens(),
        upstream_transport=httpx.MockTransport(upstream.handle),
        log_level="WARNING",
    )
    statuses: list[int] = []
    async with http(app) as client, anyio.create_task_group() as group:

        async def get() -> None:
            statuses.append((await client.get("/api/v1/cart", headers=bearer(issuer, "s-3"))).status_code)

        for _ in range(5):
            group.start_soon(get)
        for _ in range(100):
            await anyio.sleep(0)
        gate.set()
    assert statuses == [200] * 5
    assert reads == 1


async def test_requests_are_proxied_byte_for_byte_without_a_shared_cookie_jar(
    key_pair: tuple[str, str], issuer: TokenIssuer
) -> None:
    sessions, upstream = Sessions(), Upstream()
    upstream.answer = lambda request: httpx.Response(
        200,
        content=b'{"items": []}',
        headers=[
            ("content-type", "application/json"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("date", "Sat, 28 Nov 2026 12:00:00 GMT"),
            ("server", "uvicorn"),
        ],
    )
    app = gateway(key_pair, sessions, upstream)
    async with http(app) as client:
        first = await client.get("/api/v1/products?q=a%20b&category=books", headers={"x-request-id": "rid-1"})
        client.cookies.clear()  # the next request is another caller's
        await client.get("/api/v1/products", headers={"x-forwarded-for": "198.51.100.1"})

    sent = upstream.seen[0]
    assert str(sent.url) == "http://product.internal/api/v1/products?q=a%20b&category=books"
    assert sent.headers["x-request-id"] == "rid-1"
    assert sent.headers["x-forwarded-for"] == "203.0.113.9"
    assert upstream.seen[1].headers["x-forwarded-for"] == "198.51.100.1, 203.0.113.9"
    # A proxy keeps no cookies: what one caller was sent never rides on another's request.
    assert "cookie" not in upstream.seen[1].headers
    assert first.status_code == 200 and first.content == b'{"items": []}'
    assert first.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert first.headers["x-request-id"] == "rid-1"
    # The gateway's own server sets these on its answer; the upstream's copies would make two of each.
    assert "date" not in first.headers and "server" not in first.headers


async def test_a_silent_upstream_is_a_504_within_the_budget_and_a_dead_one_a_502(key_pair: tuple[str, str]) -> None:
    upstream = Upstream()

    async def never(request: httpx.Request) -> httpx.Response:
        await anyio.sleep_forever()
        raise AssertionError

    upstream.answer = never
    async with http(gateway(key_pair, Sessions(), upstream, timeout_seconds=0.2)) as client:
        silent = await client.get("/api/v1/products")

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    upstream.answer = refuse
    async with http(gateway(key_pair, Sessions(), upstream)) as client:
        dead = await client.get("/api/v1/products")
    assert silent.status_code == 504 and dead.status_code == 502
    assert silent.headers["content-type"] == "application/problem+json"


async def test_beyond_its_in_flight_limit_the_gateway_refuses_at_once_and_health_answers(
    key_pair: tuple[str, str],
) -> None:
    upstream, release, started = Upstream(), anyio.Event(), []

    async def held(request: httpx.Request) -> httpx.Response:
        started.append(request)
        await release.wait()
        return httpx.Response(200, json={})

    upstream.answer = held
    app = gateway(key_pair, Sessions(), upstream, max_in_flight_requests=2, retry_after_ms=300)
    statuses: list[int] = []
    async with http(app) as client, anyio.create_task_group() as group:

        async def get() -> None:
            statuses.append((await client.get("/api/v1/products")).status_code)

        for _ in range(2):
            group.start_soon(get)
        while len(started) < 2:
            await anyio.sleep(0)
        refused = [await client.get("/api/v1/products") for _ in range(3)]
        health = [await client.get(path) for path in ("/healthz", "/api/v1/healthz", "/metrics")]
        release.set()
    assert [r.status_code for r in refused] == [503] * 3
    assert refused[0].headers["retry-after"] == "1" and refused[0].headers["retry-after-ms"] == "300"
    assert [h.status_code for h in health] == [200, 200, 200]
    assert "http_requests_refused_total 3.0" in health[2].text
    assert statuses == [200, 200]


@pytest.fixture(params=["moto", "dynalite"])
def session_settings(request: pytest.FixtureRequest, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(prefix="gw-", dynamodb=request.param)


async def test_the_async_session_read_tells_active_revoked_expired_and_unknown(session_settings: Settings) -> None:
    table = session_settings.sessions_table
    ids = {name: uuid.uuid4().hex for name in ("active", "revoked", "expired")}
    later, earlier = int(time.time()) + 3600, int(time.time()) - 1
    dynamodb = dynamodb_for(session_settings)
    try:
        for name, expires_at, revoked in (
            ("active", later, False),
            ("revoked", later, True),
            ("expired", earlier, False),
        ):
            item = {**session_key(ids[name]), **to_item({"expires_at": expires_at, "revoked": revoked})}
            await dynamodb.call("PutItem", {"TableName": table, "Item": item})
        answers = {
            name: await session_is_active_async(dynamodb, table=table, session_id=session_id)
            for name, session_id in {**ids, "unknown": uuid.uuid4().hex, "empty": ""}.items()
        }
    finally:
        await dynamodb.aclose()
    assert answers == {"active": True, "revoked": False, "expired": False, "unknown": False, "empty": False}


# --- one reading of every path (issue 10) ------------------------------------------------------------


async def raw_request(
    app: Starlette, method: str, raw_path: bytes, *, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request with exactly these path bytes, as a server hands them over (an HTTP client would
    resolve dot segments before sending, httpx among them)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    path = raw_path.decode("latin-1")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": urllib.parse.unquote(path),
        "raw_path": raw_path,
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"gw"), *(headers or [])],
        "client": ("203.0.113.9", 5000),
        "server": ("gw", 80),
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


@pytest.mark.parametrize(
    "raw_path",
    [
        b"/api/v1/products/%2e%2e/%2e%2e/%2e%2e/openapi.json",
        b"/api/v1/products/%2E%2E/%2E%2E/%2E%2E/openapi.json",
        b"/api/v1/products/../../../openapi.json",
        b"/api/v1/products/./p1",
        b"/api/v1/orders/%2e%2e/internal/reservations",
        b"/api/v1/orders/..%2finternal%2freservations",
        b"/api/v1/products/p1%2f..%2f..%2fopenapi.json",
        b"/api/v1/products/p1%5c..%5copenapi.json",
        b"/api/v1/products/p1%00",
        b"/api/v1/products/p1%0a",
        b"/api/v1/products/%ff%fe",
        b"/api/v1/products/p1%zz",
        b"/api/v1/products/p1%252e",
    ],
)
async def test_a_path_with_more_than_one_reading_is_a_400_and_reaches_no_service(
    key_pair: tuple[str, str], issuer: TokenIssuer, raw_path: bytes
) -> None:
    # Given a live customer session, whose token opens the order routes at the gateway,
    sessions, upstream = Sessions(), Upstream()
    sessions.active["s-1"] = True
    authorization = bearer(issuer, "s-1")["Authorization"].encode()
    app = gateway(key_pair, sessions, upstream)

    # when a path whose dots, slashes or bytes another hop would read differently arrives,
    for method in ("GET", "POST"):
        status, headers, body = await raw_request(app, method, raw_path, headers=[(b"authorization", authorization)])

        # it is refused as it stands, before routing, and nothing reaches a service.
        assert status == 400, body
        assert headers["content-type"] == "application/problem+json"
        assert json.loads(body)["type"].endswith("/bad-path")
    assert upstream.seen == []


async def test_the_path_forwarded_is_exactly_the_normalised_path_that_was_matched(key_pair: tuple[str, str]) -> None:
    upstream = Upstream()
    async with http(gateway(key_pair, Sessions(), upstream)) as client:
        answer = await client.get("/api/v1/products/%41b%63-%C3%A9?q=a%2Fb")

    assert answer.status_code == 200
    # One canonical encoding of what was matched (`/api/v1/products/Abc-é`); the query is the caller's.
    assert upstream.seen[0].url.raw_path == b"/api/v1/products/Abc-%C3%A9?q=a%2Fb"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("TRACE", "/api/v1/products"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("POST", "/api/v1/internal/payments"),
        ("GET", "/api/v1/internal/reservations"),
        ("POST", "/api/v1/internal/reservations/o1/x/commit"),
        ("POST", "/healthz"),
    ],
)
async def test_what_matches_no_route_is_a_404_problem(key_pair: tuple[str, str], method: str, path: str) -> None:
    upstream = Upstream()
    async with http(gateway(key_pair, Sessions(), upstream)) as client:
        answer = await client.request(method, path)

    assert answer.status_code in (404, 405)
    assert_problem(answer, answer.status_code)
    assert upstream.seen == []


# --- the body limit (issue 10) -------------------------------------------------------------------------


async def test_a_body_over_the_limit_is_refused_while_it_streams_and_never_forwarded(
    key_pair: tuple[str, str], issuer: TokenIssuer
) -> None:
    sessions, upstream = Sessions(), Upstream()
    sessions.active["s-1"] = True
    auth = bearer(issuer, "s-1")

    async def chunks(total: int) -> AsyncIterator[bytes]:
        for start in range(0, total, 4096):
            yield b"x" * min(4096, total - start)

    async with http(gateway(key_pair, sessions, upstream)) as client:
        # No length up front (chunked): counted as it arrives.
        streamed = await client.post("/api/v1/orders", headers=auth, content=chunks(MAX_BODY_BYTES + 1))
        at_the_limit = await client.post("/api/v1/orders", headers=auth, content=chunks(MAX_BODY_BYTES))

    assert_problem(streamed, 413)
    assert at_the_limit.status_code == 200
    assert [len(request.content) for request in upstream.seen] == [MAX_BODY_BYTES]


async def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(key_pair: tuple[str, str]) -> None:
    upstream, reads = Upstream(), []

    async def receive() -> dict[str, Any]:
        reads.append(1)
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/auth/register",
        "raw_path": b"/api/v1/auth/register",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"gw"), (b"content-length", str(10 * MAX_BODY_BYTES).encode())],
        "client": ("203.0.113.9", 5000),
        "server": ("gw", 80),
    }
    await gateway(key_pair, Sessions(), upstream)(scope, receive, send)

    assert next(m for m in sent if m["type"] == "http.response.start")["status"] == 413
    assert reads == [] and upstream.seen == []


# --- internal routes: the declared callers' tokens only (issue 10) ---------------------------------------


def service_token(caller: str, callee: str, *, secret: str | None = None, **claims: Any) -> str:
    now = int(time.time())
    body = {"sub": caller, "aud": callee, "iat": now, "exp": now + 60, **claims}
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, secret or SECRETS[f"{caller}-{callee}"], algorithm="HS256")


@pytest.mark.parametrize(
    ("token", "status"),
    [
        (lambda: InternalTokens(SECRETS, service="order").token("product"), 200),
        # The order service's token for another callee, and another caller's, signed with a real secret.
        (lambda: InternalTokens(SECRETS, service="order").token("payment"), 401),
        (lambda: service_token("payment", "product", secret=SECRETS["order-product"]), 403),
        # No expiry, or a day's life: refused even with the right secret.
        (lambda: service_token("order", "product", exp=None), 401),
        (lambda: service_token("order", "product", exp=int(time.time()) + 86400), 401),
        (lambda: service_token("order", "product", exp=int(time.time()) - 60), 401),
    ],
)
async def test_an_internal_route_admits_only_a_fresh_token_of_its_declared_caller(
    key_pair: tuple[str, str], token: Callable[[], str], status: int
) -> None:
    upstream = Upstream()
    async with http(gateway(key_pair, Sessions(), upstream)) as client:
        answer = await client.post("/api/v1/internal/reservations/o1/release", headers={"x-service-token": token()})

    assert answer.status_code == status
    assert len(upstream.seen) == (1 if status == 200 else 0)


async def test_a_verified_access_token_still_has_its_session_checked_on_every_request(
    key_pair: tuple[str, str], issuer: TokenIssuer
) -> None:
    """`TokenVerifier` keeps what it verified until the token expires (`cloudshop.auth.VerifiedTokens`);
    the gateway asks about the session all the same, so a logout still stops the token."""
    sessions, upstream = Sessions(), Upstream()
    sessions.active["s-9"] = True
    app = build_gateway(
        upstreams={service: f"http://{service}.internal" for service in SERVICES},
        verifier=TokenVerifier(key_pair[1], issuer="cloudshop"),
        session_active=sessions,
        internal_tokens=gateway_tokens(),
        session_cache_seconds=0,
        upstream_transport=httpx.MockTransport(upstream.handle),
        log_level="WARNING",
    )
    auth = bearer(issuer, "s-9")
    async with http(app) as client:
        assert [(await client.get("/api/v1/orders", headers=auth)).status_code for _ in range(3)] == [200] * 3
        sessions.active["s-9"] = False
        assert_problem(await client.get("/api/v1/orders", headers=auth), 401)
        forged = auth["Authorization"][:-4] + "AAAA"
        assert_problem(await client.get("/api/v1/orders", headers={"Authorization": forged}), 401)
    assert sessions.reads == 4
