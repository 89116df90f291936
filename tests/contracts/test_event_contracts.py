"""Event contracts: the committed JSON Schemas match the models, and real events validate against them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import pytest

from cloudshop.events import (
    SCHEMA_DIR,
    Money,
    OrderEventDataV1,
    OrderEventV1,
    OrderLineV1,
    PaymentRefundedV1,
    json_schemas,
)


def test_committed_schemas_are_the_generated_ones() -> None:
    for name, schema in json_schemas().items():
        committed = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
        assert committed == json.loads(json.dumps(schema)), f"run `make schemas`: {name} changed"


def sample_event() -> OrderEventV1:
    data = OrderEventDataV1(
        order_id="ord_1",
        user_id="u1",
        status="PAID",
        total=Money(amount=259800, currency="INR"),
        items=2,
        lines=[OrderLineV1(product_id="p1", name="Mug", quantity=2, unit_price=Money(amount=129900, currency="INR"))],
        payment_id="pay_1",
        customer_email="a@example.com",
    )
    return OrderEventV1.new("order.paid", data, occurred_at=datetime(2026, 11, 25, 10, 0, tzinfo=UTC))


def test_a_produced_event_validates_against_the_committed_schema() -> None:
    schema = json.loads((SCHEMA_DIR / "order_event.v1.schema.json").read_text())
    jsonschema.validate(json.loads(sample_event().to_json()), schema)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: e.pop("event_id"),
        lambda e: e.update(version=2),
        lambda e: e.update(event_type="order.teleported"),
        lambda e: e["data"]["total"].update(amount=-1),
        lambda e: e["data"]["total"].update(currency="rupees"),
        lambda e: e["data"].update(surprise=True),
    ],
)
def test_the_schema_refuses_events_consumers_cannot_read(mutate: object) -> None:
    schema = json.loads((SCHEMA_DIR / "order_event.v1.schema.json").read_text())
    event = json.loads(sample_event().to_json())
    mutate(event)  # type: ignore[operator]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(event, schema)


def test_the_envelope_round_trips() -> None:
    event = sample_event()
    assert OrderEventV1.model_validate_json(event.to_json()) == event
    assert event.key == "ord_1"


def test_committed_openapi_documents_are_the_generated_ones() -> None:
    from cloudshop.contracts import SERVICES, openapi_documents, render

    for service, document in openapi_documents().items():
        committed = (SERVICES[service][1] / "openapi.json").read_text()
        assert committed == render(document), f"run `make schemas`: the {service} API changed"


# --- payment.refunded --------------------------------------------------------------------------------
def sample_refund_event() -> PaymentRefundedV1:
    """A refund event as the payment service writes it into its outbox (`service.refunded_event`)."""
    from eks_services.payment.model import ChargeRequest, Payment
    from eks_services.payment.service import refunded_event

    now = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    request = ChargeRequest(order_id="ord_1", user_id="u1", amount=1000, currency="INR", payment_method="pm_card_ok")
    payment = Payment.claim(request, now=now, lease_seconds=60).captured("sim_ch_1", now=now)
    refund = payment.plan_refund(amount=400, idempotency_key="k1", now=now)
    confirmed, done = payment.with_refund(refund, now=now).refund_succeeded(refund.id, now=now)
    return refunded_event(confirmed, done)


def payment_schema() -> dict[str, object]:
    return json.loads((SCHEMA_DIR / "payment_refunded.v1.schema.json").read_text())  # type: ignore[no-any-return]


def test_a_produced_refund_event_validates_against_the_committed_schema() -> None:
    event = json.loads(sample_refund_event().to_json())
    jsonschema.validate(event, payment_schema())
    # `traceparent`: the optional W3C trace context of the span that wrote it (none outside a trace).
    assert set(event) == {"event_id", "event_type", "version", "occurred_at", "source", "data", "traceparent"}
    assert event["traceparent"] is None
    assert (event["event_type"], event["version"], event["source"]) == ("payment.refunded", 1, "payment-service")
    assert event["data"] == {
        "payment_id": event["data"]["payment_id"],
        "order_id": "ord_1",
        "user_id": "u1",
        "amount": {"amount": 400, "currency": "INR"},
        "refunded_total": {"amount": 400, "currency": "INR"},
        "captured": {"amount": 1000, "currency": "INR"},
        "fully_refunded": False,
    }


@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: e.pop("event_id"),
        lambda e: e.update(version=2),
        lambda e: e.update(event_type="payment.captured"),
        lambda e: e["data"].pop("fully_refunded"),
        lambda e: e["data"]["amount"].update(amount=-1),
        lambda e: e["data"]["refunded_total"].update(currency="rupees"),
        lambda e: e["data"].update(surprise=True),
    ],
)
def test_the_refund_schema_refuses_events_consumers_cannot_read(mutate: object) -> None:
    event = json.loads(sample_refund_event().to_json())
    mutate(event)  # type: ignore[operator]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(event, payment_schema())


def test_a_refund_event_round_trips_and_its_id_follows_the_refund() -> None:
    event = sample_refund_event()
    assert PaymentRefundedV1.model_validate_json(event.to_json()) == event
    assert event.key == "ord_1"
    assert sample_refund_event().event_id == event.event_id  # announced twice, the same event
