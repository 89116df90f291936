"""Lambda entry point, for both of the function's triggers: SQS batches of order events go to the
batch consumer; HTTP API events go to the same FastAPI app uvicorn serves, through Mangum."""

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext
from mangum import Mangum

from functions.notification.app import app
from functions.notification.bootstrap import build_consumer
from functions.notification.consumer import is_sqs_batch

logger = Logger(service="notification")
tracer = Tracer(service="notification")
_asgi = Mangum(app, lifespan="off")
_consumer = build_consumer(app.state.settings, service=app.state.notifications)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if is_sqs_batch(event):
        return _consumer.process_batch(event, context)
    return _asgi(event, context)  # type: ignore[arg-type]
