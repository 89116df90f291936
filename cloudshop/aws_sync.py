"""Blocking AWS JSON clients for the Lambda functions: DynamoDB, Secrets Manager and SES.

The user and notification functions call DynamoDB from sync routes (one request at a time per
sandbox), and every function reads its secrets from Secrets Manager at start-up. botocore did both,
and its import plus its first client (service model, endpoint rules) cost ~90 ms of each cold start
here, over a third of the 250 ms budget (`python -m cloudshop.bench_imports`). These clients speak
the same protocol as the async ones of the EKS services (`cloudshop.aws_json`: the signer, the
error answers, the retryable codes; `cloudshop.retries`: the retry policy), over the standard
library's `http.client`: one keep-alive connection per thread.

SES: the notification function sends the order email with SESv2's `SendEmail`, a REST-JSON API
(the operation in the path, the code of a refusal in the `x-amzn-errortype` header; the same JSON
bodies and signature otherwise). Building botocore's SES client (its service model and endpoint
rules) cost each queue sandbox 60-95 ms of its first batch here, and each email 1.5 ms of client CPU
against 0.5 ms for this one (300 sends each to the same moto server).

The contract is botocore's low-level one where the functions use it (`get_item(**request)` takes
and returns DynamoDB's wire shapes), with cloudshop's errors: a refusal raises `DynamoDBError`
(`cloudshop.aws.condition_failed` reads it as it read botocore's `ClientError`), an outage
`DynamoDBUnavailable` (a 503) once the retries are spent.

Credentials: the environment's (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`),
which is where a Lambda function's role puts them; anywhere else (a profile, web identity) botocore's
chain, imported only then.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple
from urllib.parse import urlsplit

from cloudshop import tracing
from cloudshop.aws_json import (
    DYNAMODB_TARGET_PREFIX,
    JSON_1_0,
    JSON_1_1,
    DynamoDBError,
    DynamoDBUnavailable,
    SigV4Signer,
    botocore_credentials,
    dynamodb_span_attributes,
    error_answer,
    regional_endpoint,
)
from cloudshop.errors import DependencyUnavailable
from cloudshop.retries import BlockingRetries, RetriesExhausted, Retryable, RetryBudget
from cloudshop.settings import Settings

DEFAULT_CONNECT_TIMEOUT_SECONDS = 1.0
DEFAULT_READ_TIMEOUT_SECONDS = 3.0
DEFAULT_DEADLINE_SECONDS = 4.0
DEFAULT_MAX_ATTEMPTS = 3


class _Answer(NamedTuple):
    status: int
    content: bytes
    response: http.client.HTTPResponse

    def header(self, name: str) -> str | None:
        return self.response.getheader(name)


class Credentials(NamedTuple):
    access_key: str
    secret_key: str
    token: str | None


CredentialSource = Callable[[], Credentials]


def default_credentials(region: str) -> CredentialSource:
    """The environment's credentials (a Lambda function's); otherwise botocore's whole chain."""
    access_key, secret_key = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if access_key and secret_key:
        fixed = Credentials(access_key, secret_key, os.environ.get("AWS_SESSION_TOKEN") or None)
        return lambda: fixed

    resolve = botocore_credentials(region)
    chain: Any = None

    def from_botocore() -> Credentials:
        nonlocal chain
        if chain is None:
            chain = resolve()
        if chain is None:
            raise DependencyUnavailable("No AWS credentials were found.")
        # Refreshable credentials refresh themselves here, when due (a blocking call is fine on a thread).
        frozen = chain.get_frozen_credentials()
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)

    return from_botocore


class BlockingAwsJsonClient:
    """One per process and endpoint, shared by threads: each thread keeps one keep-alive connection.

    A subclass names the service (signing name, target prefix, protocol version, whether answers
    carry DynamoDB's CRC32) and the exceptions for a refusal and an outage. A REST-JSON API names
    the path of each operation instead (`_route`).
    """

    service: ClassVar[str]
    # The first label of the regional endpoint's host, where it is not the signing name (SES: `email`).
    endpoint_name: ClassVar[str | None] = None
    target_prefix: ClassVar[str] = ""
    content_type: ClassVar[str] = JSON_1_0
    check_crc32: ClassVar[bool] = False

    def __init__(
        self,
        *,
        endpoint: str,
        region: str,
        credentials: CredentialSource | None = None,
        connect_timeout_seconds: float = DEFAULT_CONNECT_TIMEOUT_SECONDS,
        read_timeout_seconds: float = DEFAULT_READ_TIMEOUT_SECONDS,
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_budget: RetryBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) endpoint: {endpoint!r}")
        self.endpoint = endpoint
        self.region = region
        self._https = url.scheme == "https"
        self._hostname = url.hostname
        self._port = url.port
        self._host = url.netloc
        self._credentials = credentials or default_credentials(region)
        self._signer = SigV4Signer(region=region, service=self.service)
        self._connect_timeout = connect_timeout_seconds
        self._read_timeout = read_timeout_seconds
        self._deadline = deadline_seconds
        self._retries = BlockingRetries(max_attempts=max_attempts, budget=retry_budget, jitter=jitter, sleep=sleep)
        self._clock = clock
        self._local = threading.local()

    def call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        """Run one operation (`GetItem`, `GetSecretValue`, ...) and return its answer."""
        if tracing.enabled():
            # One CLIENT span per call, retries inside it (only inside a trace: see cloudshop.tracing).
            attributes = self._span_attributes(operation)
            with tracing.span(f"{self.service}.{operation}", kind=tracing.SpanKind.CLIENT, attributes=attributes):
                return self._call(operation, request)
        return self._call(operation, request)

    def close(self) -> None:
        """Close the calling thread's connection (the others close with their threads)."""
        self._drop_connection()

    def _route(self, operation: str) -> tuple[str, str | None]:
        """(path, X-Amz-Target) of an operation: the JSON protocol posts every one to `/`."""
        return "/", self.target_prefix + operation

    def _call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(request, separators=(",", ":")).encode()
        path, target = self._route(operation)
        deadline = time.monotonic() + self._deadline
        try:
            return self._retries.call(
                lambda: self._attempt(path, target, body, deadline),
                service=self.service,
                operation=operation,
                deadline=deadline,
            )
        except RetriesExhausted as exc:
            raise self._unavailable(exc.last.code) from exc.last

    def _attempt(self, path: str, target: str | None, body: bytes, deadline: float) -> dict[str, Any]:
        credentials = self._credentials()
        headers = self._signer.sign(
            host=self._host,
            target=target,
            body=body,
            access_key=credentials.access_key,
            secret_key=credentials.secret_key,
            token=credentials.token,
            now=self._clock(),
            content_type=self.content_type,
            path=path,
        )
        headers["user-agent"] = f"cloudshop-{self.service}"
        headers["accept-encoding"] = "identity"
        # The last attempt only gets what is left of the call's budget.
        read_timeout = max(0.01, min(self._read_timeout, deadline - time.monotonic()))
        answer = self._exchange(path, headers, body, read_timeout)
        if answer.status == 200:
            crc32 = answer.header("x-amz-crc32")
            if self.check_crc32 and crc32 is not None and crc32.isdigit() and int(crc32) != zlib.crc32(answer.content):
                raise Retryable("CRC32CheckFailed", "the answer was damaged in transit")
            result: dict[str, Any] = json.loads(answer.content) if answer.content else {}
            return result
        error = error_answer(
            answer.status, answer.content, answer.header("x-amzn-query-error"), answer.header("x-amzn-errortype")
        )
        if error.retryable:
            raise Retryable(error.code, error.message)
        raise self._refused(error.code, error.message, error.status, error.body)

    def _exchange(self, path: str, headers: dict[str, str], body: bytes, read_timeout: float) -> _Answer:
        """Send the request on the thread's connection and read the whole answer.

        A kept-alive connection the server has closed meanwhile (an idle timeout; a Lambda sandbox
        frozen between invocations) fails on its next use: that use is repeated once on a new
        connection, at once, not counted as a retry."""
        connection, reused = self._connection()
        while True:
            try:
                if connection.sock is not None:
                    connection.sock.settimeout(read_timeout)
                connection.request("POST", path, body=body, headers=headers)
                # The connect used the connect timeout; the answer gets the read timeout.
                if connection.sock is not None:
                    connection.sock.settimeout(read_timeout)
                response = connection.getresponse()
                answer = _Answer(response.status, response.read(), response)
            except TimeoutError as exc:
                self._drop_connection()
                raise Retryable("Timeout", repr(exc)) from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                if reused:
                    connection, reused = self._new_connection(), False
                    continue
                raise Retryable("ConnectionError", repr(exc)) from exc
            if response.will_close:
                self._drop_connection()
            return answer

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection, True
        return self._new_connection(), False

    def _new_connection(self) -> http.client.HTTPConnection:
        self._drop_connection()
        factory = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        connection = factory(self._hostname, self._port, timeout=self._connect_timeout)
        self._local.connection = connection
        return connection

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()

    def _span_attributes(self, operation: str) -> dict[str, str]:
        return {"rpc.system": "aws-api", "rpc.service": self.service, "rpc.method": operation}

    def _refused(self, code: str, message: str, status: int, body: dict[str, Any]) -> Exception:
        raise NotImplementedError

    def _unavailable(self, code: str) -> Exception:
        raise NotImplementedError


class BlockingDynamoDB(BlockingAwsJsonClient):
    """DynamoDB for sync code: the operations the functions use, in botocore's low-level shape."""

    service = "dynamodb"
    target_prefix = DYNAMODB_TARGET_PREFIX
    check_crc32 = True

    def get_item(self, **request: Any) -> dict[str, Any]:
        return self.call("GetItem", request)

    def put_item(self, **request: Any) -> dict[str, Any]:
        return self.call("PutItem", request)

    def update_item(self, **request: Any) -> dict[str, Any]:
        return self.call("UpdateItem", request)

    def delete_item(self, **request: Any) -> dict[str, Any]:
        return self.call("DeleteItem", request)

    def query(self, **request: Any) -> dict[str, Any]:
        return self.call("Query", request)

    def transact_write_items(self, **request: Any) -> dict[str, Any]:
        return self.call("TransactWriteItems", request)

    def describe_table(self, **request: Any) -> dict[str, Any]:
        return self.call("DescribeTable", request)

    def _span_attributes(self, operation: str) -> dict[str, str]:
        return dynamodb_span_attributes(operation)

    def _refused(self, code: str, message: str, status: int, body: dict[str, Any]) -> Exception:
        return DynamoDBError(
            code, message, status=status, item=body.get("Item"), cancellation_reasons=body.get("CancellationReasons")
        )

    def _unavailable(self, code: str) -> Exception:
        return DynamoDBUnavailable(code=code)


class SecretRefused(Exception):
    """Secrets Manager refused to give the secret (missing, no access, ...): `code` says which."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class SecretsManager(BlockingAwsJsonClient):
    """Secrets Manager's `GetSecretValue`, all the functions ask of it (at start-up)."""

    service = "secretsmanager"
    target_prefix = "secretsmanager."
    content_type = JSON_1_1

    def get_secret_value(self, **request: Any) -> dict[str, Any]:
        return self.call("GetSecretValue", request)

    def _refused(self, code: str, message: str, status: int, body: dict[str, Any]) -> Exception:
        return SecretRefused(code, message)

    def _unavailable(self, code: str) -> Exception:
        return DependencyUnavailable(f"Secrets Manager is unavailable ({code}); try again.")


class SesRefused(Exception):
    """SES refused to send (`MessageRejected`: a sender not verified, an address on the suppression
    list; `AccountSuspendedException`, `SendingPausedException`, ...): `code` says which."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class BlockingSesV2(BlockingAwsJsonClient):
    """SESv2's `SendEmail`, the one SES operation the functions use, in its wire shape
    (`FromEmailAddress`, `Destination`, `Content`). Throttling (`TooManyRequestsException`) and
    5xx answers are retried like any other; a refusal raises `SesRefused`."""

    service = "ses"
    endpoint_name = "email"
    content_type = "application/json"
    paths: ClassVar[dict[str, str]] = {"SendEmail": "/v2/email/outbound-emails"}

    def send_email(self, **request: Any) -> dict[str, Any]:
        return self.call("SendEmail", request)

    def _route(self, operation: str) -> tuple[str, str | None]:
        return self.paths[operation], None

    def _refused(self, code: str, message: str, status: int, body: dict[str, Any]) -> Exception:
        return SesRefused(code, message)

    def _unavailable(self, code: str) -> Exception:
        return DependencyUnavailable(f"SES is unavailable ({code}); try again.")


_lock = threading.Lock()
_clients: dict[tuple[type[BlockingAwsJsonClient], str, str], BlockingAwsJsonClient] = {}


def _client_for(kind: type[BlockingAwsJsonClient], settings: Settings) -> BlockingAwsJsonClient:
    endpoint = settings.endpoint_for(kind.service) or regional_endpoint(
        kind.endpoint_name or kind.service, settings.aws_region
    )
    key = (kind, endpoint, settings.aws_region)
    with _lock:
        if key not in _clients:
            _clients[key] = kind(endpoint=endpoint, region=settings.aws_region)
        return _clients[key]


def dynamodb_for(settings: Settings) -> BlockingDynamoDB:
    """The process's blocking DynamoDB client for these settings (one per endpoint and region)."""
    client = _client_for(BlockingDynamoDB, settings)
    assert isinstance(client, BlockingDynamoDB)
    return client


def secrets_manager_for(settings: Settings) -> SecretsManager:
    """The process's Secrets Manager client for these settings."""
    client = _client_for(SecretsManager, settings)
    assert isinstance(client, SecretsManager)
    return client


def ses_for(settings: Settings) -> BlockingSesV2:
    """The process's SES client for these settings."""
    client = _client_for(BlockingSesV2, settings)
    assert isinstance(client, BlockingSesV2)
    return client
