"""The user service's ASGI app: `uvicorn functions.user.app:app` locally, Mangum in Lambda."""

from cloudshop.settings import get_settings
from functions.user.bootstrap import build_app

app = build_app(get_settings())
