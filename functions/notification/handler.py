"""Lambda entry point, for both of the function's triggers: SQS batches of order events go to the
batch consumer; HTTP API events go to the same FastAPI app uvicorn serves, through Mangum.

Each trigger builds what only it needs on its first event: the batch consumer (Powertools' batch and
idempotency utilities) on the first batch, the FastAPI app on the first HTTP event. The queue is the
function's busiest trigger (every order event), and a sandbox it starts never loads FastAPI (~200 ms
of the import here); a sandbox started by an HTTP event pays that on its first request instead."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from cloudshop.lambda_entry import cold_start, lambda_handler

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext
    from fastapi import FastAPI

    from functions.notification.consumer import OrderEventConsumer


@cache
def _consumer() -> OrderEventConsumer:
    return build_consumer(settings, service=notifications)


def _process_batch(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return _consumer().process_batch(event, context)


def _app() -> FastAPI:
    return build_app(settings, service=notifications)


with cold_start():
    from cloudshop.observability import configure_process
    from cloudshop.settings import get_settings
    from functions.notification.bootstrap import build_app, build_consumer, build_service

    settings = get_settings()
    # What building the app does for the whole process, done now: a batch is logged and traced as a
    # request is, though only the first HTTP event builds the app.
    configure_process("notification", settings)
    notifications = build_service(settings)
    handler = lambda_handler(build_app=_app, service="notification", sqs_batch=_process_batch)
