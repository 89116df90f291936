"""The notification Lambda: SQS batches of order events (partial failures, once per event_id, the
order email through SES) and HTTP API v2 events, invoked the way Lambda invokes it; then the local
poller against the real queue, where a poison message ends in the dead-letter queue.

Events come from the JSON files under `tests/events/`, with fresh ids per test so tests sharing the
moto server never see each other's events.
"""

from __future__ import annotations

import json
import sys
import textwrap
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cloudshop import aws
from cloudshop.auth import TokenIssuer
from cloudshop.provision import provision_mail
from cloudshop.settings import Settings
from functions.notification.bootstrap import build_service
from functions.notification.poller import build_poller, poll_forever
from tests.core.test_lambda_cold_start import in_a_function, lambda_context_source
from tests.services.test_lambda_handlers import Context, load_handler, settings_environment

EVENTS = Path(__file__).parent.parent / "events"
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@pytest.fixture
def notification_settings(make_settings: Callable[..., Settings]) -> Settings:
    settings = make_settings()
    provision_mail(settings)
    return settings


@pytest.fixture
def handler(notification_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Handler:
    return load_handler("functions.notification.handler", notification_settings, monkeypatch)


class Customer:
    """Fresh ids for one test: the events' user, order and email, and every event id renamed."""

    def __init__(self) -> None:
        self.user_id = f"user-{uuid.uuid4().hex[:12]}"
        self.order_id = str(uuid.uuid4())
        self.email = f"{self.user_id}@example.com"
        self._event_ids: dict[str, str] = {}

    def event_id(self, original: str) -> str:
        return self._event_ids.setdefault(original, str(uuid.uuid4()))

    def body(self, body: str) -> str:
        try:
            event = json.loads(body)
        except ValueError:
            return body
        event["event_id"] = self.event_id(event["event_id"])
        data = event["data"]
        data["order_id"], data["user_id"] = self.order_id, self.user_id
        if data.get("customer_email"):
            data["customer_email"] = self.email
        return json.dumps(event)

    def batch(self, name: str) -> dict[str, Any]:
        event = json.loads((EVENTS / name).read_text())
        for record in event["Records"]:
            record["body"] = self.body(record["body"])
        return event


def sent_emails(settings: Settings, to: str) -> list[dict[str, Any]]:
    """What SES sent to `to`, read from moto's model dump (moto records mail instead of sending it)."""
    with urllib.request.urlopen(f"{settings.aws_endpoint_url}/moto-api/data.json", timeout=10) as answer:
        messages = json.load(answer)["ses"]["Message"]
    return [m for m in messages if to in m["destinations"].get("ToAddresses", [])]


def stored(settings: Settings, user_id: str) -> list[dict[str, str]]:
    items, _ = build_service(settings).list_for(user_id, limit=100, cursor=None)
    return [n.as_dict() for n in items]


# --- SQS batches through the Lambda entry point --------------------------------------------------------
def test_a_batch_of_order_events_is_stored_and_the_paid_order_emailed(
    handler: Handler, notification_settings: Settings
) -> None:
    customer = Customer()

    answer = handler(customer.batch("sqs_order_events.json"), Context())

    assert answer == {"batchItemFailures": []}
    notifications = stored(notification_settings, customer.user_id)
    assert [n["event_type"] for n in notifications] == ["order.paid", "order.created"]  # newest first
    assert all(n["order_id"] == customer.order_id for n in notifications)
    assert "INR 4,498.00" in notifications[0]["message"]
    [email] = sent_emails(notification_settings, customer.email)
    assert email["source"] == notification_settings.ses_sender
    assert "confirmed" in email["subject"] and "2 x Ceramic Mug Set" in email["body"]


def test_a_new_sandbox_stores_and_emails_its_first_batch_without_building_a_botocore_client(
    notification_settings: Settings, tmp_path: Path
) -> None:
    # Building botocore's SES client (its service model and endpoint rules) cost each queue sandbox
    # 60-95 ms of its first batch here, and each email 1.5 ms of CPU: the email goes out through
    # cloudshop.aws_sync's SES client, and every other call of a batch through its DynamoDB client.
    customer = Customer()
    probe = lambda_context_source("notification") + textwrap.dedent(
        """
        import gc, json, sys
        from functions.notification.handler import handler

        answer = handler(json.loads(sys.argv[1]), Context())
        # (Powertools' idempotency package imports boto3, and with it botocore.client, but makes no client.)
        base = getattr(sys.modules.get("botocore.client"), "BaseClient", ())
        clients = sorted(type(o).__name__ for o in gc.get_objects() if base and isinstance(o, base))
        print(json.dumps({"answer": answer, "botocore_clients": clients}))
        """
    )
    environment = settings_environment(notification_settings) | {
        "TRACE_FILE": str(tmp_path / "spans.jsonl"),
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
    }

    outcome = json.loads(
        in_a_function("notification", probe, json.dumps(customer.batch("sqs_order_events.json")), **environment)
    )

    assert outcome == {"answer": {"batchItemFailures": []}, "botocore_clients": []}, outcome
    assert [n["event_type"] for n in stored(notification_settings, customer.user_id)] == ["order.paid", "order.created"]
    [email] = sent_emails(notification_settings, customer.email)
    assert email["source"] == notification_settings.ses_sender
    assert "2 x Ceramic Mug Set" in email["body"]


def test_an_event_delivered_twice_is_handled_once(handler: Handler, notification_settings: Settings) -> None:
    customer = Customer()
    batch = customer.batch("sqs_order_events.json")
    paid = batch["Records"][1]
    twice_in_one_batch = {"Records": [*batch["Records"], dict(paid, messageId="msg-paid-again")]}

    assert handler(twice_in_one_batch, Context()) == {"batchItemFailures": []}
    assert handler(batch, Context()) == {"batchItemFailures": []}

    assert len(stored(notification_settings, customer.user_id)) == 2
    assert len(sent_emails(notification_settings, customer.email)) == 1


def test_a_poison_message_fails_alone_and_the_rest_of_the_batch_goes_through(
    handler: Handler, notification_settings: Settings
) -> None:
    customer = Customer()

    answer = handler(customer.batch("sqs_batch_with_poison.json"), Context())

    assert answer == {"batchItemFailures": [{"itemIdentifier": "msg-poison"}]}
    assert len(stored(notification_settings, customer.user_id)) == 2
    assert len(sent_emails(notification_settings, customer.email)) == 1


def test_a_batch_of_only_poison_reports_every_message(handler: Handler) -> None:
    batch = Customer().batch("sqs_batch_with_poison.json")
    batch["Records"] = [dict(r, messageId=f"bad-{i}", body="not json") for i, r in enumerate(batch["Records"])]

    answer = handler(batch, Context())

    assert answer == {"batchItemFailures": [{"itemIdentifier": f"bad-{i}"} for i in range(3)]}


# --- HTTP through the Lambda entry point ------------------------------------------------------------
def test_an_http_api_v2_event_lists_the_callers_own_notifications(
    handler: Handler, notification_settings: Settings, key_pair: tuple[str, str]
) -> None:
    customer, stranger = Customer(), Customer()
    handler(customer.batch("sqs_order_events.json"), Context())
    handler(stranger.batch("sqs_order_events.json"), Context())
    token = TokenIssuer(key_pair[0], issuer="cloudshop", access_ttl_seconds=900).access_token(
        user_id=customer.user_id, role="customer", email=customer.email, session_id="s1"
    )
    event = json.loads((EVENTS / "apigw_v2_list_notifications.json").read_text())
    event["headers"]["authorization"] = f"Bearer {token}"

    answer = handler(event, Context())

    assert answer["statusCode"] == 200, answer["body"]
    page = json.loads(answer["body"])
    assert [n["event_type"] for n in page["items"]] == ["order.paid"] and page["next_cursor"]
    assert page["items"][0]["order_id"] == customer.order_id
    assert answer["headers"]["x-request-id"] == "lambda-notifications-1"


def test_an_http_event_without_a_token_gets_a_problem(handler: Handler) -> None:
    event = json.loads((EVENTS / "apigw_v2_list_notifications.json").read_text())
    del event["headers"]["authorization"]

    answer = handler(event, Context())

    assert answer["statusCode"] == 401 and answer["headers"]["content-type"] == "application/problem+json"


def test_batches_are_handled_without_the_http_app_and_the_first_http_event_builds_it_once(
    handler: Handler, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The queue's sandboxes never need FastAPI: the app is built by the first HTTP event (see the
    # handler module), once.
    module = sys.modules["functions.notification.handler"]
    built: list[object] = []
    build_app = module.build_app

    def counted(*args: Any, **kwargs: Any) -> object:
        built.append(build_app(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(module, "build_app", counted)
    assert handler(Customer().batch("sqs_order_events.json"), Context()) == {"batchItemFailures": []}
    assert built == []
    event = json.loads((EVENTS / "apigw_v2_list_notifications.json").read_text())
    del event["headers"]["authorization"]
    assert handler(event, Context())["statusCode"] == 401
    assert handler(event, Context())["statusCode"] == 401
    assert len(built) == 1


# --- the local poller on the real queue ---------------------------------------------------------------
@pytest.fixture
def queue_settings(make_settings: Callable[..., Settings]) -> Settings:
    # An estate of its own: these tests empty and inspect the queues.
    settings = make_settings(prefix="notif-poller-")
    provision_mail(settings)
    return settings


def queue_bodies(sqs: Any, url: str) -> list[str]:
    bodies = []
    while messages := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, AttributeNames=["All"]
    ).get("Messages", []):
        for message in messages:
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return bodies


def test_the_poller_delivers_batches_and_a_poison_message_ends_in_the_dlq(
    queue_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = load_handler("functions.notification.handler", queue_settings, monkeypatch)
    sqs = aws.client("sqs", queue_settings)
    dlq_url = sqs.get_queue_url(QueueName="notif-poller-order-events-dlq")["QueueUrl"]
    customer = Customer()
    bodies = [r["body"] for r in customer.batch("sqs_batch_with_poison.json")["Records"]]
    for body in bodies:
        sqs.send_message(
            QueueUrl=queue_settings.order_events_queue_url,
            MessageBody=body,
            MessageAttributes={"event_type": {"DataType": "String", "StringValue": "order"}},
        )
    poller = build_poller(queue_settings, handler=handler, wait_seconds=0, retry_delay_seconds=0)

    results = [poller.poll_once() for _ in range(6)]

    # Three deliveries of the poison (maxReceiveCount 3); the fourth receive moves it to the DLQ.
    assert [r.failed for r in results if r.received] == [1, 1, 1]
    assert queue_bodies(sqs, dlq_url) == [bodies[1]]
    assert queue_bodies(sqs, queue_settings.order_events_queue_url) == []
    assert len(stored(queue_settings, customer.user_id)) == 2
    assert len(sent_emails(queue_settings, customer.email)) == 1


def test_poll_forever_keeps_polling_until_stopped(queue_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    handler = load_handler("functions.notification.handler", queue_settings, monkeypatch)
    customer = Customer()
    stop = threading.Event()
    worker = threading.Thread(target=poll_forever, args=(queue_settings, stop), kwargs={"handler": handler})
    worker.start()
    try:
        body = customer.batch("sqs_order_events.json")["Records"][1]["body"]
        aws.client("sqs", queue_settings).send_message(QueueUrl=queue_settings.order_events_queue_url, MessageBody=body)
        deadline = time.monotonic() + 15
        while not stored(queue_settings, customer.user_id) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        worker.join(timeout=5)
    assert not worker.is_alive()
    assert [n["event_type"] for n in stored(queue_settings, customer.user_id)] == ["order.paid"]


def test_the_poller_hands_several_batches_to_the_handler_at_once_and_each_message_once(
    queue_settings: Settings,
) -> None:
    # As Lambda's event source does: a batch waiting on DynamoDB and SES must not hold up the next.
    sqs = aws.client("sqs", queue_settings)
    bodies = [json.dumps({"n": n}) for n in range(30)]
    for start in range(0, len(bodies), 10):
        sqs.send_message_batch(
            QueueUrl=queue_settings.order_events_queue_url,
            Entries=[{"Id": str(n), "MessageBody": body} for n, body in enumerate(bodies[start : start + 10])],
        )
    # Each batch waits until three are in the handler together; one batch at a time never gets there.
    together = threading.Barrier(3, timeout=10)
    handled: list[str] = []
    lock = threading.Lock()

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        together.wait()
        with lock:
            handled.extend(record["body"] for record in event["Records"])
        return {"batchItemFailures": []}

    stop = threading.Event()
    worker = threading.Thread(
        target=poll_forever, args=(queue_settings, stop), kwargs={"handler": handler, "concurrency": 3}
    )
    worker.start()
    try:
        deadline = time.monotonic() + 15
        while len(handled) < len(bodies) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        together.abort()
        worker.join(timeout=10)
    assert not worker.is_alive()
    assert sorted(handled) == sorted(bodies)
    assert queue_bodies(sqs, queue_settings.order_events_queue_url) == []
