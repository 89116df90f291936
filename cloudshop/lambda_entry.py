"""The one Lambda entry every Lambda service uses: its FastAPI app behind Mangum, with Powertools
logging and tracing, and (for a function on a queue) SQS batches handed to a batch processor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext
from fastapi import FastAPI
from mangum import Mangum

Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


def is_sqs_batch(event: Any) -> bool:
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list) or not records:
        return False
    return all(isinstance(r, dict) and r.get("eventSource") == "aws:sqs" for r in records)


def lambda_handler(app: FastAPI, *, service: str, sqs_batch: Handler | None = None) -> Handler:
    """HTTP API events go to `app`; SQS batches to `sqs_batch` when the function has a queue."""
    logger = Logger(service=service)
    tracer = Tracer(service=service)
    asgi = Mangum(app, lifespan="off")

    @logger.inject_lambda_context(clear_state=True)
    @tracer.capture_lambda_handler
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        if sqs_batch is not None and is_sqs_batch(event):
            return sqs_batch(event, context)
        return asgi(event, context)  # type: ignore[arg-type]

    return handler
