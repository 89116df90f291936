"""What each service may touch, in one table, and the grants that realise it with least privilege.

Grants here name every action (no `*`, no `service:*`) and every resource (table and index ARNs,
topic and group ARNs), so one read of `SERVICE_ACCESS` tells what a compromised service could reach.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Aws
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms

from cdk.auth import AuthSecrets
from cdk.buckets import EstateBuckets
from cdk.database import Database
from cdk.queues import EstateQueues
from cdk.streaming import CONSUMER_GROUPS, EventStream
from cdk.tables import EstateTables
from cloudshop.estate import ESTATE, ServiceName

# What the adapters call: single-item reads and writes (also inside TransactWriteItems, which IAM
# authorises item by item), index queries, and DescribeTable for `/readyz`. No scans, no batches.
TABLE_READ = ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:DescribeTable"]
TABLE_WRITE = ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"]
OBJECT_READ = ["s3:GetObject"]
OBJECT_WRITE = ["s3:PutObject"]  # uploads and invoices; nothing deletes objects
KEY_DECRYPT = ["kms:Decrypt", "kms:DescribeKey"]
KEY_ENCRYPT = ["kms:Encrypt", "kms:GenerateDataKey"]
SECRET_READ = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
QUEUE_SEND = ["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"]


@dataclass(frozen=True, kw_only=True)
class ServiceAccess:
    """The data one service reaches. Names are the estate's logical names.

    Each entry is what the service's code touches (its `bootstrap.py` and the adapters it wires), no
    more; `tests/cdk/test_access.py` reads the code and fails when the two part.
    """

    write_tables: tuple[str, ...] = ()
    read_tables: tuple[str, ...] = ()
    write_buckets: tuple[str, ...] = ()
    read_buckets: tuple[str, ...] = ()
    send_queues: tuple[str, ...] = ()
    consume_queues: tuple[str, ...] = ()
    produce_topics: tuple[str, ...] = ()
    consume_topics: tuple[str, ...] = ()
    database: bool = False
    signing_key: bool = False
    # Reads its service-token secrets (by ARN), those of the pairs the estate makes it a party to
    # (`ESTATE.token_pairs_of`): it calls another service or answers internal routes.
    internal_token: bool = False
    send_email: bool = False


SERVICE_ACCESS: dict[ServiceName, ServiceAccess] = {
    # Users and credentials in SQL; sessions and login-failure counters in `sessions`; signs tokens.
    "user": ServiceAccess(write_tables=("sessions",), database=True, signing_key=True),
    # The catalog and stock reservations in SQL; image uploads and links by presigned S3 URLs.
    "product": ServiceAccess(write_buckets=("product-images",), database=True, internal_token=True),
    # Powertools idempotency records per event in `idempotency`; the order e-mail through SES.
    "notification": ServiceAccess(
        write_tables=("notifications", "idempotency"), consume_queues=("order-events",), send_email=True
    ),
    # Carts; orders, each item with its own outbox; invoices; the analytics windows (S3, read); the
    # relay sends to SQS and Kafka. Stock goes through the product service (internal route), so no
    # SQL; the order id is derived from the Idempotency-Key, so no idempotency table.
    "order": ServiceAccess(
        write_tables=("carts", "orders"),
        write_buckets=("order-documents",),
        read_buckets=("analytics-results",),
        send_queues=("order-events",),
        consume_queues=("payment-events",),
        produce_topics=("orders",),
        internal_token=True,
    ),
    # Its own payments table (refund idempotency and the outbox live on the payment item); its relay
    # sends `payment.refunded` to SQS. It never calls the order service.
    "payment": ServiceAccess(write_tables=("payments",), send_queues=("payment-events",), internal_token=True),
}


@dataclass(frozen=True, kw_only=True)
class DataResources:
    """The data stack's resources, handed to the stacks that grant access to them (typed, not ARNs)."""

    key: kms.IKey
    tables: EstateTables
    buckets: EstateBuckets
    queues: EstateQueues
    database: Database
    auth: AuthSecrets


def object_finding(buckets: EstateBuckets, name: str) -> str:
    """The cdk-nag finding for a grant on the objects of bucket `name` (rendered like cdk-nag does)."""
    return f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::{buckets.bucket_name(name)}/*]"


def access_findings(access: ServiceAccess, *, data: DataResources, stream: EventStream | None = None) -> dict[str, str]:
    """The cdk-nag IAM5 findings `grant_service_access` produces, each with its reason."""
    findings = {
        object_finding(data.buckets, name): (
            f"Object-level access to the {name} bucket: object keys are data (one per image/invoice/"
            "result), so the grant names the bucket and lets the service address its objects."
        )
        for name in access.write_buckets + access.read_buckets
    }
    if access.consume_topics and stream is not None:
        findings[f"AwsSolutions-IAM5[Resource::{stream.group_arn_rendered}]"] = (
            "Kafka consumer groups are named by the consumer (prefix `cloudshop-`) and the cluster UUID "
            "is unknown before deploy; the cluster name is unique in the account and region."
        )
    return findings


def _allow(grantee: iam.IGrantable, actions: list[str], resources: list[str]) -> None:
    iam.Grant.add_to_principal(grantee=grantee, actions=actions, resource_arns=resources)


def grant_session_check(grantee: iam.IGrantable, *, data: DataResources) -> None:
    """What `cloudshop.sessions.session_is_active` needs: one item read on `sessions` (and its key)."""
    _allow(grantee, ["dynamodb:GetItem"], [data.tables["sessions"].table_arn])
    _allow(grantee, KEY_DECRYPT, [data.key.key_arn])


def internal_token_arns(party: str, *, data: DataResources) -> dict[str, str]:
    """`{pair: secret ARN}` of the service-token secrets `party` holds (a service, or `gateway`)."""
    return {pair: data.auth.internal_tokens[pair].secret_arn for pair in ESTATE.token_pairs_of(party)}


def grant_internal_token(grantee: iam.IGrantable, *, data: DataResources) -> None:
    """What the service-token authorizer's `load_secrets` needs for `INTERNAL_TOKEN_SECRET_ARNS`: the
    values of the secrets of the API's internal routes' pairs (and their key), no other."""
    _allow(grantee, ["secretsmanager:GetSecretValue"], list(internal_token_arns("gateway", data=data).values()))
    _allow(grantee, KEY_DECRYPT, [data.key.key_arn])


def grant_service_access(
    grantee: iam.IGrantable,
    access: ServiceAccess,
    *,
    service: ServiceName,
    data: DataResources,
    stream: EventStream | None = None,
    email_identities: list[str] | None = None,
) -> None:
    """Grant `grantee`, which runs `service`, exactly what `access` lists."""
    key = data.key.key_arn
    encrypts = bool(access.write_tables or access.write_buckets or access.send_queues)
    for name in access.write_tables + access.read_tables:
        table = data.tables[name]
        actions = TABLE_READ + (TABLE_WRITE if name in access.write_tables else [])
        _allow(grantee, actions, [table.table_arn, *data.tables.index_arns(name)])
    for name in access.write_buckets + access.read_buckets:
        actions = OBJECT_READ + (OBJECT_WRITE if name in access.write_buckets else [])
        _allow(grantee, actions, [data.buckets.objects_arn(name)])
        _allow(grantee, ["s3:ListBucket"], [data.buckets.bucket_arn(name)])
    for name in access.send_queues:
        _allow(grantee, QUEUE_SEND, [data.queues[name].queue_arn])
    for name in access.consume_queues:
        data.queues[name].grant_consume_messages(grantee)
    _allow(grantee, KEY_DECRYPT + (KEY_ENCRYPT if encrypts else []), [key])
    secrets: list[str] = []
    if access.internal_token:
        secrets += internal_token_arns(service, data=data).values()
    if access.database:
        secrets.append(data.database.role_secrets[service].secret_arn)
    if access.signing_key:
        secrets.append(data.auth.signing_key.secret_arn)
    if secrets:
        _allow(grantee, SECRET_READ, secrets)
    if access.produce_topics or access.consume_topics:
        if stream is None:
            raise ValueError("this service uses Kafka topics but no event stream was given")
        for topic in access.produce_topics:
            stream.grant_produce(grantee, topic)
        for topic in access.consume_topics:
            stream.grant_consume(grantee, topic, group=CONSUMER_GROUPS)
    if access.send_email:
        identities = email_identities or []
        _allow(
            grantee,
            ["ses:SendEmail", "ses:SendRawEmail"],
            [f"arn:{Aws.PARTITION}:ses:{Aws.REGION}:{Aws.ACCOUNT_ID}:identity/{i}" for i in identities],
        )
