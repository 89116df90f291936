"""SQLAlchemy 2 engines and Alembic migrations for SQLite (embedded) and PostgreSQL.

The same SQL runs on both. On SQLite every transaction starts with BEGIN IMMEDIATE: the file has one
writer at a time, and taking the write lock up front turns races into waits instead of
`database is locked` failures half-way through a reservation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # let the "begin" hook below own transactions
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=300,
    )


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time cloudshop stores is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def ping(engine: Engine) -> None:
    """A readiness check: raises unless the database answers."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def migrate(engine: Engine, *, script_location: Path, version_table: str) -> None:
    """Bring one service's schema to head. Each service has its own scripts and version table."""
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.attributes["version_table"] = version_table
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def run_migrations_online(context: Any) -> None:
    """The body of every service's `migrations/env.py`."""
    config = context.config
    connection = config.attributes["connection"]
    context.configure(connection=connection, version_table=config.attributes["version_table"])
    with context.begin_transaction():
        context.run_migrations()
