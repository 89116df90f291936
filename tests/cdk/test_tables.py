"""EstateTables: every table of `cloudshop.estate` exists with its keys, indexes, TTL and protection."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Match

from cloudshop.estate import ESTATE, Table

pytestmark = pytest.mark.infra


def key_schema(table: Table) -> list[dict[str, str]]:
    keys = [{"AttributeName": table.partition_key.name, "KeyType": "HASH"}]
    if table.sort_key:
        keys.append({"AttributeName": table.sort_key.name, "KeyType": "RANGE"})
    return keys


@pytest.mark.parametrize("table", ESTATE.tables, ids=lambda t: t.name)
def test_declared_table_has_its_keys_ttl_and_encryption(synth, table: Table) -> None:
    properties = {
        "TableName": f"{synth.config.prefix}{table.name}",
        "KeySchema": key_schema(table),
        "AttributeDefinitions": Match.array_with(
            [{"AttributeName": k.name, "AttributeType": k.type} for k in table.attribute_definitions()]
        ),
        "BillingMode": "PAY_PER_REQUEST",
        "SSESpecification": {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": Match.any_value()},
    }
    if table.ttl_attribute:
        properties["TimeToLiveSpecification"] = {"AttributeName": table.ttl_attribute, "Enabled": True}
    synth.template("Data").has_resource_properties("AWS::DynamoDB::Table", properties)


@pytest.mark.parametrize("table", [t for t in ESTATE.tables if t.indexes], ids=lambda t: t.name)
def test_declared_indexes_are_global_secondary_indexes(synth, table: Table) -> None:
    indexes = []
    for index in table.indexes:
        keys = [{"AttributeName": index.partition_key.name, "KeyType": "HASH"}]
        if index.sort_key:
            keys.append({"AttributeName": index.sort_key.name, "KeyType": "RANGE"})
        indexes.append({"IndexName": index.name, "KeySchema": keys, "Projection": {"ProjectionType": "ALL"}})
    synth.template("Data").has_resource_properties(
        "AWS::DynamoDB::Table",
        {"TableName": f"{synth.config.prefix}{table.name}", "GlobalSecondaryIndexes": Match.array_equals(indexes)},
    )


@pytest.mark.parametrize("table", ESTATE.tables, ids=lambda t: t.name)
def test_critical_tables_are_recoverable_and_retained(synth, table: Table) -> None:
    expected = {
        "Properties": {
            "TableName": f"{synth.config.prefix}{table.name}",
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": table.critical},
            "DeletionProtectionEnabled": table.critical,
        },
        "DeletionPolicy": "Retain" if table.critical else "Delete",
    }
    synth.template("Data").has_resource("AWS::DynamoDB::Table", expected)


def test_no_table_exists_that_the_estate_does_not_declare(synth) -> None:
    names = {r["Properties"]["TableName"] for r in synth.all_resources("AWS::DynamoDB::Table").values()}
    assert names == {f"{synth.config.prefix}{t.name}" for t in ESTATE.tables}
