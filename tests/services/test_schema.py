"""The migration step (`cloudshop.schema`) and the rotated credentials (`cloudshop.sql.SecretCredentials`).

On a PostgreSQL cluster that has only a master user and refuses wrong passwords, as RDS does: the step
creates each service's role with exactly the declared privileges, a rerun changes nothing, a failing
migration leaves the previous schema whole, and a rotated password is picked up without a restart.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import inspect, text

from cloudshop.estate import ESTATE, SqlSchema
from cloudshop.schema import MigrationFailed, apply_schema, migration_engine, migrations_dir
from cloudshop.settings import SecretUnavailable, Settings
from cloudshop.sql import SecretCredentials, engine_for, make_engine

pytestmark = pytest.mark.postgres


def snapshot(url: str) -> dict[str, Any]:
    """Every table with its columns, and each service's Alembic revision."""
    engine = migration_engine(make_engine(url))
    try:
        schema = inspect(engine)
        tables = {t: sorted(c["name"] for c in schema.get_columns(t)) for t in sorted(schema.get_table_names())}
        with engine.connect() as connection:
            versions = {
                t: connection.execute(text(f"SELECT version_num FROM {t}")).scalars().all()
                for t in tables
                if t.startswith("alembic_version_")
            }
        return {"tables": tables, "versions": versions}
    finally:
        engine.dispose()


@pytest.fixture
def master_url(master_postgres_server: Any) -> str:
    """A fresh database on the master-only cluster, as the master user."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    master_postgres_server.create_database(name)
    return str(master_postgres_server.url_for(name))


def role_url(master_url: str, role: str, password: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(master_url).set(username=role, password=password).render_as_string(hide_password=False)


@pytest.fixture
def passwords() -> dict[str, str]:
    return {schema.role: f"pw-{uuid.uuid4().hex}" for schema in ESTATE.sql_schemas}


def test_running_the_step_twice_changes_nothing(database_url: str) -> None:
    engine = make_engine(database_url)
    first = apply_schema(engine)
    before = snapshot(database_url)

    second = apply_schema(engine)
    engine.dispose()

    assert second.revisions == first.revisions == {"user": "user_0001", "product": "product_0002"}
    assert snapshot(database_url) == before
    assert {"users", "products", "reservations", "reservation_lines"} <= set(before["tables"])


def test_each_service_role_reaches_only_the_tables_and_privileges_it_declares(
    master_url: str, passwords: dict[str, str]
) -> None:
    engine = make_engine(master_url)
    result = apply_schema(engine, role_passwords=passwords)
    engine.dispose()
    assert set(result.roles) == {"cloudshop_user", "cloudshop_product"}

    with psycopg.connect(role_url(master_url, "cloudshop_user", passwords["cloudshop_user"]), autocommit=True) as user:
        user.execute(
            "INSERT INTO users (id, email, name, role, password_hash, created_at, updated_at) "
            "VALUES ('u1', 'a@example.com', 'A', 'customer', 'h', now(), now())"
        )
        user.execute("UPDATE users SET name = 'B' WHERE id = 'u1'")
        for forbidden in (
            "DELETE FROM users",
            "SELECT * FROM products",
            "SELECT * FROM alembic_version_user",
            "CREATE TABLE mine (id int)",
            "DROP TABLE users",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                user.execute(forbidden)
    product_password = passwords["cloudshop_product"]
    with psycopg.connect(role_url(master_url, "cloudshop_product", product_password), autocommit=True) as product:
        product.execute("SELECT * FROM products FOR UPDATE")
        product.execute("SELECT * FROM reservation_lines")
        for forbidden in ("SELECT * FROM users", "UPDATE reservation_lines SET quantity = 2", "DELETE FROM products"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                product.execute(forbidden)


def test_a_rerun_takes_back_what_was_granted_by_hand_and_resets_the_password(
    master_url: str, passwords: dict[str, str]
) -> None:
    engine = make_engine(master_url)
    apply_schema(engine, role_passwords=passwords)
    with engine.transaction() as connection:
        connection.execute("GRANT SELECT ON products TO cloudshop_user")
        connection.execute("ALTER ROLE cloudshop_user PASSWORD 'drifted-by-hand'")

    apply_schema(engine, role_passwords=passwords)
    engine.dispose()

    with psycopg.connect(role_url(master_url, "cloudshop_user", passwords["cloudshop_user"]), autocommit=True) as user:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            user.execute("SELECT * FROM products")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(role_url(master_url, "cloudshop_user", "drifted-by-hand")).close()


@pytest.fixture
def broken_user_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SqlSchema:
    """The user service's migrations plus a second revision that adds a column, then fails."""
    package = tmp_path / "broken_user_service"
    shutil.copytree(migrations_dir(ESTATE.sql_schema("user")), package / "migrations")
    (package / "__init__.py").write_text("")
    (package / "migrations" / "versions" / "0002_broken.py").write_text(
        '"""a migration that fails half-way"""\n'
        "import sqlalchemy as sa\n"
        "from alembic import op\n\n"
        'revision = "user_0002"\n'
        'down_revision = "user_0001"\n\n\n'
        "def upgrade() -> None:\n"
        '    op.add_column("users", sa.Column("nickname", sa.String(40)))\n'
        '    op.execute("UPDATE no_such_table SET x = 1")\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return SqlSchema(
        service="user", package="broken_user_service", role="cloudshop_user", grants=ESTATE.sql_schema("user").grants
    )


def test_a_failing_migration_names_the_database_error_and_leaves_the_previous_schema_serving(
    master_url: str, passwords: dict[str, str], broken_user_schema: SqlSchema
) -> None:
    engine = make_engine(master_url)
    apply_schema(engine, role_passwords=passwords)
    before = snapshot(master_url)

    with pytest.raises(MigrationFailed) as failure:
        apply_schema(engine, role_passwords=passwords, schemas=(broken_user_schema, ESTATE.sql_schema("product")))
    engine.dispose()

    assert "user migrations failed" in str(failure.value)
    assert "no_such_table" in str(failure.value)
    assert snapshot(master_url) == before, "the half-applied revision was rolled back"
    with psycopg.connect(role_url(master_url, "cloudshop_user", passwords["cloudshop_user"]), autocommit=True) as user:
        assert user.execute("SELECT count(*) FROM users").fetchone() == (0,)


def test_roles_exist_only_on_postgresql(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PostgreSQL"):
        apply_schema(make_engine(f"sqlite:///{tmp_path / 'x.db'}"), role_passwords={"cloudshop_user": "x"})


def secret_store(initial: dict[str, str]) -> tuple[dict[str, str], Callable[[str], str], list[str]]:
    store = dict(initial)
    reads: list[str] = []

    def fetch(arn: str) -> str:
        reads.append(arn)
        return store[arn]

    return store, fetch, reads


def test_a_rotated_password_is_read_again_by_a_running_service_without_a_restart(
    master_url: str, passwords: dict[str, str]
) -> None:
    admin = make_engine(master_url)
    apply_schema(admin, role_passwords=passwords)
    store, fetch, reads = secret_store(
        {"arn:user": json.dumps({"username": "cloudshop_user", "password": passwords["cloudshop_user"]})}
    )
    host_only = role_url(master_url, "x", "x").replace("x:x@", "")
    service = engine_for(Settings(database_url=host_only, database_secret_arn="arn:user"), fetch=fetch)
    with service.single() as connection:
        assert connection.execute("SELECT current_user").scalar() == "cloudshop_user"

    # What the single-user rotation function does: a new password in the database and in the secret.
    rotated = f"rotated-{uuid.uuid4().hex}"
    with admin.transaction() as connection:
        connection.execute(f"ALTER ROLE cloudshop_user PASSWORD '{rotated}'")
    admin.dispose()
    store["arn:user"] = json.dumps({"username": "cloudshop_user", "password": rotated})
    service.dispose()  # the pool's connections end (recycling); the next one logs in anew

    with service.single() as connection:
        assert connection.execute("SELECT count(*) FROM users").scalar() == 0
    service.dispose()
    assert reads == ["arn:user", "arn:user"], "read once at start-up, once more after the refusal"


def test_a_refusal_with_an_unchanged_secret_is_reported_not_retried(master_url: str) -> None:
    _store, fetch, reads = secret_store(
        {"arn:user": json.dumps({"username": "cloudshop_user", "password": "never-the-right-one"})}
    )
    host_only = role_url(master_url, "x", "x").replace("x:x@", "")
    service = engine_for(Settings(database_url=host_only, database_secret_arn="arn:user"), fetch=fetch)

    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        with service.single():
            pass
    assert reads == ["arn:user", "arn:user"]


def test_credentials_are_re_read_at_most_once_per_interval() -> None:
    now = [100.0]
    values = iter([json.dumps({"username": "u", "password": str(i)}) for i in range(5)])
    credentials = SecretCredentials(lambda: next(values), name="DATABASE_SECRET_ARN", clock=lambda: now[0])

    assert credentials.refresh() is True
    now[0] += 1
    assert credentials.refresh() is False, "a database that keeps refusing does not hammer Secrets Manager"
    now[0] += 5
    assert credentials.refresh() is True
    assert credentials.current == ("u", "2")


def test_a_secret_without_credentials_stops_start_up_naming_it() -> None:
    with pytest.raises(ValueError, match=r"DATABASE_SECRET_ARN .* does not hold JSON"):
        SecretCredentials(lambda: "not json", name="DATABASE_SECRET_ARN (arn:db)")


def test_a_missing_database_secret_stops_start_up_naming_the_setting_and_the_secret(aws_endpoint: str) -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:cloudshop-dev-db-user-AbCdEf"
    settings = Settings(
        aws_endpoint_url=aws_endpoint,
        database_url="postgresql://proxy.internal:5432/cloudshop",
        database_secret_arn=arn,
    )

    with pytest.raises(SecretUnavailable, match=rf"^DATABASE_SECRET_ARN: cannot read secret {arn}: ResourceNotFound"):
        engine_for(settings)
