"""The deploy's migration step (cdk/schema.py): what `cdk deploy` runs before the API serves."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cdk.runtime.database_ops import COMMANDS
from cloudshop.estate import ESTATE
from cloudshop.schema import schema_fingerprint

pytestmark = pytest.mark.infra

MASTER_ATTACHMENT = "DatabaseInstanceSecretAttachmentFCA06D38"


def one(resources: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    assert len(resources) == 1, sorted(resources)
    return next(iter(resources.items()))


def ops_function(synth: Any) -> tuple[str, dict[str, Any]]:
    functions = synth.resources("Data", "AWS::Lambda::Function")
    return one(
        {k: f for k, f in functions.items() if f["Properties"].get("FunctionName") == "cloudshop-dev-database-ops"}
    )


def test_the_migration_reruns_exactly_when_a_migration_or_a_role_changes(synth) -> None:
    _, migration = one(synth.resources("Data", "Custom::SchemaMigration"))
    properties = migration["Properties"]
    assert properties["Fingerprint"] == schema_fingerprint()
    assert properties["Roles"] == ",".join(sorted(s.role for s in ESTATE.sql_schemas))
    # The provider framework invokes the database-ops function.
    framework = synth.resources("Data", "AWS::Lambda::Function")[properties["ServiceToken"]["Fn::GetAtt"][0]]
    ops_id, _ = ops_function(synth)
    assert ops_id in json.dumps(framework["Properties"]["Environment"])


def test_the_step_runs_after_the_proxy_and_before_the_role_rotations(synth) -> None:
    migration_id, migration = one(synth.resources("Data", "Custom::SchemaMigration"))
    (proxy_id,) = synth.resources("Data", "AWS::RDS::DBProxy")
    (target_group_id,) = synth.resources("Data", "AWS::RDS::DBProxyTargetGroup")
    assert {proxy_id, target_group_id} <= set(migration["DependsOn"])
    applications = synth.resources("Data", "AWS::Serverless::Application")
    role_rotations = [a for a in applications.values() if migration_id in a.get("DependsOn", [])]
    assert len(role_rotations) == len(ESTATE.sql_schemas), "a role's first rotation needs the role to exist"


def test_the_ops_function_holds_the_master_secret_and_the_role_secrets_and_nothing_else(synth) -> None:
    _ops_id, function = ops_function(synth)
    env = function["Properties"]["Environment"]["Variables"]
    # The master secret, as its attachment to the instance (which adds host and port).
    assert json.dumps(env["DATABASE_SECRET_ARN"]) == json.dumps({"Ref": MASTER_ATTACHMENT})
    roles = json.dumps(env["DATABASE_ROLE_SECRETS"])
    for schema in ESTATE.sql_schemas:
        assert schema.role in roles
    assert "Proxy" in json.dumps(env["DATABASE_URL"]), "it migrates through the proxy"
    assert function["Properties"]["Handler"] == "cdk.runtime.database_ops.handler"
    assert "VpcConfig" in function["Properties"]

    role_name = function["Properties"]["Role"]["Fn::GetAtt"][0]
    policies = [
        p
        for p in synth.resources("Data", "AWS::IAM::Policy").values()
        if {"Ref": role_name} in p["Properties"]["Roles"]
    ]
    statements = [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]]
    secret_statements = [s for s in statements if any(a.startswith("secretsmanager:") for a in s["Action"])]
    (granted,) = secret_statements
    # Logical ids end in an 8-character hash.
    expected = [
        "DatabaseInstanceSecretAttachment",
        *(f"Database{s.service.capitalize()}RoleSecret" for s in ESTATE.sql_schemas),
    ]
    assert sorted(r["Ref"][:-8] for r in granted["Resource"]) == sorted(expected)
    assert len(granted["Resource"]) == 1 + len(ESTATE.sql_schemas)


def test_services_log_in_as_their_own_role_never_as_master(synth) -> None:
    functions = synth.resources("Api", "AWS::Lambda::Function")
    for schema in ESTATE.sql_schemas:
        (function,) = [
            f
            for f in functions.values()
            if f["Properties"].get("Handler") == f"functions.{schema.service}.handler.handler"
        ]
        secret = json.dumps(function["Properties"]["Environment"]["Variables"]["DATABASE_SECRET_ARN"])
        assert f"Database{schema.service.capitalize()}RoleSecret" in secret
        assert "DatabaseInstanceSecret" not in secret


def test_the_function_knows_the_commands_the_cli_sends() -> None:
    assert set(COMMANDS) == {"create-admin", "load-catalog", "migrate"}
