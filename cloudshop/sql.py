"""The services' SQL engine: a small layer over the DB-API drivers themselves, sqlite3 (embedded) and
psycopg 3 (PostgreSQL), and the body of every Alembic env.py.

Why not SQLAlchemy at run time: importing it was ~140 ms of the user and product functions' cold
starts (the largest single part of a 600 ms import), for statements that are plain SQL anyway. The
migrations (Alembic, `cloudshop.schema`) still use SQLAlchemy; they never run in a serving function.

The same SQL runs on both. Statements are written with named parameters (`:name`), sqlite3's own
style; `_pyformat` rewrites them once per statement for psycopg (`%(name)s`). On SQLite every
transaction starts with BEGIN IMMEDIATE: the file has one writer at a time, and taking the write lock
up front turns races into waits instead of `database is locked` failures half-way through a
reservation. On PostgreSQL, `Engine.single` runs in autocommit (one round trip per statement) and
`Engine.transaction` in a transaction the driver opens.

Every statement passes the engine's hooks (`Statement`, `StatementHook`): the backend-call count
(`cloudshop_backend_calls_total{kind="sql"}`), an OpenTelemetry span, and X-Ray's subsegment in a
Lambda with tracing on (`PROCESS_HOOKS`, installed by `cloudshop.lambda_entry`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cloudshop import tracing
from cloudshop.observability import count_backend_call

if TYPE_CHECKING:
    from cloudshop.settings import Settings

Row = dict[str, Any]
Parameters = Mapping[str, Any]
System = Literal["sqlite", "postgresql"]


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


class IntegrityError(Exception):
    """A statement broke a constraint (primary key, unique, foreign key), whichever the driver: the
    repositories turn it into their domain's errors. The driver's own error is its `__cause__`."""


class PoolExhausted(RuntimeError):
    """Every connection the engine may open is in use, and none came back within the wait."""


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement about to be sent, as the hooks see it."""

    system: System
    sql: str  # as the repository wrote it (named `:parameters`)
    operation: str  # its first keyword, upper case: SELECT, UPDATE, BEGIN, ...
    connection: Any  # the driver's connection it runs on
    database: str  # where it goes, without credentials (X-Ray's subsegment name)


# A hook sees each statement before it is sent; what it returns, if anything, is called once the
# statement is done, with the exception that failed it (None when it succeeded).
StatementDone = Callable[[BaseException | None], None]
StatementHook = Callable[[Statement], StatementDone | None]

# Hooks of every engine of this process, run before an engine's own: X-Ray's, installed once by the
# Lambda entry point when tracing is on (engines are built before the handler is).
PROCESS_HOOKS: list[StatementHook] = []


def count_statement(statement: Statement) -> None:
    """Count the statement in `cloudshop_backend_calls_total` (kind `sql`, operation its first keyword);
    the idle pings count as `PING` (`_Pool`)."""
    count_backend_call("sql", statement.operation)


def trace_statement(statement: Statement) -> StatementDone | None:
    """A CLIENT span per statement (inside a trace only)."""
    return tracing.sql_statement_span(statement.system, statement.operation)


# A pooled connection idle longer than this is pinged before it is handed out again. Pinging every
# time (SQLAlchemy's `pool_pre_ping`, before) was 5 of the 12 SQL round trips of a checkout (the
# bench's `cloudshop_backend_calls_total{kind="sql",operation="PING"}`) and 12% of the product
# service's CPU (py-spy), for connections used milliseconds before. What it guards against (a
# connection the server or a NAT dropped while it sat in the pool, a database restart) happens to
# connections left idle.
PING_AFTER_IDLE_SECONDS = 10.0
# Connections opened beyond `pool_size` for a moment (a readiness check's thread when every worker
# holds one) and closed when returned: kept few, since each is a PostgreSQL backend started and ended.
POOL_OVERFLOW = 10
# A PostgreSQL connection older than this is closed instead of reused: RDS Proxy and the server see
# sessions turn over, and no connection keeps server-side memory for ever.
RECYCLE_SECONDS = 300.0
# How long a thread waits for a connection when every one the pool may open is in use.
POOL_TIMEOUT_SECONDS = 30.0
# SQLite: the pool SQLAlchemy gave a file database (5 kept, 10 more for a moment).
SQLITE_POOL_SIZE = 5


class _Pooled:
    """A driver connection with what the pool knows of it."""

    __slots__ = ("idle_since", "opened_at", "raw")

    def __init__(self, raw: Any, opened_at: float) -> None:
        self.raw = raw
        self.opened_at = opened_at
        self.idle_since: float | None = None


class _Pool:
    """At most `size + overflow` connections open at once, `size` of them kept when returned; thread-safe.

    A Lambda sandbox (one request at a time) opens one and keeps it; the local servers' worker
    threads share up to `size`. Returned connections are handed out again oldest-returned first."""

    def __init__(
        self,
        open_connection: Callable[[], Any],
        *,
        size: int,
        overflow: int,
        recycle_seconds: float,
        ping: Callable[[Any], None] | None,
        ping_after_idle_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._open_connection = open_connection
        self._size = size
        self._recycle = recycle_seconds
        self._ping = ping
        self._ping_after_idle = ping_after_idle_seconds
        self._clock = clock
        self._idle: deque[_Pooled] = deque()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size + overflow)
        # Connections opened before this are not reused: the database went away under one of them.
        self._invalidated_at = -math.inf

    def checkout(self) -> _Pooled:
        if not self._slots.acquire(timeout=POOL_TIMEOUT_SECONDS):
            raise PoolExhausted(f"no database connection came free within {POOL_TIMEOUT_SECONDS:.0f}s")
        try:
            while True:
                with self._lock:
                    pooled = self._idle.popleft() if self._idle else None
                if pooled is None:
                    return _Pooled(self._open_connection(), self._clock())
                if self._still_good(pooled):
                    return pooled
                _close_quietly(pooled.raw)
        except BaseException:
            self._slots.release()
            raise

    def _still_good(self, pooled: _Pooled) -> bool:
        now = self._clock()
        if pooled.opened_at <= self._invalidated_at or now - pooled.opened_at > self._recycle:
            return False
        idle_since, pooled.idle_since = pooled.idle_since, None
        if self._ping is None or idle_since is None or now - idle_since <= self._ping_after_idle:
            return True  # a connection used a moment ago
        try:
            self._ping(pooled.raw)
        except Exception:
            return False  # gone while idle: the caller gets a new one, never this error
        return True

    def checkin(self, pooled: _Pooled, *, reusable: bool) -> None:
        try:
            if reusable:
                with self._lock:
                    if len(self._idle) < self._size:
                        pooled.idle_since = self._clock()
                        self._idle.append(pooled)
                        return
            _close_quietly(pooled.raw)
        finally:
            self._slots.release()

    def invalidate(self) -> None:
        """The database dropped a connection (a restart, a failover): the others are likely gone too."""
        self._invalidated_at = self._clock()

    def close_idle(self) -> None:
        with self._lock:
            idle, self._idle = list(self._idle), deque()
        for pooled in idle:
            _close_quietly(pooled.raw)


def _close_quietly(raw: Any) -> None:
    # A connection already dead has nothing left to close.
    with contextlib.suppress(Exception):
        raw.close()


@dataclass(frozen=True, slots=True)
class Result:
    rows: list[Row]
    rowcount: int  # rows an INSERT, UPDATE or DELETE touched

    def first(self) -> Row | None:
        return self.rows[0] if self.rows else None

    def scalar(self) -> Any:
        """The first column of the first row; None when there is no row."""
        return next(iter(self.rows[0].values())) if self.rows else None

    def scalars(self) -> list[Any]:
        return [next(iter(row.values())) for row in self.rows]


class Connection:
    """A pooled connection lent for one `Engine.transaction` or `Engine.single` block."""

    def __init__(self, engine: Engine, raw: Any) -> None:
        self._engine = engine
        self.raw = raw  # the driver's connection

    def execute(self, sql: str, parameters: Parameters | None = None) -> Result:
        return self._run(sql, [parameters or {}], many=False)

    def execute_many(self, sql: str, rows: Sequence[Parameters]) -> Result:
        """One statement for many rows of parameters (an INSERT of several rows)."""
        return self._run(sql, rows, many=True)

    def _run(self, sql: str, rows: Sequence[Parameters], *, many: bool) -> Result:
        engine = self._engine
        refuse_nul_text(rows)
        sent = [engine.adapt(row) for row in rows]
        finishers = engine.notify(Statement(engine.system, sql, _operation(sql), self.raw, engine.database))
        error: BaseException | None = None
        try:
            cursor = self.raw.cursor()
            try:
                if many:
                    cursor.executemany(engine.paramstyle(sql), sent)
                else:
                    cursor.execute(engine.paramstyle(sql), sent[0])
                rows_out: list[Row] = []
                if cursor.description is not None:
                    names = [column[0] for column in cursor.description]
                    rows_out = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
                return Result(rows_out, cursor.rowcount)
            finally:
                cursor.close()
        except engine.driver.IntegrityError as exc:
            error = exc
            raise IntegrityError(str(exc)) from exc
        except BaseException as exc:
            error = exc
            raise
        finally:
            for done in reversed(finishers):
                done(error)


def _operation(sql: str) -> str:
    verb = sql.lstrip()[:16].split(None, 1)
    return verb[0].upper() if verb else "-"


def refuse_nul_text(rows: Sequence[Parameters]) -> None:
    """A text value holding a NUL character is a 422 problem on every engine, before it is sent.

    PostgreSQL cannot store one (its driver fails the statement, a 500), SQLite would store it: so the
    port refuses it the same way on both, for every SQL-backed field of every service (names,
    descriptions, searches), which no input is the worse for (issue 10)."""
    for row in rows:
        if any(isinstance(value, str) and "\x00" in value for value in row.values()):
            from cloudshop.errors import ValidationFailed

            raise ValidationFailed("Text cannot hold a NUL character.")


# A named parameter (`:name`), skipping PostgreSQL casts (`::type`) and quoted literals; a `%` must be
# doubled for psycopg, whose own placeholders start with one.
_TOKENS = re.compile(r"'(?:[^']|'')*'|::|(?<![\w:]):([A-Za-z_]\w*)|%")


@functools.lru_cache(maxsize=1024)
def _pyformat(sql: str) -> str:
    """`:name` -> `%(name)s`: the one place statements change style for psycopg (cached per text; the
    texts are the repositories' constants and the few shapes their builders make)."""

    def rewrite(match: re.Match[str]) -> str:
        if match.group(1):
            return f"%({match.group(1)})s"
        return "%%" if match.group(0) == "%" else match.group(0)

    return _TOKENS.sub(rewrite, sql)


def set_clause(values: Mapping[str, Any], *, allowed: frozenset[str], what: str) -> str:
    """`column = :column, ...` for an UPDATE of `values`, every column one of `allowed` (the only
    names ever written into the SQL text); ValueError naming `what` for any other."""
    unknown = set(values) - allowed
    if unknown:
        raise ValueError(f"not an updatable {what} field: {', '.join(sorted(unknown))}")
    return ", ".join(f"{column} = :{column}" for column in values)


def in_list(name: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """Placeholders for an `IN (...)` of `values` (`:name_0, :name_1, ...`) and their parameters:
    generated, so no value is ever written into the SQL text. `values` must not be empty."""
    if not values:
        raise ValueError(f"an IN list needs values ({name})")
    keys = [f"{name}_{index}" for index in range(len(values))]
    return ", ".join(f":{key}" for key in keys), dict(zip(keys, values, strict=True))


def _sqlite_value(value: Any) -> Any:
    # SQLite has no time type: times are stored as text in the format SQLAlchemy wrote before (UTC,
    # no offset), so stored rows, comparisons (`expires_at <= :now`) and sort order stay as they were.
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def as_utc(value: datetime | str) -> datetime:
    """A stored time, timezone-aware in UTC: PostgreSQL hands back aware datetimes, SQLite the text
    `_sqlite_value` wrote (UTC without an offset)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


class Engine:
    """A service's database: a bounded, thread-safe pool of driver connections, and the two ways to use one.

    - `transaction()`: several statements, all or nothing (committed when the block ends, rolled back
      when it raises).
    - `single()`: work that is one statement (every read, a commit, the admin writes). A statement is
      atomic on its own, and in a transaction of its own psycopg sends a BEGIN before it and a COMMIT
      or ROLLBACK after it: three round trips for one. On PostgreSQL this runs in autocommit (the
      connection's mode is set for the block and reset before it returns to the pool). SQLite keeps
      its transactions: each takes the file's write lock up front.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 40,
        credentials: SecretCredentials | None = None,
        ping_after_idle_seconds: float = PING_AFTER_IDLE_SECONDS,
    ) -> None:
        self.url = url
        self.credentials = credentials
        self.hooks: list[StatementHook] = [count_statement, trace_statement]
        self.system: System
        if url.startswith("sqlite"):
            import sqlite3

            self.system = "sqlite"
            self.driver: Any = sqlite3
            path = url.split("///", 1)[1] if "///" in url else ""
            self._sqlite_path = path or ":memory:"
            if self._sqlite_path != ":memory:":
                Path(self._sqlite_path).parent.mkdir(parents=True, exist_ok=True)
            self.database = f"sqlite:///{self._sqlite_path}"
            # An in-memory database lives in its one connection: every block gets that same one.
            memory = self._sqlite_path == ":memory:"
            self.open_connection: Callable[[], Any] = self._open_sqlite
            self._pool = _Pool(
                self._open_sqlite,
                size=1 if memory else SQLITE_POOL_SIZE,
                overflow=0 if memory else POOL_OVERFLOW,
                recycle_seconds=math.inf,
                ping=None,
                ping_after_idle_seconds=math.inf,
            )
            self.adapt: Callable[[Parameters], Parameters] = _adapt_for_sqlite
            self.paramstyle: Callable[[str], str] = _same
        elif url.startswith(("postgresql", "postgres")):
            import psycopg

            self.system = "postgresql"
            self.driver = psycopg
            # libpq takes the URL itself; the `+psycopg` driver suffix is SQLAlchemy's.
            self._conninfo = "postgresql://" + url.split("://", 1)[1]
            self.database = _without_credentials(self._conninfo)
            self.open_connection = self._open_postgres
            self._pool = _Pool(
                self._open_postgres,
                size=pool_size,
                overflow=POOL_OVERFLOW,
                recycle_seconds=RECYCLE_SECONDS,
                ping=self._ping,
                ping_after_idle_seconds=ping_after_idle_seconds,
            )
            self.adapt = _same_parameters
            self.paramstyle = _pyformat
        else:
            raise ValueError(f"DATABASE_URL must be sqlite:///... or postgresql://..., not {url.split(':', 1)[0]}")

    # --- connections ---------------------------------------------------------------------------
    def _open_sqlite(self) -> Any:
        # isolation_level=None: the driver begins no transaction itself; `transaction` sends BEGIN IMMEDIATE.
        raw = self.driver.connect(self._sqlite_path, check_same_thread=False, timeout=30, isolation_level=None)
        for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA foreign_keys=ON", "PRAGMA busy_timeout=30000"):
            raw.execute(pragma)
        return raw

    def _open_postgres(self) -> Any:
        if self.credentials is None:
            return self.driver.connect(self._conninfo)
        user, password = self.credentials.current
        try:
            return self.driver.connect(self._conninfo, user=user, password=password)
        except self.driver.OperationalError:
            # Most likely a rotation: the secret has moved on. Anything else (the database is down)
            # leaves the secret as it was, and the original error stands.
            if not self.credentials.refresh():
                raise
        user, password = self.credentials.current
        return self.driver.connect(self._conninfo, user=user, password=password)

    def _ping(self, raw: Any) -> None:
        count_backend_call("sql", "PING")
        raw.execute("SELECT 1")
        # The driver began a transaction for the ping: end it, so the connection is handed out idle,
        # as the pool had it (`single` cannot switch a connection that is in a transaction to
        # autocommit).
        raw.rollback()

    @contextmanager
    def _lent(self) -> Iterator[_Pooled]:
        pooled = self._pool.checkout()
        reusable = True
        try:
            yield pooled
        except self.driver.Error:
            reusable = not self._is_broken(pooled.raw)
            raise
        finally:
            self._pool.checkin(pooled, reusable=reusable)

    def _is_broken(self, raw: Any) -> bool:
        if self.system == "sqlite":
            return False
        if raw.broken or raw.closed:
            self._pool.invalidate()
            return True
        return False

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self._lent() as pooled:
            raw = pooled.raw
            connection = Connection(self, raw)
            if self.system == "sqlite":
                connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                if not getattr(raw, "closed", False):
                    raw.rollback()
                raise
            try:
                raw.commit()
            except self.driver.IntegrityError as exc:  # a deferred constraint fails at the commit
                raise IntegrityError(str(exc)) from exc

    @contextmanager
    def single(self) -> Iterator[Connection]:
        if self.system == "sqlite":
            with self.transaction() as connection:
                yield connection
            return
        with self._lent() as pooled:
            raw = pooled.raw
            raw.autocommit = True
            try:
                yield Connection(self, raw)
            finally:
                if not (raw.closed or raw.broken):
                    raw.autocommit = False  # the pool hands out connections in transaction mode

    def notify(self, statement: Statement) -> list[StatementDone]:
        finishers = []
        for hook in (*PROCESS_HOOKS, *self.hooks):
            done = hook(statement)
            if done is not None:
                finishers.append(done)
        return finishers

    def dispose(self) -> None:
        """Close the idle connections (those in use close when they come back, past the pool's size)."""
        self._pool.close_idle()


def _same(sql: str) -> str:
    return sql


def _same_parameters(parameters: Parameters) -> Parameters:
    return parameters


def _adapt_for_sqlite(parameters: Parameters) -> Parameters:
    return {name: _sqlite_value(value) for name, value in parameters.items()}


def _without_credentials(conninfo: str) -> str:
    scheme, rest = conninfo.split("://", 1)
    return f"{scheme}://{rest.rsplit('@', 1)[-1]}"


def make_engine(
    url: str,
    *,
    pool_size: int = 40,
    credentials: SecretCredentials | None = None,
    ping_after_idle_seconds: float = PING_AFTER_IDLE_SECONDS,
) -> Engine:
    return Engine(url, pool_size=pool_size, credentials=credentials, ping_after_idle_seconds=ping_after_idle_seconds)


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


def ping(engine: Engine) -> None:
    """A readiness check: raises unless the database answers."""
    with engine.single() as connection:
        connection.execute("SELECT 1")


def run_migrations_online(context: Any) -> None:
    """The body of every service's `migrations/env.py`."""
    config = context.config
    connection = config.attributes["connection"]
    context.configure(connection=connection, version_table=config.attributes["version_table"])
    with context.begin_transaction():
        context.run_migrations()
