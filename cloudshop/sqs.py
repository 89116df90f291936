"""An async SQS client: `SendMessageBatch`, `ReceiveMessage` (long poll) and `DeleteMessageBatch`
over the keep-alive pool, SigV4-signed. The DynamoDB client (`cloudshop.dynamodb.AwsJsonClient`)
with SQS's particulars: SQS speaks the same AWS JSON 1.0 protocol (`x-amz-target:
AmazonSQS.SendMessageBatch`), as botocore >= 1.31 sends it.

Why (issue 9): the order service made its SQS calls with boto3 in worker threads (the outbox relay's
`SendMessageBatch`, the `payment-events` consumer's long polls and deletes), the payment service its
sends through `asyncio.to_thread`. botocore costs ~1 ms of CPU per call, and threads running it
contend for the GIL with the event loop, which delays everything else on it (health checks
included). Here a call is a waiting coroutine. Client CPU per `SendMessageBatch` of 10 messages
(`time.process_time()` of the client process only, 300 calls one after another, median of 3
interleaved rounds after a warm-up, boto3 client as `cloudshop.aws.client` builds it, counted and
traced hooks included):

                                               moto.server         moto behind uvicorn
                                               (a new connection   (kept alive, as SQS
                                               per call)           keeps them)
    boto3 `send_message_batch` in a thread         1.39 ms             1.10 ms
    this client                                    0.51 ms             0.21 ms

(uvloop: 1.12 / 0.33 ms and 1.08 / 0.20 ms.) What is left of this client's share is mostly the
kernel's loopback send, the same for both.

Requests and answers are SQS's JSON wire shapes (what boto3's low-level client takes and returns).
Requests are signed as boto3 signs them, `x-amzn-query-mode: true` included (SQS was a query-protocol
API: with it, errors carry `x-amzn-query-error`, and the code raised is the one boto3 reports, e.g.
`AWS.SimpleQueueService.NonExistentQueue` for a missing queue); a test checks the signature
byte-for-byte against botocore's.

Failures: a refusal (missing queue, invalid request) raises `SqsError` with its `code`; throttling,
5xx answers and transport failures are retried as the DynamoDB client retries them (botocore's
"standard" mode, a deadline per call, the `RetryBudget`), then `SqsUnavailable` (a
`DependencyUnavailable`). A retried send may deliver a message twice, exactly as with boto3: SQS is
at-least-once anyway, and every consumer here drops an event id it has seen. Per-entry failures of a
batch call are in its answer (`Failed`), for the caller.

A long poll (`receive_message(wait_seconds=...)`) gets a read timeout of the wait plus
`LONG_POLL_MARGIN_SECONDS`, and that much more deadline. Each call counts once in
`cloudshop_backend_calls_total` (kind `sqs`, the operation name as boto3's are counted) and makes one
CLIENT span named and tagged as `cloudshop.tracing.trace_boto_calls` names boto3's
(`sqs.SendMessageBatch`, `rpc.*`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from cloudshop.aws_json import botocore_credentials, regional_endpoint
from cloudshop.dynamodb import AwsJsonClient
from cloudshop.errors import DependencyUnavailable
from cloudshop.settings import Settings

# A send answers in milliseconds; these bound a dependency gone slow. Every caller is off the request
# path (the outbox relays, the payment-events consumer).
DEFAULT_TIMEOUT = httpx.Timeout(5.0, connect=2.0, pool=2.0)
DEFAULT_DEADLINE_SECONDS = 8.0
DEFAULT_MAX_CONNECTIONS = 32
# A long poll's answer comes up to `WaitTimeSeconds` late on purpose: each attempt waits that and this.
LONG_POLL_MARGIN_SECONDS = 5.0


class SqsError(Exception):
    """SQS refused the request (a client error): not retried. `code` is the one boto3 reports
    (`AWS.SimpleQueueService.NonExistentQueue`), `error_type` the JSON error's own (`QueueDoesNotExist`)."""

    def __init__(self, code: str, message: str, *, status: int = 400, error_type: str = "") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.error_type = error_type or code


class SqsUnavailable(DependencyUnavailable):
    """SQS could not be reached, or kept refusing (throttling, 5xx) after bounded retries."""

    def __init__(self, detail: str = "The queue is unavailable; try again.", *, code: str = "Unavailable") -> None:
        super().__init__(detail)
        self.code = code


class SqsClient(AwsJsonClient):
    """One per process: a pooled HTTP/1.1 keep-alive client to SQS (or moto locally)."""

    service = "sqs"
    target_prefix = "AmazonSQS."
    user_agent = "cloudshop-sqs"
    signed_headers = {"x-amzn-query-mode": "true"}
    default_timeout = DEFAULT_TIMEOUT
    default_deadline_seconds = DEFAULT_DEADLINE_SECONDS
    default_max_connections = DEFAULT_MAX_CONNECTIONS

    async def send_message_batch(self, queue_url: str, entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Up to 10 entries (`{"Id": ..., "MessageBody": ...}`); the answer lists `Successful` and `Failed`."""
        return await self.call("SendMessageBatch", {"QueueUrl": queue_url, "Entries": list(entries)})

    async def receive_message(
        self, queue_url: str, *, max_messages: int = 1, wait_seconds: int = 0, **options: Any
    ) -> dict[str, Any]:
        """Up to `max_messages` (at most 10) under `Messages`, waiting up to `wait_seconds` for the
        first; `options` are further `ReceiveMessage` fields (`VisibilityTimeout`, ...)."""
        request = {"QueueUrl": queue_url, "MaxNumberOfMessages": max_messages, "WaitTimeSeconds": wait_seconds}
        return await self._traced(
            "ReceiveMessage", {**request, **options}, read_timeout=wait_seconds + LONG_POLL_MARGIN_SECONDS
        )

    async def delete_message_batch(self, queue_url: str, entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Up to 10 entries (`{"Id": ..., "ReceiptHandle": ...}`); the answer lists `Successful` and `Failed`."""
        return await self.call("DeleteMessageBatch", {"QueueUrl": queue_url, "Entries": list(entries)})

    def _refused(self, code: str, message: str, status: int, body: dict[str, Any]) -> Exception:
        return SqsError(code, message, status=status, error_type=str(body.get("__type", "")).rsplit("#", 1)[-1])

    def _unavailable(self, detail: str | None, code: str) -> Exception:
        return SqsUnavailable(code=code) if detail is None else SqsUnavailable(detail, code=code)


def sqs_for(settings: Settings, **options: Any) -> SqsClient:
    """The process's SQS client for these settings (`settings.sqs_endpoint` locally, as
    `cloudshop.aws.client("sqs", ...)` resolves it, the regional endpoint in the cloud). Build it once
    at start-up and `aclose()` it at shutdown; `options` are `SqsClient`'s keyword arguments."""
    return SqsClient(
        endpoint=settings.sqs_endpoint or regional_endpoint("sqs", settings.aws_region),
        region=settings.aws_region,
        credentials=botocore_credentials(settings.aws_region),
        **options,
    )
