"""The async SQS client (`cloudshop.sqs`): on moto, read back with boto3; signed as botocore signs;
retried and refused as boto3 would be; and the order and payment services' SQS adapters on it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import aclosing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from cloudshop import tracing
from cloudshop.bench import order_events_queue_depth
from cloudshop.errors import DependencyUnavailable
from cloudshop.observability import Metrics
from cloudshop.settings import Settings
from cloudshop.sqs import SqsClient, SqsError, SqsUnavailable, sqs_for
from cloudshop.stream import PublishError
from eks_services.order.bootstrap import build_runtime
from eks_services.order.messaging import FanoutPublisher, PublishFailed, SqsEventPublisher, SqsPaymentEventSource
from eks_services.order.model import OutboxEvent
from eks_services.payment.ports import OutboxEvent as PaymentOutboxEvent
from eks_services.payment.publisher import SqsEventPublisher as PaymentSqsEventPublisher
from tests.services.order_fakes import (
    InMemoryCarts,
    InMemoryCatalog,
    InMemoryCheckoutReader,
    InMemoryOrders,
    InMemoryPayments,
)

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC)
EXPORTED = Metrics("sqs-test").registry
ENTRIES = [{"Id": str(n), "MessageBody": json.dumps({"event_id": f"e{n}", "n": n})} for n in range(10)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def no_sleep(_: float) -> None:
    return None


def calls(operation: str) -> float:
    return EXPORTED.get_sample_value("cloudshop_backend_calls_total", {"kind": "sqs", "operation": operation}) or 0.0


def boto3_sqs(settings: Settings) -> Any:
    return boto3.client("sqs", endpoint_url=settings.sqs_endpoint, region_name=settings.aws_region)


@pytest.fixture(params=["moto", "elasticmq"])
def on_server(request: pytest.FixtureRequest, settings: Settings, make_settings: Callable[..., Settings]) -> Settings:
    """The settings of an estate whose SQS is moto (the embedded profile's) or ElasticMQ (the full
    profile's): the tests of the client against a server run on both."""
    return settings if request.param == "moto" else make_settings(prefix="emq-", sqs="elasticmq")


@pytest.fixture
def queue(on_server: Settings) -> Iterator[str]:
    """A fresh queue of the test's own, on the server `on_server` names."""
    boto = boto3_sqs(on_server)
    url: str = boto.create_queue(QueueName=f"sqs-client-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    yield url
    boto.delete_queue(QueueUrl=url)


def drain(settings: Settings, url: str) -> list[str]:
    """Every body waiting in the queue, read (and deleted) with boto3."""
    boto, bodies = boto3_sqs(settings), []
    while messages := boto.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages"):
        bodies += [m["Body"] for m in messages]
        boto.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)]
        )
    return bodies


def waiting(settings: Settings, url: str) -> int:
    """Messages waiting or in flight, read as the bench reads the order-events queue's depth."""
    return order_events_queue_depth(settings.model_copy(update={"order_events_queue_url": url}))


# --- on a server: moto and ElasticMQ ---------------------------------------------------------------


async def test_a_batch_sent_reads_back_with_boto3(on_server: Settings, queue: str) -> None:
    sent = calls("SendMessageBatch")
    async with aclosing(sqs_for(on_server)) as sqs:
        answer = await sqs.send_message_batch(queue, ENTRIES)
    assert sorted(s["Id"] for s in answer["Successful"]) == sorted(e["Id"] for e in ENTRIES)
    assert not answer.get("Failed")
    md5 = {e["Id"]: hashlib.md5(e["MessageBody"].encode()).hexdigest() for e in ENTRIES}
    assert all(s["MD5OfMessageBody"] == md5[s["Id"]] for s in answer["Successful"])
    assert sorted(drain(on_server, queue)) == sorted(e["MessageBody"] for e in ENTRIES)
    assert calls("SendMessageBatch") - sent == 1


async def test_a_long_poll_returns_what_is_sent_while_it_waits(on_server: Settings, queue: str) -> None:
    async with aclosing(sqs_for(on_server)) as sqs:
        started = time.monotonic()
        poll = asyncio.create_task(sqs.receive_message(queue, max_messages=10, wait_seconds=10))
        await asyncio.sleep(0.5)
        await sqs.send_message_batch(queue, ENTRIES[:1])
        answer = await poll
    assert [m["Body"] for m in answer["Messages"]] == [ENTRIES[0]["MessageBody"]]
    assert time.monotonic() - started < 8, "answered when the message came, not at the end of the wait"


async def test_an_empty_long_poll_outwaits_the_read_timeout_and_answers_nothing(
    on_server: Settings, queue: str
) -> None:
    """Each attempt's read timeout is the wait plus a margin, not the client's (0.5 s here)."""
    async with aclosing(sqs_for(on_server, timeout=httpx.Timeout(0.5))) as sqs:
        started = time.monotonic()
        answer = await sqs.receive_message(queue, max_messages=10, wait_seconds=2)
    assert not answer.get("Messages")
    assert time.monotonic() - started >= 1.9


async def test_delete_removes_the_received_messages(on_server: Settings, queue: str) -> None:
    async with aclosing(sqs_for(on_server)) as sqs:
        await sqs.send_message_batch(queue, ENTRIES[:3])
        answer = await sqs.receive_message(queue, max_messages=10, wait_seconds=1)
        received = answer["Messages"]
        assert len(received) == 3
        deleted = await sqs.delete_message_batch(
            queue, [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(received)]
        )
    assert len(deleted["Successful"]) == 3 and not deleted.get("Failed")
    assert waiting(on_server, queue) == 0


async def test_a_missing_queue_raises_the_code_boto3_reports_without_retrying(settings: Settings) -> None:
    missing = f"{settings.aws_endpoint_url}/123456789012/no-such-queue-{uuid.uuid4().hex[:8]}"
    sent = calls("SendMessageBatch")
    async with aclosing(sqs_for(settings)) as sqs:
        with pytest.raises(SqsError) as refused:
            await sqs.send_message_batch(missing, ENTRIES[:1])
    with pytest.raises(ClientError) as boto3_refused:
        boto3_sqs(settings).send_message_batch(QueueUrl=missing, Entries=ENTRIES[:1])

    assert refused.value.code == boto3_refused.value.response["Error"]["Code"]
    assert refused.value.code == "AWS.SimpleQueueService.NonExistentQueue"
    assert refused.value.error_type == "QueueDoesNotExist"
    assert refused.value.status == 400 and "does not exist" in str(refused.value)
    assert not isinstance(refused.value, DependencyUnavailable)
    assert calls("SendMessageBatch") - sent == 1


# --- the signature ---------------------------------------------------------------------------------


class Captured(Exception):
    def __init__(self, request: Any) -> None:
        super().__init__("captured")
        self.request = request


def boto3_request(endpoint: str, token: str | None, call: Callable[[Any], Any]) -> Any:
    """The request a boto3 client would send for `call`, signed by botocore, not sent."""
    client = boto3.client(
        "sqs",
        region_name="eu-west-1",
        endpoint_url=endpoint,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        aws_session_token=token,
    )

    def capture(request: Any, **_: Any) -> None:
        raise Captured(request)

    client.meta.events.register("before-send.sqs", capture)
    with pytest.raises(Captured) as captured:
        call(client)
    return captured.value.request


def signed_names(authorization: str) -> str:
    return authorization.split("SignedHeaders=", 1)[1].split(",", 1)[0]


@pytest.mark.parametrize("token", [None, "SESSION-TOKEN"])
@pytest.mark.parametrize("operation", ["SendMessageBatch", "ReceiveMessage"])
async def test_a_request_is_what_boto3_sends_signed_byte_for_byte_as_botocore_signs(
    token: str | None, operation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: NOW.replace(tzinfo=None))
    endpoint, url = "http://127.0.0.1:5000", "http://127.0.0.1:5000/123456789012/order-events"
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    sqs = SqsClient(
        endpoint=endpoint,
        region="eu-west-1",
        credentials=lambda: credentials,
        transport=httpx.MockTransport(record),
        clock=NOW.timestamp,
    )
    async with aclosing(sqs):
        if operation == "SendMessageBatch":
            await sqs.send_message_batch(url, ENTRIES)
            reference = boto3_request(endpoint, token, lambda c: c.send_message_batch(QueueUrl=url, Entries=ENTRIES))
        else:
            await sqs.receive_message(url, max_messages=10, wait_seconds=20)
            reference = boto3_request(
                endpoint,
                token,
                lambda c: c.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=20),
            )
    (ours,) = seen

    # What boto3 sends: the URL, the signed headers and their values, the same JSON.
    expected = {name.lower(): value for name, value in reference.headers.items()}
    assert str(ours.url) == reference.url
    assert signed_names(ours.headers["authorization"]) == signed_names(expected["authorization"].decode())
    for name in ("content-type", "x-amz-target", "x-amzn-query-mode", "x-amz-date", "x-amz-security-token"):
        value = expected.get(name)
        assert ours.headers.get(name) == (value.decode() if isinstance(value, bytes) else value), name
    assert json.loads(ours.content) == json.loads(reference.body)

    # Signed byte-for-byte as botocore's SigV4Auth signs those very bytes (our JSON is compact).
    again = AWSRequest(
        method="POST",
        url=reference.url,
        data=ours.content,
        headers={name: ours.headers[name] for name in ("content-type", "x-amz-target", "x-amzn-query-mode")},
    )
    SigV4Auth(credentials, "sqs", "eu-west-1").add_auth(again)
    assert ours.headers["authorization"] == again.headers["Authorization"]


# --- failures ----------------------------------------------------------------------------------------


def a_client(handler: Callable[[httpx.Request], httpx.Response], **options: Any) -> SqsClient:
    return SqsClient(
        endpoint="http://127.0.0.1:9",
        region="eu-west-1",
        credentials=lambda: Credentials("AKID", "SECRET"),
        transport=httpx.MockTransport(handler),
        sleep=no_sleep,
        **options,
    )


def answers(*responses: httpx.Response) -> tuple[Callable[[httpx.Request], httpx.Response], list[httpx.Request]]:
    """A handler giving `responses` in turn (the last one from then on), and the requests it saw."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return responses[min(len(seen), len(responses)) - 1]

    return handler, seen


THROTTLED = httpx.Response(
    400,
    json={"__type": "com.amazonaws.sqs#RequestThrottled", "message": "slow down"},
    headers={"x-amzn-query-error": "RequestThrottled;Sender"},
)


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(500, json={"__type": "com.amazonaws.sqs#InternalError", "message": "oops"}),
        httpx.Response(503, content=b"<html>Service Unavailable</html>"),
        THROTTLED,
    ],
)
async def test_5xx_and_throttling_are_retried_and_a_later_success_returns(failure: httpx.Response) -> None:
    handler, seen = answers(failure, httpx.Response(200, json={"Successful": [{"Id": "0"}], "Failed": []}))
    sent = calls("SendMessageBatch")
    async with aclosing(a_client(handler)) as sqs:
        answer = await sqs.send_message_batch("http://q", ENTRIES[:1])
    assert answer["Successful"] == [{"Id": "0"}]
    assert len(seen) == 2
    assert calls("SendMessageBatch") - sent == 1, "a call counts once, its retries included"


async def test_a_lasting_outage_is_unavailable_after_bounded_attempts() -> None:
    handler, seen = answers(httpx.Response(503, content=b""))
    async with aclosing(a_client(handler)) as sqs:
        with pytest.raises(SqsUnavailable) as unavailable:
            await sqs.send_message_batch("http://q", ENTRIES[:1])
    assert len(seen) == 3
    assert unavailable.value.code == "HTTP503" and unavailable.value.status == 503


async def test_a_refusal_is_not_retried() -> None:
    refusal = httpx.Response(
        400,
        json={"__type": "com.amazonaws.sqs#EmptyBatchRequest", "message": "no entries"},
        headers={"x-amzn-query-error": "AWS.SimpleQueueService.EmptyBatchRequest;Sender"},
    )
    handler, seen = answers(refusal)
    async with aclosing(a_client(handler)) as sqs:
        with pytest.raises(SqsError) as refused:
            await sqs.send_message_batch("http://q", [])
    assert str(refused.value) == "AWS.SimpleQueueService.EmptyBatchRequest: no entries"
    assert len(seen) == 1 and refused.value.error_type == "EmptyBatchRequest"


async def test_nothing_listening_is_dependency_unavailable(settings: Settings) -> None:
    sqs = SqsClient(
        endpoint="http://127.0.0.1:9",
        region="eu-west-1",
        credentials=lambda: Credentials("AKID", "SECRET"),
        sleep=no_sleep,
        deadline_seconds=2.0,
    )
    async with aclosing(sqs):
        with pytest.raises(SqsUnavailable) as unavailable:
            await sqs.receive_message("http://q", wait_seconds=0)
    assert isinstance(unavailable.value, DependencyUnavailable) and unavailable.value.code == "ConnectionError"


# --- tracing -----------------------------------------------------------------------------------------


@pytest.fixture
def span_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "spans.jsonl"
    tracing.reset_for_tests()
    tracing.configure_tracing("order", Settings(tracing_enabled=True, trace_file=str(path)))
    yield path
    tracing.reset_for_tests()


async def test_a_call_inside_a_trace_makes_a_client_span_as_a_boto3_call_does(span_file: Path) -> None:
    handler, _ = answers(httpx.Response(200, json={"Successful": [{"Id": "0"}], "Failed": []}))
    async with aclosing(a_client(handler)) as sqs:
        with tracing.span("outbox relay", root=True):
            await SqsEventPublisher(sqs, queue_url="http://q").publish(events(3))
        await sqs.send_message_batch("http://q", ENTRIES[:1])  # outside a trace: no span
    tracing.flush()
    spans = [json.loads(line) for line in span_file.read_text().splitlines()]
    relay = next(s for s in spans if s["name"] == "outbox relay")
    (send,) = [s for s in spans if s["name"] != "outbox relay"]
    assert send["name"] == "sqs.SendMessageBatch" and send["kind"] == "client"
    assert send["attributes"] == {"rpc.system": "aws-api", "rpc.service": "sqs", "rpc.method": "SendMessageBatch"}
    assert send["parent_id"] == relay["span_id"]


# --- the adapters on it ------------------------------------------------------------------------------


def events(count: int) -> list[OutboxEvent]:
    return [
        OutboxEvent(event_id=f"e{n}", order_id="ord_1", payload=json.dumps({"event_id": f"e{n}"})) for n in range(count)
    ]


async def test_the_order_events_publisher_sends_every_event_in_batches_of_ten(on_server: Settings, queue: str) -> None:
    sent = calls("SendMessageBatch")
    async with aclosing(sqs_for(on_server)) as sqs:
        await SqsEventPublisher(sqs, queue_url=queue).publish(events(23))
    assert sorted(drain(on_server, queue)) == sorted(e.payload for e in events(23))
    assert calls("SendMessageBatch") - sent == 3


async def test_a_refused_entry_fails_the_publish() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        entries = json.loads(request.content)["Entries"]
        failed = [{"Id": e["Id"], "SenderFault": False, "Code": "InternalError"} for e in entries[:1]]
        return httpx.Response(200, json={"Successful": [{"Id": e["Id"]} for e in entries[1:]], "Failed": failed})

    async with aclosing(a_client(handler)) as sqs:
        with pytest.raises(PublishFailed, match="SQS refused 3 of 23 events"):
            await SqsEventPublisher(sqs, queue_url="http://q").publish(events(23))
        with pytest.raises(PublishError, match="SQS refused 1 payment events"):
            await PaymentSqsEventPublisher(sqs, queue_url="http://q").publish(
                [PaymentOutboxEvent(event_id="e", payment_id="pay_1", payload="{}")]
            )


async def test_the_payment_events_source_receives_and_deletes(on_server: Settings, queue: str) -> None:
    async with aclosing(sqs_for(on_server)) as sqs:
        await sqs.send_message_batch(queue, ENTRIES[:3])
        source = SqsPaymentEventSource(sqs, queue_url=queue)
        received = await source.receive(max_messages=10, wait_seconds=1)
        assert sorted(m.body for m in received) == sorted(e["MessageBody"] for e in ENTRIES[:3])
        await source.delete([m.receipt for m in received])
        await source.delete([])
    assert waiting(on_server, queue) == 0


async def test_the_order_runtime_wires_one_sqs_client_and_closes_it(settings: Settings) -> None:
    orders, carts = InMemoryOrders(), InMemoryCarts()
    runtime = build_runtime(
        settings,
        catalog=InMemoryCatalog({}),
        payments=InMemoryPayments(),
        orders=orders,
        carts=carts,
        reader=InMemoryCheckoutReader(orders, carts),
    )
    publisher = runtime.relay.publisher
    assert isinstance(publisher, FanoutPublisher)
    (sink,) = [s for s in publisher.sinks if isinstance(s, SqsEventPublisher)]
    consumer = runtime.consumer
    assert consumer is not None and isinstance(consumer.source, SqsPaymentEventSource)
    assert consumer.source.sqs is sink.sqs and isinstance(sink.sqs, SqsClient)
    assert sink.sqs.aclose in runtime.closers
    await runtime.stop()
    assert sink.sqs._endpoint.transport.closed  # type: ignore[attr-defined]
