"""Messaging adapters: the relay's sinks (Kafka `orders` or the file log, SQS `order-events`) and the
`payment-events` queue the order service consumes.

boto3 and kafka-python are synchronous. Their calls run in worker threads the adapters own, so a
slow broker or a 10-second SQS long poll ties up one of those threads, never the event loop and
never the default executor that other work shares:

- Kafka: one dedicated thread. kafka-python's `flush()` and `future.get()` block until the broker
  acknowledges (`acks=all`: milliseconds normally, up to the 5 s `max_block_ms` when the broker is
  down). One thread is enough, because a relay round publishes its whole batch in one call (the
  producer batches and pipelines inside), and it keeps the producer on one thread, in publish order.
- SQS `SendMessageBatch`: up to 10 entries per call; a round's batches go out concurrently on a small
  pool, since each is one HTTP round trip of mostly waiting.
- SQS `ReceiveMessage`: a long poll parks its thread for up to `wait_seconds`; its own thread.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from cloudshop import tracing
from cloudshop.stream import EventPublisher as StreamPublisher
from cloudshop.stream import KafkaEventPublisher
from eks_services.order.model import OutboxEvent
from eks_services.order.ports import EventPublisher

SQS_BATCH_MAX = 10
T = TypeVar("T")


class PublishFailed(RuntimeError):
    """A sink did not accept every event; the relay keeps them all for the next round."""


class _Threads:
    def __init__(self, name: str, workers: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    async def run(self, call: Callable[..., T], *args: Any) -> T:
        # In the caller's context, so the call's spans (boto3's SQS, the Kafka send) join its trace.
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._executor, context.run, call, *args)

    def close(self) -> None:
        # Never wait: a thread parked in a long poll or a broker timeout ends on its own.
        self._executor.shutdown(wait=False, cancel_futures=True)


class StreamEventPublisher:
    """Events to Kafka `orders` (key = order id) or, locally, the file log."""

    def __init__(self, stream: StreamPublisher, *, topic: str) -> None:
        self.stream = stream
        self.topic = topic
        self._thread = _Threads("kafka-publish", 1)

    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        if events:
            attributes = {
                "messaging.system": "kafka" if isinstance(self.stream, KafkaEventPublisher) else "file-log",
                "messaging.destination.name": self.topic,
                "messaging.batch.message_count": len(events),
            }
            with tracing.span(f"send {self.topic}", kind=tracing.SpanKind.PRODUCER, attributes=attributes):
                await self._thread.run(self.stream.publish, self.topic, [(e.order_id, e.payload) for e in events])

    async def aclose(self) -> None:
        await self._thread.run(self.stream.close)
        self._thread.close()


class SqsEventPublisher:
    """Events to SQS `order-events` with `SendMessageBatch`, 10 to a call."""

    def __init__(self, sqs: Any, *, queue_url: str, concurrency: int = 4) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self._threads = _Threads("sqs-send", concurrency)

    def _send(self, batch: Sequence[OutboxEvent]) -> int:
        answer = self.sqs.send_message_batch(
            QueueUrl=self.queue_url,
            Entries=[{"Id": str(n), "MessageBody": e.payload} for n, e in enumerate(batch)],
        )
        return len(answer.get("Failed") or [])

    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        batches = [events[n : n + SQS_BATCH_MAX] for n in range(0, len(events), SQS_BATCH_MAX)]
        failed = await asyncio.gather(*(self._threads.run(self._send, b) for b in batches))
        if sum(failed):
            raise PublishFailed(f"SQS refused {sum(failed)} of {len(events)} events")

    async def aclose(self) -> None:
        self._threads.close()


class FanoutPublisher:
    """Every sink gets every event; it succeeds only when all of them did."""

    def __init__(self, *sinks: EventPublisher) -> None:
        self.sinks = sinks

    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        outcomes = await asyncio.gather(*(s.publish(events) for s in self.sinks), return_exceptions=True)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            raise PublishFailed("; ".join(repr(e) for e in errors)) from errors[0]

    async def aclose(self) -> None:
        await asyncio.gather(*(s.aclose() for s in self.sinks), return_exceptions=True)


@dataclass(frozen=True)
class SqsMessage:
    body: str
    receipt: str


class SqsPaymentEventSource:
    """The `payment-events` queue, long-polled."""

    def __init__(self, sqs: Any, *, queue_url: str) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self._poll = _Threads("payment-events-poll", 1)
        self._delete = _Threads("payment-events-delete", 1)

    def _receive(self, max_messages: int, wait_seconds: int) -> list[SqsMessage]:
        answer = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=max_messages, WaitTimeSeconds=wait_seconds
        )
        return [SqsMessage(body=m["Body"], receipt=m["ReceiptHandle"]) for m in answer.get("Messages", [])]

    async def receive(self, *, max_messages: int, wait_seconds: int) -> list[SqsMessage]:
        return await self._poll.run(self._receive, max_messages, wait_seconds)

    def _delete_batch(self, receipts: Sequence[str]) -> None:
        for start in range(0, len(receipts), SQS_BATCH_MAX):
            chunk = receipts[start : start + SQS_BATCH_MAX]
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(n), "ReceiptHandle": r} for n, r in enumerate(chunk)],
            )

    async def delete(self, receipts: Sequence[str]) -> None:
        if receipts:
            await self._delete.run(self._delete_batch, receipts)

    async def aclose(self) -> None:
        self._poll.close()
        self._delete.close()
