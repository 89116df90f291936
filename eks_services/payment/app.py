"""The payment service's ASGI app: `uvicorn eks_services.payment.app:app` (the container's entry)."""

from cloudshop.settings import get_settings
from eks_services.payment.bootstrap import build_app

app = build_app(get_settings())
