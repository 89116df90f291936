"""IAM across every stack: no `*` or `service:*` action anywhere, and data resources are named."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cdk.access import SERVICE_ACCESS
from cdk.tables import construct_id
from cloudshop.estate import ESTATE
from tests.cdk.conftest import STACKS

pytestmark = pytest.mark.infra

DATA_SERVICES = ("dynamodb", "s3", "sqs", "secretsmanager", "kafka-cluster", "kms", "ses")


def statements(synth) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for stack in STACKS:
        for logical_id, resource in synth.templates[stack]["Resources"].items():
            if resource["Type"] in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"}:
                for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
                    found.append((f"{stack}/{logical_id}", statement))
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_no_statement_allows_every_action(synth) -> None:
    offenders = [
        (where, action)
        for where, statement in statements(synth)
        if statement["Effect"] == "Allow"
        for action in as_list(statement["Action"])
        if action == "*" or action.endswith(":*")
    ]
    assert offenders == []


def test_data_actions_never_apply_to_every_resource(synth) -> None:
    offenders = [
        (where, statement["Action"])
        for where, statement in statements(synth)
        if statement["Effect"] == "Allow"
        and "*" in as_list(statement["Resource"])
        and any(a.split(":")[0] in DATA_SERVICES for a in as_list(statement["Action"]))
    ]
    assert offenders == []


def test_signing_key_is_readable_only_by_the_user_service(synth) -> None:
    readers = [
        where
        for where, statement in statements(synth)
        if "secretsmanager:GetSecretValue" in as_list(statement["Action"])
        and "AuthSigningKey" in json.dumps(statement["Resource"])
    ]
    assert readers and all("User" in w or "KeyGenerator" in w for w in readers), readers
    assert [s for s, a in SERVICE_ACCESS.items() if a.signing_key] == ["user"]


def test_order_service_may_produce_orders_idempotently_and_nothing_more_on_kafka(synth) -> None:
    # It consumes nothing: the analytics windows come from S3, not from the results topic.
    kafka = sorted(
        {
            action
            for where, statement in statements(synth)
            if "OrderPodRole" in where
            for action in as_list(statement["Action"])
            if action.startswith("kafka-cluster:")
        }
    )
    assert kafka == [
        "kafka-cluster:Connect",
        "kafka-cluster:DescribeCluster",
        "kafka-cluster:DescribeTopic",
        "kafka-cluster:WriteData",
        "kafka-cluster:WriteDataIdempotently",
    ]


def test_no_pod_role_reaches_kafka_unless_it_produces(synth) -> None:
    payment = [
        action
        for where, statement in statements(synth)
        if "PaymentPodRole" in where
        for action in as_list(statement["Action"])
    ]
    assert payment and not [a for a in payment if a.startswith(("kafka-cluster:", "rds", "s3:"))]
    # Its outbox relay sends `payment.refunded` to SQS `payment-events`: sending, never receiving.
    assert sorted({a for a in payment if a.startswith("sqs:")}) == [
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
        "sqs:SendMessage",
    ]


def test_each_service_token_secret_is_readable_by_the_two_sides_of_its_pair_alone(synth) -> None:
    # One secret per calling pair (issue 10): the internet-facing product Lambda holds `order-product`
    # only, so it can sign nothing the payment service accepts; the gateway's service-token authorizer
    # holds the pair of the API's internal routes.
    readers: dict[str, set[str]] = {pair: set() for pair in ESTATE.token_pairs}
    for where, statement in statements(synth):
        if "secretsmanager:GetSecretValue" not in as_list(statement["Action"]):
            continue
        for pair in ESTATE.token_pairs:
            if f"AuthInternalToken{construct_id(pair)}" in json.dumps(statement["Resource"]):
                readers[pair].add(where.split("/")[1].split("DefaultPolicy")[0])

    assert readers == {
        "order-payment": {"EksOrderPodRole", "EksPaymentPodRole"},
        "order-product": {
            "EksOrderPodRole",
            "ServicesProductServiceRole",
            "GatewayServiceAuthorizerFunctionServiceRole",
        },
    }
