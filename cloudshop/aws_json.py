"""The AWS JSON protocol as cloudshop's lean clients speak it: what is the same whether a call is
made from a coroutine (`cloudshop.dynamodb`, `cloudshop.sqs`) or from a thread (`cloudshop.aws_sync`).

A call is `POST /` with `x-amz-target: <prefix><Operation>`, a JSON body each way, SigV4-signed
(`SigV4Signer`). An answer other than 200 names its error in the body's `__type` (`error_answer`);
throttling, 5xx answers and the transient codes botocore retries (`RETRYABLE_CODES`) are worth a
retry, anything else is a refusal the caller decides on. No I/O here, and nothing heavier than the
standard library to import: the Lambda functions count every millisecond of their cold start.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cloudshop.errors import DependencyUnavailable

# The protocol's versions: DynamoDB and SQS speak 1.0, Secrets Manager 1.1.
JSON_1_0 = "application/x-amz-json-1.0"
JSON_1_1 = "application/x-amz-json-1.1"
DYNAMODB_TARGET_PREFIX = "DynamoDB_20120810."


def regional_endpoint(api: str, region: str, *, host_prefix: str = "") -> str:
    """An AWS API's regional endpoint (`https://dynamodb.eu-west-1.amazonaws.com`); `host_prefix`
    goes before it (an S3 bucket's virtual host: `bucket.`)."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://{host_prefix}{api}.{region}.{suffix}"


def botocore_credentials(region: str) -> Callable[[], Any]:
    """botocore's credential chain (environment, profile, web identity, EKS Pod Identity, IMDS) as a
    source the lean clients call on first use: botocore is imported then, not when a client is made.
    The answer is botocore's `Credentials` (refreshable ones refresh themselves), or None."""

    def resolve() -> Any:
        import botocore.session

        session = botocore.session.Session()
        session.set_config_variable("region", region)
        return session.get_credentials()

    return resolve


# What botocore's "standard" retry mode retries for every service (its throttling and transient
# codes), with the 5xx codes services name (every 5xx answer is retried whatever its code). One set
# for the DynamoDB, SQS and S3 clients: a code a service never sends costs nothing.
RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "InternalError",
        "InternalServerError",
        "ServiceUnavailable",
    }
)


@dataclass(frozen=True)
class ErrorAnswer:
    """A non-200 answer, read: its error `code`, `message`, HTTP `status` and JSON `body`."""

    code: str
    message: str
    status: int
    body: dict[str, Any]
    retryable: bool


def error_answer(status: int, content: bytes, query_error: str | None, error_type: str | None = None) -> ErrorAnswer:
    """Read a non-200 answer.

    The code is the short name of the body's `__type` (`com.amazonaws.dynamodb.v20120810#
    ValidationException`: `ValidationException`); failing that, the first part of the
    `x-amzn-errortype` header (`error_type`: where REST-JSON APIs such as SESv2 put it,
    `MessageRejected:http://internal.amazon.com/...`); and when the answer carries the
    `x-amzn-query-error` header (`query_error`: SQS, an API that spoke the query protocol before
    JSON), its first part (`AWS.SimpleQueueService.NonExistentQueue`), as botocore reports them."""
    try:
        body = json.loads(content) if content else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    name = str(body.get("__type", "")).rsplit("#", 1)[-1] or (error_type or "").split(":", 1)[0]
    code = name or f"HTTP{status}"
    query_code = (query_error or "").split(";")
    if len(query_code) == 2 and query_code[0]:
        code = query_code[0]
    message = str(body.get("message") or body.get("Message") or "")
    retryable = status >= 500 or code in RETRYABLE_CODES or name in RETRYABLE_CODES
    return ErrorAnswer(code=code, message=message, status=status, body=body, retryable=retryable)


class DynamoDBError(Exception):
    """DynamoDB refused the request (a client error): not retried, the caller decides.

    `code` is the error's short name (`ConditionalCheckFailedException`, `ValidationException`,
    `ResourceNotFoundException`, `TransactionCanceledException`, ...). `item` is the item returned
    with a conditional failure when the request asked for it (`ReturnValuesOnConditionCheckFailure`);
    `cancellation_reasons` is DynamoDB's list for a cancelled transaction.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int = 400,
        item: dict[str, Any] | None = None,
        cancellation_reasons: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.item = item
        self.cancellation_reasons = cancellation_reasons

    @property
    def response(self) -> dict[str, Any]:
        """botocore's `ClientError.response` shape, so `cloudshop.aws.condition_failed` reads both."""
        answer: dict[str, Any] = {"Error": {"Code": self.code, "Message": self.message}}
        if self.item is not None:
            answer["Item"] = self.item
        return answer


class DynamoDBUnavailable(DependencyUnavailable):
    """DynamoDB could not be reached, or kept refusing (throttling, 5xx) after bounded retries."""

    def __init__(self, detail: str = "The database is unavailable; try again.", *, code: str = "Unavailable") -> None:
        super().__init__(detail)
        self.code = code


class SigV4Signer:
    """AWS Signature Version 4, for the few request shapes cloudshop's lean clients send.

    The same algorithm as botocore's SigV4Auth, without its general request model: the canonical
    request is built from the few headers a client sends, and the derived signing key is kept per
    (secret, day), which is what makes it cheaper. `sign` is the JSON protocol's POST to `/`
    (DynamoDB's, SQS's); `authorization` is the shared part, for any request whose canonical parts
    the caller has (`cloudshop.s3` signs S3's PUT and HEAD with it).
    """

    def __init__(self, *, region: str, service: str = "dynamodb") -> None:
        self.region = region
        self.service = service
        self._key_cache: tuple[str, str, bytes] | None = None

    def _signing_key(self, secret_key: str, day: str) -> bytes:
        cached = self._key_cache
        if cached is not None and cached[0] == secret_key and cached[1] == day:
            return cached[2]
        key = _hmac(("AWS4" + secret_key).encode(), day)
        for part in (self.region, self.service, "aws4_request"):
            key = _hmac(key, part)
        self._key_cache = (secret_key, day, key)
        return key

    def authorization(
        self,
        *,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        payload_hash: str,
        amz_date: str,
        access_key: str,
        secret_key: str,
    ) -> str:
        """The `Authorization` header for a request whose signed `headers` are all of `headers`.

        `path` is the canonical URI exactly as it goes into the canonical request (already
        percent-encoded as the service wants it), `query` the canonical query string. The names in
        `headers` are lower case and in sorted order, and the values are trimmed, with no runs of
        spaces: the canonical form, which the callers build so, not normalised here.
        """
        day = amz_date[:8]
        signed = ";".join(headers)
        canonical = "{}\n{}\n{}\n{}\n{}\n{}".format(
            method,
            path,
            query,
            "".join(f"{name}:{value}\n" for name, value in headers.items()),
            signed,
            payload_hash,
        )
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(secret_key, day), to_sign.encode(), hashlib.sha256).hexdigest()
        return f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"

    def sign(
        self,
        *,
        host: str,
        target: str | None,
        body: bytes,
        access_key: str,
        secret_key: str,
        token: str | None,
        now: float,
        extra: dict[str, str] | None = None,
        content_type: str = JSON_1_0,
        path: str = "/",
    ) -> dict[str, str]:
        """The headers of the signed request (Host included, so the signed host is the one sent).
        `extra` are signed headers whose names sort after `x-amz-target`, in order (SQS's
        `x-amzn-query-mode`); `content_type` names the protocol's version (Secrets Manager speaks 1.1).
        A REST-JSON API (SESv2) names the operation by its `path` instead of a `target` (None)."""
        amz_date = amz_date_of(now)
        headers = {"content-type": content_type, "host": host, "x-amz-date": amz_date}
        if token:
            headers["x-amz-security-token"] = token
        if target is not None:
            headers["x-amz-target"] = target
        if extra:
            headers.update(extra)
        # Already in sorted order: content-type < host < x-amz-date < x-amz-security-token < x-amz-target
        # < x-amzn-*.
        headers["authorization"] = self.authorization(
            method="POST",
            path=path,
            query="",
            headers=headers,
            payload_hash=hashlib.sha256(body).hexdigest(),
            amz_date=amz_date,
            access_key=access_key,
            secret_key=secret_key,
        )
        return headers


def amz_date_of(now: float) -> str:
    """SigV4's timestamp (`X-Amz-Date`) for the Unix time `now`."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def dynamodb_span_attributes(operation: str) -> dict[str, str]:
    return {"db.system.name": "aws.dynamodb", "rpc.system": "aws-api", "rpc.method": operation}


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()
