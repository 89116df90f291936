"""SQS on ElasticMQ, the full profile's SQS: every path cloudshop takes through SQS works there, on the
real server (`sqs_server`, started for the session), never on a stand-in.

The lean async client's sends, long polls and deletes, the relay's publisher and the
`payment-events` source run in `tests/core/test_sqs_client.py` on moto and on ElasticMQ alike; this
module keeps what is ElasticMQ's own: provisioning (queues, their visibility timeout, the redrive to
the dead-letter queue), a missing queue's code, boto3 (`cloudshop.aws.client`: provisioning, the
notification poller), a message received `maxReceiveCount` times ending in the dead-letter queue,
through the poller's partial-batch failures as through bare receives, and the server's restart.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

import pytest

from cloudshop import aws
from cloudshop.bench import order_events_queue_depth
from cloudshop.errors import DependencyUnavailable
from cloudshop.estate import ESTATE
from cloudshop.local.servers import ElasticMqServer
from cloudshop.observability import Metrics
from cloudshop.provision import provision
from cloudshop.settings import Settings
from cloudshop.sqs import SqsError, sqs_for
from functions.notification.poller import build_poller

pytestmark = pytest.mark.anyio

PREFIX = "emq-"
EXPORTED = Metrics("sqs-elasticmq-test").registry
ENTRIES = [{"Id": str(n), "MessageBody": json.dumps({"event_id": f"e{n}", "n": n})} for n in range(10)]
ORDER_EVENTS = next(queue for queue in ESTATE.queues if queue.name == "order-events")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """The estate of this module, its queues on ElasticMQ (its tables and buckets on moto)."""
    return make_settings(prefix=PREFIX, sqs="elasticmq")


@pytest.fixture
def queue(settings: Settings) -> Any:
    """A fresh queue of the test's own on ElasticMQ."""
    sqs = aws.client("sqs", settings)
    url: str = sqs.create_queue(QueueName=f"emq-test-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    yield url
    sqs.delete_queue(QueueUrl=url)


def calls(operation: str) -> float:
    return EXPORTED.get_sample_value("cloudshop_backend_calls_total", {"kind": "sqs", "operation": operation}) or 0.0


def drain(settings: Settings, url: str) -> list[str]:
    """Every body waiting in the queue, read (and deleted) with boto3."""
    sqs, bodies = aws.client("sqs", settings), []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages"):
        bodies += [m["Body"] for m in messages]
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)]
        )
    return bodies


def attributes(settings: Settings, url: str) -> dict[str, str]:
    answer: dict[str, str] = aws.client("sqs", settings).get_queue_attributes(QueueUrl=url, AttributeNames=["All"])[
        "Attributes"
    ]
    return answer


def dead_letter_url(settings: Settings, queue_name: str) -> str:
    url: str = aws.client("sqs", settings).get_queue_url(QueueName=settings.resource_prefix + queue_name)["QueueUrl"]
    return url


# --- the server and provisioning ------------------------------------------------------------------------


def test_the_settings_send_sqs_to_elasticmq_and_everything_else_to_moto(
    settings: Settings, sqs_server: ElasticMqServer, moto_server: Any
) -> None:
    assert settings.endpoint_for("sqs") == sqs_server.endpoint_url
    assert settings.endpoint_for("s3") == settings.endpoint_for("ses") == moto_server.endpoint_url
    # Queue URLs name the server's own address (node-address), so a URL handed out can be called.
    assert settings.order_events_queue_url == f"{sqs_server.endpoint_url}/000000000000/{PREFIX}order-events"
    assert settings.payment_events_queue_url.startswith(sqs_server.endpoint_url + "/")


def test_provisioning_sets_the_visibility_timeout_and_the_redrive_to_the_dead_letter_queue(settings: Settings) -> None:
    for queue in ESTATE.queues:
        url = settings.endpoint_for("sqs") + f"/000000000000/{PREFIX}{queue.name}"  # type: ignore[operator]
        dlq_arn = attributes(settings, dead_letter_url(settings, queue.dead_letter_queue))["QueueArn"]
        queue_attributes = attributes(settings, url)
        redrive = json.loads(queue_attributes["RedrivePolicy"])

        assert queue_attributes["VisibilityTimeout"] == str(queue.visibility_timeout_seconds)
        assert (
            redrive["deadLetterTargetArn"]
            == dlq_arn
            == f"arn:aws:sqs:{settings.aws_region}:000000000000:{PREFIX}{queue.dead_letter_queue}"
        )
        assert int(redrive["maxReceiveCount"]) == queue.max_receive_count


def test_provisioning_again_finds_the_same_queues(settings: Settings) -> None:
    again = provision(settings)

    assert again["order-events"] == settings.order_events_queue_url
    assert again["payment-events"] == settings.payment_events_queue_url


def test_elasticmq_takes_a_retention_period_but_does_not_keep_it(settings: Settings) -> None:
    """What the README and `cloudshop.provision` say: the DLQs' 14 days are accepted, not applied
    (messages stay until deleted). Should ElasticMQ start keeping it, this fails and the docs change."""
    dlq = attributes(settings, dead_letter_url(settings, ORDER_EVENTS.dead_letter_queue))

    assert "MessageRetentionPeriod" not in dlq


def test_a_missing_queue_is_an_error_not_created_by_a_send(settings: Settings) -> None:
    missing = f"{settings.endpoint_for('sqs')}/000000000000/emq-missing-{uuid.uuid4().hex[:8]}"
    sqs = aws.client("sqs", settings)

    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.send_message(QueueUrl=missing, MessageBody="x")
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.get_queue_url(QueueName=missing.rsplit("/", 1)[1])


# --- the lean async client (the order and payment services) ---------------------------------------------


async def test_a_missing_queue_is_refused_once_with_the_code_boto3_reports(settings: Settings) -> None:
    missing = f"{settings.endpoint_for('sqs')}/000000000000/emq-missing-{uuid.uuid4().hex[:8]}"
    sent = calls("SendMessageBatch")
    async with aclosing(sqs_for(settings)) as sqs:
        with pytest.raises(SqsError) as refused:
            await sqs.send_message_batch(missing, ENTRIES[:1])
    lean_calls = calls("SendMessageBatch") - sent
    with pytest.raises(aws.client("sqs", settings).exceptions.QueueDoesNotExist) as boto3_refused:
        aws.client("sqs", settings).send_message_batch(QueueUrl=missing, Entries=ENTRIES[:1])

    # ElasticMQ answers the JSON error without AWS's `x-amzn-query-error` header, so both clients
    # report the JSON error's own code (AWS: `AWS.SimpleQueueService.NonExistentQueue`).
    assert refused.value.code == boto3_refused.value.response["Error"]["Code"] == "QueueDoesNotExist"
    assert refused.value.status == 400
    assert not isinstance(refused.value, DependencyUnavailable)
    assert lean_calls == 1, "a refusal is not retried"


# --- boto3, the redrive and the notification poller -----------------------------------------------------


def test_boto3_receives_the_attributes_the_notification_poller_hands_to_lambda(settings: Settings, queue: str) -> None:
    sqs = aws.client("sqs", settings)
    sqs.send_message(
        QueueUrl=queue,
        MessageBody='{"event_id": "e1"}',
        MessageAttributes={"event_type": {"DataType": "String", "StringValue": "order.paid"}},
    )

    [message] = sqs.receive_message(
        QueueUrl=queue, MaxNumberOfMessages=10, AttributeNames=["All"], MessageAttributeNames=["All"]
    )["Messages"]

    assert message["MD5OfBody"] == hashlib.md5(b'{"event_id": "e1"}').hexdigest()
    assert message["Attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "ApproximateFirstReceiveTimestamp"} <= set(message["Attributes"])
    assert message["MessageAttributes"]["event_type"] == {"DataType": "String", "StringValue": "order.paid"}
    assert order_events_queue_depth(settings.model_copy(update={"order_events_queue_url": queue})) == 1
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])


def test_a_message_received_max_receive_count_times_moves_to_the_dead_letter_queue(
    make_settings: Callable[..., Settings],
) -> None:
    # An estate of its own: this test empties and inspects the provisioned queues.
    settings = make_settings(prefix="emq-redrive-", sqs="elasticmq")
    sqs = aws.client("sqs", settings)
    dlq = dead_letter_url(settings, ORDER_EVENTS.dead_letter_queue)
    sqs.send_message(QueueUrl=settings.order_events_queue_url, MessageBody="poison")

    received = []
    for _ in range(ORDER_EVENTS.max_receive_count + 1):
        # Visible again at once (VisibilityTimeout 0), as if each consumer had failed it.
        answer = sqs.receive_message(QueueUrl=settings.order_events_queue_url, VisibilityTimeout=0)
        received.append(len(answer.get("Messages", [])))

    assert received == [1] * ORDER_EVENTS.max_receive_count + [0], "the receive after the last one moves it"
    assert drain(settings, dlq) == ["poison"]
    assert drain(settings, settings.order_events_queue_url) == []


def test_the_poller_delivers_a_batch_and_its_poison_message_ends_in_the_dead_letter_queue(
    make_settings: Callable[..., Settings],
) -> None:
    """DESIGN 6.7 on ElasticMQ: the handler reports the poison message as a batch item failure, the rest
    of the batch is deleted; after maxReceiveCount deliveries the poison is in the DLQ."""
    settings = make_settings(prefix="emq-poller-", sqs="elasticmq")
    sqs = aws.client("sqs", settings)
    bodies = [json.dumps({"event_id": f"e{n}"}) for n in range(5)] + ["poison"]
    sqs.send_message_batch(
        QueueUrl=settings.order_events_queue_url,
        Entries=[{"Id": str(n), "MessageBody": body} for n, body in enumerate(bodies)],
    )
    handled: list[str] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        failures = [{"itemIdentifier": r["messageId"]} for r in event["Records"] if r["body"] == "poison"]
        handled.extend(r["body"] for r in event["Records"] if r["body"] != "poison")
        assert all(r["eventSourceARN"].endswith(f":{settings.resource_prefix}order-events") for r in event["Records"])
        return {"batchItemFailures": failures}

    poller = build_poller(settings, handler=handler, wait_seconds=0, retry_delay_seconds=0)
    results = [poller.poll_once() for _ in range(ORDER_EVENTS.max_receive_count + 2)]

    assert sorted(handled) == sorted(bodies[:-1])
    assert [r.failed for r in results if r.received] == [1] * ORDER_EVENTS.max_receive_count
    assert drain(settings, dead_letter_url(settings, ORDER_EVENTS.dead_letter_queue)) == ["poison"]
    assert drain(settings, settings.order_events_queue_url) == []


# --- the server's lifecycle -----------------------------------------------------------------------------


def test_elasticmq_starts_quickly_stops_and_starts_again_on_its_port(tmp_path: Any) -> None:
    server = ElasticMqServer(tmp_path, region="eu-central-1")
    with server:
        first_port = server.port
        assert server.startup_seconds is not None and server.startup_seconds < 30
        settings = Settings(sqs_endpoint_url=server.endpoint_url, aws_region="eu-central-1")
        url = aws.client("sqs", settings).create_queue(QueueName="lifecycle")["QueueUrl"]
        arn = attributes(settings, url)["QueueArn"]
    assert not server.running
    assert arn == "arn:aws:sqs:eu-central-1:000000000000:lifecycle"

    with server:
        # In memory: a restarted server starts with no queues, and provisioning creates them again.
        assert server.port == first_port
        assert aws.client("sqs", settings).list_queues().get("QueueUrls", []) == []
