"""Lambda entry point, for both of the function's triggers: SQS batches of order events go to the
batch consumer; HTTP API events go to the same FastAPI app uvicorn serves, through Mangum."""

from cloudshop.lambda_entry import lambda_handler
from functions.notification.app import app
from functions.notification.bootstrap import build_consumer

_consumer = build_consumer(app.state.settings, service=app.state.notifications)
handler = lambda_handler(app, service="notification", sqs_batch=_consumer.process_batch)
