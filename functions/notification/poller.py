"""The local stand-in for the Lambda SQS event source mapping.

It long-polls `order-events`, hands each batch to the notification Lambda `handler` as the SQS event
Lambda would build, and then does what the event source mapping does with the answer: deletes the
messages that succeeded and leaves the ones listed in `batchItemFailures` on the queue, where they
reappear and, after the queue's maxReceiveCount, move to the dead-letter queue (the queue's
RedrivePolicy does that, on moto as on AWS).

Like the event source mapping, it handles several batches at once (`CONCURRENT_BATCHES` loops, one
thread each): a batch spends most of its time waiting on DynamoDB and SES, and one loop at a time
handled ~30 events/s, below what the relay sends at the bench's checkout rate. The queue then grew,
and moto's `SendMessage` walks every message of the queue, so the relay's sends slowed as it grew.

    python -m functions.notification.poller     # configured from the environment, like the Lambda
    python -m functions.notification.poller --metrics-port 9105   # and its backend calls on /metrics

`--metrics-port` serves the process's `cloudshop_backend_calls_total` (the function's DynamoDB and
SES calls, and the receives and deletes this stand-in makes for the event source mapping), which
`make bench` reads to count the notification work of each checkout.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cloudshop import aws
from cloudshop.observability import configure_logging, serve_backend_calls
from cloudshop.settings import Settings, get_settings

log = logging.getLogger("cloudshop.notification.poller")

LambdaHandler = Callable[[dict[str, Any], Any], Any]
BATCH_SIZE = 10  # the event source mapping's default (and SQS's maximum per receive)
# Lambda's SQS event source starts with five concurrent batches and scales up from there.
CONCURRENT_BATCHES = 5


@dataclass(frozen=True)
class LocalContext:
    """The parts of a Lambda context the handler and Powertools read."""

    function_name: str = "cloudshop-notification-local"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:local:000000000000:function:cloudshop-notification-local"
    aws_request_id: str = ""
    timeout_millis: int = 30_000

    def get_remaining_time_in_millis(self) -> int:
        return self.timeout_millis


@dataclass(frozen=True)
class PollResult:
    received: int
    failed: int


class QueuePoller:
    def __init__(
        self,
        *,
        sqs: Any,
        queue_url: str,
        handler: LambdaHandler,
        region: str,
        wait_seconds: int = 1,
        retry_delay_seconds: int | None = None,
    ) -> None:
        """`retry_delay_seconds` makes failed messages visible again after that delay; None keeps the
        queue's visibility timeout, as Lambda does."""
        self.sqs = sqs
        self.queue_url = queue_url
        self.handler = handler
        self.region = region
        self.wait_seconds = wait_seconds
        self.retry_delay_seconds = retry_delay_seconds
        self.queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]

    def poll_once(self) -> PollResult:
        messages = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=BATCH_SIZE,
            WaitTimeSeconds=self.wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return PollResult(0, 0)
        answer = self.handler(self.lambda_event(messages), LocalContext(aws_request_id=str(uuid.uuid4())))
        failed_ids = {failure["itemIdentifier"] for failure in (answer or {}).get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed_ids]
        failed = [m for m in messages if m["MessageId"] in failed_ids]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        if failed and self.retry_delay_seconds is not None:
            self.sqs.change_message_visibility_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": self.retry_delay_seconds}
                    for i, m in enumerate(failed)
                ],
            )
        if failed:
            log.warning("batch items failed", extra={"fields": {"failed": len(failed), "received": len(messages)}})
        return PollResult(len(messages), len(failed))

    def lambda_event(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The SQS event Lambda builds for a batch (the `Records` shape Powertools parses)."""
        return {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m.get("Attributes", {}),
                    "messageAttributes": {
                        name: {
                            "stringValue": value.get("StringValue"),
                            "binaryValue": value.get("BinaryValue"),
                            "stringListValues": [],
                            "binaryListValues": [],
                            "dataType": value["DataType"],
                        }
                        for name, value in m.get("MessageAttributes", {}).items()
                    },
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.queue_arn,
                    "awsRegion": self.region,
                }
                for m in messages
            ]
        }


def build_poller(settings: Settings, *, handler: LambdaHandler | None = None, **options: Any) -> QueuePoller:
    """A poller for `settings.order_events_queue_url`. Without `handler` it feeds the Lambda entry
    point itself, which configures itself from the environment exactly as it does in Lambda."""
    if handler is None:
        from functions.notification.handler import handler as lambda_handler

        handler = lambda_handler
    if not settings.order_events_queue_url:
        raise ValueError("ORDER_EVENTS_QUEUE_URL is not set")
    return QueuePoller(
        sqs=aws.client("sqs", settings),
        queue_url=settings.order_events_queue_url,
        handler=handler,
        region=settings.aws_region,
        **options,
    )


def poll_forever(
    settings: Settings,
    stop_event: threading.Event,
    *,
    handler: LambdaHandler | None = None,
    concurrency: int = CONCURRENT_BATCHES,
    **options: Any,
) -> None:
    """Poll until `stop_event` is set, `concurrency` batches at a time. A failing poll (queue
    unreachable, handler crash) is logged and retried after a pause: the messages stay on the queue
    and come back."""
    poller = build_poller(settings, handler=handler, **options)

    def loop() -> None:
        while not stop_event.is_set():
            try:
                poller.poll_once()
            except Exception:  # the loop must outlive any one bad batch or outage
                log.exception("poll failed")
                stop_event.wait(1.0)

    # The boto3 client and the handler are shared: both are safe to call from several threads.
    loops = [threading.Thread(target=loop, name=f"poll-{n}", daemon=True) for n in range(concurrency - 1)]
    for thread in loops:
        thread.start()
    loop()
    for thread in loops:
        thread.join()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m functions.notification.poller", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--metrics-port", type=int, help="serve this process's backend calls on 127.0.0.1:PORT/metrics")
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging("notification-poller", settings.log_level)
    if args.metrics_port is not None:
        serve_backend_calls(args.metrics_port)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("polling", extra={"fields": {"queue_url": settings.order_events_queue_url}})
    poll_forever(settings, stop)


if __name__ == "__main__":
    main()
