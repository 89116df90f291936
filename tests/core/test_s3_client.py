"""The async S3 client (`cloudshop.s3`): signed as boto3 signs, on moto; and the `Invoices` port's
contract, run against the in-memory fake and the real adapter on moto alike."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.credentials import Credentials

from cloudshop import tracing
from cloudshop.errors import DependencyUnavailable
from cloudshop.observability import Metrics
from cloudshop.s3 import S3, S3Error, S3Unavailable, s3_for
from cloudshop.settings import Settings
from eks_services.order.bootstrap import build_runtime
from eks_services.order.invoice import S3Invoices, render_invoice
from eks_services.order.model import Line, Order, OrderStatus
from eks_services.order.ports import Invoices
from tests.services.order_fakes import (
    InMemoryCarts,
    InMemoryCatalog,
    InMemoryCheckoutReader,
    InMemoryEventPublisher,
    InMemoryInvoices,
    InMemoryOrders,
    InMemoryPayments,
)

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC)
# Every character class the key encoding has to get right: unreserved, reserved, space, non-ASCII.
AWKWARD_KEY = "invoices/u 1+2/ord_ä=b&c~d(e)!*'$,;:@.html"
EXPORTED = Metrics("s3-test").registry


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def no_sleep(_: float) -> None:
    return None


def calls(operation: str) -> float:
    return EXPORTED.get_sample_value("cloudshop_backend_calls_total", {"kind": "s3", "operation": operation}) or 0.0


def an_order(**changes: Any) -> Order:
    values: dict[str, Any] = {
        "id": f"ord_{uuid.uuid4().hex}",
        "user_id": f"u-{uuid.uuid4().hex[:8]}",
        "status": OrderStatus.PAID,
        "lines": (Line("p1", "Mug <large>", 2, 50000, "INR"),),
        "currency": "INR",
        "shipping_address": {"name": "Asha", "line1": "1 Road", "city": "Pune", "country": "IN"},
        "payment_method": "pm_card_ok",
        "request_hash": "h",
        "payment_id": "pay_1",
        "created_at": NOW,
        "updated_at": NOW,
    }
    values.update(changes)
    return Order(**values)


# --- the signature ----------------------------------------------------------------------------------


class Captured(Exception):
    def __init__(self, request: Any) -> None:
        super().__init__("captured")
        self.request = request


def boto3_request(endpoint: str | None, token: str | None, call: Callable[[Any], Any]) -> Any:
    """The request a boto3 client would send for `call`, signed by botocore (S3SigV4Auth), not sent.

    Checksums only when required (so it signs the same headers ours does), payload signing on (over
    https botocore would otherwise leave an unchecksummed body unsigned too: it signs; stated here so
    the comparison does not depend on that default)."""
    client = boto3.client(
        "s3",
        region_name="eu-west-1",
        endpoint_url=endpoint,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        aws_session_token=token,
        config=Config(
            request_checksum_calculation="when_required",
            s3={"addressing_style": "path" if endpoint else "auto", "payload_signing_enabled": True},
        ),
    )

    def capture(request: Any, **_: Any) -> None:
        raise Captured(request)

    client.meta.events.register("before-send.s3", capture)
    with pytest.raises(Captured) as captured:
        call(client)
    return captured.value.request


async def our_request(endpoint: str | None, token: str | None, call: Callable[[S3], Any]) -> httpx.Request:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"etag": '"x"'})

    s3 = S3(
        endpoint=endpoint,
        region="eu-west-1",
        credentials=lambda: Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token),
        transport=httpx.MockTransport(record),
        clock=NOW.timestamp,
    )
    async with aclosing(s3):
        await call(s3)
    (request,) = seen
    return request


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:5000", "https://localhost:4566", None])
@pytest.mark.parametrize("token", [None, "SESSION-TOKEN"])
@pytest.mark.parametrize("operation", ["PutObject", "HeadObject"])
async def test_a_request_is_addressed_and_signed_byte_for_byte_as_boto3_does(
    endpoint: str | None, token: str | None, operation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Path-style on a custom endpoint, virtual-hosted on AWS; the awkward key encoded once."""
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: NOW.replace(tzinfo=None))
    body = render_invoice(an_order()).encode()
    if operation == "PutObject":
        reference = boto3_request(
            endpoint,
            token,
            lambda c: c.put_object(
                Bucket="order-docs", Key=AWKWARD_KEY, Body=body, ContentType="text/html; charset=utf-8"
            ),
        )
        ours = await our_request(
            endpoint,
            token,
            lambda s3: s3.put_object("order-docs", AWKWARD_KEY, body, content_type="text/html; charset=utf-8"),
        )
    else:
        reference = boto3_request(endpoint, token, lambda c: c.head_object(Bucket="order-docs", Key=AWKWARD_KEY))
        ours = await our_request(endpoint, token, lambda s3: s3.head_object("order-docs", AWKWARD_KEY))

    assert str(ours.url) == reference.url
    expected = {name.lower(): value for name, value in reference.headers.items()}
    assert {"authorization", "x-amz-date", "x-amz-content-sha256"} <= set(expected)
    for name in ("authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token", "content-type"):
        value = expected.get(name)
        assert ours.headers.get(name) == (value.decode() if isinstance(value, bytes) else value), name
    assert ours.headers["host"] == httpx.URL(reference.url).netloc.decode()
    assert ours.content == (body if operation == "PutObject" else b"")


def test_a_bucket_name_with_dots_is_addressed_path_style_on_aws() -> None:
    s3 = S3(region="eu-west-1", credentials=lambda: None)
    dotted, plain = s3._address("docs.example.com"), s3._address("order-docs")
    assert (dotted.host, dotted.prefix) == ("s3.eu-west-1.amazonaws.com", "/docs.example.com/")
    assert (plain.host, plain.prefix) == ("order-docs.s3.eu-west-1.amazonaws.com", "/")


# --- on moto -------------------------------------------------------------------------------------------


@pytest.fixture
def bucket(settings: Settings) -> str:
    return settings.order_documents_bucket


def boto3_s3(settings: Settings) -> Any:
    return boto3.client("s3", endpoint_url=settings.aws_endpoint_url, region_name=settings.aws_region)


async def test_an_object_put_is_there_with_its_body_type_and_etag(settings: Settings, bucket: str) -> None:
    body = b"<html>" + "ünïcode".encode() + b"</html>"
    async with aclosing(s3_for(settings)) as s3:
        assert await s3.head_object(bucket, AWKWARD_KEY + "-absent") is None
        etag = await s3.put_object(bucket, AWKWARD_KEY, body, content_type="text/html; charset=utf-8")
        head = await s3.head_object(bucket, AWKWARD_KEY)
    stored = boto3_s3(settings).get_object(Bucket=bucket, Key=AWKWARD_KEY)
    assert stored["Body"].read() == body
    assert stored["ContentType"] == "text/html; charset=utf-8"
    assert head is not None and head["etag"] == etag == stored["ETag"]
    assert head["content-length"] == str(len(body))


async def test_a_refusal_names_s3s_code_and_is_not_retried(settings: Settings) -> None:
    async with aclosing(s3_for(settings, sleep=no_sleep)) as s3:
        with pytest.raises(S3Error) as refused:
            await s3.put_object(f"no-such-bucket-{uuid.uuid4().hex[:8]}", "k", b"x")
    assert refused.value.code == "NoSuchBucket" and refused.value.status == 404
    assert refused.value.message
    assert not isinstance(refused.value, DependencyUnavailable)


async def test_each_call_counts_once_as_s3(settings: Settings, bucket: str) -> None:
    put, head = calls("PutObject"), calls("HeadObject")
    async with aclosing(s3_for(settings)) as s3:
        await s3.put_object(bucket, "counted", b"x")
        await s3.head_object(bucket, "counted")
        await s3.head_object(bucket, "counted-absent")
    assert (calls("PutObject") - put, calls("HeadObject") - head) == (1, 2)


# --- failures ----------------------------------------------------------------------------------------


def answering(status: int, body: bytes, seen: list[httpx.Request]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, content=body, headers={"content-type": "application/xml"})

    return httpx.MockTransport(answer)


def error_xml(code: str, message: str) -> bytes:
    return f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()


def a_client(transport: httpx.AsyncBaseTransport, **options: Any) -> S3:
    return S3(
        endpoint="http://127.0.0.1:9",
        region="eu-west-1",
        credentials=lambda: Credentials("AKID", "SECRET"),
        transport=transport,
        sleep=no_sleep,
        **options,
    )


async def test_a_forbidden_put_raises_s3s_error_at_once() -> None:
    seen: list[httpx.Request] = []
    async with aclosing(a_client(answering(403, error_xml("AccessDenied", "Access Denied"), seen))) as s3:
        with pytest.raises(S3Error, match="AccessDenied: Access Denied") as refused:
            await s3.put_object("b", "k", b"x")
    assert refused.value.status == 403 and len(seen) == 1
    assert refused.value.response["Error"] == {"Code": "AccessDenied", "Message": "Access Denied"}


async def test_a_refused_head_has_no_body_and_is_named_by_its_status() -> None:
    async with aclosing(a_client(answering(403, b"", []))) as s3:
        with pytest.raises(S3Error) as refused:
            await s3.head_object("b", "k")
    assert (refused.value.code, refused.value.message) == ("403", "Forbidden")


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (503, error_xml("SlowDown", "Please reduce your request rate.")),
        (500, b""),
        (400, error_xml("RequestTimeout", "")),
    ],
)
async def test_throttling_and_server_errors_are_retried_then_unavailable(status: int, body: bytes) -> None:
    seen: list[httpx.Request] = []
    put = calls("PutObject")
    async with aclosing(a_client(answering(status, body, seen), max_attempts=3)) as s3:
        with pytest.raises(S3Unavailable) as unavailable:
            await s3.put_object("b", "k", b"x")
    assert len(seen) == 3
    assert calls("PutObject") - put == 1, "a call counts once, its retries included"
    assert isinstance(unavailable.value, DependencyUnavailable)


async def test_a_retried_put_that_then_succeeds_returns() -> None:
    seen: list[int] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        seen.append(1)
        if len(seen) == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, headers={"etag": '"e"'})

    async with aclosing(a_client(httpx.MockTransport(flaky))) as s3:
        assert await s3.put_object("b", "k", b"x") == '"e"'
    assert len(seen) == 2


async def test_nothing_listening_is_dependency_unavailable(settings: Settings) -> None:
    s3 = S3(
        endpoint="http://127.0.0.1:9",
        region="eu-west-1",
        credentials=lambda: Credentials("AKID", "SECRET"),
        sleep=no_sleep,
        deadline_seconds=2.0,
    )
    invoices = S3Invoices(s3, bucket="b", presigner=boto3_s3(settings))
    async with aclosing(s3):
        with pytest.raises(DependencyUnavailable) as unavailable:
            await invoices.ensure(an_order())
        with pytest.raises(S3Unavailable):
            await invoices.write(an_order())
    assert isinstance(unavailable.value, S3Unavailable) and unavailable.value.code == "ConnectionError"


async def test_no_credentials_is_dependency_unavailable() -> None:
    async with aclosing(S3(endpoint="http://127.0.0.1:9", region="eu-west-1", credentials=lambda: None)) as s3:
        with pytest.raises(S3Unavailable) as unavailable:
            await s3.head_object("b", "k")
    assert unavailable.value.code == "NoCredentials"


# --- tracing -----------------------------------------------------------------------------------------


@pytest.fixture
def span_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "spans.jsonl"
    tracing.reset_for_tests()
    tracing.configure_tracing("order", Settings(tracing_enabled=True, trace_file=str(path)))
    yield path
    tracing.reset_for_tests()


async def test_a_call_inside_a_trace_makes_a_client_span_as_a_boto3_call_does(span_file: Path) -> None:
    async with aclosing(a_client(answering(200, b"", []))) as s3:
        with tracing.span("GET /orders/{order_id}/invoice", root=True):
            await s3.put_object("b", "k", b"x")
        await s3.put_object("b", "k", b"x")  # outside a trace: no span
    tracing.flush()
    spans = [json.loads(line) for line in span_file.read_text().splitlines()]
    (put,) = [s for s in spans if s["name"] != "GET /orders/{order_id}/invoice"]
    assert put["name"] == "s3.PutObject" and put["kind"] == "client"
    assert put["attributes"] == {"rpc.system": "aws-api", "rpc.service": "s3", "rpc.method": "PutObject"}


# --- the Invoices port's contract ----------------------------------------------------------------------


class CountingS3(S3):
    puts: int = 0

    async def put_object(self, bucket: str, key: str, body: bytes, *, content_type: str = "") -> str:
        self.puts += 1
        return await super().put_object(bucket, key, body, content_type=content_type)


@pytest.fixture(params=["memory", "moto"])
async def invoices(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Invoices]:
    if request.param == "memory":
        yield InMemoryInvoices()
        return
    s3 = s3_for(settings)
    s3.__class__ = CountingS3
    yield S3Invoices(s3, bucket=settings.order_documents_bucket, presigner=boto3_s3(settings))
    await s3.aclose()


async def test_ensure_writes_the_invoice_once_and_then_finds_it(invoices: Invoices) -> None:
    order = an_order()
    key = await invoices.ensure(order)
    assert key == f"invoices/{order.user_id}/{order.id}.html"
    puts = invoices.s3.puts if isinstance(invoices, S3Invoices) else None
    assert await invoices.ensure(order) == key
    if isinstance(invoices, S3Invoices):
        assert invoices.s3.puts == puts, "found, not written again"
    assert await invoices.write(order) == key
    assert invoices.url_ttl_seconds == 900


async def test_the_link_serves_the_rendered_invoice(invoices: Invoices) -> None:
    order = an_order()
    url = await invoices.url(await invoices.write(order))
    if isinstance(invoices, InMemoryInvoices):
        assert invoices.documents[url.removeprefix("memory://")] == render_invoice(order)
        return
    document = httpx.get(url)
    assert document.status_code == 200
    assert document.text == render_invoice(order)
    assert document.headers["content-type"] == "text/html; charset=utf-8"
    assert "Mug &lt;large&gt;" in document.text


# --- wiring ------------------------------------------------------------------------------------------


async def test_the_order_runtime_writes_invoices_through_the_async_client_and_closes_it(settings: Settings) -> None:
    orders, carts = InMemoryOrders(), InMemoryCarts()
    runtime = build_runtime(
        settings,
        catalog=InMemoryCatalog({}),
        payments=InMemoryPayments(),
        orders=orders,
        carts=carts,
        reader=InMemoryCheckoutReader(orders, carts),
        publisher=InMemoryEventPublisher(),
    )
    invoices = runtime.checkout.invoices
    assert isinstance(invoices, S3Invoices) and isinstance(invoices.s3, S3)
    assert invoices.s3.aclose in runtime.closers
    order = an_order()
    assert await invoices.ensure(order) == S3Invoices.key(order)
    await runtime.stop()
    assert invoices.s3._transport.closed
