"""Lambda entry point, for both of the function's triggers: SQS batches of order events go to the
batch consumer; HTTP API events go to the same FastAPI app uvicorn serves, through Mangum."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from cloudshop.lambda_entry import cold_start, lambda_handler

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from functions.notification.consumer import OrderEventConsumer


@cache
def _consumer() -> OrderEventConsumer:
    # Built by the first batch, not at import: an HTTP API invocation never needs the batch processor.
    return build_consumer(app.state.settings, service=app.state.notifications)


def _process_batch(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return _consumer().process_batch(event, context)


with cold_start():
    from functions.notification.app import app
    from functions.notification.bootstrap import build_consumer

    handler = lambda_handler(app, service="notification", sqs_batch=_process_batch)
