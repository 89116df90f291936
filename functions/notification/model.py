"""Notification domain: what a customer is told about each order event, in the app and by email.
No framework imports here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cloudshop.events import Money, OrderEventV1

RETENTION = timedelta(days=90)
# ISO 4217 currencies without minor units; every other currency here has two.
ZERO_DECIMAL_CURRENCIES = frozenset({"JPY", "KRW", "VND", "CLP", "ISK", "UGX", "XAF", "XOF"})

# event type → (title, message); `{order}` is the short order reference, `{total}` the order total.
MESSAGES: dict[str, tuple[str, str]] = {
    "order.created": ("Order received", "We received your order {order} for {total}."),
    "order.paid": ("Order confirmed", "Your payment of {total} went through; order {order} is confirmed."),
    "order.payment_failed": (
        "Payment failed",
        "The payment for order {order} did not go through. Nothing was charged.",
    ),
    "order.cancelled": ("Order cancelled", "Your order {order} is cancelled."),
    "order.refunded": ("Refund issued", "We refunded {refunded} for order {order}."),
    "order.fulfilled": ("Order shipped", "Your order {order} is on its way."),
}


def format_money(money: Money) -> str:
    if money.currency in ZERO_DECIMAL_CURRENCIES:
        return f"{money.currency} {money.amount:,}"
    return f"{money.currency} {money.amount // 100:,}.{money.amount % 100:02d}"


def short_reference(order_id: str) -> str:
    """`ord_24b777a4…` or a UUID → `#24B777A4`: what a customer can read out on the phone."""
    _, _, rest = order_id.rpartition("_")
    return "#" + rest.replace("-", "")[:8].upper()


def sort_key(occurred_at: datetime, event_id: str) -> str:
    """Time first, so a user's notifications sort newest-first; the event id makes it unique."""
    return f"{occurred_at.astimezone(UTC).isoformat(timespec='microseconds')}#{event_id}"


@dataclass(frozen=True)
class Notification:
    user_id: str
    event_id: str
    event_type: str
    order_id: str
    title: str
    message: str
    occurred_at: datetime
    created_at: datetime

    @property
    def sort_key(self) -> str:
        return sort_key(self.occurred_at, self.event_id)

    @property
    def expires_at(self) -> int:
        """When DynamoDB's TTL removes it (epoch seconds)."""
        return int((self.created_at + RETENTION).timestamp())

    def as_dict(self) -> dict[str, str]:
        return {
            "id": self.event_id,
            "event_type": self.event_type,
            "order_id": self.order_id,
            "title": self.title,
            "message": self.message,
            "occurred_at": self.occurred_at.isoformat(),
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class Email:
    to: str
    subject: str
    body: str


def _texts(event: OrderEventV1) -> dict[str, str]:
    data = event.data
    return {
        "order": short_reference(data.order_id),
        "total": format_money(data.total),
        "refunded": format_money(data.refunded or data.total),
    }


def notification_for(event: OrderEventV1, *, now: datetime) -> Notification:
    title, template = MESSAGES[event.event_type]
    return Notification(
        user_id=event.data.user_id,
        event_id=event.event_id,
        event_type=event.event_type,
        order_id=event.data.order_id,
        title=title,
        message=template.format(**_texts(event)),
        occurred_at=event.occurred_at.astimezone(UTC),
        created_at=now,
    )


def email_for(event: OrderEventV1) -> Email | None:
    """The order confirmation, sent when an order is paid and we know where to send it."""
    if event.event_type != "order.paid" or not event.data.customer_email:
        return None
    texts = _texts(event)
    lines = "\n".join(f"  {line.quantity} x {line.name} — {format_money(line.unit_price)}" for line in event.data.lines)
    body = (
        f"Thank you for shopping with cloudshop.\n\n"
        f"Your order {texts['order']} is confirmed.\n\n{lines}\n\nTotal paid: {texts['total']}\n"
    )
    return Email(to=event.data.customer_email, subject=f"Your cloudshop order {texts['order']} is confirmed", body=body)
