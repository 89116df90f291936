"""AsyncServiceClient: the ServiceClient contract for async code, with a time budget and a retry budget."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from cloudshop.auth import SERVICE_TOKEN_HEADER, InternalTokens
from cloudshop.clients import AsyncServiceClient
from cloudshop.errors import DependencyUnavailable, NotFound, OutOfStock, problem
from cloudshop.estate import ESTATE
from cloudshop.observability import REQUEST_ID_HEADER, request_id_var
from cloudshop.retries import RetryBudget

pytestmark = pytest.mark.anyio

SECRETS = {pair: "s" * 40 for pair in ESTATE.token_pairs}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Recorder:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


@asynccontextmanager
async def client_answering(
    answer: Callable[[httpx.Request], httpx.Response],
    recorder: Recorder,
    *,
    retries: int = 2,
    budget: RetryBudget | None = None,
    timeout_seconds: float = 5.0,
) -> AsyncIterator[AsyncServiceClient]:
    def handler(request: httpx.Request) -> httpx.Response:
        recorder.requests.append(request)
        return answer(request)

    client = AsyncServiceClient(
        name="product",
        base_url="http://product.test",
        tokens=InternalTokens(SECRETS, service="order"),
        timeout_seconds=timeout_seconds,
        retries=retries,
        retry_budget=budget,
        transport=httpx.MockTransport(handler),
        sleep=recorder.sleep,
    )
    try:
        yield client
    finally:
        await client.aclose()


def failing(status: int = 500, headers: dict[str, str] | None = None) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, json=problem(status, "Error", "broken"), headers=headers)


async def test_a_call_carries_the_service_token_and_request_id_and_returns_the_json() -> None:
    recorder = Recorder()
    request_id_var.set("req-123")
    async with client_answering(lambda r: httpx.Response(200, json={"ok": True}), recorder) as client:
        answer = await client.request("GET", "/internal/products", params={"ids": "p1"})
    sent = recorder.requests[0]
    assert answer == {"ok": True}
    # Signed for the callee it is sent to (the client's name), as the order service's own.
    product = InternalTokens(SECRETS, service="product")
    assert product.verify(sent.headers[SERVICE_TOKEN_HEADER], callers=("order",)) == "order"
    assert sent.headers[REQUEST_ID_HEADER] == "req-123"
    assert sent.url.params["ids"] == "p1"


async def test_an_empty_answer_is_none() -> None:
    async with client_answering(lambda r: httpx.Response(204), Recorder()) as client:
        assert await client.request("DELETE", "/internal/reservations/o-1") is None


async def test_a_problem_answer_is_raised_as_the_same_domain_error_without_retry() -> None:
    recorder = Recorder()
    short = problem(409, "Out of stock", "p1 is short", slug="out-of-stock", products=["p1"])
    async with client_answering(lambda r: httpx.Response(409, json=short), recorder) as client:
        with pytest.raises(OutOfStock) as error:
            await client.request("POST", "/internal/reservations", json={"order_id": "o-1"}, retry=True)
    assert error.value.extra == {"products": ["p1"]}
    assert error.value.slug == "out-of-stock"
    assert len(recorder.requests) == 1

    async with client_answering(failing(404), Recorder()) as client:
        with pytest.raises(NotFound):
            await client.request("GET", "/internal/products/none")


async def test_a_failing_idempotent_call_is_retried_then_unavailable() -> None:
    recorder = Recorder()
    async with client_answering(failing(500), recorder, retries=2) as client:
        with pytest.raises(DependencyUnavailable):
            await client.request("GET", "/internal/products")
    assert len(recorder.requests) == 3


async def test_a_post_is_retried_only_when_the_caller_says_it_is_idempotent() -> None:
    once, marked = Recorder(), Recorder()
    async with client_answering(failing(502), once) as client:
        with pytest.raises(DependencyUnavailable):
            await client.request("POST", "/internal/charges", json={})
    async with client_answering(failing(502), marked) as client:
        with pytest.raises(DependencyUnavailable):
            await client.request("POST", "/internal/charges", json={}, retry=True)
    assert len(once.requests) == 1
    assert len(marked.requests) == 3


async def test_an_unreachable_service_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    recorder = Recorder()
    client = AsyncServiceClient(
        name="payment",
        base_url=f"http://127.0.0.1:{port}",
        tokens=InternalTokens(SECRETS, service="order"),
        timeout_seconds=5.0,
        retries=1,
        sleep=recorder.sleep,
    )
    try:
        with pytest.raises(DependencyUnavailable) as error:
            await client.request("GET", "/internal/payments/p-1")
    finally:
        await client.aclose()
    assert isinstance(error.value.__cause__, httpx.ConnectError)


async def test_a_silent_service_fails_within_the_time_budget() -> None:
    # Accepts connections, never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        client = AsyncServiceClient(
            name="payment",
            base_url=f"http://127.0.0.1:{silent.getsockname()[1]}",
            tokens=InternalTokens(SECRETS, service="order"),
            timeout_seconds=0.3,
            retries=2,
        )
        try:
            with pytest.raises(DependencyUnavailable) as error:
                await client.request("GET", "/internal/payments/p-1")
        finally:
            await client.aclose()
    assert isinstance(error.value.__cause__, (httpx.TimeoutException, TimeoutError))


async def test_retries_stay_within_the_budget_when_a_service_is_down() -> None:
    recorder = Recorder()
    budget = RetryBudget(ratio=0.1, burst=5)
    async with client_answering(failing(503), recorder, retries=3, budget=budget) as client:
        for _ in range(100):
            with pytest.raises(DependencyUnavailable):
                await client.request("GET", "/internal/products")
    # Without the budget: 400 calls reach the service. With it: the calls, plus the burst,
    # plus a tenth of the calls.
    assert 100 <= len(recorder.requests) <= 100 + 5 + 10


async def test_an_overloaded_service_is_retried_no_sooner_than_it_asks() -> None:
    recorder = Recorder()
    answers = iter(
        [failing(503, {"retry-after-ms": "250", "retry-after": "1"}), lambda r: httpx.Response(200, json=[])]
    )

    def answer(request: httpx.Request) -> httpx.Response:
        return next(answers)(request)

    async with client_answering(answer, recorder) as client:
        assert await client.request("GET", "/internal/products") == []
    assert recorder.slept[0] >= 0.25


async def test_an_overloaded_service_asking_for_more_than_the_budget_is_not_retried() -> None:
    recorder = Recorder()
    async with client_answering(failing(503, {"retry-after": "30"}), recorder, timeout_seconds=2.0) as client:
        with pytest.raises(DependencyUnavailable):
            await client.request("GET", "/internal/products")
    assert len(recorder.requests) == 1
    assert recorder.slept == []


def test_the_retry_budget_allows_a_burst_then_a_tenth_of_the_calls() -> None:
    budget = RetryBudget(ratio=0.1, burst=3)
    assert [budget.try_retry() for _ in range(4)] == [True, True, True, False]
    for _ in range(10):
        budget.record_call()
    assert budget.try_retry()
    assert not budget.try_retry()
