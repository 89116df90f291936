"""The outbox relay: publishes every pending order event to Kafka `orders` (or the file log) and to
SQS `order-events`, then marks it sent.

At least once: an event is marked sent only after both sinks accepted it; a failure leaves it pending
for the next round, so a broker outage delays events and never loses them. Consumers deduplicate
by `event_id`. Every order-service replica may run a relay; duplicates are the price, not loss.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from cloudshop.stream import EventPublisher
from eks_services.order.repository import DynamoDBOrderRepository

log = logging.getLogger("cloudshop.relay")


class OutboxRelay:
    coalesce_seconds = 0.1

    def __init__(
        self,
        *,
        orders: DynamoDBOrderRepository,
        publisher: EventPublisher,
        sqs: Any,
        queue_url: str,
        topic: str,
        interval_seconds: float,
    ) -> None:
        self.orders = orders
        self.publisher = publisher
        self.sqs = sqs
        self.queue_url = queue_url
        self.topic = topic
        self.interval_seconds = interval_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.published = 0
        self.failures = 0

    def wake(self) -> None:
        self._wake.set()

    def run_once(self) -> int:
        """Publish the pending events of one batch of orders; returns how many were marked sent."""
        events = self.orders.pending_events(limit=100)
        if not events:
            return 0
        self.publisher.publish(self.topic, [(str(e["order_id"]), str(e["payload"])) for e in events])
        if self.queue_url:
            for start in range(0, len(events), 10):
                batch = events[start : start + 10]
                answer = self.sqs.send_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[{"Id": str(i), "MessageBody": str(e["payload"])} for i, e in enumerate(batch)],
                )
                if answer.get("Failed"):
                    raise RuntimeError(f"SQS refused {len(answer['Failed'])} events")
        sent: dict[str, list[str]] = {}
        for event in events:
            sent.setdefault(str(event["order_id"]), []).append(str(event["event_id"]))
        for order_id, event_ids in sent.items():
            self.orders.mark_sent(order_id, event_ids)
        self.published += len(events)
        return len(events)

    def _loop(self) -> None:
        backoff = self.interval_seconds
        while not self._stop.is_set():
            try:
                while self.run_once() and not self._stop.is_set():
                    pass
                backoff = self.interval_seconds
            except Exception as exc:  # any sink failure: keep the events, back off, try again
                self.failures += 1
                backoff = min(backoff * 2, 5.0)
                log.warning("outbox relay round failed", extra={"fields": {"error": repr(exc)}})
            if self._wake.wait(backoff):
                # Woken by a write: let the writes of the next few milliseconds join this round, so
                # a busy service queries its outbox a few times a second, not once per checkout.
                self._stop.wait(self.coalesce_seconds)
            self._wake.clear()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="outbox-relay", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
            self._thread = None
