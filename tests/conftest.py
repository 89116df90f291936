"""Shared fixtures: keys, a moto server, the provisioned estate, settings and service apps.

Real servers (PostgreSQL, Kafka, moto, dynalite and ElasticMQ, each a separate process) come from
`tests.fixtures.servers`.
"""

from __future__ import annotations

import logging
import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
logging.getLogger("werkzeug").setLevel(logging.ERROR)

from cloudshop.auth import generate_key_pair  # noqa: E402
from cloudshop.estate import ESTATE  # noqa: E402
from cloudshop.provision import provision  # noqa: E402
from cloudshop.settings import Settings, resource_settings  # noqa: E402

pytest_plugins = ["tests.fixtures.servers", "tests.fixtures.platform"]

ADMIN_EMAIL = "admin@cloudshop.test"
ADMIN_PASSWORD = "admin-pass-123"


@pytest.fixture(scope="session")
def key_pair() -> tuple[str, str]:
    return generate_key_pair()


@pytest.fixture(scope="session")
def internal_secrets() -> dict[str, str]:
    """One service-token secret per calling pair (`ESTATE.token_pairs`), as the runner and CDK make them."""
    return {pair: secrets.token_urlsafe(32) for pair in ESTATE.token_pairs}


@pytest.fixture(scope="session")
def aws_endpoint(moto_server: Any) -> str:
    return str(moto_server.endpoint_url)


@pytest.fixture(scope="session")
def make_settings(
    key_pair: tuple[str, str],
    internal_secrets: dict[str, str],
    aws_endpoint: str,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Callable[..., Settings]:
    """Settings for a test estate, provisioned once per (prefix, DynamoDB server, SQS server) per session.

    `dynamodb="dynalite"` puts the tables on the dynalite server (the full profile's DynamoDB);
    the default keeps everything on moto, as the embedded profile does. `sqs` picks the queues'
    server, `"moto"` or `"elasticmq"`; unset, it follows the profile `dynamodb` names: ElasticMQ
    beside dynalite (the full profile), moto beside moto (the embedded one).
    """
    provisioned: dict[tuple[str, str, str], dict[str, str]] = {}
    private, public = key_pair
    root = tmp_path_factory.mktemp("cloudshop")

    def factory(
        *,
        prefix: str = "test-",
        database_url: str | None = None,
        dynamodb: str = "moto",
        sqs: str | None = None,
        **overrides: Any,
    ) -> Settings:
        sqs = sqs or ("elasticmq" if dynamodb == "dynalite" else "moto")
        if sqs not in ("moto", "elasticmq"):
            raise ValueError(f"sqs={sqs!r}: the queues live on 'moto' or 'elasticmq'")
        values: dict[str, Any] = {
            "environment": "test",
            "aws_endpoint_url": aws_endpoint,
            "jwt_private_key": private,
            "jwt_public_key": public,
            "internal_token_secrets": internal_secrets,
            "database_url": database_url or f"sqlite:///{root / (prefix + 'db.sqlite')}",
            "event_log_dir": str(root / (prefix + "events")),
            "log_level": "WARNING",
        }
        if dynamodb == "dynalite":
            values["dynamodb_endpoint_url"] = request.getfixturevalue("dynamodb_server").endpoint_url
        if sqs == "elasticmq":
            values["sqs_endpoint_url"] = request.getfixturevalue("sqs_server").endpoint_url
        values.update({k.lower(): v for k, v in resource_settings(prefix).items()})
        values.update(overrides)
        settings = Settings(**values)
        estate = (prefix, dynamodb, sqs)
        if estate not in provisioned:
            provisioned[estate] = provision(settings)
        settings.order_events_queue_url = provisioned[estate]["order-events"]
        settings.payment_events_queue_url = provisioned[estate]["payment-events"]
        return settings

    return factory


@pytest.fixture(scope="session")
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each SQL test runs twice: on SQLite and on the real PostgreSQL the test tooling started."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    # A fresh database per test, so SQL tests never see each other's rows.
    server = request.getfixturevalue("postgres_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    server.create_database(name)
    return str(server.url_for(name))


@pytest.fixture
def unique_email() -> Callable[[str], str]:
    return lambda stem="user": f"{stem}-{uuid.uuid4().hex[:10]}@example.com"


def client_for(app: Any) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
