"""`EventPublisher` on SQS: the payment events go to the queue `payment-events` (the order service
consumes it).

boto3's SQS client is blocking, so each batch is sent from a worker thread: the relay's coroutine
waits, the event loop serving requests does not. The relay sends a handful of events a second at
most, which does not justify a second async AWS client next to `cloudshop.dynamodb`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from cloudshop.stream import PublishError
from eks_services.payment.ports import OutboxEvent

SQS_BATCH = 10  # SendMessageBatch's limit


class SqsEventPublisher:
    def __init__(self, sqs: Any, *, queue_url: str) -> None:
        self.sqs = sqs
        self.queue_url = queue_url

    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        for start in range(0, len(events), SQS_BATCH):
            batch = events[start : start + SQS_BATCH]
            answer = await asyncio.to_thread(
                self.sqs.send_message_batch,
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(n), "MessageBody": event.payload} for n, event in enumerate(batch)],
            )
            if answer.get("Failed"):
                raise PublishError(f"SQS refused {len(answer['Failed'])} payment events")
