"""The product service's ASGI app: `uvicorn functions.product.app:app` locally, Mangum in Lambda."""

from cloudshop.settings import get_settings
from functions.product.bootstrap import build_app

app = build_app(get_settings())
