"""The notification consumer's idempotency store: one contract, run against Powertools' own
`DynamoDBPersistenceLayer` (a botocore client) and `BlockingDynamoDBPersistenceLayer` (cloudshop's
blocking client), each on dynalite and on moto. Records either layer writes are read by the other, so
the deployed table and the records already in it outlive the switch.

Every case goes through `idempotent_function`, as the consumer uses it. moto returns the stored record
with a refused put (`ReturnValuesOnConditionCheckFailure`) and dynalite does not, so the two servers
also cover both ways a layer learns what holds a key.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer

from cloudshop import aws, aws_sync
from cloudshop.aws_sync import BlockingSesV2, Credentials
from cloudshop.local.servers import free_port
from cloudshop.provision import provision_mail
from cloudshop.settings import Settings
from functions.notification.bootstrap import build_consumer, build_service
from functions.notification.idempotency import BlockingDynamoDBPersistenceLayer
from functions.notification.mailer import SesMailer
from tests.services.test_lambda_handlers import Context
from tests.services.test_notification_handler import Customer, sent_emails

KEY_PREFIX = "notification-contract"
LAYERS = ("powertools", "blocking")
MakeLayer = Callable[..., BasePersistenceLayer]
NewLayer = Callable[..., BasePersistenceLayer]


@pytest.fixture(params=["dynalite", "moto"])
def server(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server_settings(server: str, make_settings: Callable[..., Settings]) -> Settings:
    # Queues on moto beside either DynamoDB: these tests need none, and moto is running anyway.
    return make_settings(dynamodb=server, sqs="moto")


@pytest.fixture
def make_layer(server_settings: Settings) -> MakeLayer:
    """`make_layer(kind)`, `wrap` given the layer's client to stand in for it."""

    def make(kind: str, wrap: Callable[[Any], Any] = lambda client: client) -> BasePersistenceLayer:
        table = server_settings.idempotency_table
        if kind == "powertools":
            client = wrap(aws.client("dynamodb", server_settings))
            return DynamoDBPersistenceLayer(table_name=table, boto3_client=client)
        return BlockingDynamoDBPersistenceLayer(wrap(aws_sync.dynamodb_for(server_settings)), table=table)

    return make


@pytest.fixture(params=LAYERS)
def new_layer(request: pytest.FixtureRequest, make_layer: MakeLayer) -> NewLayer:
    """A fresh layer of one kind per call: Powertools configures a layer once, by its first handler."""
    return lambda **options: make_layer(request.param, **options)


class Killed(BaseException):
    """The invocation ended mid-way (a Lambda timeout): no `except Exception` cleans up after it."""


class RemainingTime:
    def __init__(self, millis: int) -> None:
        self.millis = millis

    def get_remaining_time_in_millis(self) -> int:
        return self.millis


class Handler:
    """An event handler made idempotent by `event_id`, as the consumer makes its own; it counts its runs
    and raises `fault` when one is set."""

    def __init__(
        self,
        persistence: BasePersistenceLayer,
        *,
        expires_after_seconds: int = 3600,
        remaining_millis: int = 30_000,
        validate: bool = False,
    ) -> None:
        self.runs = 0
        self.fault: BaseException | None = None
        config = IdempotencyConfig(
            event_key_jmespath="event_id",
            expires_after_seconds=expires_after_seconds,
            payload_validation_jmespath="total" if validate else None,
        )
        config.register_lambda_context(RemainingTime(remaining_millis))  # type: ignore[arg-type]
        self._once = idempotent_function(
            data_keyword_argument="event", persistence_store=persistence, config=config, key_prefix=KEY_PREFIX
        )(self._handle)

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        return self._once(event=event)  # type: ignore[no-any-return]

    def _handle(self, event: dict[str, Any]) -> dict[str, Any]:
        self.runs += 1
        if self.fault is not None:
            raise self.fault
        return {"event_id": event["event_id"], "run": self.runs}


class Recording:
    """Stands in for a DynamoDB client and notes the item operations asked of it."""

    def __init__(self) -> None:
        self.client: Any = None
        self.calls: list[str] = []

    def wrap(self, client: Any) -> Recording:
        self.client = client
        return self

    def __getattr__(self, name: str) -> Any:
        if name.endswith("_item"):
            self.calls.append(name)
        return getattr(self.client, name)


def an_event(total: int = 1000) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "total": total}


def stored_item(settings: Settings, event: dict[str, Any]) -> dict[str, Any] | None:
    """The raw item Powertools keys by `<prefix>#<md5 of the JSON of the event key>`."""
    digest = hashlib.md5(json.dumps(event["event_id"]).encode()).hexdigest()
    answer = aws_sync.dynamodb_for(settings).get_item(
        TableName=settings.idempotency_table, Key={"id": {"S": f"{KEY_PREFIX}#{digest}"}}, ConsistentRead=True
    )
    item: dict[str, Any] | None = answer.get("Item")
    return item


# --- one layer ----------------------------------------------------------------------------------------
def test_a_first_call_runs_the_handler_and_stores_its_result_completed(
    new_layer: NewLayer, server_settings: Settings
) -> None:
    handle, event = Handler(new_layer()), an_event()

    result = handle(event)

    assert result == {"event_id": event["event_id"], "run": 1} and handle.runs == 1
    item = stored_item(server_settings, event)
    assert item is not None
    assert item["status"] == {"S": "COMPLETED"}
    assert json.loads(item["data"]["S"]) == result
    assert abs(int(item["expiration"]["N"]) - (time.time() + 3600)) < 60
    # The lease the invocation held while it ran, in milliseconds: the remaining time it was given.
    assert abs(int(item["in_progress_expiration"]["N"]) - (time.time() * 1000 + 30_000)) < 60_000


def test_a_repeat_returns_the_stored_result_without_running_the_handler_again(new_layer: NewLayer) -> None:
    handle, event = Handler(new_layer()), an_event()
    first = handle(event)

    again = handle(dict(event))

    assert again == first == {"event_id": event["event_id"], "run": 1}
    assert handle.runs == 1


def test_a_repeat_asks_once_where_the_refused_put_returns_the_stored_record(new_layer: NewLayer, server: str) -> None:
    recording = Recording()
    handle, event = Handler(new_layer(wrap=recording.wrap)), an_event()
    handle(event)
    recording.calls.clear()

    handle(event)

    # DynamoDB and moto return the record that refused the put (ReturnValuesOnConditionCheckFailure);
    # dynalite ignores the option, so there the record is read after.
    assert recording.calls == {"moto": ["put_item"], "dynalite": ["put_item", "get_item"]}[server]


def test_a_call_while_another_invocation_holds_the_event_is_refused(new_layer: NewLayer) -> None:
    # Given an invocation that took the event and is still within its lease (here: killed, so the
    # record stays INPROGRESS exactly as while it runs)
    handle, event = Handler(new_layer()), an_event()
    handle.fault = Killed()
    with pytest.raises(Killed):
        handle(event)
    handle.fault = None

    # Then a concurrent delivery of the same event is refused, without running the handler
    with pytest.raises(IdempotencyAlreadyInProgressError):
        handle(event)
    assert handle.runs == 1


def test_an_invocation_that_timed_out_no_longer_holds_the_event(new_layer: NewLayer) -> None:
    # Given an invocation killed after its remaining time ran out (its lease ended a second ago)
    timed_out, event = Handler(new_layer(), remaining_millis=-1000), an_event()
    timed_out.fault = Killed()
    with pytest.raises(Killed):
        timed_out(event)

    # Then the next delivery takes the event over and runs it
    handle = Handler(new_layer())
    assert handle(event) == {"event_id": event["event_id"], "run": 1}


def test_an_expired_record_is_overwritten(new_layer: NewLayer, server_settings: Settings) -> None:
    # Given a result stored a minute past its expiry (TTL removes such items eventually, not at once)
    stale_event = an_event()
    Handler(new_layer(), expires_after_seconds=-60)(stale_event)

    # When the event comes again
    handle = Handler(new_layer())
    result = handle(stale_event)

    # Then the handler runs and its result replaces the expired one
    assert handle.runs == 1 and result["run"] == 1
    item = stored_item(server_settings, stale_event)
    assert item is not None and int(item["expiration"]["N"]) > time.time() + 3000


def test_a_handler_that_raises_leaves_no_record_so_a_retry_runs_it(
    new_layer: NewLayer, server_settings: Settings
) -> None:
    handle, event = Handler(new_layer()), an_event()
    handle.fault = RuntimeError("SES is down")

    with pytest.raises(RuntimeError, match="SES is down"):
        handle(event)

    assert stored_item(server_settings, event) is None
    handle.fault = None
    assert handle(event) == {"event_id": event["event_id"], "run": 2}


def test_the_same_event_id_with_another_payload_is_refused(new_layer: NewLayer) -> None:
    handle, event = Handler(new_layer(), validate=True), an_event(total=1000)
    handle(event)

    with pytest.raises(IdempotencyValidationError):
        handle(dict(event, total=999))
    assert handle(event)["run"] == 1


# --- records interchangeable between the layers -------------------------------------------------------
BOTH_WAYS = pytest.mark.parametrize(("writer", "reader"), [("powertools", "blocking"), ("blocking", "powertools")])


@BOTH_WAYS
def test_a_result_stored_by_one_layer_is_returned_by_the_other(make_layer: MakeLayer, writer: str, reader: str) -> None:
    event = an_event()
    stored = Handler(make_layer(writer))(event)

    handle = Handler(make_layer(reader))

    assert handle(event) == stored and handle.runs == 0


@BOTH_WAYS
def test_an_event_held_under_one_layer_is_refused_by_the_other(make_layer: MakeLayer, writer: str, reader: str) -> None:
    # With payload validation on: the held record's hash must match, or the refusal would be a
    # validation error instead.
    holder, event = Handler(make_layer(writer), validate=True), an_event()
    holder.fault = Killed()
    with pytest.raises(Killed):
        holder(event)

    handle = Handler(make_layer(reader), validate=True)

    with pytest.raises(IdempotencyAlreadyInProgressError):
        handle(event)
    assert handle.runs == 0


@BOTH_WAYS
def test_a_payload_hash_stored_by_one_layer_is_checked_by_the_other(
    make_layer: MakeLayer, writer: str, reader: str
) -> None:
    event = an_event(total=1000)
    stored = Handler(make_layer(writer), validate=True)(event)

    handle = Handler(make_layer(reader), validate=True)

    with pytest.raises(IdempotencyValidationError):
        handle(dict(event, total=999))
    assert handle(event) == stored and handle.runs == 0


# --- the consumer's wiring ----------------------------------------------------------------------------
@pytest.fixture
def consumer_settings(make_settings: Callable[..., Settings]) -> Settings:
    """DynamoDB on dynalite (the full profile's), and SES (moto) with the sender verified."""
    settings = make_settings(dynamodb="dynalite", sqs="moto")
    provision_mail(settings)
    return settings


def test_the_consumer_keeps_its_records_and_sends_its_email_without_a_botocore_client(
    consumer_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given no botocore client can be made (the first one cost a sandbox's first batch 60-95 ms)
    service = build_service(consumer_settings)

    def no_botocore(api: str, _: Settings) -> Any:
        raise AssertionError(f"a botocore {api} client was made")

    monkeypatch.setattr(aws, "client", no_botocore)
    handled: list[str] = []
    handle = service.handle
    monkeypatch.setattr(service, "handle", lambda event: handled.append(event.event_id) or handle(event))
    consumer = build_consumer(consumer_settings, service=service)
    customer = Customer()
    batch = customer.batch("sqs_order_events.json")
    batch["Records"] = batch["Records"][1:]  # order.paid: stored, and emailed

    # When the batch is delivered twice
    first = consumer.process_batch(batch, Context())  # type: ignore[arg-type]
    again = consumer.process_batch(batch, Context())  # type: ignore[arg-type]

    # Then its event was handled once, the second time answered from the record the first one kept
    assert first == again == {"batchItemFailures": []}
    assert len(handled) == 1
    assert len(sent_emails(consumer_settings, customer.email)) == 1


def test_an_event_that_sends_no_email_is_stored_once_without_an_idempotency_record(
    consumer_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a consumer whose idempotency layer counts the records it would write
    service = build_service(consumer_settings)
    consumer = build_consumer(consumer_settings, service=service)
    records: list[str] = []
    put_record = BlockingDynamoDBPersistenceLayer._put_record
    monkeypatch.setattr(
        BlockingDynamoDBPersistenceLayer,
        "_put_record",
        lambda layer, data_record: records.append(data_record.idempotency_key) or put_record(layer, data_record),
    )
    customer = Customer()
    batch = customer.batch("sqs_order_events.json")
    created, paid = batch["Records"]

    # When an order.created event (no email) is delivered twice, then an order.paid one
    for records_of in ([created], [created], [paid]):
        assert consumer.process_batch({**batch, "Records": records_of}, Context()) == {"batchItemFailures": []}  # type: ignore[arg-type]

    # Then the first is stored once with no idempotency record (its conditional put is enough), and
    # only the second, which emails, is held by one
    notifications, _ = service.list_for(customer.user_id, limit=10, cursor=None)
    assert [n.event_type for n in notifications] == ["order.paid", "order.created"]
    assert len(records) == 1


def test_an_email_that_cannot_go_out_fails_alone_and_goes_out_once_when_ses_is_back(
    consumer_settings: Settings,
) -> None:
    # Given the consumer while SES is unreachable (nothing listens on its port)
    service = build_service(consumer_settings)
    reachable = service.mailer
    service.mailer = SesMailer(
        BlockingSesV2(
            endpoint=f"http://127.0.0.1:{free_port()}",
            region=consumer_settings.aws_region,
            credentials=lambda: Credentials("testing", "testing", None),
            sleep=lambda _: None,
        ),
        sender=consumer_settings.ses_sender,
    )
    consumer = build_consumer(consumer_settings, service=service)
    customer = Customer()
    batch = customer.batch("sqs_order_events.json")
    paid = batch["Records"][1]["messageId"]

    # When the batch arrives, then only the paid event (its email) fails: it stays on the queue
    assert consumer.process_batch(batch, Context()) == {"batchItemFailures": [{"itemIdentifier": paid}]}  # type: ignore[arg-type]
    assert sent_emails(consumer_settings, customer.email) == []

    # When SES is back and the queue delivers the batch again, then the email goes out once and
    # each notification is stored once
    service.mailer = reachable
    assert consumer.process_batch(batch, Context()) == {"batchItemFailures": []}  # type: ignore[arg-type]
    assert len(sent_emails(consumer_settings, customer.email)) == 1
    notifications, _ = service.list_for(customer.user_id, limit=10, cursor=None)
    assert [n.event_type for n in notifications] == ["order.paid", "order.created"]
