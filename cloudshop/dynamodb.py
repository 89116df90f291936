"""An async DynamoDB client: the DynamoDB JSON API over a keep-alive connection pool, SigV4-signed.

`DynamoDB.call(operation, request)` takes and returns exactly the wire shapes of the DynamoDB JSON
API (what boto3's low-level client takes and returns: `{"TableName": ..., "Key": {"pk": {"S": ...}}}`),
so a slow DynamoDB costs a waiting coroutine, not a thread. `cloudshop.aws.to_item` / `from_item` /
`to_value` convert between Python values and those shapes.

Why a lean client and not aiobotocore: aiobotocore pins botocore to a narrow range (3.10.0 wants
botocore >=1.43.115,<1.43.118) that the pinned boto3==1.44.5 (botocore 1.44.x) excludes, and it
brings aiohttp beside the httpx every service already has. The lean client also costs less CPU per
call. Measured on this 2-core machine against dynalite: 5 interleaved rounds of 400 PutItem + 400
consistent GetItem (~150-byte items), calls issued one after another, `time.process_time()` of the
client process only (dynalite's own time is not in it), median of the rounds:

    boto3 low-level client, sync (botocore 1.44.8)                0.51 ms CPU per call
    boto3 low-level client, each call in anyio.to_thread          0.67 ms
    this client over httpx, signed by botocore's SigV4Auth        0.50 ms
    this client over httpx, signed by `SigV4Signer`               0.43 ms

Two things made the difference then. httpx's client layer (cookie jar, redirects, auth hooks) cost
~20% of a call, so the client drove the pooled `httpx.AsyncHTTPTransport` directly. And without the
`sniffio` package installed, httpcore retries `import sniffio` (a failed search of sys.path) several
times per request; sniffio is now pinned in pyproject.toml. The first version, with neither fix,
measured 0.74 ms in a single comparable run.

The pool itself then went (issue 9): httpcore's pool scans every pooled connection, with a syscall
per idle one, on each request and release, and h11 parses in pure Python. The client now sends
through `cloudshop.http_pool` (a LIFO pool of asyncio connections, answers parsed by httptools) and
its `Endpoint`, which also skips building an `httpx.Request` and `httpx.Response` per call.
`python -m cloudshop.bench_http` (1,000 calls alternating PutItem and consistent GetItem per round,
5 interleaved rounds, uvloop, client CPU per call, median):

                                                     one at a time   25 concurrent
    over httpx.AsyncHTTPTransport (before)                 0.47 ms         0.99 ms
    over `PooledTransport`, through httpx objects          0.16 ms         0.13 ms
    over `PooledTransport` with `Endpoint` (what it uses)  0.07 ms         0.04 ms

`SigV4Signer` (in `cloudshop.aws_json`, with the rest of the protocol the blocking clients of
`cloudshop.aws_sync` share) is a minimal signer for this one request shape (POST /, four to six headers), whose
shared part (`authorization`) the S3 client (`cloudshop.s3`) signs with too; tests check that both
produce byte-for-byte the signatures botocore's SigV4Auth and S3SigV4Auth produce.

The client is `AwsJsonClient` with DynamoDB's particulars (target prefix, signing name, retryable
codes, the CRC32 its answers carry); `cloudshop.sqs.SqsClient` is the same client for SQS, which
speaks the same AWS JSON 1.0 protocol.

Credentials come from botocore's own credential chain (environment, profile, web identity, the
container provider that EKS Pod Identity uses, IMDS), resolved on first use. Refreshable credentials
are refreshed by botocore; when a refresh is due, it runs in a worker thread so the event loop never
waits on the credentials endpoint.

Failures: an answer that names a client error (validation, conditional check, missing table) raises
`DynamoDBError` at once, with its `code`. Throttling, 5xx answers and transport failures are retried
with full-jitter backoff, at most `max_attempts` times in all, within a `deadline_seconds` budget per
call and the client's `RetryBudget` (retries add at most 10% to the calls made); after that,
`DynamoDBUnavailable` (a `DependencyUnavailable`, so it renders as a 503 if nothing handles it). A
timed-out write may have been applied, exactly as with boto3; every cloudshop write is conditional
or idempotent, so a retry is safe.
"""

from __future__ import annotations

import json
import random
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import anyio
import httpx

from cloudshop import tracing
from cloudshop.aws_json import (
    DYNAMODB_TARGET_PREFIX,
    DynamoDBError,
    DynamoDBUnavailable,
    SigV4Signer,
    botocore_credentials,
    dynamodb_span_attributes,
    error_answer,
    regional_endpoint,
)
from cloudshop.clients import MAX_IDLE_CONNECTIONS
from cloudshop.http_pool import Answer, Endpoint, PooledTransport
from cloudshop.retries import Retries, RetriesExhausted, Retryable, RetryBudget
from cloudshop.settings import Settings

USER_AGENT = "cloudshop-dynamodb"

# A DynamoDB call answers in single-digit milliseconds; these bound a dependency gone slow. They
# stay below the callers' own budgets (gateway -> service, service -> service) so the innermost
# call gives up first.
DEFAULT_TIMEOUT = httpx.Timeout(3.0, connect=1.0, pool=1.0)
DEFAULT_DEADLINE_SECONDS = 4.0
DEFAULT_MAX_ATTEMPTS = 3
# One connection per in-flight call: the in-flight limit of a service process (64) plus room for
# its background work (outbox relay, sweeper).
DEFAULT_MAX_CONNECTIONS = 100

CredentialSource = Callable[[], Any]


class NoCredentials(Exception):
    """botocore's credential chain found none."""


class CredentialRefreshFailed(Exception):
    """Refreshing expiring credentials failed (worth a retry)."""


class AwsCredentials:
    """botocore's credentials as a lean client signs with them (this one and `cloudshop.s3`): resolved
    at the first call, refreshed by botocore's own rules, the blocking part in a worker thread."""

    def __init__(self, source: CredentialSource) -> None:
        self._source = source
        self._credentials: Any = None

    async def frozen(self) -> Any:
        """The current `ReadOnlyCredentials` (access_key, secret_key, token)."""
        credentials = self._credentials
        if credentials is None:
            credentials = await anyio.to_thread.run_sync(self._source)
            if credentials is None:
                raise NoCredentials("No AWS credentials were found.")
            self._credentials = credentials
        refresh_needed = getattr(credentials, "refresh_needed", None)
        try:
            if refresh_needed is not None and refresh_needed():
                return await anyio.to_thread.run_sync(credentials.get_frozen_credentials)
            return credentials.get_frozen_credentials()
        except Exception as exc:  # botocore raises several unrelated types for a failed refresh
            raise CredentialRefreshFailed(repr(exc)) from exc


class AwsJsonClient:
    """One per process and endpoint: a pooled HTTP/1.1 keep-alive client to one AWS JSON-protocol API
    (`POST /`, `x-amz-target: {target_prefix}{operation}`, a JSON body each way).

    A subclass names the service and says what differs: the target prefix, `service` (the signing
    name, and the `kind` its calls are counted and traced under), whether answers carry DynamoDB's
    CRC32, signed headers of its own, its default bounds, and the exceptions a refusal and an outage
    raise. Which codes are retried is one set for all (`cloudshop.aws_json.RETRYABLE_CODES`), as in
    botocore.
    `DynamoDB` here, `cloudshop.sqs.SqsClient`.
    """

    service: ClassVar[str]
    target_prefix: ClassVar[str]
    user_agent: ClassVar[str]
    check_crc32: ClassVar[bool] = False
    signed_headers: ClassVar[dict[str, str] | None] = None
    default_timeout: ClassVar[httpx.Timeout]
    default_deadline_seconds: ClassVar[float]
    default_max_connections: ClassVar[int]

    def __init__(
        self,
        *,
        endpoint: str,
        region: str,
        credentials: CredentialSource,
        timeout: httpx.Timeout | None = None,
        deadline_seconds: float | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_connections: int | None = None,
        retry_budget: RetryBudget | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        url = httpx.URL(endpoint)
        self.endpoint = endpoint
        self.region = region
        self._host = f"{url.host}:{url.port}" if url.port else url.host
        self._credentials = AwsCredentials(credentials)
        self._signer = SigV4Signer(region=region, service=self.service)
        self._deadline = self.default_deadline_seconds if deadline_seconds is None else deadline_seconds
        self._retries = Retries(max_attempts=max_attempts, budget=retry_budget, jitter=jitter, sleep=sleep)
        self._clock = clock
        connections = self.default_max_connections if max_connections is None else max_connections
        # The transport itself, not an httpx.AsyncClient over it: the client's cookie jar, redirect
        # and auth layers cost ~20% of a call's CPU (profiled) and these APIs need none of them. The
        # `Endpoint` over it skips httpx's request and response objects too (see its docstring).
        self._endpoint = Endpoint(
            f"{url.scheme}://{url.netloc.decode('ascii')}",
            transport
            or PooledTransport(
                max_connections=connections, max_idle_connections=min(connections, MAX_IDLE_CONNECTIONS)
            ),
        )
        self._timeouts = (self.default_timeout if timeout is None else timeout).as_dict()

    async def call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        """Run one operation (`GetItem`, `SendMessageBatch`, ...) and return its answer."""
        return await self._traced(operation, request)

    async def aclose(self) -> None:
        await self._endpoint.aclose()

    async def _traced(
        self, operation: str, request: dict[str, Any], read_timeout: float | None = None
    ) -> dict[str, Any]:
        if tracing.enabled():
            # One CLIENT span per call, retries inside it (only inside a trace: see cloudshop.tracing).
            attributes = self._span_attributes(operation)
            with tracing.span(f"{self.service}.{operation}", kind=tracing.SpanKind.CLIENT, attributes=attributes):
                return await self._call(operation, request, read_timeout)
        return await self._call(operation, request, read_timeout)

    async def _call(self, operation: str, request: dict[str, Any], read_timeout: float | None = None) -> dict[str, Any]:
        """`read_timeout`, for a call the server answers late on purpose (SQS's long poll), replaces
        the read timeout of each attempt and adds to the call's deadline."""
        body = json.dumps(request, separators=(",", ":")).encode()
        target = self.target_prefix + operation
        timeouts = self._timeouts if read_timeout is None else {**self._timeouts, "read": read_timeout}
        deadline = time.monotonic() + self._deadline + (read_timeout or 0.0)
        try:
            return await self._retries.call(
                lambda: self._attempt(target, body, deadline, timeouts),
                service=self.service,
                operation=operation,
                deadline=deadline,
            )
        except RetriesExhausted as exc:
            raise self._unavailable(None, exc.last.code) from exc.last

    async def _attempt(self, target: str, body: bytes, deadline: float, timeouts: dict[str, Any]) -> dict[str, Any]:
        credentials = await self._frozen_credentials()
        headers = self._signer.sign(
            host=self._host,
            target=target,
            body=body,
            access_key=credentials.access_key,
            secret_key=credentials.secret_key,
            token=credentials.token,
            now=self._clock(),
            extra=self.signed_headers,
        )
        headers["user-agent"] = self.user_agent
        headers["accept-encoding"] = "identity"
        remaining = deadline - time.monotonic()
        if remaining < (timeouts["read"] or remaining):
            # The last attempt only gets what is left of the call's budget.
            remaining = max(remaining, 0.01)
            timeouts = {name: min(value or remaining, remaining) for name, value in timeouts.items()}
        try:
            response = await self._endpoint.request("POST", "/", headers=headers, body=body, timeouts=timeouts)
        except httpx.TimeoutException as exc:
            raise Retryable("Timeout", repr(exc)) from exc
        except httpx.TransportError as exc:
            raise Retryable("ConnectionError", repr(exc)) from exc
        content = response.content
        if response.status_code == 200:
            if self.check_crc32:
                expected = response.header("x-amz-crc32")
                if expected is not None and expected.isdigit() and int(expected) != zlib.crc32(content):
                    raise Retryable("CRC32CheckFailed", "the answer was damaged in transit")
            answer: dict[str, Any] = json.loads(content) if content else {}
            return answer
        raise self._error(response)

    async def _frozen_credentials(self) -> Any:
        try:
            return await self._credentials.frozen()
        except NoCredentials as exc:
            raise self._unavailable(str(exc), "NoCredentials") from exc
        except CredentialRefreshFailed as exc:
            raise Retryable("CredentialRefreshFailed", str(exc)) from exc

    def _error(self, response: Answer) -> Exception:
        """The exception for a non-200 answer: `Retryable` (5xx, a retryable code) or `_refused`'s."""
        error = error_answer(response.status_code, response.content, response.header("x-amzn-query-error"))
        if error.retryable:
            return Retryable(error.code, error.message)
        return self._refused(error.code, error.message, error.status, error.body)

    def _span_attributes(self, operation: str) -> dict[str, str]:
        """As `cloudshop.tracing.trace_boto_calls` tags a boto3 call's span."""
        return {"rpc.system": "aws-api", "rpc.service": self.service, "rpc.method": operation}

    def _refused(self, code: str, message: str, status: int, body: dict[str, Any]) -> Exception:
        """The exception for a refusal no retry changes (a client error)."""
        raise NotImplementedError

    def _unavailable(self, detail: str | None, code: str) -> Exception:
        """The exception once the service cannot be reached or keeps refusing (a `DependencyUnavailable`)."""
        raise NotImplementedError


class DynamoDB(AwsJsonClient):
    """One per process and endpoint: a pooled HTTP/1.1 keep-alive client to DynamoDB."""

    service = "dynamodb"
    target_prefix = DYNAMODB_TARGET_PREFIX
    user_agent = USER_AGENT
    check_crc32 = True
    default_timeout = DEFAULT_TIMEOUT
    default_deadline_seconds = DEFAULT_DEADLINE_SECONDS
    default_max_connections = DEFAULT_MAX_CONNECTIONS

    async def pages(self, operation: str, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Every page of a `Query` or `Scan`, following `LastEvaluatedKey`."""
        request = dict(request)
        while True:
            page = await self.call(operation, request)
            yield page
            if not page.get("LastEvaluatedKey"):
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _span_attributes(self, operation: str) -> dict[str, str]:
        return dynamodb_span_attributes(operation)

    def _refused(self, code: str, message: str, status: int, body: dict[str, Any]) -> Exception:
        return DynamoDBError(
            code,
            message,
            status=status,
            item=body.get("Item"),
            cancellation_reasons=body.get("CancellationReasons"),
        )

    def _unavailable(self, detail: str | None, code: str) -> Exception:
        return DynamoDBUnavailable(code=code) if detail is None else DynamoDBUnavailable(detail, code=code)


def dynamodb_for(settings: Settings, **options: Any) -> DynamoDB:
    """The process's DynamoDB client for these settings (`settings.dynamodb_endpoint` locally,
    the regional endpoint in the cloud). Build it once at start-up and `aclose()` it at shutdown;
    `options` are `DynamoDB`'s keyword arguments (timeouts, attempts, a test transport)."""
    return DynamoDB(
        endpoint=settings.dynamodb_endpoint or regional_endpoint("dynamodb", settings.aws_region),
        region=settings.aws_region,
        credentials=botocore_credentials(settings.aws_region),
        **options,
    )


# The sparse `outbox_pending` attribute an item carries while its outbox holds unsent events (the
# relays find such items through a GSI on it).
OUTBOX_PENDING = "1"


def versioned_update(
    key: dict[str, Any],
    fields: dict[str, Any],
    *,
    absent: list[str],
    version: int,
    events: list[tuple[str, str]],
    ensure_outbox: bool = False,
) -> dict[str, Any]:
    """The `UpdateItem` arguments (but the table) that write an aggregate's new state over the
    version it came from: every field SET, the `absent` optional ones REMOVEd, each of `events`
    (event id, JSON) added to the item's `outbox` map with `outbox_pending` set. An update, not a
    put: a relay may be removing sent events from the same item meanwhile, and a put would bring them
    back. `ensure_outbox` creates the map on an item written before it had one (when no event comes
    with the change)."""
    names = {f"#f{n}": name for n, name in enumerate(fields)}
    values: dict[str, Any] = {f":f{n}": value for n, value in enumerate(fields.values())}
    values[":previous"] = {"N": str(version - 1)}
    assignments = [f"#f{n} = :f{n}" for n in range(len(fields))]
    if events or ensure_outbox:
        names["#outbox"] = "outbox"
    for n, (event_id, body) in enumerate(events):
        names[f"#e{n}"] = event_id
        values[f":e{n}"] = {"S": body}
        assignments.append(f"#outbox.#e{n} = :e{n}")
    if events:
        values[":pending"] = {"S": OUTBOX_PENDING}
        assignments.append("outbox_pending = :pending")
    elif ensure_outbox:
        values[":empty"] = {"M": {}}
        assignments.append("#outbox = if_not_exists(#outbox, :empty)")
    expression = "SET " + ", ".join(assignments)
    if absent:
        names |= {f"#r{n}": name for n, name in enumerate(absent)}
        expression += " REMOVE " + ", ".join(f"#r{n}" for n in range(len(absent)))
    return {
        "Key": key,
        "UpdateExpression": expression,
        "ConditionExpression": "version = :previous",
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }
