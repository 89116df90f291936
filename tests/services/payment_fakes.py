"""In-memory fakes of the payment service's ports (`eks_services.payment.ports`).

They pass the same contract tests as the real adapters (tests/services/test_payment_ports_contract.py),
so a service test on the fakes says what the service does on DynamoDB and SQS too. They live with the
tests, not in the package the image ships.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cloudshop.errors import NotFound
from cloudshop.events import PaymentRefundedV1
from cloudshop.stream import PublishError
from eks_services.payment.model import Payment
from eks_services.payment.ports import OutboxEvent, StalePayment


@dataclass
class InMemoryPaymentRepository:
    """`PaymentRepository` and `PaymentOutbox`: one conditional write per call, as on DynamoDB."""

    payments: dict[str, Payment] = field(default_factory=dict)
    outboxes: dict[str, dict[str, str]] = field(default_factory=dict)

    async def get(self, payment_id: str) -> Payment | None:
        return self.payments.get(payment_id)

    async def require(self, payment_id: str) -> Payment:
        payment = self.payments.get(payment_id)
        if payment is None:
            raise NotFound("No such resource.")
        return payment

    async def for_order(self, order_id: str) -> list[Payment]:
        return [p for p in self.payments.values() if p.order_id == order_id]

    async def claim(self, payment: Payment) -> bool:
        if payment.id in self.payments:
            return False
        self.payments[payment.id] = payment
        self.outboxes[payment.id] = {}
        return True

    async def save(self, payment: Payment, events: Sequence[PaymentRefundedV1] = ()) -> None:
        stored = self.payments.get(payment.id)
        if stored is None or stored.version != payment.version - 1:
            raise StalePayment(payment.id)
        self.payments[payment.id] = payment
        outbox = self.outboxes.setdefault(payment.id, {})
        outbox.update({event.event_id: event.to_json() for event in events})

    async def pending_events(self, limit: int = 100) -> list[OutboxEvent]:
        waiting = sorted(
            (pid for pid, outbox in self.outboxes.items() if outbox),
            key=lambda pid: self.payments[pid].updated_at,
        )[:limit]
        events = [
            OutboxEvent(event_id=event_id, payment_id=pid, payload=payload)
            for pid in waiting
            for event_id, payload in self.outboxes[pid].items()
        ]
        return sorted(events, key=lambda e: (e.payment_id, json.loads(e.payload)["occurred_at"]))

    async def mark_sent(self, payment_id: str, event_ids: Sequence[str]) -> None:
        outbox = self.outboxes.get(payment_id, {})
        for event_id in event_ids:
            outbox.pop(event_id, None)


@dataclass
class InMemoryEventPublisher:
    """`EventPublisher` that keeps what it accepted; `failing` makes it refuse like a queue outage."""

    published: list[OutboxEvent] = field(default_factory=list)
    failing: bool = False

    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        if self.failing:
            raise PublishError("the queue is down")
        self.published.extend(events)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(event.payload) for event in self.published]
