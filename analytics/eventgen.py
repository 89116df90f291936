"""Seeded generator of order event envelopes (the `cloudshop.events` contract) for tests and bench.

Deliberately free of pydantic and of `cloudshop`: the benchmark also builds events inside Spark,
and the tests check the generated envelopes against `OrderEventV1` themselves.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

ORDER_EVENT_TYPES = (
    "order.created",
    "order.paid",
    "order.payment_failed",
    "order.cancelled",
    "order.refunded",
    "order.fulfilled",
)
_STATUS = {
    "order.created": "PENDING_PAYMENT",
    "order.paid": "PAID",
    "order.payment_failed": "PAYMENT_FAILED",
    "order.cancelled": "CANCELLED",
    "order.refunded": "REFUNDED",
    "order.fulfilled": "FULFILLED",
}


def iso(moment: datetime) -> str:
    """UTC ISO-8601 as pydantic writes it for the events (`...Z`)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def order_event(
    *,
    event_id: str,
    event_type: str,
    occurred_at: datetime | str,
    order_id: str,
    user_id: str,
    amount: int = 129900,
    currency: str = "INR",
    items: int = 1,
) -> dict[str, Any]:
    """One envelope `{event_id, event_type, version, occurred_at, source, data}`."""
    quantity = max(items, 1)
    return {
        "event_id": event_id,
        "event_type": event_type,
        "version": 1,
        "occurred_at": occurred_at if isinstance(occurred_at, str) else iso(occurred_at),
        "source": "order-service",
        "data": {
            "order_id": order_id,
            "user_id": user_id,
            "status": _STATUS[event_type],
            "total": {"amount": amount, "currency": currency},
            "items": items,
            "lines": [
                {
                    "product_id": f"prod-{order_id}",
                    "name": "Generated product",
                    "quantity": quantity,
                    "unit_price": {"amount": amount // quantity, "currency": currency},
                }
            ],
            "payment_id": f"pay-{order_id}" if event_type != "order.created" else None,
        },
    }


@dataclass
class EventGenerator:
    """Random order lifecycles: created, then paid / payment_failed, sometimes fulfilled or refunded.

    `duplicate_rate` re-emits an event with the same event_id (at-least-once delivery);
    `users` bounds the user population so that users repeat within and across windows.
    """

    seed: int = 0
    start: datetime = field(default_factory=lambda: datetime(2025, 1, 1, 10, 0, tzinfo=UTC))
    users: int = 20
    currencies: tuple[str, ...] = ("INR", "USD", "EUR")
    duplicate_rate: float = 0.1
    mean_gap_seconds: float = 4.0

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)  # noqa: S311 - test data, not secrets
        self._clock = self.start
        self._orders = 0
        self._events = 0

    def _event_id(self) -> str:
        self._events += 1
        return f"evt-{self.seed}-{self._events:08d}"

    def lifecycle(self) -> list[dict[str, Any]]:
        rnd = self._random
        self._orders += 1
        self._clock += timedelta(seconds=rnd.expovariate(1 / self.mean_gap_seconds))
        order_id = f"ord-{self.seed}-{self._orders:07d}"
        common: dict[str, Any] = {
            "order_id": order_id,
            "user_id": f"user-{rnd.randrange(self.users):04d}",
            "amount": rnd.randrange(100, 500_000),
            "currency": rnd.choice(self.currencies),
            "items": rnd.randrange(1, 6),
        }
        moment = self._clock
        events = [order_event(event_id=self._event_id(), event_type="order.created", occurred_at=moment, **common)]
        moment += timedelta(milliseconds=rnd.randrange(50, 3000))
        paid = rnd.random() < 0.8
        kind = "order.paid" if paid else rnd.choice(("order.payment_failed", "order.cancelled"))
        events.append(order_event(event_id=self._event_id(), event_type=kind, occurred_at=moment, **common))
        if paid and rnd.random() < 0.3:
            moment += timedelta(seconds=rnd.randrange(1, 90))
            follow = rnd.choice(("order.fulfilled", "order.refunded"))
            events.append(order_event(event_id=self._event_id(), event_type=follow, occurred_at=moment, **common))
        return events

    def events(self, orders: int) -> Iterator[dict[str, Any]]:
        """The events of `orders` lifecycles, roughly in event-time order, with duplicate deliveries."""
        for _ in range(orders):
            for event in self.lifecycle():
                yield event
                if self._random.random() < self.duplicate_rate:
                    yield dict(event)


def to_line(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))
