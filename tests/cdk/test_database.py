"""Database: encrypted PostgreSQL with protection, rotated credentials and an RDS Proxy."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match

from cdk.config import preset
from cloudshop.estate import ESTATE

pytestmark = pytest.mark.infra


def test_postgres_instance_is_encrypted_private_and_protected(synth) -> None:
    synth.template("Data").has_resource(
        "AWS::RDS::DBInstance",
        {
            "Properties": Match.object_like(
                {
                    "Engine": "postgres",
                    "StorageEncrypted": True,
                    "KmsKeyId": Match.any_value(),
                    "DeletionProtection": True,
                    "MultiAZ": synth.config.db_multi_az,
                    "PubliclyAccessible": False,
                    "EnableIAMDatabaseAuthentication": True,
                    "BackupRetentionPeriod": synth.config.db_backup_retention_days,
                    "EnableCloudwatchLogsExports": ["postgresql", "upgrade"],
                }
            ),
            "DeletionPolicy": "Snapshot",
        },
    )


def test_multi_az_is_an_option_on_for_prod() -> None:
    assert preset("prod").db_multi_az is True
    assert preset("dev").db_multi_az is False


def test_connections_require_tls(synth) -> None:
    synth.template("Data").has_resource_properties(
        "AWS::RDS::DBParameterGroup", {"Parameters": Match.object_like({"rds.force_ssl": "1"})}
    )
    (proxy,) = synth.resources("Data", "AWS::RDS::DBProxy").values()
    assert proxy["Properties"]["EngineFamily"] == "POSTGRESQL"
    assert proxy["Properties"]["RequireTLS"] is True
    # The master and one role per SQL service: the proxy must know every user that logs in through it.
    assert [auth["AuthScheme"] for auth in proxy["Properties"]["Auth"]] == ["SECRETS"] * (1 + len(ESTATE.sql_schemas))


def test_credentials_live_in_secrets_manager_and_rotate(synth) -> None:
    template = synth.template("Data")
    template.has_resource_properties(
        "AWS::SecretsManager::Secret",
        {"GenerateSecretString": Match.object_like({"SecretStringTemplate": '{"username":"cloudshop_admin"}'})},
    )
    template.has_resource_properties(
        "AWS::SecretsManager::RotationSchedule",
        {"RotationRules": {"ScheduleExpression": f"rate({synth.config.db_rotation_days} days)"}},
    )


def test_every_sql_service_has_its_own_rotated_role_secret(synth) -> None:
    template = synth.template("Data")
    for schema in ESTATE.sql_schemas:
        template.has_resource_properties(
            "AWS::SecretsManager::Secret",
            {
                "Name": f"{synth.config.prefix}db-{schema.service}",
                "GenerateSecretString": Match.object_like(
                    {
                        "SecretStringTemplate": json.dumps(
                            {"username": schema.role, "dbname": synth.config.db_name}, separators=(",", ":")
                        )
                    }
                ),
            },
        )
    schedules = synth.resources("Data", "AWS::SecretsManager::RotationSchedule")
    assert len(schedules) == 1 + len(ESTATE.sql_schemas)
    for schedule in schedules.values():
        expression = schedule["Properties"]["RotationRules"]["ScheduleExpression"]
        assert expression == f"rate({synth.config.db_rotation_days} days)"
