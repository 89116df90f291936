"""Messaging adapters: the relay's sinks (Kafka `orders` or the file log, SQS `order-events`) and the
`payment-events` queue the order service consumes.

SQS goes through the async `cloudshop.sqs.SqsClient` (the runtime's one, which it closes): a call is
a waiting coroutine, neither a worker thread nor botocore's ~1 ms of CPU contending for the GIL with
the event loop (issue 9).

- SQS `SendMessageBatch`: up to 10 entries per call; a round's batches go out concurrently, at most
  `concurrency` at a time, since each is one HTTP round trip of mostly waiting.
- SQS `ReceiveMessage`: a long poll of up to `wait_seconds` (the client's read timeout exceeds it);
  `DeleteMessageBatch` for the handled messages.
- Kafka: kafka-python is synchronous, so its calls run on one dedicated thread. `flush()` and
  `future.get()` block until the broker acknowledges (`acks=all`: milliseconds normally, up to the
  5 s `max_block_ms` when the broker is down). One thread is enough, because a relay round publishes
  its whole batch in one call (the producer batches and pipelines inside), and it keeps the producer
  on one thread, in publish order. Never the default executor that other work shares.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from cloudshop import tracing
from cloudshop.sqs import SqsClient
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
        # In the caller's context, so the call's spans (the Kafka send's) join its trace.
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._executor, context.run, call, *args)

    def close(self) -> None:
        # Never wait: a thread parked in a broker timeout ends on its own.
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

    def __init__(self, sqs: SqsClient, *, queue_url: str, concurrency: int = 4) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self._slots = asyncio.Semaphore(concurrency)

    async def _send(self, batch: Sequence[OutboxEvent]) -> int:
        async with self._slots:
            answer = await self.sqs.send_message_batch(
                self.queue_url, [{"Id": str(n), "MessageBody": e.payload} for n, e in enumerate(batch)]
            )
        return len(answer.get("Failed") or [])

    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        batches = [events[n : n + SQS_BATCH_MAX] for n in range(0, len(events), SQS_BATCH_MAX)]
        failed = await asyncio.gather(*(self._send(b) for b in batches))
        if sum(failed):
            raise PublishFailed(f"SQS refused {sum(failed)} of {len(events)} events")

    async def aclose(self) -> None:
        """Nothing of its own to close: the SQS client is the runtime's."""


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

    def __init__(self, sqs: SqsClient, *, queue_url: str) -> None:
        self.sqs = sqs
        self.queue_url = queue_url

    async def receive(self, *, max_messages: int, wait_seconds: int) -> list[SqsMessage]:
        answer = await self.sqs.receive_message(self.queue_url, max_messages=max_messages, wait_seconds=wait_seconds)
        return [SqsMessage(body=m["Body"], receipt=m["ReceiptHandle"]) for m in answer.get("Messages", [])]

    async def delete(self, receipts: Sequence[str]) -> None:
        chunks = [receipts[n : n + SQS_BATCH_MAX] for n in range(0, len(receipts), SQS_BATCH_MAX)]
        await asyncio.gather(
            *(
                self.sqs.delete_message_batch(
                    self.queue_url, [{"Id": str(n), "ReceiptHandle": r} for n, r in enumerate(chunk)]
                )
                for chunk in chunks
            )
        )

    async def aclose(self) -> None:
        """Nothing of its own to close: the SQS client is the runtime's."""
