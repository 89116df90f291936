"""The database-ops function: the deploy's migration step, and the operator's first admin and catalog.

One function in the VPC, connecting through RDS Proxy as the master user (the only holder of that
secret), with two kinds of events:

- CloudFormation, through the CDK Provider framework (`Custom::SchemaMigration`, cdk/schema.py):
  Create and Update apply every service's migrations and set up each service's database role with the
  password of its own secret (`cloudshop.schema.apply_schema`). A failure raises, and the framework
  reports the message, Alembic's error included, as the stack event's reason, which fails the deploy.
  Delete keeps the schema: data outlives the stack resource.
- Direct invocations from the `cloudshop` CLI with the operator's credentials:
  `{"command": "create-admin", "email", "password", "name"?}`, `{"command": "load-catalog"}`,
  `{"command": "migrate"}`. They answer `{"status": ..., "detail": ...}`.

The event is never logged: it can carry a password.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from cloudshop.operations import create_admin, load_demo_catalog
from cloudshop.settings import Settings, secret_reader
from cloudshop.sql import engine_for

if TYPE_CHECKING:
    from cloudshop.schema import SchemaResult

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)

PHYSICAL_ID = "cloudshop-sql-schema"
# CloudFormation shows at most ~4 KB of reason; keep the database's message, drop the tail.
REASON_LIMIT = 3000
COMMANDS = ("create-admin", "load-catalog", "migrate")


def role_passwords(settings: Settings) -> dict[str, str]:
    """Role -> password, read from each role's own secret (named in DATABASE_ROLE_SECRETS)."""
    fetch = secret_reader(settings)
    passwords = {}
    for role, arn in settings.database_role_secrets.items():
        credentials = json.loads(fetch(arn))
        if credentials.get("username") != role:
            raise ValueError(f"secret {arn} is for {credentials.get('username')!r}, not the role {role!r}")
        passwords[role] = str(credentials["password"])
    return passwords


def migrate(settings: Settings) -> SchemaResult:
    # Alembic (~90 ms of import here) only for the invocations that migrate: the operator's
    # create-admin and load-catalog commands never need it.
    from cloudshop.schema import apply_schema

    engine = engine_for(settings)
    try:
        return apply_schema(engine, role_passwords=role_passwords(settings))
    finally:
        engine.dispose()


def on_deploy(event: dict[str, Any], settings: Settings) -> dict[str, Any]:
    if event["RequestType"] == "Delete":
        return {"PhysicalResourceId": event.get("PhysicalResourceId", PHYSICAL_ID)}
    try:
        result = migrate(settings)
    except Exception as exc:
        logger.exception("schema migration failed")
        raise RuntimeError(f"{type(exc).__name__}: {exc}"[:REASON_LIMIT]) from None
    logger.info("schema at %s; roles %s", result.revisions, ", ".join(result.roles))
    return {"PhysicalResourceId": PHYSICAL_ID, "Data": result.as_dict()}


def on_command(event: dict[str, Any], settings: Settings) -> dict[str, Any]:
    command = event.get("command")
    if command == "migrate":
        result = migrate(settings)
        return {"status": "migrated", "detail": json.dumps(result.as_dict())}
    if command not in COMMANDS:
        return {"status": "invalid", "detail": f"unknown command {command!r}; expected one of {', '.join(COMMANDS)}"}
    engine = engine_for(settings)
    try:
        if command == "create-admin":
            email, password = event.get("email"), event.get("password")
            if not isinstance(email, str) or not isinstance(password, str):
                return {"status": "invalid", "detail": "create-admin needs `email` and `password` strings"}
            name = event.get("name") or "Administrator"
            admin = create_admin(settings, engine, email=email, password=password, name=str(name))
            logger.info("create-admin %s: %s", admin.email, admin.status)
            return admin.as_dict()
        added = load_demo_catalog(settings, engine)
        detail = f"{added} demo products added" if added else "the catalog already has products; left alone"
        logger.info("load-catalog: %s", detail)
        return {"status": "loaded" if added else "unchanged", "detail": detail, "added": added}
    finally:
        engine.dispose()


def handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    settings = Settings()
    if "RequestType" in event:
        return on_deploy(event, settings)
    return on_command(event, settings)
