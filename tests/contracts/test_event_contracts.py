"""Event contracts: the committed JSON Schemas match the models, and real events validate against them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import pytest

from cloudshop.events import SCHEMA_DIR, Money, OrderEventDataV1, OrderEventV1, OrderLineV1, json_schemas


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
