"""The `payment-events` consumer: an asyncio task that long-polls the queue and lets the order
follow its payment (a full refund moves a PAID or FULFILLED order to REFUNDED).

At least once, idempotent: a redelivered or duplicated `payment.refunded` finds the order already
REFUNDED (or CANCELLED: the cancel's own refund) and changes nothing, so no event-id store is
needed; the order's state is the record. A handled message is deleted; one that fails (the order
is unknown, storage is down, the body is not a `payment.refunded` we can read) is left alone, comes
back after the visibility timeout, and after `maxReceiveCount` receives SQS moves it to the DLQ.
Other `payment.*` event types are acknowledged and ignored: they are not the order's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence

from pydantic import ValidationError

from cloudshop import tracing
from cloudshop.events import PaymentRefundedV1
from eks_services.order.model import PaymentRefunded
from eks_services.order.ports import PaymentEventSource, ReceivedMessage
from eks_services.order.service import CheckoutService

log = logging.getLogger("cloudshop.payment_events")

REFUNDED = "payment.refunded"
# SQS allows 20 s; shorter keeps a replica's shutdown quick (the poll thread is not interruptible).
WAIT_SECONDS = 10
MAX_MESSAGES = 10
ERROR_BACKOFF_SECONDS = 2.0


class PoisonMessage(ValueError):
    """A message no retry will make readable: it is left for the DLQ."""


def parse_payment_event(body: str) -> PaymentRefunded | None:
    """A `payment.refunded` event (checked against its v1 contract), None for another payment event
    type, `PoisonMessage` for anything else."""
    try:
        envelope = json.loads(body)
    except ValueError as exc:
        raise PoisonMessage("not JSON") from exc
    if not isinstance(envelope, dict) or not isinstance(envelope.get("event_type"), str):
        raise PoisonMessage("not an event envelope")
    if envelope["event_type"] != REFUNDED:
        return None
    try:
        event = PaymentRefundedV1.model_validate(envelope)
    except ValidationError as exc:
        raise PoisonMessage(f"not a payment.refunded v1: {exc.error_count()} errors") from exc
    return PaymentRefunded(
        event_id=event.event_id,
        payment_id=event.data.payment_id,
        order_id=event.data.order_id,
        fully_refunded=event.data.fully_refunded,
    )


def order_of(message: ReceivedMessage) -> str:
    """The order a message is about, for grouping only: an unreadable one is a group of its own."""
    try:
        order_id = json.loads(message.body)["data"]["order_id"]
    except (ValueError, KeyError, TypeError):
        return f"receipt:{message.receipt}"
    return f"order:{order_id}" if isinstance(order_id, str) else f"receipt:{message.receipt}"


def _span_attributes(body: str) -> tuple[str | None, dict[str, str]]:
    """The trace context a message's envelope carries, and its span's attributes (best effort: an
    unreadable message is traced as such, and fails in `parse_payment_event`)."""
    try:
        envelope = json.loads(body)
        data = envelope.get("data") or {}
        traceparent = envelope.get("traceparent")
        attributes = {
            "order.id": str(data.get("order_id", "")),
            "event.type": str(envelope.get("event_type", "")),
            "messaging.message.id": str(envelope.get("event_id", "")),
        }
    except (ValueError, AttributeError):
        return None, {}
    return (traceparent if isinstance(traceparent, str) else None), {
        **attributes,
        "messaging.system": "aws_sqs",
        "messaging.destination.name": "payment-events",
        "messaging.operation.type": "process",
    }


class PaymentEventsConsumer:
    def __init__(
        self,
        *,
        source: PaymentEventSource,
        checkout: CheckoutService,
        wait_seconds: int = WAIT_SECONDS,
        max_messages: int = MAX_MESSAGES,
    ) -> None:
        self.source = source
        self.checkout = checkout
        self.wait_seconds = wait_seconds
        self.max_messages = max_messages
        self._task: asyncio.Task[None] | None = None
        self.handled = 0
        self.failed = 0

    async def _handle(self, message: ReceivedMessage) -> bool:
        """Whether the message is done with (delete it)."""
        if tracing.enabled():
            traceparent, attributes = _span_attributes(message.body)
            with tracing.consumer_span(traceparent, "payment-events process", attributes):
                return await self._handle_traced(message)
        return await self._handle_traced(message)

    async def _handle_traced(self, message: ReceivedMessage) -> bool:
        try:
            event = parse_payment_event(message.body)
            if event is not None:
                await self.checkout.payment_refunded(event)
        except PoisonMessage as exc:
            log.error("unreadable payment event left for the DLQ", extra={"fields": {"error": str(exc)}})
            return False
        except Exception as exc:  # storage down, unknown order, contention: let SQS redeliver it
            log.warning("payment event not handled yet", extra={"fields": {"error": repr(exc)}})
            return False
        return True

    async def handle(self, messages: Sequence[ReceivedMessage]) -> int:
        """Handle one batch and delete the handled messages; returns how many were handled.

        Messages about different orders run concurrently; those about one order (a redelivery next to
        its original, a partial then a full refund) run in turn, in the order received, so they never
        race each other's optimistic write.
        """
        by_order: dict[str, list[ReceivedMessage]] = {}
        for message in messages:
            by_order.setdefault(order_of(message), []).append(message)

        async def in_turn(group: list[ReceivedMessage]) -> list[tuple[ReceivedMessage, bool]]:
            return [(message, await self._handle(message)) for message in group]

        outcomes = [pair for group in await asyncio.gather(*map(in_turn, by_order.values())) for pair in group]
        await self.source.delete([message.receipt for message, ok in outcomes if ok])
        handled = sum(ok for _, ok in outcomes)
        self.handled += handled
        self.failed += len(messages) - handled
        return handled

    async def run_once(self, *, wait_seconds: int | None = None) -> int:
        wait = self.wait_seconds if wait_seconds is None else wait_seconds
        messages = await self.source.receive(max_messages=self.max_messages, wait_seconds=wait)
        return await self.handle(messages) if messages else 0

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # the queue itself is unreachable: wait, then poll again
                log.warning("payment events poll failed", extra={"fields": {"error": repr(exc)}})
                await asyncio.sleep(ERROR_BACKOFF_SECONDS)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="payment-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
