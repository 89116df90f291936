"""Build the local estate from the shared declarations: DynamoDB tables, S3 buckets, SQS queues.

Each API goes to its own endpoint (`Settings.endpoint_for`): everything to moto in the embedded
profile; the tables to dynalite and the queues to ElasticMQ in the full one.

The cloud gets the same resources from CDK (`cdk/`), built from the same `ESTATE`; this module is the
local realisation used by `cloudshop up` and by the test fixtures. It is idempotent.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from cloudshop import aws
from cloudshop.estate import ESTATE, Estate, Table
from cloudshop.settings import Settings


def table_definition(table: Table, physical_name: str) -> dict[str, Any]:
    key_schema = [{"AttributeName": table.partition_key.name, "KeyType": "HASH"}]
    if table.sort_key:
        key_schema.append({"AttributeName": table.sort_key.name, "KeyType": "RANGE"})
    definition: dict[str, Any] = {
        "TableName": physical_name,
        "KeySchema": key_schema,
        "AttributeDefinitions": [
            {"AttributeName": key.name, "AttributeType": key.type} for key in table.attribute_definitions()
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if table.indexes:
        definition["GlobalSecondaryIndexes"] = [
            {
                "IndexName": index.name,
                "KeySchema": [{"AttributeName": index.partition_key.name, "KeyType": "HASH"}]
                + ([{"AttributeName": index.sort_key.name, "KeyType": "RANGE"}] if index.sort_key else []),
                "Projection": {"ProjectionType": "ALL"},
            }
            for index in table.indexes
        ]
    return definition


def provision(settings: Settings, estate: Estate = ESTATE) -> dict[str, str]:
    """Create every table, bucket and queue that is missing. Returns the queue URLs by logical name."""
    dynamodb = aws.client("dynamodb", settings)
    for table in estate.tables:
        name = settings.table_name(table.name)
        try:
            dynamodb.create_table(**table_definition(table, name))
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceInUseException":
                raise
        if table.ttl_attribute:
            try:
                dynamodb.update_time_to_live(
                    TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute}
                )
            except ClientError as exc:
                # dynalite (the full profile's DynamoDB) does not expire items; nothing relies on it locally.
                if exc.response["Error"]["Code"] != "UnknownOperationException":
                    raise
    s3 = aws.client("s3", settings)
    for bucket in estate.buckets:
        name = settings.bucket_name(bucket.name)
        try:
            if settings.aws_region == "us-east-1":
                s3.create_bucket(Bucket=name)
            else:
                s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": settings.aws_region})
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
    sqs = aws.client("sqs", settings)
    urls: dict[str, str] = {}
    for queue in estate.queues:
        dlq_name = settings.resource_prefix + queue.dead_letter_queue
        # 14 days for a dead letter, as CDK sets it. ElasticMQ (the full profile's SQS) accepts the
        # attribute but keeps every message until it is deleted: locally longer, never shorter.
        dlq_url = sqs.create_queue(QueueName=dlq_name, Attributes={"MessageRetentionPeriod": "1209600"})["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        url = sqs.create_queue(
            QueueName=settings.resource_prefix + queue.name,
            Attributes={
                "VisibilityTimeout": str(queue.visibility_timeout_seconds),
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(queue.max_receive_count)}
                ),
            },
        )["QueueUrl"]
        urls[queue.name] = url
        urls[queue.dead_letter_queue] = dlq_url
    return urls


def provision_mail(settings: Settings) -> None:
    """Verify the SES sender identity locally, so SES (moto) accepts the order emails. In the cloud
    the sending identity is a verified domain, set up outside the application."""
    aws.client("ses", settings).verify_email_identity(EmailAddress=settings.ses_sender)
