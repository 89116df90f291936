"""SQS transport of the notification service: batches of order events with partial-batch failure
reporting, each event handled once per `event_id`.

Storing a notification is once by itself (a conditional put), so only an event that sends an email
(`order.paid`) goes through Powertools idempotency on DynamoDB, which holds the event while the
email goes out and remembers that it went. Its record costs two more writes per event (put, then
update), which the other events (`order.created`, half of a checkout's) no longer pay.

A message that is not a valid `OrderEventV1` is a poison message: it fails on every delivery, is
reported in `batchItemFailures` while the rest of the batch goes through, and after the queue's
maxReceiveCount lands in the dead-letter queue.
"""

from __future__ import annotations

import logging
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from cloudshop import tracing
from cloudshop.events import OrderEventV1
from functions.notification.model import Notification
from functions.notification.service import NotificationService

log = logging.getLogger("cloudshop.notification")

# A duplicate can arrive as long as a copy can still be delivered: up to the DLQ's 14-day retention
# (a redrive from the DLQ replays old messages).
DEDUPLICATION_SECONDS = 14 * 86400


class PoisonMessage(Exception):
    """The message can never be processed; retrying only moves it towards the dead-letter queue."""


class OrderEventConsumer:
    def __init__(self, *, service: NotificationService, persistence: BasePersistenceLayer) -> None:
        self.service = service
        self.config = IdempotencyConfig(event_key_jmespath="event_id", expires_after_seconds=DEDUPLICATION_SECONDS)
        self._handle_once = idempotent_function(
            data_keyword_argument="event", persistence_store=persistence, config=self.config
        )(self._handle)

    def process_batch(self, event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        # Lets an in-progress record expire with the invocation that owned it, not an hour later.
        self.config.register_lambda_context(context)
        # A processor per batch: it holds the batch's results, and the local poller hands several
        # batches to one consumer at once. Even an all-failed batch is reported item by item: the
        # poller and Lambda then treat every batch the same way, instead of an exception that hides
        # which messages failed.
        processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        return dict(
            process_partial_response(event=event, record_handler=self._record, processor=processor, context=context)
        )

    def _record(self, record: SQSRecord) -> dict[str, Any]:
        try:
            event = OrderEventV1.model_validate_json(record.body)
        except ValidationError as exc:
            # Only the id and the reason: the body may carry personal data.
            log.warning(
                "poison message", extra={"fields": {"message_id": record.message_id, "errors": exc.error_count()}}
            )
            raise PoisonMessage(f"message {record.message_id} is not an order event") from exc
        attributes = {
            "order.id": event.data.order_id,
            "event.type": event.event_type,
            "messaging.message.id": event.event_id,
            "messaging.system": "aws_sqs",
            "messaging.destination.name": "order-events",
            "messaging.operation.type": "process",
        }
        # The child of the span that wrote the event: the checkout's trace goes on here.
        with tracing.consumer_span(event.traceparent, f"order-events process {event.event_type}", attributes):
            if not self.service.sends_email(event):
                return self._result(self.service.handle(event))
            return self._handle_once(event=event.model_dump(mode="json"))  # type: ignore[no-any-return]

    def _handle(self, event: dict[str, Any]) -> dict[str, Any]:
        return self._result(self.service.handle(OrderEventV1.model_validate(event)))

    @staticmethod
    def _result(notification: Notification) -> dict[str, Any]:
        return {"event_id": notification.event_id, "user_id": notification.user_id}
