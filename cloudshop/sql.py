"""SQLAlchemy 2 engines for SQLite (embedded) and PostgreSQL, and the body of every Alembic env.py.

The same SQL runs on both. On SQLite every transaction starts with BEGIN IMMEDIATE: the file has one
writer at a time, and taking the write lock up front turns races into waits instead of
`database is locked` failures half-way through a reservation.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import DeclarativeBase

from cloudshop.observability import count_backend_call

if TYPE_CHECKING:
    from cloudshop.settings import Settings


class Base(DeclarativeBase):
    pass


class SecretCredentials:
    """User name and password from a Secrets Manager secret (the RDS JSON shape), kept in memory and
    re-read when the database refuses them.

    Why re-read rather than IAM authentication through RDS Proxy: the same code then works on every
    realisation of the estate (a local PostgreSQL, a rehearsal of the deploy, RDS directly or through
    the proxy), and a token per connection adds a signing step to every cold connection.

    The secrets rotate every 30 days under warm Lambdas; connections already open stay valid, so only
    a new connection can meet a changed password, and that is when this re-reads. Re-reads are spaced
    by `min_refresh_seconds`, so a database that is down is not also a storm of Secrets Manager calls.
    """

    def __init__(
        self,
        fetch: Callable[[], str],
        *,
        name: str,
        min_refresh_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self.name = name
        self._min_refresh = min_refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._last_refresh = -math.inf
        # Read at once: a process whose secret is missing must fail at start-up, naming it.
        self._value = self._read()

    def _read(self) -> tuple[str, str]:
        try:
            credentials = json.loads(self._fetch())
            return str(credentials["username"]), str(credentials["password"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{self.name} does not hold JSON with `username` and `password`") from exc

    @property
    def current(self) -> tuple[str, str]:
        return self._value

    def refresh(self) -> bool:
        """Re-read the secret; True when it now holds other credentials than before."""
        with self._lock:
            if self._clock() - self._last_refresh < self._min_refresh:
                return False
            self._last_refresh = self._clock()
            previous, self._value = self._value, self._read()
            return self._value != previous


def make_engine(url: str, *, pool_size: int = 10, credentials: SecretCredentials | None = None) -> Engine:
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

        count_statements(engine)
        refuse_nul_text(engine)
        return engine
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=300,
    )
    if credentials is not None:
        _use_credentials(engine, credentials)
    count_statements(engine, pre_ping=True)
    refuse_nul_text(engine)
    return engine


def count_statements(engine: Engine, *, pre_ping: bool = False) -> None:
    """Count each statement the engine sends in `cloudshop_backend_calls_total` (kind `sql`, operation
    its first keyword: SELECT, UPDATE, BEGIN, ...). With `pre_ping`, a pooled connection handed out
    again costs a round trip first (SQLAlchemy's ping, which no statement event sees): `PING`."""

    @event.listens_for(engine, "before_cursor_execute")
    def _statement(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        verb = statement.lstrip()[:16].split(None, 1)
        count_backend_call("sql", verb[0].upper() if verb else "-")

    if not pre_ping:
        return

    @event.listens_for(engine, "connect")
    def _fresh(_dbapi_connection: Any, record: Any) -> None:
        record.info["cloudshop_fresh"] = True

    @event.listens_for(engine, "checkout")
    def _pinged(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        # The pool pings every connection it hands out again, but not a new one.
        if not record.info.pop("cloudshop_fresh", False):
            count_backend_call("sql", "PING")


def refuse_nul_text(engine: Engine) -> None:
    """A text value holding a NUL character is a 422 problem on every engine, before it is sent.

    PostgreSQL cannot store one (its driver fails the statement, a 500), SQLite would store it: so the
    port refuses it the same way on both, for every SQL-backed field of every service (names,
    descriptions, searches), which no input is the worse for (issue 10)."""
    from cloudshop.errors import ValidationFailed

    @event.listens_for(engine, "before_cursor_execute")
    def _refuse(_conn: Any, _cursor: Any, _statement: str, parameters: Any, _context: Any, many: bool) -> None:
        for row in parameters if many else [parameters]:
            values = row.values() if isinstance(row, dict) else row if isinstance(row, list | tuple) else ()
            if any(isinstance(value, str) and "\x00" in value for value in values):
                raise ValidationFailed("Text cannot hold a NUL character.")


def _use_credentials(engine: Engine, credentials: SecretCredentials) -> None:
    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        cparams["user"], cparams["password"] = credentials.current
        try:
            return dialect.connect(*cargs, **cparams)
        except dialect.loaded_dbapi.OperationalError:
            # Most likely a rotation: the secret has moved on. Anything else (the database is down)
            # leaves the secret as it was, and the original error stands.
            if not credentials.refresh():
                raise
        cparams["user"], cparams["password"] = credentials.current
        return dialect.connect(*cargs, **cparams)


def engine_for(settings: Settings, *, fetch: Callable[[str], str] | None = None) -> Engine:
    """The engine of a service: DATABASE_URL, with the credentials of DATABASE_SECRET_ARN when set."""
    from cloudshop.settings import SecretUnavailable, secret_reader

    credentials = None
    if settings.database_secret_arn:
        arn = settings.database_secret_arn
        read = fetch or secret_reader(settings)

        def read_secret() -> str:
            try:
                return read(arn)
            except SecretUnavailable as exc:
                raise SecretUnavailable(f"DATABASE_SECRET_ARN: {exc}") from exc

        credentials = SecretCredentials(read_secret, name=f"DATABASE_SECRET_ARN ({arn})")
    return make_engine(settings.database_url, pool_size=settings.db_pool_size, credentials=credentials)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time cloudshop stores is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def ping(engine: Engine) -> None:
    """A readiness check: raises unless the database answers."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def run_migrations_online(context: Any) -> None:
    """The body of every service's `migrations/env.py`."""
    config = context.config
    connection = config.attributes["connection"]
    context.configure(connection=connection, version_table=config.attributes["version_table"])
    with context.begin_transaction():
        context.run_migrations()
