"""The blocking AWS clients of the Lambda functions (`cloudshop.aws_sync`): DynamoDB's contract run
against moto and dynalite, Secrets Manager and SES against moto, SES's request compared with
botocore's, and the failures (a dropped keep-alive connection, an outage, throttling) against servers
that misbehave on purpose."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from cloudshop.aws import condition_failed, from_item, to_item
from cloudshop.aws_json import DynamoDBError, DynamoDBUnavailable
from cloudshop.aws_sync import (
    BlockingDynamoDB,
    BlockingSesV2,
    Credentials,
    SecretRefused,
    SesRefused,
    dynamodb_for,
    secrets_manager_for,
    ses_for,
)
from cloudshop.errors import DependencyUnavailable
from cloudshop.retries import RetryBudget
from cloudshop.settings import Settings

TEST_CREDENTIALS = Credentials("testing", "testing", None)


@pytest.fixture(params=["moto", "dynalite"])
def ddb_settings(request: pytest.FixtureRequest, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(prefix="ddb-", dynamodb=request.param)


def a_session(n: int = 1) -> dict[str, Any]:
    return {"pk": f"session#{uuid.uuid4().hex}", "user_id": f"u-{n}", "version": 1, "scopes": ["a", "b"]}


def test_an_item_put_reads_back_the_same(ddb_settings: Settings) -> None:
    db = dynamodb_for(ddb_settings)
    item = to_item(a_session())
    assert db.put_item(TableName=ddb_settings.sessions_table, Item=item) == {}
    answer = db.get_item(TableName=ddb_settings.sessions_table, Key={"pk": item["pk"]}, ConsistentRead=True)
    assert answer["Item"] == item
    assert from_item(answer["Item"])["scopes"] == ["a", "b"]


def test_a_conditional_update_applies_once_and_the_loser_reads_as_a_failed_condition(ddb_settings: Settings) -> None:
    db = dynamodb_for(ddb_settings)
    item = to_item(a_session())
    db.put_item(TableName=ddb_settings.sessions_table, Item=item)
    update = {
        "TableName": ddb_settings.sessions_table,
        "Key": {"pk": item["pk"]},
        "UpdateExpression": "SET version = :next",
        "ConditionExpression": "version = :seen",
        "ExpressionAttributeValues": {":next": {"N": "2"}, ":seen": {"N": "1"}},
        "ReturnValues": "ALL_NEW",
    }
    assert db.update_item(**update)["Attributes"]["version"] == {"N": "2"}
    with pytest.raises(DynamoDBError) as refused:
        db.update_item(**update)
    assert refused.value.code == "ConditionalCheckFailedException"
    assert condition_failed(refused.value)


def test_a_query_answers_the_items_of_a_key(ddb_settings: Settings, make_settings: Callable[..., Settings]) -> None:
    db = dynamodb_for(ddb_settings)
    user = f"u-{uuid.uuid4().hex}"
    for n in range(3):
        item = {"user_id": {"S": user}, "sort_key": {"S": f"2026-01-0{n + 1}#{n}"}, "n": {"N": str(n)}}
        db.put_item(TableName=ddb_settings.notifications_table, Item=item)
    answer = db.query(
        TableName=ddb_settings.notifications_table,
        KeyConditionExpression="user_id = :u",
        ExpressionAttributeValues={":u": {"S": user}},
        ScanIndexForward=False,
    )
    assert [item["n"]["N"] for item in answer["Items"]] == ["2", "1", "0"]


def test_a_bad_request_is_refused_with_its_code(ddb_settings: Settings) -> None:
    db = dynamodb_for(ddb_settings)
    with pytest.raises(DynamoDBError) as refused:
        db.get_item(TableName="no-such-table", Key={"pk": {"S": "x"}})
    assert refused.value.code == "ResourceNotFoundException"
    assert db.describe_table(TableName=ddb_settings.sessions_table)["Table"]["TableName"] == ddb_settings.sessions_table


def test_threads_share_a_client_each_on_its_own_connection(ddb_settings: Settings) -> None:
    db = dynamodb_for(ddb_settings)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for _ in range(10):
                item = to_item(a_session(n))
                db.put_item(TableName=ddb_settings.sessions_table, Item=item)
                got = db.get_item(TableName=ddb_settings.sessions_table, Key={"pk": item["pk"]}, ConsistentRead=True)
                assert got["Item"] == item
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_a_secret_is_read_and_a_missing_one_is_refused_by_name(settings: Settings) -> None:
    created = boto3.client(
        "secretsmanager", endpoint_url=settings.aws_endpoint_url, region_name=settings.aws_region
    ).create_secret(Name=f"cloudshop-test-{uuid.uuid4().hex}", SecretString='{"password": "p"}')
    secrets = secrets_manager_for(settings)
    assert json.loads(secrets.get_secret_value(SecretId=created["ARN"])["SecretString"]) == {"password": "p"}
    with pytest.raises(SecretRefused) as refused:
        secrets.get_secret_value(SecretId=created["ARN"] + "-gone")
    assert refused.value.code == "ResourceNotFoundException"


SES_MESSAGE = {
    "FromEmailAddress": "orders@cloudshop.local",
    "Destination": {"ToAddresses": ["buyer@example.com"]},
    "Content": {
        "Simple": {
            "Subject": {"Data": "Order confirmed", "Charset": "UTF-8"},
            "Body": {"Text": {"Data": "2 x Ceramic Mug Set", "Charset": "UTF-8"}},
        }
    },
}


def test_an_email_from_a_verified_sender_is_sent_and_one_from_another_is_refused_by_name(settings: Settings) -> None:
    sender = f"orders-{uuid.uuid4().hex[:8]}@cloudshop.local"
    boto3.client("ses", endpoint_url=settings.aws_endpoint_url, region_name=settings.aws_region).verify_email_identity(
        EmailAddress=sender
    )
    ses = ses_for(settings)
    assert ses.send_email(**{**SES_MESSAGE, "FromEmailAddress": sender})["MessageId"]
    with pytest.raises(SesRefused) as refused:
        ses.send_email(**{**SES_MESSAGE, "FromEmailAddress": f"nobody-{uuid.uuid4().hex[:8]}@cloudshop.local"})
    assert refused.value.code == "MessageRejected"


class Misbehaving(BaseHTTPRequestHandler):
    """Answers as `plan` says, one entry per request: "close" drops the connection unanswered,
    anything else is (status, JSON body) or (status, JSON body, headers). `requests` keeps what came:
    (path, headers, body)."""

    protocol_version = "HTTP/1.1"
    plan: list[Any] = []
    seen: list[str | None] = []
    requests: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.seen.append(self.headers["x-amz-target"])
        self.requests.append((self.path, {name.lower(): value for name, value in self.headers.items()}, body))
        step = self.plan.pop(0) if self.plan else (200, {})
        if step == "close":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        status, body, headers = step if len(step) == 3 else (*step, {})
        payload = json.dumps(body).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("content-type", "application/x-amz-json-1.0")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def misbehaving() -> Iterator[type[Misbehaving]]:
    handler = type("Handler", (Misbehaving,), {"plan": [], "seen": [], "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.endpoint = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


def client_of(server: type[Misbehaving], **options: Any) -> BlockingDynamoDB:
    return BlockingDynamoDB(
        endpoint=server.endpoint,  # type: ignore[attr-defined]
        region="eu-west-1",
        credentials=lambda: TEST_CREDENTIALS,
        sleep=lambda _: None,
        **options,
    )


def test_a_kept_alive_connection_the_server_dropped_is_replaced_at_once_not_retried(
    misbehaving: type[Misbehaving],
) -> None:
    budget = RetryBudget(ratio=0, burst=0)
    db = client_of(misbehaving, retry_budget=budget)
    assert db.get_item(TableName="t", Key={}) == {}
    # The server drops the kept-alive connection; the next call still succeeds, with no retry to spend
    misbehaving.plan += ["close"]
    assert db.get_item(TableName="t", Key={}) == {}
    assert misbehaving.seen == ["DynamoDB_20120810.GetItem"] * 3


def test_throttling_is_retried_a_bounded_number_of_times_then_unavailable(misbehaving: type[Misbehaving]) -> None:
    throttled = (400, {"__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"})
    misbehaving.plan += [throttled] * 5
    db = client_of(misbehaving, max_attempts=3)
    with pytest.raises(DynamoDBUnavailable) as outage:
        db.put_item(TableName="t", Item={})
    assert outage.value.code == "ProvisionedThroughputExceededException"
    assert len(misbehaving.seen) == 3


def test_a_retry_succeeds_after_a_5xx(misbehaving: type[Misbehaving]) -> None:
    misbehaving.plan += [(500, {"__type": "InternalServerError"}), (200, {"Item": {"pk": {"S": "x"}}})]
    assert client_of(misbehaving).get_item(TableName="t", Key={})["Item"] == {"pk": {"S": "x"}}


def test_an_unreachable_endpoint_is_unavailable_after_bounded_attempts() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    db = BlockingDynamoDB(
        endpoint=f"http://127.0.0.1:{port}",
        region="eu-west-1",
        credentials=lambda: TEST_CREDENTIALS,
        sleep=lambda _: None,
    )
    with pytest.raises(DynamoDBUnavailable) as outage:
        db.get_item(TableName="t", Key={})
    assert outage.value.code == "ConnectionError"
    assert isinstance(outage.value, DependencyUnavailable)


# --- SES: the REST-JSON protocol ------------------------------------------------------------------------
NOW = datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC)


def ses_of(server: type[Misbehaving], credentials: Credentials = TEST_CREDENTIALS, **options: Any) -> BlockingSesV2:
    return BlockingSesV2(
        endpoint=server.endpoint,  # type: ignore[attr-defined]
        region="eu-west-1",
        credentials=lambda: credentials,
        sleep=lambda _: None,
        clock=NOW.timestamp,
        **options,
    )


class Captured(Exception):
    def __init__(self, request: Any) -> None:
        self.request = request


@pytest.mark.parametrize("token", [None, "SESSION-TOKEN"])
def test_an_email_is_the_request_boto3_sends_signed_byte_for_byte_as_botocore_signs(
    token: str | None, misbehaving: type[Misbehaving], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: NOW.replace(tzinfo=None))
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    misbehaving.plan += [(200, {"MessageId": "m-1"})]
    assert ses_of(misbehaving, credentials).send_email(**SES_MESSAGE) == {"MessageId": "m-1"}
    [(path, headers, body)] = misbehaving.requests

    endpoint = misbehaving.endpoint  # type: ignore[attr-defined]
    boto = boto3.client(
        "sesv2",
        region_name="eu-west-1",
        endpoint_url=endpoint,
        aws_access_key_id=credentials.access_key,
        aws_secret_access_key=credentials.secret_key,
        aws_session_token=token,
    )

    def capture(request: Any, **_: Any) -> None:
        raise Captured(request)

    boto.meta.events.register("before-send.sesv2", capture)
    with pytest.raises(Captured) as captured:
        boto.send_email(**SES_MESSAGE)
    reference = captured.value.request
    expected = {
        name.lower(): value.decode() if isinstance(value, bytes) else value for name, value in reference.headers.items()
    }

    # What boto3 sends: the operation's path, the same JSON, the signed headers and their values
    assert endpoint + path == reference.url
    assert json.loads(body) == json.loads(reference.body)
    assert (
        headers["authorization"].split("SignedHeaders=")[1].split(",")[0]
        == (expected["authorization"].split("SignedHeaders=")[1].split(",")[0])
    )
    for name in ("content-type", "x-amz-date", "x-amz-security-token"):
        assert headers.get(name) == expected.get(name), name
    assert "x-amz-target" not in headers
    # and signed as botocore's SigV4Auth signs those very bytes (our JSON is compact)
    again = AWSRequest(method="POST", url=reference.url, data=body, headers={"content-type": headers["content-type"]})
    SigV4Auth(credentials, "ses", "eu-west-1").add_auth(again)
    assert headers["authorization"] == again.headers["Authorization"]


def test_ses_throttling_named_in_the_error_type_header_is_retried_then_unavailable(
    misbehaving: type[Misbehaving],
) -> None:
    throttled = (429, {"message": "Maximum sending rate exceeded."}, {"x-amzn-errortype": "TooManyRequestsException:"})
    misbehaving.plan += [throttled] * 5
    with pytest.raises(DependencyUnavailable):
        ses_of(misbehaving, max_attempts=3).send_email(**SES_MESSAGE)
    assert len(misbehaving.requests) == 3


def test_an_ses_refusal_is_read_from_the_error_type_header_and_not_retried(misbehaving: type[Misbehaving]) -> None:
    rejected = (
        400,
        {"message": "Email address is not verified."},
        {"x-amzn-errortype": "MessageRejected:http://internal.amazon.com/coral/com.amazonaws.sesv2/"},
    )
    misbehaving.plan += [rejected]
    with pytest.raises(SesRefused) as refused:
        ses_of(misbehaving).send_email(**SES_MESSAGE)
    assert (refused.value.code, refused.value.message) == ("MessageRejected", "Email address is not verified.")
    assert len(misbehaving.requests) == 1


def test_ses_is_reached_at_its_email_endpoint_of_the_region() -> None:
    # SES signs as `ses` but answers at `email.<region>` (the host of its v1 and v2 APIs alike).
    ses = ses_for(Settings(aws_region="ap-south-1", aws_endpoint_url=None))
    assert ses.endpoint == "https://email.ap-south-1.amazonaws.com"
