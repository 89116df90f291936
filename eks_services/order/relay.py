"""The outbox relay: an asyncio task in every order replica that publishes each pending order event
to Kafka `orders` (or the file log) and SQS `order-events`, then removes it from the outbox.

At least once: an event is removed only after every sink accepted it; a failure leaves it pending
for the next round, so a broker outage delays events and never loses them. Consumers deduplicate by
`event_id`. Replicas may overlap; duplicates are the price, not loss.

A round: one `Query` of the sparse `pending_outbox` index (up to 100 orders), one publish per sink
(Kafka batches the round in one flush; SQS takes it 10 to a `SendMessageBatch`, the batches
concurrently), then one conditional `UpdateItem` per order, concurrently. Its ceiling in events/s is
what `published_total / busy_seconds` reports (`/metrics`: `order_outbox_events_published_total`,
`order_outbox_busy_seconds_total`); `tests/services/test_order_relay.py` measures it.

A checkout writes its order with `order.created`, then, once the charge answers (tens of
milliseconds), PAID or PAYMENT_FAILED with that event. A round that publishes the first alone costs
the order a second `mark_sent` (a third when the second event lands between the round's query and
its write: the conditional write fails and is made again). Measured: 1.45 `mark_sent` writes per
checkout in the bench, 1.5 to 1.8 in process (25 buyers on dynalite, a 25 ms charge). So the order
service's relay (`settle_seconds`) leaves an order whose only event is a young `order.created` (its
checkout still charging) for the round after its next change, at most `CHECKOUT_SETTLE_SECONDS`:
both events then go in one round and one write (1.0 per checkout, same measurement). An order whose
charge never answers has its event published once the hold is over.

Its lag is `order_outbox_oldest_pending_age_seconds`: the age of the oldest event the relay's last
look found waiting and has not published yet (0 once a look finds none). The index is sorted by
`updated_at`, so a round's batch holds the oldest waiting order. An event written since the last
look is not in it; a write wakes the relay, so that event is at most a coalescing pause old when
the next look sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict
from datetime import datetime
from typing import Any

from prometheus_client import Gauge

from cloudshop import tracing
from eks_services.order.model import OutboxEvent
from eks_services.order.ports import EventPublisher, Orders

log = logging.getLogger("cloudshop.relay")

ORDERS_PER_ROUND = 100
MAX_BACKOFF_SECONDS = 5.0
CREATED = "order.created"
# A charge answers in well under a second (POST /orders p95 is 250 ms under the bench's load): what
# a checkout's `order.created` may wait for its outcome, so both go out, and are marked sent, together.
CHECKOUT_SETTLE_SECONDS = 1.0


def _span_of(event: OutboxEvent, envelope: dict[str, Any]) -> tuple[str | None, str, dict[str, Any]]:
    event_type = str(envelope.get("event_type"))
    attributes = {
        "order.id": event.order_id,
        "event.type": event_type,
        "messaging.message.id": event.event_id,
        "messaging.operation.type": "send",
        "cloudshop.component": "outbox-relay",
    }
    return envelope.get("traceparent"), f"outbox publish {event_type}", attributes


class OutboxRelay:
    # Woken by a write, wait this long so the writes of the next few milliseconds join the round: a
    # busy service then queries its outbox a few times a second, not once per checkout.
    coalesce_seconds = 0.1

    def __init__(
        self,
        *,
        orders: Orders,
        publisher: EventPublisher,
        interval_seconds: float,
        settle_seconds: float = 0.0,
    ) -> None:
        """`settle_seconds`: how long a young `order.created` waits for the change that settles its
        order (0: published at once). The service wires `CHECKOUT_SETTLE_SECONDS`, as its checkout
        writes that change right after the charge answers."""
        self.orders = orders
        self.settle_seconds = settle_seconds
        self.publisher = publisher
        self.interval_seconds = interval_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.failures = 0
        self.busy_seconds = 0.0
        # Wall-clock time (epoch seconds) the oldest event of the last look happened; None: none waited.
        self._oldest_pending: float | None = None
        self._published_metric: Any = None
        self._busy_metric: Any = None

    def attach_metrics(self, metrics: Any) -> None:
        """Count into the app's Prometheus registry (`cloudshop.observability.Metrics`)."""
        self._published_metric = metrics.counter(
            "order_outbox_events_published_total", "Outbox events published to every sink"
        )
        self._busy_metric = metrics.counter(
            "order_outbox_busy_seconds_total", "Seconds the relay spent in rounds that found events"
        )
        lag = Gauge(
            "order_outbox_oldest_pending_age_seconds",
            "Age of the oldest outbox event the relay found waiting and has not published yet",
            registry=metrics.registry,
        )
        lag.set_function(self.oldest_pending_age)

    def oldest_pending_age(self) -> float:
        """Seconds since the oldest event the last look found waiting happened (0: none waited)."""
        oldest = self._oldest_pending
        return max(0.0, time.time() - oldest) if oldest is not None else 0.0

    def wake(self) -> None:
        self._wake.set()

    async def run_once(self) -> int:
        """Publish the pending events of one batch of orders; returns how many were sent."""
        started = time.perf_counter()
        found = await self.orders.pending_events(limit=ORDERS_PER_ROUND)
        if not found:
            self._oldest_pending = None
            return 0
        envelopes = [json.loads(event.payload) for event in found]
        happened = [datetime.fromisoformat(e["occurred_at"]).timestamp() for e in envelopes]
        self._oldest_pending = min(happened)
        settling = self._settling(found, envelopes, happened)
        ready = [(e, env) for e, env in zip(found, envelopes, strict=True) if e.order_id not in settling]
        if not ready:
            return 0
        events = [e for e, _ in ready]
        # Each event's span continues the trace of the request that wrote it (its `traceparent`).
        spans = [_span_of(e, envelope) for e, envelope in ready] if tracing.enabled() else []
        with tracing.producer_spans(spans):
            await self.publisher.publish(events)
            sent: dict[str, list[str]] = defaultdict(list)
            for event in events:
                sent[event.order_id].append(event.event_id)
            await asyncio.gather(*(self.orders.mark_sent(order_id, ids) for order_id, ids in sent.items()))
        elapsed = time.perf_counter() - started
        self.published += len(events)
        self.busy_seconds += elapsed
        if self._published_metric is not None:
            self._published_metric.inc(len(events))
            self._busy_metric.inc(elapsed)
        return len(events)

    def _settling(self, events: list[OutboxEvent], envelopes: list[dict[str, Any]], happened: list[float]) -> set[str]:
        """The orders whose only pending event is an `order.created` younger than `settle_seconds`:
        their checkout is still charging, and its next event will join this one."""
        if self.settle_seconds <= 0:
            return set()
        since = time.time() - self.settle_seconds
        young_created: set[str] = set()
        others: set[str] = set()
        for event, envelope, at in zip(events, envelopes, happened, strict=True):
            if envelope.get("event_type") == CREATED and at > since:
                young_created.add(event.order_id)
            else:
                others.add(event.order_id)
        return young_created - others

    async def drain(self) -> int:
        """Run rounds until the outbox holds nothing ready to send (events of checkouts still
        charging may wait: see `settle_seconds`); returns how many events were sent."""
        total = 0
        while sent := await self.run_once():
            total += sent
        return total

    async def run(self) -> None:
        backoff = self.interval_seconds
        while True:
            try:
                await self.drain()
                backoff = self.interval_seconds
            except Exception as exc:  # any sink failure: keep the events, back off, try again
                self.failures += 1
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                log.warning("outbox relay round failed", extra={"fields": {"error": repr(exc)}})
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            except TimeoutError:
                pass
            else:
                await asyncio.sleep(self.coalesce_seconds)
            self._wake.clear()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
