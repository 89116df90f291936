"""The async DynamoDB client: one contract, run against moto and against dynalite."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Callable
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from cloudshop.aws import condition_failed, from_item, to_item
from cloudshop.aws_json import DynamoDBError, DynamoDBUnavailable, SigV4Signer
from cloudshop.dynamodb import DynamoDB, dynamodb_for
from cloudshop.retries import RetryBudget
from cloudshop.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["moto", "dynalite"])
def ddb_settings(request: pytest.FixtureRequest, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(prefix="ddb-", dynamodb=request.param)


async def no_sleep(_: float) -> None:
    return None


def an_order(user_id: str, n: int) -> dict[str, Any]:
    return to_item(
        {
            "order_id": f"o-{uuid.uuid4().hex}",
            "user_id": user_id,
            "created_at": f"2026-01-01T00:00:{n:02d}+00:00",
            "status": "PENDING_PAYMENT",
            "version": 1,
            "total": {"amount": 129900 + n, "currency": "INR"},
        }
    )


async def test_a_put_item_reads_back_the_same(ddb_settings: Settings) -> None:
    item = an_order("u-1", 1)
    async with aclosing(dynamodb_for(ddb_settings)) as db:
        assert await db.call("PutItem", {"TableName": ddb_settings.orders_table, "Item": item}) == {}
        answer = await db.call(
            "GetItem",
            {"TableName": ddb_settings.orders_table, "Key": {"order_id": item["order_id"]}, "ConsistentRead": True},
        )
    assert answer["Item"] == item
    assert from_item(answer["Item"])["total"] == {"amount": 129901, "currency": "INR"}


async def test_a_conditional_update_applies_once_and_the_loser_gets_the_code(ddb_settings: Settings) -> None:
    item = an_order("u-2", 1)
    table = ddb_settings.orders_table
    update = {
        "TableName": table,
        "Key": {"order_id": item["order_id"]},
        "UpdateExpression": "SET #s = :paid, version = :next",
        "ConditionExpression": "version = :seen",
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": {":paid": {"S": "PAID"}, ":next": {"N": "2"}, ":seen": {"N": "1"}},
        "ReturnValues": "ALL_NEW",
    }
    async with aclosing(dynamodb_for(ddb_settings)) as db:
        await db.call(
            "PutItem", {"TableName": table, "Item": item, "ConditionExpression": "attribute_not_exists(order_id)"}
        )
        applied = await db.call("UpdateItem", update)
        with pytest.raises(DynamoDBError) as refused:
            await db.call("UpdateItem", {**update, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"})

    assert applied["Attributes"]["status"] == {"S": "PAID"}
    assert refused.value.code == "ConditionalCheckFailedException"
    assert refused.value.status == 400
    assert condition_failed(refused.value)
    # moto (like DynamoDB) returns the item as it stands; dynalite predates
    # ReturnValuesOnConditionCheckFailure and returns none.
    on_dynalite = ddb_settings.dynamodb_endpoint_url is not None
    expected = None if on_dynalite else {**item, "status": {"S": "PAID"}, "version": {"N": "2"}}
    assert refused.value.item == expected


async def test_a_repeated_create_is_refused_by_its_condition(ddb_settings: Settings) -> None:
    item = an_order("u-3", 1)
    put = {
        "TableName": ddb_settings.orders_table,
        "Item": item,
        "ConditionExpression": "attribute_not_exists(order_id)",
    }
    async with aclosing(dynamodb_for(ddb_settings)) as db:
        await db.call("PutItem", put)
        with pytest.raises(DynamoDBError) as refused:
            await db.call("PutItem", put)
    assert refused.value.code == "ConditionalCheckFailedException"


async def test_a_query_on_an_index_pages_through_every_item(ddb_settings: Settings) -> None:
    user_id = f"u-{uuid.uuid4().hex}"
    items = [an_order(user_id, n) for n in range(5)]
    query = {
        "TableName": ddb_settings.orders_table,
        "IndexName": "by_user",
        "KeyConditionExpression": "user_id = :u",
        "ExpressionAttributeValues": {":u": {"S": user_id}},
        "ScanIndexForward": False,
        "Limit": 2,
    }
    async with aclosing(dynamodb_for(ddb_settings)) as db:
        for item in items:
            await db.call("PutItem", {"TableName": ddb_settings.orders_table, "Item": item})
        first = await db.call("Query", query)
        pages = [page async for page in db.pages("Query", query)]

    assert [i["created_at"] for i in first["Items"]] == [items[4]["created_at"], items[3]["created_at"]]
    assert "LastEvaluatedKey" in first
    seen = [i["order_id"]["S"] for page in pages for i in page["Items"]]
    assert seen == [i["order_id"]["S"] for i in reversed(items)]


async def test_a_bad_request_raises_the_error_code_without_retrying(ddb_settings: Settings) -> None:
    async with aclosing(dynamodb_for(ddb_settings)) as db:
        with pytest.raises(DynamoDBError) as missing_key:
            await db.call("GetItem", {"TableName": ddb_settings.orders_table, "Key": {"user_id": {"S": "x"}}})
        with pytest.raises(DynamoDBError) as missing_table:
            await db.call("GetItem", {"TableName": "ddb-no-such-table", "Key": {"order_id": {"S": "x"}}})
    assert missing_key.value.code == "ValidationException"
    assert missing_table.value.code == "ResourceNotFoundException"
    assert missing_key.value.message


async def test_an_unreachable_endpoint_is_unavailable_after_bounded_attempts(settings: Settings) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port now: every connection is refused.
    closed = settings.model_copy(update={"dynamodb_endpoint_url": f"http://127.0.0.1:{port}"})
    async with aclosing(dynamodb_for(closed, sleep=no_sleep)) as db:
        with pytest.raises(DynamoDBUnavailable) as unavailable:
            await db.call("GetItem", {"TableName": "t", "Key": {"pk": {"S": "x"}}})
    assert unavailable.value.code == "ConnectionError"
    assert unavailable.value.status == 503


def answering(status: int, body: dict[str, Any], calls: list[httpx.Request]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handler)


async def test_throttling_is_retried_a_bounded_number_of_times_then_unavailable() -> None:
    calls: list[httpx.Request] = []
    throttled = {"__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException", "message": "slow"}
    db = DynamoDB(
        endpoint="http://127.0.0.1:9",
        region="eu-west-1",
        credentials=lambda: Credentials("AKID", "SECRET"),
        transport=answering(400, throttled, calls),
        sleep=no_sleep,
    )
    async with aclosing(db):
        with pytest.raises(DynamoDBUnavailable) as unavailable:
            await db.call("GetItem", {"TableName": "t", "Key": {"pk": {"S": "x"}}})
    assert unavailable.value.code == "ProvisionedThroughputExceededException"
    assert len(calls) == 3
    assert calls[0].headers["x-amz-target"] == "DynamoDB_20120810.GetItem"
    assert calls[0].headers["content-type"] == "application/x-amz-json-1.0"


async def test_a_spent_retry_budget_stops_retries_so_an_outage_is_not_multiplied() -> None:
    calls: list[httpx.Request] = []
    budget = RetryBudget(ratio=0.1, burst=2)
    db = DynamoDB(
        endpoint="http://127.0.0.1:9",
        region="eu-west-1",
        credentials=lambda: Credentials("AKID", "SECRET"),
        transport=answering(500, {"__type": "InternalServerError"}, calls),
        retry_budget=budget,
        sleep=no_sleep,
    )
    async with aclosing(db):
        for _ in range(20):
            with pytest.raises(DynamoDBUnavailable):
                await db.call("GetItem", {"TableName": "t", "Key": {"pk": {"S": "x"}}})
    # 20 calls, 2 retries from the burst, and 10% of the 20 calls: nowhere near 3 x 20.
    assert 20 <= len(calls) <= 20 + 2 + 2


def test_the_signer_signs_exactly_as_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC)
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: now.replace(tzinfo=None))
    body = json.dumps({"TableName": "t", "Key": {"pk": {"S": "x"}}}).encode()
    for token in (None, "SESSION-TOKEN"):
        credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
        reference = AWSRequest(
            method="POST",
            url="http://127.0.0.1:8007/",
            data=body,
            headers={"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "DynamoDB_20120810.GetItem"},
        )
        SigV4Auth(credentials, "dynamodb", "eu-west-1").add_auth(reference)

        ours = SigV4Signer(region="eu-west-1").sign(
            host="127.0.0.1:8007",
            target="DynamoDB_20120810.GetItem",
            body=body,
            access_key=credentials.access_key,
            secret_key=credentials.secret_key,
            token=token,
            now=now.timestamp(),
        )
        assert ours["authorization"] == reference.headers["Authorization"]
        assert ours["x-amz-date"] == reference.headers["X-Amz-Date"]


class CredentialsEndpoint(BaseHTTPRequestHandler):
    """The EKS Pod Identity agent: container credentials for the pod's token, expiring soon."""

    served: list[str] = []
    token = ""

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != self.token:
            self.send_response(403)
            self.end_headers()
            return
        key = f"ASIA{len(self.served):04d}"
        self.served.append(key)
        # Five minutes left: inside botocore's mandatory refresh window, so every use refreshes.
        expiry = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = json.dumps(
            {"AccessKeyId": key, "SecretAccessKey": "secret", "Token": "session", "Expiration": expiry}
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


async def test_pod_identity_container_credentials_are_used_and_refreshed(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token_file = tmp_path / "eks-pod-identity-token"
    token_file.write_text("pod-token-1")
    CredentialsEndpoint.served = []
    CredentialsEndpoint.token = "pod-token-1"
    server = ThreadingHTTPServer(("127.0.0.1", 0), CredentialsEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"http://127.0.0.1:{server.server_port}/v1/credentials")
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", str(token_file))
    seen: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"].split("Credential=")[1].split("/")[0])
        return httpx.Response(200, json={})

    try:
        async with aclosing(dynamodb_for(settings, transport=httpx.MockTransport(record))) as db:
            await db.call("DescribeLimits", {})
            await db.call("DescribeLimits", {})
    finally:
        server.shutdown()
    # Each call signed with credentials fetched afresh from the agent, with the pod's token.
    assert len(set(seen)) == 2
    assert set(seen) <= set(CredentialsEndpoint.served)
