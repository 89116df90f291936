"""Lambda entry point: the same FastAPI app uvicorn serves (Mangum, Powertools)."""

from cloudshop.lambda_entry import cold_start, lambda_handler

with cold_start():
    from functions.product.app import app

    handler = lambda_handler(app, service="product")
