"""The order service's ASGI app: `uvicorn eks_services.order.app:app` (container on EKS, or locally)."""

from cloudshop.settings import get_settings
from eks_services.order.bootstrap import build_app

app = build_app(get_settings())
