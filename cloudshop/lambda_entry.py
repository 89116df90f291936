"""The one Lambda entry every Lambda service uses: its FastAPI app behind Mangum, with Powertools
logging and tracing, and (for a function on a queue) SQS batches handed to a batch processor.

With OpenTelemetry on (`cloudshop.tracing`, configured by the app), an SQS batch gets an invocation
span, HTTP invocations the app's server span, and each invocation ends by flushing its spans to the
ADOT collector layer (a frozen sandbox would otherwise hold them until its next invocation).

A handler module builds its app inside `cold_start()`, which keeps the cyclic garbage collector out
of the import (see there); this module imports Powertools and Mangum only when `lambda_handler` is
called, so that they are inside it too."""

from __future__ import annotations

import functools
import gc
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Any

from cloudshop import tracing

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext
    from fastapi import FastAPI

Handler = Callable[[dict[str, Any], "LambdaContext"], dict[str, Any]]

POWERTOOLS_NAMESPACE = "cloudshop"


def runtime_settings(service: str) -> dict[str, str]:
    """The variables a function's libraries read (their own contracts, not Settings fields): CDK sets
    them on every service function, the import benchmark on the functions it imports."""
    return {
        "POWERTOOLS_SERVICE_NAME": service,
        "POWERTOOLS_METRICS_NAMESPACE": POWERTOOLS_NAMESPACE,
        "POWERTOOLS_LOG_LEVEL": "INFO",
        # pydantic looks for plugins of its own on the first model it builds, by reading every
        # installed package's entry points: ~12 ms of each cold start here, for none installed.
        "PYDANTIC_DISABLE_PLUGINS": "__all__",
    }


# The libraries X-Ray's `patch_all` would patch (its NO_DOUBLE_PATCH list), each with the module that
# shows it is in use. `patch_all` imports every one it finds installed to patch it: httpx, requests
# and SQLAlchemy for a function that uses none of them, 100-300 ms of a cold start here. Patching only
# what the app has already imported traces the same calls for none of that cost; a library imported
# later is patched when it is (`patch_loaded_modules`).
# botocore is in use once a client exists (`botocore.client`): Powertools imports the bare package
# for its user agent, and patching it then imported the client machinery (~40 ms) into a function,
# the product service, that makes a client only on its image routes.
# SQL goes through `cloudshop.sql`, which traces each statement itself (`cloudshop_sql`): X-Ray's own
# sqlite3 and psycopg patches would wrap the same connections and trace every statement twice, and
# its SQLAlchemy one has nothing left to trace in a serving function.
TRACEABLE_MODULES = {
    "aiobotocore": "aiobotocore",
    "botocore": "botocore.client",
    "pynamodb": "pynamodb",
    "requests": "requests",
    "mysql": "mysql.connector",
    "pymongo": "pymongo",
    "pymysql": "pymysql",
    "psycopg2": "psycopg2",
    "pg8000": "pg8000",
    "cloudshop_sql": "cloudshop.sql",
    "httpx": "httpx",
}


@contextmanager
def cold_start() -> Iterator[None]:
    """Import and build a function's app with the cyclic garbage collector paused, then freeze it.

    Importing a handler allocates some 200,000 objects that live as long as the process; with the
    collector on, its collections traverse them again and again while they pile up: ~80 ms of the
    user handler's 520 ms import here, to find ~70,000 objects of cyclic garbage. `gc.freeze()` then
    moves everything built so far out of the collector's sight (as Python's documentation suggests
    after a server's start-up), so no later collection, during a request, walks it either. The price:
    that garbage stays allocated (maximum RSS +1 MB here; collecting it at the end instead took 85 ms).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def loaded_traceable_modules() -> list[str]:
    """X-Ray patch names of the traceable libraries this process has imported so far."""
    return sorted(name for name, module in TRACEABLE_MODULES.items() if module in sys.modules)


def patch_loaded_modules() -> None:
    """X-Ray-patch the traceable libraries this process has imported (`loaded_traceable_modules`),
    and each of the others if and when something imports it."""
    import wrapt
    from aws_xray_sdk.core import patch

    def patch_one(name: str) -> None:
        # raise_errors=False as in patch_all: a library X-Ray cannot patch (psycopg without
        # psycopg_pool) goes untraced rather than failing the cold start.
        if name == "cloudshop_sql":
            _trace_sql_statements()
        else:
            patch([name], raise_errors=False)

    def patch_on_import(name: str, module: ModuleType) -> None:
        # A submodule's hook runs before the import binds it on its package (`botocore.client`),
        # and X-Ray's patch reaches it through the package: bind it now, as the import is about to.
        package, _, attribute = module.__name__.rpartition(".")
        if package:
            setattr(sys.modules[package], attribute, module)
        patch_one(name)

    loaded = loaded_traceable_modules()
    for name in loaded:
        patch_one(name)
    for name, module in TRACEABLE_MODULES.items():
        if name not in loaded:
            wrapt.register_post_import_hook(functools.partial(patch_on_import, name), module)


def _trace_sql_statements() -> None:
    """An X-Ray subsegment per SQL statement of every `cloudshop.sql` engine of the process, with the
    SQL metadata X-Ray's own database patches record (a process-wide hook: engines are built before
    the handler)."""
    from aws_xray_sdk.core import patcher, xray_recorder

    from cloudshop import sql

    if "cloudshop_sql" in patcher._PATCHED_MODULES:
        return

    def xray_statement(statement: sql.Statement) -> sql.StatementDone | None:
        subsegment = xray_recorder.begin_subsegment(statement.database, namespace="remote")
        if subsegment is None:  # no segment to attach it to (outside an invocation)
            return None
        subsegment.set_sql(
            {
                "url": statement.database,
                "database_type": XRAY_DATABASE_TYPES[statement.system],
                "sanitized_query": statement.sql,
            }
        )

        def end(error: BaseException | None) -> None:
            if error is not None:
                subsegment.add_exception(error, traceback.extract_tb(error.__traceback__))
            xray_recorder.end_subsegment()

        return end

    sql.PROCESS_HOOKS.append(xray_statement)
    patcher._PATCHED_MODULES.add("cloudshop_sql")


XRAY_DATABASE_TYPES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def is_sqs_batch(event: Any) -> bool:
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list) or not records:
        return False
    return all(isinstance(r, dict) and r.get("eventSource") == "aws:sqs" for r in records)


def lambda_handler(
    app: FastAPI | None = None,
    *,
    service: str,
    sqs_batch: Handler | None = None,
    build_app: Callable[[], FastAPI] | None = None,
) -> Handler:
    """HTTP API events go to `app`; SQS batches to `sqs_batch` when the function has a queue.

    Call it after the app is built: the libraries the app has imported by then are the ones traced
    (and the others once imported). Given `build_app` instead of `app`, the first HTTP event builds
    the app (inside `cold_start()` too): a function whose queue is its busiest trigger then starts
    an SQS sandbox without FastAPI, and an HTTP sandbox pays the same build on its first request.
    """
    if (app is None) == (build_app is None):
        raise TypeError("lambda_handler takes an app or a build_app, one of them")
    from aws_lambda_powertools import Logger, Tracer

    logger = Logger(service=service)
    tracer = Tracer(service=service, auto_patch=False)
    if not tracer.disabled:
        patch_loaded_modules()

    @functools.cache
    def asgi() -> Handler:
        from mangum import Mangum

        if app is not None:
            return Mangum(app, lifespan="off")  # type: ignore[return-value]
        assert build_app is not None
        with cold_start():
            return Mangum(build_app(), lifespan="off")  # type: ignore[return-value]

    if app is not None:
        asgi()  # built now, with the rest of the cold start

    @logger.inject_lambda_context(clear_state=True)
    @tracer.capture_lambda_handler
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        if not tracing.enabled():
            return _dispatch(event, context)
        try:
            return _dispatch(event, context)
        finally:
            # The sandbox may be frozen once the handler returns: what the invocation traced goes now.
            tracing.flush()

    def _dispatch(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        if sqs_batch is not None and is_sqs_batch(event):
            # The invocation's span; each message's own span continues the trace its event carries.
            attributes = {"faas.trigger": "pubsub", "messaging.batch.message_count": len(event["Records"])}
            with tracing.span(f"{service} sqs batch", kind=tracing.SpanKind.CONSUMER, root=True, attributes=attributes):
                return sqs_batch(event, context)
        return asgi()(event, context)

    return handler
