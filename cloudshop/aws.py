"""boto3 clients built from settings: one long-lived client per API per process.

Endpoints come from settings (moto or DynamoDB on loopback locally, nothing in the cloud), so the same
adapter code talks to every realisation of the estate.
"""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config

from cloudshop import tracing
from cloudshop.observability import count_backend_call
from cloudshop.settings import Settings

_CLIENT_CONFIG = Config(
    retries={"max_attempts": 3, "mode": "standard"},
    connect_timeout=2,
    read_timeout=10,
    max_pool_connections=64,
    tcp_keepalive=True,
)
_lock = threading.Lock()
_clients: dict[tuple[str, str | None, str], Any] = {}
# One session per region for every client: a session's first client lists botocore's ~400 service
# directories, loads the endpoint data and resolves the credentials (a DynamoDB client after a Secrets
# Manager one took 44 ms from a session of its own here, 9 ms from the same), so a Lambda building
# several clients (Secrets Manager at start-up, then DynamoDB, S3 or SES) pays that once.
_sessions: dict[str, boto3.session.Session] = {}


def client(api: str, settings: Settings) -> Any:
    endpoint = settings.endpoint_for(api)
    key = (api, endpoint, settings.aws_region)
    with _lock:
        if key not in _clients:
            # Neither making a session nor making a client from one is thread-safe: both under the lock.
            session = _sessions.get(settings.aws_region)
            if session is None:
                session = _sessions[settings.aws_region] = boto3.session.Session(region_name=settings.aws_region)
            made = session.client(api, endpoint_url=endpoint, config=_CLIENT_CONFIG)
            count_calls(made)
            tracing.trace_boto_calls(made)
            _clients[key] = made
        return _clients[key]


def count_calls(boto_client: Any) -> None:
    """Count each API call of a boto3 client in `cloudshop_backend_calls_total`, kind = its AWS
    service (`dynamodb`, `s3`, `sqs`, `ses`, ...). `before-call` fires once per call, before
    botocore's own retries, so a retried call counts once."""
    kind = boto_client.meta.service_model.service_name

    def counted(model: Any, **_: Any) -> None:
        # A handler of `before-call` that returned something would answer in place of the call.
        count_backend_call(kind, model.name)

    boto_client.meta.events.register("before-call", counted)


_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def to_item(data: dict[str, Any]) -> dict[str, Any]:
    """Python values to a DynamoDB item; None values are left out."""
    return {k: _serializer.serialize(v) for k, v in data.items() if v is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(_deserializer.deserialize(v)) for k, v in item.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def condition_failed(exc: Exception) -> bool:
    """Whether a DynamoDB call was refused by its ConditionExpression (the expected race outcome)."""
    response = getattr(exc, "response", None) or {}
    return bool(response.get("Error", {}).get("Code") == "ConditionalCheckFailedException")


def to_value(value: Any) -> dict[str, Any]:
    return _serializer.serialize(value)


class ClientOnFirstUse:
    """Stands in for `client(api, settings)` and builds that client on first use.

    For a client that only some routes use (S3 for product images, SES for the order email): building
    one loads its service model and endpoint rules, 40-80 ms of a Lambda cold start here.
    """

    def __init__(self, api: str, settings: Settings) -> None:
        self.api = api
        self._settings = settings
        self._client: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            self._client = client(self.api, self._settings)
        return getattr(self._client, name)
