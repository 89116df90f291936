"""Trace context across HTTP and the event envelope, the span file, and the tree `cloudshop trace` prints."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from cloudshop import tracing
from cloudshop.events import OrderEventDataV1, OrderEventV1, PaymentRefundedV1
from cloudshop.local.traces import render_trace, show_order, traces_of_order
from cloudshop.settings import Settings
from cloudshop.web import create_app

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
def span_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "traces" / "spans.jsonl"
    tracing.reset_for_tests()
    tracing.configure_tracing("order", Settings(tracing_enabled=True, trace_file=str(path)))
    yield path
    tracing.reset_for_tests()


def recorded(path: Path) -> list[dict[str, Any]]:
    tracing.flush()
    return [json.loads(line) for line in path.read_text().splitlines()]


def order_data(order_id: str = "o-1") -> OrderEventDataV1:
    return OrderEventDataV1.model_validate(
        {
            "order_id": order_id,
            "user_id": "u-1",
            "status": "PAID",
            "total": {"amount": 100, "currency": "INR"},
            "items": 1,
            "lines": [],
        }
    )


def test_an_event_written_inside_a_span_carries_it_and_tags_it_with_the_order(span_file: Path) -> None:
    with tracing.span("POST /orders", root=True) as writer:
        event = OrderEventV1.new("order.paid", order_data("o-42"))
    context = writer.get_span_context()
    assert event.traceparent == tracing.format_traceparent(context)
    assert event.traceparent.startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")

    (span,) = recorded(span_file)
    assert span["attributes"]["order.id"] == "o-42"


def test_the_consumer_span_of_an_event_is_the_child_of_the_span_that_wrote_it(span_file: Path) -> None:
    with tracing.span("POST /orders", root=True):
        wire = OrderEventV1.new("order.created", order_data()).to_json()

    # Later, elsewhere: the relay and the consumer read the envelope back.
    event = OrderEventV1.model_validate_json(wire)
    with tracing.producer_spans([(event.traceparent, "outbox publish order.created", {"order.id": "o-1"})]):
        pass
    with tracing.consumer_span(event.traceparent, "order-events process", {"order.id": "o-1"}):
        pass

    writer, relay, consumer = recorded(span_file)
    assert relay["trace_id"] == consumer["trace_id"] == writer["trace_id"]
    assert relay["parent_id"] == consumer["parent_id"] == writer["span_id"]
    assert (relay["kind"], consumer["kind"]) == ("producer", "consumer")


def test_an_event_without_trace_context_is_still_valid_and_starts_a_new_trace(span_file: Path) -> None:
    old = {
        "event_id": "e-1",
        "event_type": "order.paid",
        "version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "data": order_data().model_dump(mode="json"),
    }
    event = OrderEventV1.model_validate(old)
    assert event.traceparent is None
    with tracing.consumer_span(event.traceparent, "order-events process", {}):
        pass
    (span,) = recorded(span_file)
    assert span["parent_id"] is None


def test_outside_a_trace_no_context_is_captured_and_client_spans_are_not_made(span_file: Path) -> None:
    assert OrderEventV1.new("order.paid", order_data()).traceparent is None
    with tracing.span("dynamodb.GetItem") as made:
        assert made is None
    assert not span_file.exists() or recorded(span_file) == []


def test_tracing_off_captures_nothing() -> None:
    tracing.reset_for_tests()
    assert not tracing.configure_tracing("order", Settings())
    assert OrderEventV1.new("order.paid", order_data()).traceparent is None
    assert tracing.inject({}) == {}


def test_the_schemas_declare_the_optional_traceparent() -> None:
    for model in (OrderEventV1, PaymentRefundedV1):
        schema = model.model_json_schema()
        assert "traceparent" in schema["properties"] and "traceparent" not in schema["required"]


def test_a_request_continues_its_callers_trace_and_its_calls_carry_it_on(span_file: Path) -> None:
    router = APIRouter()
    seen: dict[str, str] = {}

    @router.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        seen["traceparent"] = tracing.inject({})[tracing.TRACEPARENT]
        return {"id": thing_id}

    app = create_app(service="order", settings=Settings(), routers=[router])
    with TestClient(app) as client:
        assert client.get("/things/t-1", headers={"traceparent": CALLER}).status_code == 200
        client.get("/healthz", headers={"traceparent": CALLER})

    (server,) = recorded(span_file)
    assert (server["trace_id"], server["parent_id"]) == (TRACE_ID, "00f067aa0ba902b7")
    assert server["name"] == "GET /things/{thing_id}" and server["kind"] == "server"
    assert server["attributes"]["http.response.status_code"] == 200
    assert seen["traceparent"].startswith(f"00-{TRACE_ID}-{server['span_id']}-")


@pytest.mark.parametrize("value", ["", "garbage", f"00-{'0' * 32}-00f067aa0ba902b7-01", "00-xyz-abc-01"])
def test_an_unreadable_traceparent_is_no_parent(value: str) -> None:
    assert tracing.parse_traceparent(value) is None


def span(span_id: str, parent: str | None, service: str, name: str, start: float, ms: float, **attributes: str) -> dict:
    return {
        "trace_id": TRACE_ID,
        "span_id": span_id,
        "parent_id": parent,
        "name": name,
        "kind": "server" if parent is None else "client",
        "service": service,
        "start_ns": int(start * 1e6),
        "duration_ms": ms,
        "status": "unset",
        "attributes": attributes,
        "links": [],
    }


CHECKOUT = [
    span("a", None, "gateway", "POST /api/v1/orders", 0, 120),
    span("b", "a", "order", "POST /orders", 2, 110, **{"order.id": "o-7"}),
    span("d", "b", "payment", "POST /payments", 50, 30),
    span("c", "b", "product", "POST /internal/reservations", 5, 20),
    span("e", "b", "order", "outbox publish order.paid", 300, 8, **{"order.id": "o-7"}),
]


def test_the_tree_shows_each_span_under_its_parent_with_offset_and_duration() -> None:
    lines = render_trace(TRACE_ID, CHECKOUT).splitlines()

    assert lines[0].startswith(f"trace {TRACE_ID}  5 spans  308.0 ms")
    assert "gateway, order, payment, product" in lines[0]
    body = lines[2:]
    assert [line.split()[2] for line in body] == ["gateway", "order", "product", "payment", "order"]
    assert "POST /api/v1/orders" in body[0] and "├─" not in body[0]
    assert "└─ POST /orders" in body[1] and "[order.id=o-7]" in body[1]
    assert "├─ POST /internal/reservations" in body[2] and body[2].split()[0] == "5.0ms"
    assert "├─ POST /payments" in body[3] and "30.0ms" in body[3]
    assert "└─ outbox publish order.paid" in body[4] and body[4].split()[0] == "300.0ms"


def test_only_the_orders_traces_are_shown_and_a_missing_parent_is_named(tmp_path: Path) -> None:
    other = [dict(s, trace_id="f" * 32, attributes={}) for s in CHECKOUT]
    orphan = dict(CHECKOUT[1], parent_id="gone", span_id="z")
    assert list(traces_of_order([*CHECKOUT, *other], "o-7")) == [TRACE_ID]

    path = tmp_path / "spans.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in [orphan, *other]) + '{"cut short')
    text, status = show_order(path, "o-7")
    assert status == 0 and "(parent gone not recorded)" in text
    assert show_order(path, "o-unknown")[1] == 1


def test_the_relay_publishes_later_in_the_trace_that_wrote_the_event(span_file: Path) -> None:
    """Given an order event written inside a request's span and kept in the outbox, when the relay
    publishes it in its own task, then its producer span is that request span's child, tagged with
    the order, and the sink's span (the file log) nests under it."""
    import asyncio

    from cloudshop.stream import FileEventLog
    from eks_services.order.messaging import StreamEventPublisher
    from eks_services.order.relay import OutboxRelay
    from eks_services.order.service import order_event
    from tests.services.order_fakes import InMemoryOrders
    from tests.services.test_order_ports import new_order

    orders = InMemoryOrders()
    order = new_order()
    with tracing.span("POST /orders", root=True):
        asyncio.run(orders.create(order, order_event(order)))

    publisher = StreamEventPublisher(FileEventLog(span_file.parent / "events"), topic="orders")
    assert asyncio.run(OutboxRelay(orders=orders, publisher=publisher, interval_seconds=1).run_once()) == 1

    by_name = {span["name"]: span for span in recorded(span_file)}
    request, relay, sink = by_name["POST /orders"], by_name["outbox publish order.created"], by_name["send orders"]
    assert relay["parent_id"] == request["span_id"] and relay["trace_id"] == request["trace_id"]
    assert relay["attributes"]["order.id"] == order.id and relay["kind"] == "producer"
    assert sink["parent_id"] == relay["span_id"] and sink["attributes"]["messaging.system"] == "file-log"
