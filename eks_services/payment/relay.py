"""The payment outbox relay: publishes every pending payment event to SQS `payment-events`, then
drops it from the payment's outbox.

At least once: an event leaves the outbox only after the queue accepted it; a failure leaves it for
the next round, so a queue outage delays events and never loses them. Every payment replica may run
a relay; a duplicate is the price, never a loss, and consumers deduplicate by `event_id` (derived
from the refund id, so a duplicate has the same id). It runs as a task on the service's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from cloudshop import tracing
from eks_services.payment.ports import EventPublisher, OutboxEvent, PaymentOutbox

log = logging.getLogger("cloudshop.payment.relay")

MAX_BACKOFF_SECONDS = 5.0


def _span_of(event: OutboxEvent) -> tuple[str | None, str, dict[str, Any]]:
    """The event's span: the child of the trace context it was written with."""
    envelope = json.loads(event.payload)
    event_type = str(envelope.get("event_type"))
    attributes = {
        "order.id": str((envelope.get("data") or {}).get("order_id", "")),
        "payment.id": event.payment_id,
        "event.type": event_type,
        "messaging.message.id": event.event_id,
        "messaging.operation.type": "send",
        "cloudshop.component": "outbox-relay",
    }
    return envelope.get("traceparent"), f"outbox publish {event_type}", attributes


class PaymentOutboxRelay:
    # Woken by a write, the relay lets the writes of the next few milliseconds join its round.
    coalesce_seconds = 0.1

    def __init__(self, *, outbox: PaymentOutbox, publisher: EventPublisher, interval_seconds: float) -> None:
        self.outbox = outbox
        self.publisher = publisher
        self.interval_seconds = interval_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.failures = 0

    def wake(self) -> None:
        self._wake.set()

    async def run_once(self) -> int:
        """Publish the pending events of one batch of payments; returns how many left the outbox."""
        events = await self.outbox.pending_events(limit=100)
        if not events:
            return 0
        with tracing.producer_spans([_span_of(event) for event in events] if tracing.enabled() else []):
            await self.publisher.publish(events)
            sent: dict[str, list[str]] = {}
            for event in events:
                sent.setdefault(event.payment_id, []).append(event.event_id)
            for payment_id, event_ids in sent.items():
                await self.outbox.mark_sent(payment_id, event_ids)
        self.published += len(events)
        return len(events)

    async def run(self) -> None:
        backoff = self.interval_seconds
        while True:
            try:
                while await self.run_once():
                    pass
                backoff = self.interval_seconds
            except Exception as exc:  # any sink or table failure: keep the events, back off, retry
                self.failures += 1
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                log.warning("payment outbox relay round failed", extra={"fields": {"error": repr(exc)}})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), backoff)
                await asyncio.sleep(self.coalesce_seconds)
            self._wake.clear()

    def start(self) -> None:
        """Run on the current event loop (call from the app's lifespan)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="payment-outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
