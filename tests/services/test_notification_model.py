"""What a customer is told about each order event, without any server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from cloudshop.events import ORDER_EVENT_TYPES, Money, OrderEventDataV1, OrderEventV1, OrderLineV1
from functions.notification.model import (
    MESSAGES,
    email_for,
    format_money,
    notification_for,
    short_reference,
    sort_key,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def event(event_type: str, *, email: str | None = "asha@example.com", refunded: int | None = None) -> OrderEventV1:
    data = OrderEventDataV1(
        order_id="8f14e45f-ceea-467f-a0e6-5d1c6b1e1a2b",
        user_id="u1",
        status="PAID",
        total=Money(amount=449800, currency="INR"),
        items=3,
        lines=[
            OrderLineV1(
                product_id="p1", name="Ceramic Mug Set", quantity=2, unit_price=Money(amount=74950, currency="INR")
            )
        ],
        refunded=Money(amount=refunded, currency="INR") if refunded is not None else None,
        customer_email=email,
    )
    return OrderEventV1.new(event_type, data, occurred_at=NOW)  # type: ignore[arg-type]


def test_every_order_event_type_has_a_message() -> None:
    assert set(MESSAGES) == set(ORDER_EVENT_TYPES)


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (449800, "INR", "INR 4,498.00"),
        (5, "USD", "USD 0.05"),
        (129900, "JPY", "JPY 129,900"),
    ],
)
def test_money_reads_in_major_units(amount: int, currency: str, text: str) -> None:
    assert format_money(Money(amount=amount, currency=currency)) == text


def test_a_refund_notification_names_the_refunded_amount() -> None:
    notification = notification_for(event("order.refunded", refunded=100000), now=NOW)
    assert notification.title == "Refund issued" and "INR 1,000.00" in notification.message
    assert "#8F14E45F" in notification.message


@pytest.mark.parametrize(
    ("order_id", "reference"),
    [
        ("ord_24b777a480a659b48f8d366530821f9e", "#24B777A4"),
        ("8f14e45f-ceea-467f-a0e6-5d1c6b1e1a2b", "#8F14E45F"),
    ],
)
def test_orders_are_named_by_a_short_reference(order_id: str, reference: str) -> None:
    assert short_reference(order_id) == reference


def test_notifications_expire_after_ninety_days() -> None:
    notification = notification_for(event("order.created"), now=NOW)
    assert notification.expires_at == int((NOW + timedelta(days=90)).timestamp())


def test_sort_keys_order_by_time_whatever_the_offset() -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    earlier = sort_key(datetime(2026, 11, 25, 15, 0, tzinfo=india), "b")  # 09:30 UTC
    later = sort_key(datetime(2026, 11, 25, 10, 0, tzinfo=UTC), "a")
    assert earlier < later


def test_only_a_paid_order_with_an_address_is_emailed() -> None:
    email = email_for(event("order.paid"))
    assert email is not None and email.to == "asha@example.com"
    assert "2 x Ceramic Mug Set" in email.body and "INR 4,498.00" in email.body
    assert email_for(event("order.paid", email=None)) is None
    assert email_for(event("order.created")) is None
