"""An async S3 client for single small objects: `PutObject` and `HeadObject` over a keep-alive pool.

Why: a py-spy profile of the order service under a checkout load had ~24% of its CPU in
boto3/botocore writing invoices (`eks_services.order.invoice`): botocore's request model, its
serialiser, endpoint rules and signer, urllib3, and a worker thread per call. This client does for
those two calls what `cloudshop.dynamodb` does for DynamoDB: it builds the request itself, signs it
with the same `SigV4Signer` (service `s3`), and sends it through `cloudshop.http_pool`
(`PooledTransport` and `Endpoint`), so a call costs a waiting coroutine, not a thread.

Client CPU per PutObject (`time.process_time()` of the client process only), a 526-byte invoice,
500 calls one after another, median of 3 interleaved rounds after a warm-up, boto3 client as
`cloudshop.aws.client` builds it (counted and traced hooks included):

                                               moto.server         moto behind uvicorn
                                               (a new connection   (kept alive, as S3
                                               per call)           keeps them)
    boto3 `put_object` in asyncio.to_thread        1.30 ms             1.00 ms
    this client                                    0.31 ms             0.12 ms

(uvloop: 1.28 / 0.24 ms and 1.04 / 0.12 ms.)

Addressing, as boto3 does it: against a custom endpoint (`AWS_ENDPOINT_URL`: moto locally),
path-style `{endpoint}/{bucket}/{key}`; against AWS, virtual-hosted
`https://{bucket}.s3.{region}.amazonaws.com/{key}` for a bucket whose name can be a host label (no
dots, since those would not match the TLS certificate's wildcard), path-style on the regional
endpoint otherwise. The key is URI-encoded once (each byte but unreserved characters and `/`
percent-encoded), and the signature covers exactly that path: S3 does not double-encode.

Signed: host, x-amz-date, x-amz-content-sha256 (the body's SHA-256: bodies here are small, so the
payload is always signed), x-amz-security-token with temporary credentials, content-type on a PUT.
A test checks the signature byte-for-byte against what a boto3 client sends for the same request.

Credentials come from botocore's own chain, resolved on first use and refreshed by botocore in a
worker thread (`cloudshop.dynamodb.AwsCredentials`, which the DynamoDB client uses too).

Failures: a refusal that retrying cannot change (`AccessDenied`, `NoSuchBucket`, ...) raises
`S3Error` with S3's `code` and `message`; a 404 answer to HEAD is not a failure (`head_object`
returns None). Throttling (`SlowDown`, 429, 503), other 5xx answers, timeouts and connection
failures are retried as botocore's "standard" mode does (at most `max_attempts` in all, full-jitter
backoff) within a `deadline_seconds` budget per call and a `RetryBudget`; then `S3Unavailable`, a
`DependencyUnavailable` (a 503 if nothing handles it). Both calls are idempotent, so a retry is safe.

Each call counts once in `cloudshop_backend_calls_total` (kind `s3`, operation `PutObject` or
`HeadObject`, as `cloudshop.aws.count_calls` counts boto3's), and makes one CLIENT span named and
tagged as `cloudshop.tracing.trace_boto_calls` names boto3's (`s3.PutObject`, `rpc.*`).
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import anyio
import httpx

from cloudshop import tracing
from cloudshop.aws_json import RETRYABLE_CODES, SigV4Signer, amz_date_of, botocore_credentials, regional_endpoint
from cloudshop.clients import MAX_IDLE_CONNECTIONS
from cloudshop.dynamodb import AwsCredentials, CredentialRefreshFailed, CredentialSource, NoCredentials
from cloudshop.errors import DependencyUnavailable
from cloudshop.http_pool import Answer, Endpoint, PooledTransport
from cloudshop.retries import Retries, RetriesExhausted, Retryable, RetryBudget
from cloudshop.settings import Settings

USER_AGENT = "cloudshop-s3"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


# An S3 PUT of a small object answers in tens of milliseconds; these bound a dependency gone slow,
# below the order service's own budget per request (`service_timeout_seconds`, 10 s).
DEFAULT_TIMEOUT = httpx.Timeout(5.0, connect=2.0, pool=2.0)
DEFAULT_DEADLINE_SECONDS = 8.0
DEFAULT_MAX_ATTEMPTS = 3
# The calls are off the checkout's request path (or on GET /invoice): a few at a time.
DEFAULT_MAX_CONNECTIONS = 32

# A bucket name that can be the first label of a host name (virtual-hosted style over TLS).
_HOST_LABEL = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_ERROR_CODE = re.compile(rb"<Code>([^<]*)</Code>")
_ERROR_MESSAGE = re.compile(rb"<Message>([^<]*)</Message>")


class S3Error(Exception):
    """S3 refused the request with an answer retrying cannot change; `code` is S3's (`AccessDenied`,
    `NoSuchBucket`, ...) or, for an answer without a body (to HEAD), the status (`"403"`), as botocore
    reports it."""

    def __init__(self, code: str, message: str, *, status: int) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status

    @property
    def response(self) -> dict[str, Any]:
        """botocore's `ClientError.response` shape."""
        return {
            "Error": {"Code": self.code, "Message": self.message},
            "ResponseMetadata": {"HTTPStatusCode": self.status},
        }


class S3Unavailable(DependencyUnavailable):
    """S3 could not be reached, or kept refusing (throttling, 5xx) after bounded retries."""

    def __init__(
        self, detail: str = "Document storage is unavailable; try again.", *, code: str = "Unavailable"
    ) -> None:
        super().__init__(detail)
        self.code = code


@dataclass(frozen=True, slots=True)
class _Address:
    """Where one bucket's objects are: the endpoint, the signed host, and the path before the key."""

    endpoint: Endpoint
    host: str
    prefix: str
    bucket: str


def encode_key(key: str) -> str:
    """An object key as it goes in the request path and the signature: every byte but unreserved
    characters and `/` percent-encoded (UTF-8), once."""
    return quote(key, safe="/~")


class S3:
    """One per process: a pooled HTTP/1.1 keep-alive client to S3 (or a local stand-in)."""

    def __init__(
        self,
        *,
        region: str,
        credentials: CredentialSource,
        endpoint: str | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        retry_budget: RetryBudget | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.region = region
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self._credentials = AwsCredentials(credentials)
        self._signer = SigV4Signer(region=region, service="s3")
        self._deadline = deadline_seconds
        self._retries = Retries(max_attempts=max_attempts, budget=retry_budget, jitter=jitter, sleep=sleep)
        self._clock = clock
        # One transport for every bucket's endpoint: its pools are per origin (host and port).
        self._transport = transport or PooledTransport(
            max_connections=max_connections, max_idle_connections=min(max_connections, MAX_IDLE_CONNECTIONS)
        )
        self._timeouts = timeout.as_dict()
        self._addresses: dict[str, _Address] = {}

    # -- the calls -------------------------------------------------------------------------------------
    async def put_object(
        self, bucket: str, key: str, body: bytes, *, content_type: str = "application/octet-stream"
    ) -> str:
        """Write the object (whole, replacing any) and return its ETag. `content_type` is sent as
        given (it is signed in canonical form: no leading, trailing or doubled spaces)."""
        answer = await self._call("PutObject", "PUT", bucket, key, body, content_type)
        return answer.header("etag") or ""

    async def head_object(self, bucket: str, key: str) -> dict[str, str] | None:
        """The object's metadata headers (names in lower case), or None when it does not exist."""
        answer = await self._call("HeadObject", "HEAD", bucket, key, b"", None)
        if answer.status_code == 404:
            return None
        return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in answer.headers}

    async def aclose(self) -> None:
        await self._transport.aclose()

    # -- one call ----------------------------------------------------------------------------------------
    async def _call(
        self, operation: str, method: str, bucket: str, key: str, body: bytes, content_type: str | None
    ) -> Answer:
        if tracing.enabled():
            # One CLIENT span per call, retries inside it, named and tagged as boto3 calls' are.
            attributes = {"rpc.system": "aws-api", "rpc.service": "s3", "rpc.method": operation}
            with tracing.span(f"s3.{operation}", kind=tracing.SpanKind.CLIENT, attributes=attributes):
                return await self._send(operation, method, bucket, key, body, content_type)
        return await self._send(operation, method, bucket, key, body, content_type)

    async def _send(
        self, operation: str, method: str, bucket: str, key: str, body: bytes, content_type: str | None
    ) -> Answer:
        address = self._addresses.get(bucket) or self._address(bucket)
        target = address.prefix + encode_key(key)
        payload_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        deadline = time.monotonic() + self._deadline
        try:
            return await self._retries.call(
                lambda: self._attempt(method, address, target, body, payload_hash, content_type, deadline),
                service="s3",
                operation=operation,
                deadline=deadline,
                fields={"bucket": bucket},
            )
        except RetriesExhausted as exc:
            raise S3Unavailable(code=exc.last.code) from exc.last

    async def _attempt(
        self,
        method: str,
        address: _Address,
        target: str,
        body: bytes,
        payload_hash: str,
        content_type: str | None,
        deadline: float,
    ) -> Answer:
        credentials = await self._frozen_credentials()
        amz_date = amz_date_of(self._clock())
        # The signed headers, in sorted order: content-type < host < x-amz-content-sha256 < x-amz-date
        # < x-amz-security-token.
        headers = {"content-type": content_type} if content_type is not None else {}
        headers["host"] = address.host
        headers["x-amz-content-sha256"] = payload_hash
        headers["x-amz-date"] = amz_date
        if credentials.token:
            headers["x-amz-security-token"] = credentials.token
        headers["authorization"] = self._signer.authorization(
            method=method,
            path=target,
            query="",
            headers=headers,
            payload_hash=payload_hash,
            amz_date=amz_date,
            access_key=credentials.access_key,
            secret_key=credentials.secret_key,
        )
        headers["user-agent"] = USER_AGENT
        headers["accept-encoding"] = "identity"
        timeouts = self._timeouts
        remaining = deadline - time.monotonic()
        if remaining < (timeouts["read"] or remaining):
            # The last attempt only gets what is left of the call's budget.
            remaining = max(remaining, 0.01)
            timeouts = {name: min(value or remaining, remaining) for name, value in timeouts.items()}
        try:
            answer = await address.endpoint.request(method, target, headers=headers, body=body, timeouts=timeouts)
        except httpx.TimeoutException as exc:
            raise Retryable("Timeout", repr(exc)) from exc
        except httpx.TransportError as exc:
            raise Retryable("ConnectionError", repr(exc)) from exc
        status = answer.status_code
        if 200 <= status < 300 or (status == 404 and method == "HEAD"):
            return answer
        raise _error(status, answer.content)

    def _address(self, bucket: str) -> _Address:
        if self.endpoint is not None:
            root, path_style = self.endpoint, True
        elif _HOST_LABEL.fullmatch(bucket):
            root, path_style = regional_endpoint("s3", self.region, host_prefix=f"{bucket}."), False
        else:
            root, path_style = regional_endpoint("s3", self.region), True
        url = httpx.URL(root)
        prefix = url.raw_path.decode("ascii").split("?", 1)[0].rstrip("/")
        if path_style:
            prefix += "/" + quote(bucket, safe="")
        address = _Address(
            endpoint=Endpoint(f"{url.scheme}://{url.netloc.decode('ascii')}", self._transport),
            # The default port is left out, as botocore signs it (and as `Endpoint` sends it).
            host=f"{url.host}:{url.port}" if url.port else url.host,
            prefix=prefix + "/",
            bucket=bucket,
        )
        self._addresses[bucket] = address
        return address

    async def _frozen_credentials(self) -> Any:
        try:
            return await self._credentials.frozen()
        except NoCredentials as exc:
            raise S3Unavailable(str(exc), code="NoCredentials") from exc
        except CredentialRefreshFailed as exc:
            raise Retryable("CredentialRefreshFailed", str(exc)) from exc


def _error(status: int, content: bytes) -> Exception:
    """The exception for a non-2xx answer: S3's XML `<Error><Code>..</Code><Message>..</Message>`,
    or just the status for an answer without a body (HEAD)."""
    code_match = _ERROR_CODE.search(content) if content else None
    message_match = _ERROR_MESSAGE.search(content) if content else None
    code = code_match.group(1).decode("utf-8", "replace").strip() if code_match else ""
    code = code or str(status)
    if message_match:
        message = message_match.group(1).decode("utf-8", "replace").strip()
    else:
        try:
            message = HTTPStatus(status).phrase
        except ValueError:
            message = ""
    if status >= 500 or status == 429 or code in RETRYABLE_CODES:
        return Retryable(code, message)
    return S3Error(code, message, status=status)


def s3_for(settings: Settings, **options: Any) -> S3:
    """The process's S3 client for these settings (`settings.aws_endpoint_url` locally, AWS in the
    cloud). Build it once at start-up and `aclose()` it at shutdown; `options` are `S3`'s keyword
    arguments (timeouts, attempts, a test transport)."""
    return S3(
        endpoint=settings.aws_endpoint_url,
        region=settings.aws_region,
        credentials=botocore_credentials(settings.aws_region),
        **options,
    )
