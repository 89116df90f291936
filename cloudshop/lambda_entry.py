"""The one Lambda entry every Lambda service uses: its FastAPI app behind Mangum, with Powertools
logging and tracing, and (for a function on a queue) SQS batches handed to a batch processor.

With OpenTelemetry on (`cloudshop.tracing`, configured by the app), an SQS batch gets an invocation
span, HTTP invocations the app's server span, and each invocation ends by flushing its spans to the
ADOT collector layer (a frozen sandbox would otherwise hold them until its next invocation)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer
from mangum import Mangum

from cloudshop import tracing

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext
    from fastapi import FastAPI

Handler = Callable[[dict[str, Any], "LambdaContext"], dict[str, Any]]

# The libraries X-Ray's `patch_all` would patch (its NO_DOUBLE_PATCH list), each with the module that
# shows it is in use. `patch_all` imports every one it finds installed to patch it: httpx, requests
# and SQLAlchemy for a function that uses none of them, 100-300 ms of a cold start here. Patching only
# what the app has already imported traces the same calls for none of that cost.
TRACEABLE_MODULES = {
    "aiobotocore": "aiobotocore",
    "botocore": "botocore",
    "pynamodb": "pynamodb",
    "requests": "requests",
    "sqlite3": "sqlite3",
    "mysql": "mysql.connector",
    "pymongo": "pymongo",
    "pymysql": "pymysql",
    "psycopg2": "psycopg2",
    "psycopg": "psycopg",
    "pg8000": "pg8000",
    "sqlalchemy_core": "sqlalchemy",
    "httpx": "httpx",
}


def loaded_traceable_modules() -> list[str]:
    """X-Ray patch names of the traceable libraries this process has imported so far."""
    return sorted(name for name, module in TRACEABLE_MODULES.items() if module in sys.modules)


def is_sqs_batch(event: Any) -> bool:
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list) or not records:
        return False
    return all(isinstance(r, dict) and r.get("eventSource") == "aws:sqs" for r in records)


def lambda_handler(app: FastAPI, *, service: str, sqs_batch: Handler | None = None) -> Handler:
    """HTTP API events go to `app`; SQS batches to `sqs_batch` when the function has a queue.

    Call it after the app is built: the libraries the app has imported by then are the ones traced.
    """
    logger = Logger(service=service)
    tracer = Tracer(service=service, auto_patch=False)
    if not tracer.disabled:
        from aws_xray_sdk.core import patch

        # raise_errors=False as in patch_all: a library X-Ray cannot patch (psycopg without
        # psycopg_pool) goes untraced rather than failing the cold start.
        patch(loaded_traceable_modules(), raise_errors=False)
    asgi = Mangum(app, lifespan="off")

    @logger.inject_lambda_context(clear_state=True)
    @tracer.capture_lambda_handler
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        if not tracing.enabled():
            return _dispatch(event, context)
        try:
            return _dispatch(event, context)
        finally:
            # The sandbox may be frozen once the handler returns: what the invocation traced goes now.
            tracing.flush()

    def _dispatch(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        if sqs_batch is not None and is_sqs_batch(event):
            # The invocation's span; each message's own span continues the trace its event carries.
            attributes = {"faas.trigger": "pubsub", "messaging.batch.message_count": len(event["Records"])}
            with tracing.span(f"{service} sqs batch", kind=tracing.SpanKind.CONSUMER, root=True, attributes=attributes):
                return sqs_batch(event, context)
        return asgi(event, context)  # type: ignore[arg-type]

    return handler
