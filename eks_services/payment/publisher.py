"""`EventPublisher` on SQS: the payment events go to the queue `payment-events` (the order service
consumes it), through the async `cloudshop.sqs.SqsClient` (the app's one, which it closes): a send is
a waiting coroutine, not botocore in a worker thread (issue 9). Batches go one after another: the
relay sends a handful of events a second at most.
"""

from __future__ import annotations

from collections.abc import Sequence

from cloudshop.sqs import SqsClient
from cloudshop.stream import PublishError
from eks_services.payment.ports import OutboxEvent

SQS_BATCH = 10  # SendMessageBatch's limit


class SqsEventPublisher:
    def __init__(self, sqs: SqsClient, *, queue_url: str) -> None:
        self.sqs = sqs
        self.queue_url = queue_url

    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        for start in range(0, len(events), SQS_BATCH):
            batch = events[start : start + SQS_BATCH]
            answer = await self.sqs.send_message_batch(
                self.queue_url, [{"Id": str(n), "MessageBody": event.payload} for n, event in enumerate(batch)]
            )
            if answer.get("Failed"):
                raise PublishError(f"SQS refused {len(answer['Failed'])} payment events")
