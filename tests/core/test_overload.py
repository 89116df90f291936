"""Overload protection in the shared app factory: bounded in-flight work, fast refusals, and
operations endpoints that answer whatever the load."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from fastapi import APIRouter, FastAPI

from cloudshop.settings import Settings
from cloudshop.web import ReadinessCheck, create_app

pytestmark = pytest.mark.anyio

LIMIT = 4


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class SlowWork:
    """An endpoint that holds its request until released: load without timing."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.started = 0

    def router(self) -> APIRouter:
        router = APIRouter()

        @router.get("/api/v1/slow")
        async def slow() -> dict[str, str]:
            self.started += 1
            await self.release.wait()
            return {"status": "done"}

        return router


def overload_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": "test",
        "log_level": "WARNING",
        "max_in_flight_requests": LIMIT,
        "overload_retry_after_ms": 200,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        yield client


async def until(condition: Callable[[], bool], *, checks: int = 10_000) -> None:
    for _ in range(checks):
        if condition():
            return
        await anyio.sleep(0)
    raise AssertionError("condition never held")


async def test_requests_beyond_the_limit_are_refused_at_once_and_health_still_answers() -> None:
    work = SlowWork()
    app = create_app(service="test", settings=overload_settings(), routers=[work.router()])
    held: list[httpx.Response] = []

    async with http(app) as client, anyio.create_task_group() as group:

        async def hold() -> None:
            held.append(await client.get("/api/v1/slow"))

        for _ in range(LIMIT):
            group.start_soon(hold)
        await until(lambda: work.started == LIMIT)

        # Given the process at its limit, when more requests arrive,
        extra = [await client.get("/api/v1/slow") for _ in range(6)]
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
        metrics = await client.get("/metrics")
        work.release.set()

    # then each is refused with a 503 problem telling when to come back, none waits for a slot,
    assert [r.status_code for r in extra] == [503] * 6
    refused = extra[0]
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["retry-after-ms"] == "200"
    assert refused.json()["retry_after_ms"] == 200
    assert refused.json()["type"].endswith("/overloaded")
    assert refused.headers["x-request-id"]
    assert work.started == LIMIT
    # the operations endpoints answer all the same, and the refusals are counted;
    assert health.status_code == 200 and ready.status_code == 200
    assert "http_requests_refused_total 6.0" in metrics.text
    assert "http_requests_in_flight 4.0" in metrics.text
    # the held requests complete normally.
    assert [r.status_code for r in held] == [200] * LIMIT


async def test_a_freed_slot_admits_the_next_request() -> None:
    work = SlowWork()
    work.release.set()
    app = create_app(service="test", settings=overload_settings(max_in_flight_requests=1), routers=[work.router()])
    async with http(app) as client:
        answers = [await client.get("/api/v1/slow") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]


def readiness_app(checks: dict[str, ReadinessCheck], **overrides: object) -> FastAPI:
    return create_app(service="test", settings=overload_settings(**overrides), routers=[], readiness=checks)


async def test_readiness_names_each_failing_dependency() -> None:
    def database() -> None:
        raise ConnectionError("down")

    async def table() -> None:
        return None

    async with http(readiness_app({"database": database, "orders": table})) as client:
        answer = await client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["failing"] == {"database": "ConnectionError"}


async def test_a_hanging_check_fails_readiness_by_its_own_timeout() -> None:
    async def hangs() -> None:
        await anyio.sleep_forever()

    async with http(readiness_app({"payments": hangs}, readiness_timeout_seconds=0.2)) as client:
        answer = await client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["failing"] == {"payments": "Timeout"}


async def test_a_slow_check_does_not_hold_the_probe_once_a_result_is_known() -> None:
    gate = anyio.Event()
    runs = 0

    async def orders() -> None:
        nonlocal runs
        runs += 1
        if runs > 1:
            await gate.wait()

    app = readiness_app({"orders": orders}, readiness_timeout_seconds=5)
    async with http(app) as client:
        first = await client.get("/readyz")
        # The second run blocks on the gate; the probe answers from the first run meanwhile.
        second = await client.get("/readyz")
        still_running = not gate.is_set() and runs == 2
        gate.set()
    assert first.status_code == 200 and second.status_code == 200
    assert still_running


async def test_a_sync_check_runs_off_the_event_loop() -> None:
    import threading

    loop_thread = threading.get_ident()
    seen: list[int] = []

    def database() -> None:
        seen.append(threading.get_ident())

    async with http(readiness_app({"database": database})) as client:
        answer = await client.get("/readyz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ready", "checks": ["database"]}
    assert seen and seen[0] != loop_thread
