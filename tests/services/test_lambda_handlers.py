"""The Lambda entry points serve the same FastAPI apps: invoke them with API Gateway HTTP API v2 events."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cloudshop import settings as settings_module
from cloudshop.settings import Settings
from functions.product.bootstrap import build_catalog
from functions.product.bootstrap import migrate_schema as migrate_products
from functions.product.seed import seed_catalog
from functions.user.bootstrap import build_service
from functions.user.bootstrap import migrate_schema as migrate_users

EVENTS = Path(__file__).parent.parent / "events"


class Context:
    function_name = "cloudshop-test"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:cloudshop-test"
    aws_request_id = "c0ffee00-0000-4000-8000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def settings_environment(settings: Settings) -> dict[str, str]:
    """`settings` as a function's environment variables (what CDK writes, secrets as values)."""
    environment = {}
    for name, value in settings.model_dump().items():
        if value is None or name in ("admin_email", "admin_password"):
            continue
        plain = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        if isinstance(plain, dict):  # JSON, as CDK writes it (the service-token secrets by pair)
            plain = json.dumps(
                {k: v.get_secret_value() if hasattr(v, "get_secret_value") else v for k, v in plain.items()}
            )
        environment[name.upper()] = str(plain)
    return environment


def load_handler(module: str, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict[str, Any]]:
    """Import a handler the way Lambda does: a fresh interpreter state configured from the environment."""
    for name, value in settings_environment(settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    settings_module.get_settings.cache_clear()
    for loaded in [m for m in sys.modules if m.startswith(module.rsplit(".", 1)[0])]:
        if loaded.endswith((".app", ".handler")):
            del sys.modules[loaded]
    return importlib.import_module(module).handler  # type: ignore[no-any-return]


@pytest.fixture
def lambda_settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'lambda.db'}")
    users = build_service(settings)
    migrate_users(users.users.engine)
    catalog = build_catalog(settings, users.users.engine)
    migrate_products(catalog.products.engine)
    seed_catalog(catalog)
    return settings


def test_product_handler_answers_an_http_api_v2_event(
    lambda_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = load_handler("functions.product.handler", lambda_settings, monkeypatch)
    event = json.loads((EVENTS / "apigw_v2_list_products.json").read_text())

    answer = handler(event, Context())

    assert answer["statusCode"] == 200
    body = json.loads(answer["body"])
    assert len(body["items"]) == 3 and all(p["category"] == "books" for p in body["items"])
    assert answer["headers"]["x-request-id"] == "lambda-test-1"


def test_user_handler_registers_through_an_http_api_v2_event(
    lambda_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = load_handler("functions.user.handler", lambda_settings, monkeypatch)
    event = json.loads((EVENTS / "apigw_v2_register.json").read_text())

    answer = handler(event, Context())

    assert answer["statusCode"] == 201, answer["body"]
    assert json.loads(answer["body"])["email"] == "lambda-user@example.com"
    bad = dict(event, body="{not json")
    refused = handler(bad, Context())
    assert refused["statusCode"] == 400 and refused["headers"]["content-type"] == "application/problem+json"
