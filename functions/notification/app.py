"""The notification service's ASGI app: `uvicorn functions.notification.app:app` locally, Mangum in
Lambda."""

from cloudshop.settings import get_settings
from functions.notification.bootstrap import build_app

app = build_app(get_settings())
