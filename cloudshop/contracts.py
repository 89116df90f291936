"""Contracts as files: the OpenAPI document of every service and the JSON Schema of every event.

`cloudshop schemas` (`make schemas`) writes them; a test regenerates them and fails when the committed
files differ, so an API or event change is always visible in review.
"""

from __future__ import annotations

import json
from importlib import import_module
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from cloudshop.auth import generate_key_pair
from cloudshop.estate import ESTATE
from cloudshop.events import write_schemas
from cloudshop.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# service → (bootstrap module, the directory its openapi.json lives in)
SERVICES: dict[str, tuple[str, Path]] = {
    "user": ("functions.user.bootstrap", ROOT / "functions" / "user"),
    "product": ("functions.product.bootstrap", ROOT / "functions" / "product"),
    "notification": ("functions.notification.bootstrap", ROOT / "functions" / "notification"),
    "order": ("eks_services.order.bootstrap", ROOT / "eks_services" / "order"),
    "payment": ("eks_services.payment.bootstrap", ROOT / "eks_services" / "payment"),
}


def openapi_documents() -> dict[str, dict[str, Any]]:
    """Build every app with throwaway settings (nothing is contacted) and ask it for its document."""
    return {service: app.openapi() for service, app in service_apps().items()}


def service_apps() -> dict[str, Any]:
    """Every service's app, built with throwaway settings: nothing is contacted."""
    _, public = generate_key_pair()
    settings = Settings(
        jwt_public_key=public,
        internal_token_secrets={pair: SecretStr("x" * 32) for pair in ESTATE.token_pairs},
        database_url="sqlite://",
        aws_endpoint_url="http://127.0.0.1:9",
        outbox_relay_enabled=False,
    )
    return {service: import_module(module).build_app(settings) for service, (module, _) in SERVICES.items()}


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def write_contracts() -> list[Path]:
    written = write_schemas()
    for service, document in openapi_documents().items():
        path = SERVICES[service][1] / "openapi.json"
        path.write_text(render(document))
        written.append(path)
    return written
