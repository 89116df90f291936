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

from cloudshop import tracing
from cloudshop.observability import count_backend_call

if TYPE_CHECKING:
    from cloudshop.settings import Settings


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


# A pooled connection idle longer than this is pinged before it is handed out again. SQLAlchemy's
# `pool_pre_ping` pings every time: 5 of the 12 SQL round trips of a checkout (the bench's
# `cloudshop_backend_calls_total{kind="sql",operation="PING"}`) and 12% of the product service's CPU
# (py-spy), for connections used milliseconds before. What it guards against (a connection the server
# or a NAT dropped while it sat in the pool, a database restart) happens to connections left idle.
PING_AFTER_IDLE_SECONDS = 10.0
# Connections opened beyond `pool_size` for a moment (a readiness check's thread when every worker
# holds one) and closed when returned: kept few, since each is a PostgreSQL backend started and ended.
POOL_OVERFLOW = 10


def make_engine(
    url: str,
    *,
    pool_size: int = 40,
    credentials: SecretCredentials | None = None,
    ping_after_idle_seconds: float = PING_AFTER_IDLE_SECONDS,
) -> Engine:
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
        tracing.trace_statements(engine)
        return engine
    engine = create_engine(url, pool_size=pool_size, max_overflow=POOL_OVERFLOW, pool_recycle=300)
    if credentials is not None:
        _use_credentials(engine, credentials)
    ping_after_idle(engine, seconds=ping_after_idle_seconds)
    count_statements(engine)
    refuse_nul_text(engine)
    tracing.trace_statements(engine)
    return engine


def count_statements(engine: Engine) -> None:
    """Count each statement the engine sends in `cloudshop_backend_calls_total` (kind `sql`, operation
    its first keyword: SELECT, UPDATE, BEGIN, ...); the idle pings count as `PING` (`ping_after_idle`)."""

    @event.listens_for(engine, "before_cursor_execute")
    def _statement(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        verb = statement.lstrip()[:16].split(None, 1)
        count_backend_call("sql", verb[0].upper() if verb else "-")


def ping_after_idle(engine: Engine, *, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
    """Ping a pooled connection before handing it out again only when it sat idle over `seconds`.

    A dead one is reported to the pool as a disconnect (`DisconnectionError`), and the pool replaces it
    with a new connection before the caller sees it: SQLAlchemy's documented pessimistic pattern,
    limited to the connections that can have gone stale. A connection killed under a busy pool (a
    database restart) fails its next statement once; SQLAlchemy then invalidates the whole pool."""
    from sqlalchemy import exc

    @event.listens_for(engine, "checkin")
    def _idle_since(_dbapi_connection: Any, record: Any) -> None:
        record.info["cloudshop_idle_since"] = clock()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("cloudshop_idle_since", None)
        if idle_since is None or clock() - idle_since <= seconds:
            return  # a new connection, or one used a moment ago
        count_backend_call("sql", "PING")
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
            # The driver began a transaction for the ping: end it, so the connection is handed out
            # idle, as the pool had it (a checkout in autocommit mode cannot switch a connection
            # that is in a transaction; a no-op when the connection is already in autocommit).
            dbapi_connection.rollback()
        except Exception as error:
            raise exc.DisconnectionError(f"pooled connection idle {clock() - idle_since:.0f}s is gone") from error


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
