"""The database-ops function (cdk/runtime/database_ops.py) and the CLI that invokes it.

The handler runs as in the cloud: its settings from the environment, the master and role passwords
read from Secrets Manager (moto), the database a PostgreSQL cluster that has only a master user.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import psycopg
import pytest
from sqlalchemy.engine import make_url

from cdk.runtime.database_ops import handler
from cloudshop.cli import build_parser
from cloudshop.estate import ESTATE
from cloudshop.remote import EXIT_EXISTS, EXIT_FAILED, EXIT_INVALID, EXIT_OK, run
from cloudshop.settings import resource_settings
from tests.fixtures.servers import MASTER_USER

pytestmark = pytest.mark.postgres


@pytest.fixture
def ops_environment(
    master_postgres_server: Any, aws_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., dict[str, str]]:
    """The function's environment as CDK gives it, on a fresh database; returns the role passwords."""
    database = f"t_{uuid.uuid4().hex[:12]}"
    master_postgres_server.create_database(database)
    secrets = boto3.client("secretsmanager", endpoint_url=aws_endpoint, region_name="eu-west-1")
    run_id = uuid.uuid4().hex[:8]

    def secret(name: str, value: dict[str, str]) -> str:
        return str(secrets.create_secret(Name=f"{run_id}-{name}", SecretString=json.dumps(value))["ARN"])

    def configure(**role_usernames: str) -> dict[str, str]:
        passwords = {schema.role: f"pw-{uuid.uuid4().hex}" for schema in ESTATE.sql_schemas}
        role_secrets = {
            role: secret(f"db-{role}", {"username": role_usernames.get(role, role), "password": password})
            for role, password in passwords.items()
        }
        master = secret("db-master", {"username": MASTER_USER, "password": master_postgres_server.password})
        host_only = make_url(master_postgres_server.url_for(database)).set(username=None, password=None)
        monkeypatch.setenv("DATABASE_URL", host_only.render_as_string())
        monkeypatch.setenv("DATABASE_SECRET_ARN", master)
        monkeypatch.setenv("DATABASE_ROLE_SECRETS", json.dumps(role_secrets))
        monkeypatch.setenv("AWS_ENDPOINT_URL", aws_endpoint)
        monkeypatch.setenv("ENVIRONMENT", "test")
        for name, value in resource_settings(f"ops-{run_id}-").items():
            monkeypatch.setenv(name, value)
        passwords["database"] = database
        return passwords

    return configure


def deploy_event(request_type: str, **extra: Any) -> dict[str, Any]:
    return {
        "RequestType": request_type,
        "StackId": "arn:aws:cloudformation:eu-west-1:123456789012:stack/Cloudshop-Dev-Data/1",
        "RequestId": uuid.uuid4().hex,
        "LogicalResourceId": "SchemaMigration51CB48C1",
        "ResourceType": "Custom::SchemaMigration",
        "ResourceProperties": {"Fingerprint": "f", "Roles": "cloudshop_product,cloudshop_user"},
        **extra,
    }


def connect_as(master_postgres_server: Any, database: str, role: str, password: str) -> psycopg.Connection:
    url = make_url(master_postgres_server.url_for(database)).set(username=role, password=password)
    return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)


def test_the_deploy_event_migrates_and_creates_the_roles_and_a_rerun_changes_nothing(
    ops_environment: Callable[..., dict[str, str]], master_postgres_server: Any
) -> None:
    passwords = ops_environment()

    created = handler(deploy_event("Create"), None)
    updated = handler(deploy_event("Update", PhysicalResourceId=created["PhysicalResourceId"]), None)

    assert (
        created["Data"]
        == updated["Data"]
        == {
            "userRevision": "user_0001",
            "productRevision": "product_0002",
            "Roles": "cloudshop_user,cloudshop_product",
        }
    )
    with connect_as(
        master_postgres_server, passwords["database"], "cloudshop_product", passwords["cloudshop_product"]
    ) as db:
        assert db.execute("SELECT count(*) FROM products").fetchone() == (0,)


def test_deleting_the_resource_keeps_the_schema(ops_environment: Callable[..., dict[str, str]]) -> None:
    ops_environment()
    created = handler(deploy_event("Create"), None)

    answer = handler(deploy_event("Delete", PhysicalResourceId=created["PhysicalResourceId"]), None)

    assert answer == {"PhysicalResourceId": created["PhysicalResourceId"]}
    assert handler({"command": "load-catalog"}, None)["status"] == "loaded"


def test_a_role_secret_for_another_user_fails_the_deploy_naming_the_secret(
    ops_environment: Callable[..., dict[str, str]],
) -> None:
    ops_environment(cloudshop_user="somebody_else")

    with pytest.raises(RuntimeError, match=r"is for 'somebody_else', not the role 'cloudshop_user'"):
        handler(deploy_event("Create"), None)


def test_a_missing_master_secret_fails_naming_it(
    ops_environment: Callable[..., dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    ops_environment()
    missing = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:cloudshop-dev-gone-AbCdEf"
    monkeypatch.setenv("DATABASE_SECRET_ARN", missing)

    with pytest.raises(RuntimeError, match=f"SecretUnavailable: DATABASE_SECRET_ARN: cannot read secret {missing}"):
        handler(deploy_event("Create"), None)


def test_admin_create_makes_one_admin_and_an_existing_email_is_reported_and_left_alone(
    ops_environment: Callable[..., dict[str, str]], master_postgres_server: Any
) -> None:
    passwords = ops_environment()
    handler(deploy_event("Create"), None)
    command = {"command": "create-admin", "email": "Ops@Example.com", "password": "a-long-secret-42"}

    first = handler(command, None)
    again = handler({**command, "password": "another-secret-99", "name": "Mallory"}, None)

    assert first["status"] == "created" and first["role"] == "admin" and first["email"] == "ops@example.com"
    assert again["status"] == "exists" and again["user_id"] == first["user_id"]
    assert "nothing was changed" in again["detail"]
    with connect_as(master_postgres_server, passwords["database"], "cloudshop_user", passwords["cloudshop_user"]) as db:
        rows = db.execute("SELECT name, role FROM users").fetchall()
    assert rows == [("Administrator", "admin")]


def test_admin_create_never_promotes_an_existing_customer(
    ops_environment: Callable[..., dict[str, str]], master_postgres_server: Any
) -> None:
    passwords = ops_environment()
    handler(deploy_event("Create"), None)
    with connect_as(master_postgres_server, passwords["database"], "cloudshop_user", passwords["cloudshop_user"]) as db:
        db.execute(
            "INSERT INTO users (id, email, name, role, password_hash, created_at, updated_at) "
            "VALUES ('c1', 'shopper@example.com', 'S', 'customer', 'h', now(), now())"
        )

    answer = handler({"command": "create-admin", "email": "shopper@example.com", "password": "a-long-secret-42"}, None)

    assert (answer["status"], answer["role"]) == ("exists", "customer")


@pytest.mark.parametrize(
    ("command", "detail"),
    [
        ({"command": "create-admin", "email": "not-an-email", "password": "a-long-secret-42"}, "email"),
        ({"command": "create-admin", "email": "a@example.com", "password": "short"}, "password"),
        ({"command": "create-admin", "email": "a@example.com"}, "`email` and `password`"),
        ({"command": "drop-everything"}, "unknown command"),
    ],
)
def test_bad_commands_are_refused_and_change_nothing(
    ops_environment: Callable[..., dict[str, str]], command: dict[str, Any], detail: str
) -> None:
    ops_environment()
    handler(deploy_event("Create"), None)

    answer = handler(command, None)

    assert answer["status"] == "invalid"
    assert detail in answer["detail"]


def test_the_demo_catalog_loads_once(ops_environment: Callable[..., dict[str, str]]) -> None:
    ops_environment()
    handler(deploy_event("Create"), None)

    assert handler({"command": "load-catalog"}, None) | {"detail": ""} == {
        "status": "loaded",
        "added": 56,
        "detail": "",
    }
    assert handler({"command": "load-catalog"}, None)["status"] == "unchanged"


# --- the CLI --------------------------------------------------------------------------------------


class RecordingInvoke:
    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((name, payload))
        return self.answer


def cli(argv: list[str], invoke: RecordingInvoke) -> int:
    return run(build_parser().parse_args(argv), invoke=invoke)


@pytest.mark.parametrize(("status", "code"), [("created", EXIT_OK), ("exists", EXIT_EXISTS), ("invalid", EXIT_INVALID)])
def test_admin_create_sends_the_password_from_stdin_and_exits_by_outcome(
    status: str, code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("from-a-pipe-42\n"))
    invoke = RecordingInvoke({"status": status, "detail": "..."})

    exit_code = cli(["admin", "create", "--env", "prod", "--email", "a@example.com", "--password-stdin"], invoke)

    assert exit_code == code
    assert invoke.calls == [
        (
            "cloudshop-prod-database-ops",
            {
                "command": "create-admin",
                "email": "a@example.com",
                "password": "from-a-pipe-42",
                "name": "Administrator",
            },
        )
    ]


def test_admin_create_asks_twice_and_stops_when_the_passwords_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["first-secret-42", "second-secret-42"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    invoke = RecordingInvoke({"status": "created"})

    assert cli(["admin", "create", "--env", "dev", "--email", "a@example.com"], invoke) == EXIT_FAILED
    assert invoke.calls == [], "nothing is sent"


def test_admin_create_reads_the_password_from_a_secret(aws_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_endpoint)
    name = f"ops-admin-{uuid.uuid4().hex[:8]}"
    boto3.client("secretsmanager", endpoint_url=aws_endpoint, region_name="eu-west-1").create_secret(
        Name=name, SecretString=json.dumps({"password": "kept-in-secrets-manager-1"})
    )
    invoke = RecordingInvoke({"status": "created"})

    argv = ["admin", "create", "--env", "dev", "--prefix", "acme-", "--region", "eu-west-1", "--email", "a@example.com"]
    assert cli([*argv, "--password-secret", name], invoke) == EXIT_OK
    assert invoke.calls[0][0] == "acme-database-ops"
    assert invoke.calls[0][1]["password"] == "kept-in-secrets-manager-1"


def test_catalog_load_invokes_the_function(monkeypatch: pytest.MonkeyPatch) -> None:
    invoke = RecordingInvoke({"status": "unchanged", "detail": "left alone"})

    assert cli(["catalog", "load", "--env", "staging"], invoke) == EXIT_OK
    assert invoke.calls == [("cloudshop-staging-database-ops", {"command": "load-catalog"})]
