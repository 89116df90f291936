"""AWS clients built from settings (one long-lived client per API per process), and DynamoDB items.

Endpoints come from settings (moto, dynalite or ElasticMQ on loopback locally, nothing in the cloud),
so the same adapter code talks to every realisation of the estate.

Clients are botocore's, made on first use: boto3 adds nothing to a low-level client but its import
(~55 ms, most of it s3transfer, pulled in by `boto3.compat`), and the Lambdas count their cold
start. Items are converted here rather than by boto3's `TypeSerializer`, for the same reason and
because the conversion runs on every DynamoDB call of a request.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Set
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from cloudshop import tracing
from cloudshop.observability import count_backend_call
from cloudshop.settings import Settings

if TYPE_CHECKING:
    import botocore.session

_lock = threading.Lock()
_clients: dict[tuple[str, str | None, str], Any] = {}
# One botocore session for every client: a session's first client lists botocore's ~400 service
# directories, loads the endpoint data and resolves the credentials (a DynamoDB client after a Secrets
# Manager one took 44 ms from a session of its own here, 9 ms from the same), so a Lambda building
# several clients (Secrets Manager at start-up, then DynamoDB, S3 or SES) pays that once.
_session: botocore.session.Session | None = None


def client(api: str, settings: Settings) -> Any:
    global _session
    endpoint = settings.endpoint_for(api)
    key = (api, endpoint, settings.aws_region)
    with _lock:
        if key not in _clients:
            import botocore.session
            from botocore.config import Config

            # Neither making a session nor making a client from one is thread-safe: both under the lock.
            if _session is None:
                _session = botocore.session.get_session()
            config = Config(
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=2,
                read_timeout=10,
                max_pool_connections=64,
                tcp_keepalive=True,
            )
            made = _session.create_client(api, region_name=settings.aws_region, endpoint_url=endpoint, config=config)
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


def to_item(data: Mapping[str, Any]) -> dict[str, Any]:
    """Python values to a DynamoDB item; None values are left out."""
    return {k: to_value(v) for k, v in data.items() if v is not None}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A DynamoDB item to plain Python: numbers become int when whole, float otherwise."""
    return {k: _plain(v) for k, v in item.items()}


def to_value(value: Any) -> dict[str, Any]:
    """One Python value as a DynamoDB attribute value (the types boto3's `TypeSerializer` takes)."""
    # bool before int: a bool is an int.
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, (int, Decimal)):
        return {"N": _number(value)}
    if value is None:
        return {"NULL": True}
    if isinstance(value, (bytes, bytearray)):
        return {"B": bytes(value)}
    if isinstance(value, Mapping):
        return {"M": {str(k): to_value(v) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"L": [to_value(v) for v in value]}
    if isinstance(value, Set) and value:
        if all(isinstance(v, str) for v in value):
            return {"SS": sorted(value)}
        if all(isinstance(v, (int, Decimal)) and not isinstance(v, bool) for v in value):
            return {"NS": sorted(_number(v) for v in value)}
        if all(isinstance(v, (bytes, bytearray)) for v in value):
            return {"BS": sorted(bytes(v) for v in value)}
    # Floats are refused as boto3 refuses them: a binary float is not the decimal DynamoDB stores.
    raise TypeError(f"unsupported DynamoDB value {value!r} of type {type(value).__name__}")


def _number(value: int | Decimal) -> str:
    if isinstance(value, Decimal) and not value.is_finite():
        raise TypeError(f"DynamoDB stores finite numbers only, not {value}")
    return str(value)


def _plain(value: Mapping[str, Any]) -> Any:
    ((kind, data),) = value.items()
    if kind == "S":
        return data
    if kind == "N":
        return _plain_number(data)
    if kind == "BOOL":
        return bool(data)
    if kind == "M":
        return {k: _plain(v) for k, v in data.items()}
    if kind == "L":
        return [_plain(v) for v in data]
    if kind == "NULL":
        return None
    if kind == "B":
        return bytes(data)
    if kind == "SS":
        return set(data)
    if kind == "NS":
        return {_plain_number(v) for v in data}
    if kind == "BS":
        return {bytes(v) for v in data}
    raise TypeError(f"unknown DynamoDB attribute type {kind}")


def _plain_number(text: str) -> int | float:
    number = Decimal(text)
    return int(number) if number == number.to_integral_value() else float(number)


def condition_failed(exc: Exception) -> bool:
    """Whether a DynamoDB call was refused by its ConditionExpression (the expected race outcome)."""
    response = getattr(exc, "response", None) or {}
    return bool(response.get("Error", {}).get("Code") == "ConditionalCheckFailedException")


class ClientOnFirstUse:
    """Stands in for `client(api, settings)` and builds that client on first use.

    For a client that only some routes use (S3 for the product function's image routes): building
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
