"""The gateway: async session checks with a bounded cache, a raw reverse proxy, overload refusals."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from cloudshop.auth import InternalTokens, TokenIssuer, TokenVerifier
from cloudshop.aws import to_item
from cloudshop.dynamodb import dynamodb_for
from cloudshop.gateway import build_gateway
from cloudshop.sessions import session_is_active_async, session_key
from cloudshop.settings import Settings

pytestmark = pytest.mark.anyio

SECRET = "i" * 40
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
        internal_tokens=InternalTokens(SECRET, service="gateway"),
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
        internal_tokens=InternalTokens(SECRET, service="gateway"),
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
