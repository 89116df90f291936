"""Lambda entry point: the same FastAPI app, wrapped by Mangum, with Powertools logging and tracing."""

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext
from mangum import Mangum

from functions.product.app import app

logger = Logger(service="product")
tracer = Tracer(service="product")
_asgi = Mangum(app, lifespan="off")


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def handler(event: dict, context: LambdaContext) -> dict:
    return _asgi(event, context)  # type: ignore[arg-type]
