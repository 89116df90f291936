"""Lambda entry point: the same FastAPI app uvicorn serves (Mangum, Powertools)."""

from cloudshop.lambda_entry import lambda_handler
from functions.user.app import app

handler = lambda_handler(app, service="user")
