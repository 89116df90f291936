"""Traces: one checkout is one trace, from the gateway through every service, the outbox relay and
the consumers of its events.

W3C trace context (`traceparent`) travels in HTTP headers (`cloudshop.clients`, the gateway) and in
the event envelope (`cloudshop.events`: captured when the event is written, so it survives the outbox
and the relay's later publish in another task). Spans: a server span per request
(`ServerSpanMiddleware`), a client span per service call, DynamoDB, boto3 and SQL call, a producer
span per event the relays publish, a consumer span per event handled.

Off unless `TRACING_ENABLED` (the local runner turns it on; CDK and the overlays in the cloud): then
`enabled()` is False and every hook here costs one global read. The SDK is imported only when tracing
is configured (the OpenTelemetry API alone is already loaded by FastAPI). A process has one tracer,
named after the service that configured it first.

Export: `TRACE_FILE` appends JSON lines (one span a line) that `cloudshop trace` reads; an
`OTEL_EXPORTER_OTLP_ENDPOINT` sends OTLP/HTTP to a collector (ADOT on EKS, the ADOT collector layer
on Lambda). Client spans are made only inside a trace: a background poll that no request started
makes no root spans of its own.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags

if TYPE_CHECKING:
    from opentelemetry.context import Context

    from cloudshop.settings import Settings

TRACEPARENT = "traceparent"
_TRACEPARENT_BYTES = TRACEPARENT.encode()
_TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
INVALID_SPAN = trace.INVALID_SPAN

# Spans buffered for export; beyond, new ones are dropped (a burst of ~40 spans a checkout at 200
# checkouts/s outruns the SDK's default 2048 between two exports).
QUEUE_SIZE = 16384

_tracer: trace.Tracer | None = None  # None: tracing is off
_provider: Any = None
_service = ""
_lock = threading.Lock()


def enabled() -> bool:
    return _tracer is not None


def service_name() -> str:
    return _service


def configure_tracing(service: str, settings: Settings) -> bool:
    """Turn tracing on for this process as `service` when the settings ask for it; the first call wins."""
    global _tracer, _provider, _service
    if not settings.tracing_enabled:
        return _tracer is not None
    with _lock:
        if _provider is not None:
            return True
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        from cloudshop.tracing_export import JsonLinesSpanExporter, LazyOtlpSpanExporter

        # An explicit Resource: `Resource.create()` (the default) scans entry points for detectors.
        resource = Resource({"service.name": service, "deployment.environment.name": settings.environment})
        provider = TracerProvider(
            resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio))
        )
        if settings.trace_file:
            # Half a second: `cloudshop trace` right after a checkout finds its spans.
            provider.add_span_processor(
                BatchSpanProcessor(
                    JsonLinesSpanExporter(settings.trace_file), schedule_delay_millis=500, max_queue_size=QUEUE_SIZE
                )
            )
        if settings.otel_exporter_otlp_endpoint:
            exporter = LazyOtlpSpanExporter(settings.otel_exporter_otlp_endpoint)
            provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=QUEUE_SIZE))
        _provider = provider
        _service = service
        _tracer = provider.get_tracer("cloudshop")
        return True


def flush(timeout_millis: int = 2000) -> None:
    """Export what is buffered now (a Lambda invocation ends with this: the sandbox may freeze after)."""
    if _provider is not None:
        _provider.force_flush(timeout_millis)


def reset_for_tests() -> None:
    """Forget the configured tracer (tests configure several in one process)."""
    global _tracer, _provider, _service
    with _lock:
        if _provider is not None:
            _provider.shutdown()
        _tracer, _provider, _service = None, None, ""


# --- context ------------------------------------------------------------------------------------


def format_traceparent(context: SpanContext) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def current_traceparent() -> str | None:
    """The current span's context as a `traceparent` value; None outside a trace (or tracing off)."""
    if _tracer is None:
        return None
    context = trace.get_current_span().get_span_context()
    return format_traceparent(context) if context.is_valid else None


def parse_traceparent(value: str | bytes | None) -> SpanContext | None:
    if not value:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    match = _TRACEPARENT_RE.match(value.strip().lower())
    if match is None:
        return None
    trace_id, span_id = int(match.group(1), 16), int(match.group(2), 16)
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(match.group(3), 16)))


def context_from_traceparent(value: str | bytes | None) -> Context | None:
    """An OpenTelemetry context whose parent is the remote span `value` names (None if it names none)."""
    remote = parse_traceparent(value)
    return trace.set_span_in_context(NonRecordingSpan(remote)) if remote is not None else None


def current_trace_id() -> str | None:
    """The current trace id (32 hex digits) for log lines; None outside a trace."""
    if _tracer is None:
        return None
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


def tag_current(key: str, value: str | int | float | bool) -> None:
    """Set an attribute on the current span (e.g. `order.id` where an order event is written)."""
    if _tracer is not None:
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute(key, value)


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Add the current `traceparent` to outgoing headers (a no-op outside a trace)."""
    value = current_traceparent()
    if value is not None:
        headers[TRACEPARENT] = value
    return headers


# --- spans --------------------------------------------------------------------------------------


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    parent: Context | None = None,
    links: Sequence[Link] | None = None,
    root: bool = False,
) -> Iterator[Any]:
    """A span made current for the block; yields it, or None when no span is made.

    Without `parent`, a span is made only inside a trace unless `root` (a new trace) is asked for.
    An exception marks the span an error (its type only: messages may carry personal data).
    """
    tracer = _tracer
    if tracer is None or (parent is None and not root and not trace.get_current_span().get_span_context().is_valid):
        yield None
        return
    made = tracer.start_span(name, context=parent, kind=kind, attributes=attributes, links=links)
    token = otel_context.attach(trace.set_span_in_context(made))
    try:
        yield made
    except BaseException as exc:
        made.set_status(StatusCode.ERROR)
        made.set_attribute("error.type", type(exc).__qualname__)
        raise
    finally:
        otel_context.detach(token)
        made.end()


@contextmanager
def producer_spans(messages: Sequence[tuple[str | None, str, Mapping[str, Any]]]) -> Iterator[None]:
    """A PRODUCER span per message (`(traceparent, name, attributes)`) being published in one batch,
    each the child of the trace context its event carries (a new trace for one that carries none).

    A batch of one (or one whose events were all written by the same span: a checkout's
    `order.created` and `order.paid`) makes its first span current, so the sinks' own spans (Kafka,
    SQS) nest under it; a batch from several traces has no one parent for them, and they are not made.
    """
    tracer = _tracer
    if tracer is None or not messages:
        yield
        return
    spans = [
        tracer.start_span(name, context=context_from_traceparent(parent), kind=SpanKind.PRODUCER, attributes=attributes)
        for parent, name, attributes in messages
    ]
    one_trace = len({parent for parent, _, _ in messages}) == 1
    token = otel_context.attach(trace.set_span_in_context(spans[0])) if one_trace else None
    try:
        yield
    except BaseException as exc:
        for made in spans:
            made.set_status(StatusCode.ERROR)
            made.set_attribute("error.type", type(exc).__qualname__)
        raise
    finally:
        if token is not None:
            otel_context.detach(token)
        for made in spans:
            made.end()


def consumer_span(traceparent: str | None, name: str, attributes: Mapping[str, Any]) -> Any:
    """The CONSUMER span of handling one event: the child of the context the event carries."""
    return span(
        name, kind=SpanKind.CONSUMER, parent=context_from_traceparent(traceparent), root=True, attributes=attributes
    )


def link_to(traceparent: str | None) -> list[Link]:
    remote = parse_traceparent(traceparent)
    return [Link(remote)] if remote is not None else []


class ServerSpanMiddleware:
    """Pure ASGI middleware: a SERVER span per HTTP request, child of the caller's `traceparent`.

    Named `METHOD route-template` once routing has matched (`scope["route"]`, or the label a proxy
    puts in `scope["cloudshop.route"]`). Operations endpoints (`/healthz`, `/readyz`, `/metrics`)
    are not traced: probes every few seconds would bury the traces that matter. `respond` (the edge:
    the gateway) answers with a `traceresponse` header naming the request's trace and span.
    """

    def __init__(
        self,
        app: Any,
        *,
        exempt: frozenset[str] = frozenset({"/healthz", "/readyz", "/metrics"}),
        respond: bool = False,
    ) -> None:
        self.app = app
        self.exempt = exempt
        self.respond = respond

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        tracer = _tracer
        if tracer is None or scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        parent = None
        for key, value in scope.get("headers") or ():
            if key == _TRACEPARENT_BYTES:
                parent = context_from_traceparent(value)
                break
        method = scope.get("method", "-")
        made = tracer.start_span(
            method, context=parent, kind=SpanKind.SERVER, attributes={"http.request.method": method}
        )
        token = otel_context.attach(trace.set_span_in_context(made))
        status = 500
        response_header = format_traceparent(made.get_span_context()).encode() if self.respond else b""

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if self.respond:
                    # W3C Trace Context level 2: the caller learns which trace its request made.
                    message["headers"] = [*message.get("headers", ()), (b"traceresponse", response_header)]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException as exc:
            made.set_attribute("error.type", type(exc).__qualname__)
            raise
        finally:
            route = scope.get("cloudshop.route") or getattr(scope.get("route"), "path", None) or "unmatched"
            made.update_name(f"{method} {route}")
            made.set_attributes({"http.route": route, "http.response.status_code": status})
            if status >= 500:
                made.set_status(StatusCode.ERROR)
            otel_context.detach(token)
            made.end()


# --- library hooks ------------------------------------------------------------------------------


def trace_boto_calls(boto_client: Any) -> None:
    """A CLIENT span per API call of a boto3 client (inside a trace only), around botocore's retries."""
    service = boto_client.meta.service_model.service_name
    system = {"dynamodb": "aws.dynamodb"}.get(service)

    def before(model: Any, context: dict[str, Any], **_: Any) -> None:
        if _tracer is None or not trace.get_current_span().get_span_context().is_valid:
            return
        attributes = {"rpc.system": "aws-api", "rpc.service": service, "rpc.method": model.name}
        if system:
            attributes["db.system.name"] = system
        made = _tracer.start_span(f"{service}.{model.name}", kind=SpanKind.CLIENT, attributes=attributes)
        context["cloudshop.span"] = made

    def after(context: dict[str, Any], **_: Any) -> None:
        made = context.pop("cloudshop.span", None)
        if made is not None:
            made.end()

    def failed(context: dict[str, Any], exception: BaseException | None = None, **_: Any) -> None:
        made = context.pop("cloudshop.span", None)
        if made is not None:
            made.set_status(StatusCode.ERROR)
            if exception is not None:
                made.set_attribute("error.type", type(exception).__qualname__)
            made.end()

    events = boto_client.meta.events
    events.register("before-call", before)
    events.register("after-call", after)
    events.register("after-call-error", failed)


def sql_statement_span(system: str, operation: str) -> Callable[[BaseException | None], None] | None:
    """A CLIENT span for one SQL statement (inside a trace only; `cloudshop.sql` runs it per statement):
    the callable returned ends it, given the exception that failed the statement, if any."""
    tracer = _tracer
    if tracer is None or not trace.get_current_span().get_span_context().is_valid:
        return None
    made = tracer.start_span(
        f"{operation} {system}",
        kind=SpanKind.CLIENT,
        attributes={"db.system.name": system, "db.operation.name": operation},
    )

    def end(error: BaseException | None) -> None:
        if error is not None:
            made.set_status(StatusCode.ERROR)
            made.set_attribute("error.type", type(error).__qualname__)
        made.end()

    return end
