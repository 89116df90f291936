"""Liveness that never waits behind the work: the event loop's lag, and `/healthz` on a port of its own.

Why a port of its own: on the service's port a probe is accepted, read and answered by the event loop,
a few turns of it, each behind every callback that is ready. Under a load that keeps the loop late (the
bench's 200 buyers on two cores), the order service's `/healthz` took up to 2 s there, and the liveness
probe (2 s timeout, 3 failures) would restart a pod that is only busy, in the middle of its checkouts.

`HealthListener` answers on one thread of its own with blocking sockets: it needs the process to run
and the GIL for a moment (CPython hands it over within its 5 ms switch interval), never a turn of the
loop. It still tells a wedged process from a busy one: `LoopLag` times the loop's turns, and a loop
later than `max_loop_lag` (10 s by default: nothing it serves can answer in time) fails the probe, so
Kubernetes restarts what is stuck and leaves alone what is working. Readiness (`/readyz`, whether the
dependencies answer) stays on the service's port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

log = logging.getLogger("cloudshop.liveness")

# A probe's request is a line and a few headers; anything longer is not a probe.
MAX_REQUEST_BYTES = 8192
# A client that connects and says nothing is dropped after this: one thread answers, in turn, and a
# probe sends its request at once. Only the kubelet reaches this port (no NetworkPolicy admits it).
CLIENT_TIMEOUT_SECONDS = 0.5


class LoopLag:
    """How late the event loop runs what is due now: the wait a request arriving now has before its
    first line runs, whatever the cause (a long ready queue, the GIL held by another thread, the
    process not scheduled on a busy machine).

    A task on the loop sleeps `interval` seconds at a time and records how late it woke
    (`event_loop_lag_seconds`). While it is overdue, the lag is at least how overdue it is: a stalled
    loop reads as late at once, not only once it runs again. `seconds()` may be read from any thread.
    """

    def __init__(
        self,
        *,
        interval: float = 0.025,
        histogram: Histogram | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self._histogram = histogram
        self._clock = clock
        self._last = 0.0
        self._due: float | None = None  # when the next sample is due; None until started
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Samples the running loop (again if the loop it sampled has gone)."""
        loop = asyncio.get_running_loop()
        if self._task is not None and not self._task.done() and self._task.get_loop() is loop:
            return
        self._due = due = self._clock() + self.interval
        self._task = loop.create_task(self._sample(due), name="event-loop-lag")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._due = None

    def seconds(self) -> float:
        """The loop's lag now: the last sample's, or how overdue the next one is, whichever is more."""
        due = self._due
        if due is None:
            return self._last
        return max(self._last, self._clock() - due)

    async def _sample(self, due: float) -> None:
        while True:
            await asyncio.sleep(due - self._clock())
            now = self._clock()
            self._last = max(0.0, now - due)
            self._due = due = now + self.interval
            if self._histogram is not None:
                self._histogram.observe(self._last)


def loop_lag_histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram(
        "event_loop_lag_seconds",
        "How late the event loop ran a timer due now (sampled every 25 ms)",
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
        registry=registry,
    )


def liveness_options(
    registry: CollectorRegistry, *, host: str, port: int | None, max_loop_lag: float
) -> dict[str, Any]:
    """`Liveness`'s options, the loop's lag recorded in an app's registry."""
    return {
        "loop_lag": LoopLag(histogram=loop_lag_histogram(registry)),
        "host": host,
        "port": port,
        "max_loop_lag": max_loop_lag,
    }


class HealthListener:
    """`GET /healthz` (and HEAD) on `host:port`, answered by one daemon thread: 200 while the event
    loop's lag is at most `max_loop_lag` seconds, 503 once it is later (the loop is stuck)."""

    def __init__(self, *, host: str, port: int, loop_lag: LoopLag, max_loop_lag: float) -> None:
        self.host = host
        self.port = port
        self.loop_lag = loop_lag
        self.max_loop_lag = max_loop_lag
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Binds and starts answering; the bound port (the one asked for, or the system's choice for 0)."""
        listener = socket.create_server((self.host, self.port), backlog=64, reuse_port=False)
        self._socket = listener
        self._thread = threading.Thread(target=self._serve, args=(listener,), name="health-listener", daemon=True)
        self._thread.start()
        bound = int(listener.getsockname()[1])
        log.info("liveness: /healthz on %s:%d", self.host, bound)
        return bound

    def close(self) -> None:
        listener, self._socket = self._socket, None
        if listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not on Linux.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _serve(self, listener: socket.socket) -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return  # closed
            with connection:
                try:
                    connection.settimeout(CLIENT_TIMEOUT_SECONDS)
                    connection.sendall(self.answer(_read_head(connection)))
                except OSError:
                    continue  # the client went away or said nothing in time: the next one

    def answer(self, head: bytes) -> bytes:
        """The whole HTTP/1.1 response to a request whose head (request line and headers) is `head`."""
        method, _, rest = head.partition(b" ")
        path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
        if path != b"/healthz":
            return _response(404, {"status": "not found", "detail": "Only /healthz is served on this port."})
        if method not in (b"GET", b"HEAD"):
            return _response(405, {"status": "method not allowed"}, extra=b"allow: GET, HEAD\r\n")
        lag = self.loop_lag.seconds()
        if lag > self.max_loop_lag:
            body = {"status": "stalled", "loop_lag_seconds": round(lag, 3)}
            return _response(503, body, head_only=method == b"HEAD")
        return _response(200, {"status": "ok"}, head_only=method == b"HEAD")


def _read_head(connection: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head and len(head) < MAX_REQUEST_BYTES:
        chunk = connection.recv(MAX_REQUEST_BYTES - len(head))
        if not chunk:
            break
        head += chunk
    return head


_REASONS = {200: b"OK", 404: b"Not Found", 405: b"Method Not Allowed", 503: b"Service Unavailable"}


def _response(status: int, body: dict[str, Any], *, head_only: bool = False, extra: bytes = b"") -> bytes:
    payload = json.dumps(body).encode()
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\ncache-control: no-store\r\n"
        b"connection: close\r\n%s\r\n" % (status, _REASONS[status], len(payload), extra)
    )
    return head if head_only else head + payload


class Liveness:
    """Pure ASGI middleware: when the server starts the app (its lifespan), the loop's lag is sampled
    and, given `port`, `HealthListener` answers on it until the server stops. Without a lifespan (a
    Lambda function, `lifespan="off"`) nothing starts: a function is not probed."""

    def __init__(
        self,
        app: Any,
        *,
        loop_lag: LoopLag,
        host: str,
        port: int | None,
        max_loop_lag: float,
    ) -> None:
        self.app = app
        self.loop_lag = loop_lag
        self.listener = (
            HealthListener(host=host, port=port, loop_lag=loop_lag, max_loop_lag=max_loop_lag)
            if port is not None
            else None
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        self.loop_lag.start()
        if self.listener is not None:
            self.listener.start()
        try:
            await self.app(scope, receive, send)
        finally:
            self.loop_lag.stop()
            if self.listener is not None:
                self.listener.close()
