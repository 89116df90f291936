"""What the payment service needs from the outside world, as typed async ports.

The service layer knows only these; `repository.py`, `publisher.py` and `provider.py` hold the real
adapters, and the tests' in-memory fakes pass the same contract tests
(tests/services/test_payment_ports_contract.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cloudshop.events import PaymentRefundedV1
from eks_services.payment.model import ChargeResult, Payment, RefundResult


class StalePayment(Exception):
    """The stored payment changed since it was read; re-read and decide again."""


@dataclass(frozen=True)
class OutboxEvent:
    """An event waiting in a payment's outbox: its id, the payment holding it, and its JSON."""

    event_id: str
    payment_id: str
    payload: str


class PaymentRepository(Protocol):
    """Payments by id, written only by two conditional writes (see `repository.py`)."""

    async def get(self, payment_id: str) -> Payment | None:
        """The payment as last written (strongly consistent), or None."""

    async def require(self, payment_id: str) -> Payment:
        """The payment, or `NotFound`."""

    async def for_order(self, order_id: str) -> list[Payment]:
        """Every payment record of an order."""

    async def claim(self, payment: Payment) -> bool:
        """Create the PENDING record that owns the charge; False when the order already has one."""

    async def save(self, payment: Payment, events: Sequence[PaymentRefundedV1] = ()) -> None:
        """Write `payment` over `version - 1` and add `events` to its outbox in the same write, or
        raise `StalePayment`."""


class PaymentOutbox(Protocol):
    """The relay's side of the outbox kept inside each payment."""

    async def pending_events(self, limit: int = 100) -> list[OutboxEvent]:
        """Unsent events of up to `limit` payments, each payment's in the order they happened."""

    async def mark_sent(self, payment_id: str, event_ids: Sequence[str]) -> None:
        """Drop published events from the payment's outbox."""


class EventPublisher(Protocol):
    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        """Return only once every event is accepted; raise otherwise (they stay in the outbox)."""


class PaymentProvider(Protocol):
    """A card processor. `payment_id` and `refund_id` are the provider's idempotency keys, so a
    charge or refund repeated after a crash is never taken twice."""

    async def verify(self, payment_method: str) -> None:
        """Raise `ValidationFailed` when the provider does not know the payment method."""

    async def charge(self, *, payment_id: str, amount: int, currency: str, payment_method: str) -> ChargeResult:
        """Capture or decline; raise `ProviderError` when the outcome is a failure."""

    async def refund(self, *, payment_id: str, refund_id: str, amount: int) -> RefundResult:
        """Return `amount` of a captured payment; raise `ProviderError` when it could not."""
