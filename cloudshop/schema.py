"""The SQL schema and the services' database roles, applied by the deploy itself and by the local runner.

`apply_schema` is the one migration step. In the cloud the `SchemaMigration` custom resource
(`cdk/schema.py`, handler `cdk/runtime/database_ops.py`) runs it through RDS Proxy as the master user
on every deploy whose migrations changed, before the stacks that serve traffic update; `cloudshop up`
runs it at start-up. Either way:

- every service's Alembic migrations (`ESTATE.sql_schemas`) run in ONE transaction: PostgreSQL has
  transactional DDL, so a migration that fails leaves the previous schema, whole, still serving;
- a transaction-scoped advisory lock makes two concurrent runs (two deploys) take turns;
- when role passwords are given (the cloud), each service's login role is created or updated with
  exactly the privileges the estate declares, and the password of its own secret.

Running it again changes nothing: Alembic skips applied revisions, and the role statements converge.
"""

from __future__ import annotations

import hashlib
import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy import Engine as SqlAlchemyEngine
from sqlalchemy.pool import NullPool

from cloudshop.estate import ESTATE, SqlSchema
from cloudshop.sql import Engine

# pg_advisory_xact_lock key: any constant shared by every run ("cloudshop" in ASCII).
MIGRATION_LOCK = 0x636C6F756473686F
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class MigrationFailed(RuntimeError):
    """A service's migrations failed; the message carries the database's own error."""


@dataclass(frozen=True)
class SchemaResult:
    revisions: dict[str, str | None]  # service -> revision now applied
    roles: tuple[str, ...]  # roles created or brought up to date

    def as_dict(self) -> dict[str, str]:
        """Flat strings, as a CloudFormation custom resource's `Data` must be."""
        data = {f"{service}Revision": revision or "" for service, revision in self.revisions.items()}
        return data | {"Roles": ",".join(self.roles)}


def migrations_dir(schema: SqlSchema) -> Path:
    package = importlib.import_module(schema.package)
    assert package.__file__ is not None
    return Path(package.__file__).parent / "migrations"


def schema_fingerprint(schemas: tuple[SqlSchema, ...] = ESTATE.sql_schemas) -> str:
    """A digest of every migration script and role declaration: the deploy reruns the step when it changes."""
    digest = hashlib.sha256()
    for schema in schemas:
        digest.update(repr(schema).encode())
        for script in sorted(migrations_dir(schema).rglob("*.py")):
            digest.update(script.name.encode())
            digest.update(script.read_bytes())
    return digest.hexdigest()[:32]


def upgrade(connection: Connection, schema: SqlSchema) -> str | None:
    """Bring one service's tables to head on `connection` (inside the caller's transaction)."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir(schema)))
    config.attributes["version_table"] = schema.version_table
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
    return MigrationContext.configure(connection, opts={"version_table": schema.version_table}).get_current_revision()


def migration_engine(engine: Engine) -> SqlAlchemyEngine:
    """A SQLAlchemy engine (Alembic's) on the service engine's database, through its connections: the
    same credentials (re-read on a refusal) and, on SQLite, the same pragmas and BEGIN IMMEDIATE."""
    # The URL only chooses the dialect here: every connection comes from `engine.open_connection`.
    dialect = "sqlite://" if engine.system == "sqlite" else "postgresql+psycopg://"
    migrations = create_engine(dialect, creator=engine.open_connection, poolclass=NullPool)
    if engine.system == "sqlite":

        @event.listens_for(migrations, "begin")
        def _sqlite_begin(connection: Connection) -> None:
            # The connections begin no transaction themselves (`cloudshop.sql`): take the write lock.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return migrations


def apply_schema(
    engine: Engine,
    *,
    role_passwords: Mapping[str, str] | None = None,
    schemas: tuple[SqlSchema, ...] = ESTATE.sql_schemas,
) -> SchemaResult:
    """Migrate every service in `schemas` and, given `role_passwords` (role -> password), set up their roles."""
    postgres = engine.system == "postgresql"
    if role_passwords is not None and not postgres:
        raise ValueError("database roles exist only on PostgreSQL")
    migrations = migration_engine(engine)
    try:
        return _apply(migrations, postgres=postgres, role_passwords=role_passwords, schemas=schemas)
    finally:
        migrations.dispose()


def _apply(
    migrations: SqlAlchemyEngine,
    *,
    postgres: bool,
    role_passwords: Mapping[str, str] | None,
    schemas: tuple[SqlSchema, ...],
) -> SchemaResult:
    revisions: dict[str, str | None] = {}
    with migrations.begin() as connection:
        if postgres:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        for schema in schemas:
            try:
                revisions[schema.service] = upgrade(connection, schema)
            except Exception as exc:
                raise MigrationFailed(f"{schema.service} migrations failed, nothing was applied: {exc}") from exc
        roles: list[str] = []
        if role_passwords is not None:
            for schema in schemas:
                if schema.role not in role_passwords:
                    raise ValueError(f"no password given for the database role {schema.role}")
                ensure_role(connection, schema, role_passwords[schema.role])
                roles.append(schema.role)
    return SchemaResult(revisions=revisions, roles=tuple(roles))


def ensure_role(connection: Connection, schema: SqlSchema, password: str) -> None:
    """Create or update `schema.role`: it may log in, and touch only the tables and privileges declared.

    Privileges are revoked before they are granted, so a privilege removed from the declaration is
    removed from the database on the next deploy. The role owns nothing and cannot create tables
    (PostgreSQL 15+ no longer grants CREATE on `public` to everyone).
    """
    role = _identifier(schema.role)
    database = _identifier(str(connection.execute(text("SELECT current_database()")).scalar_one()))
    exists = connection.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": schema.role}).first()
    verb = "ALTER" if exists else "CREATE"
    connection.exec_driver_sql(
        f"{verb} ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {_literal(connection, password)}"
    )
    connection.exec_driver_sql(f"GRANT CONNECT ON DATABASE {database} TO {role}")
    connection.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {role}")
    connection.exec_driver_sql(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
    connection.exec_driver_sql(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}")
    for table, privileges in schema.grants:
        connection.exec_driver_sql(f"GRANT {', '.join(privileges)} ON TABLE {_identifier(table)} TO {role}")


def _identifier(name: str) -> str:
    # Names come from the estate and current_database(); refuse anything that would need quoting.
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


def _literal(connection: Connection, value: str) -> str:
    """A string literal for DDL (which takes no bind parameters), quoted by the driver itself."""
    from psycopg import sql

    raw = connection.connection.driver_connection
    return sql.Literal(value).as_string(raw)
