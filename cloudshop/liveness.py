"""Liveness that never waits behind the work: the event loop's lag, and `/healthz` on a port of its own.

Why a port of its own: on the service's port a probe is accepted, read and answered by the event loop,
a few turns of it, each behind every callback that is ready. Under a load that keeps the loop late (the
bench's 200 buyers on two cores), the order service's `/healthz` took up to 2 s there, and the liveness
probe (2 s timeout, 3 failures) would restart a pod that is only busy, in the middle of its checkouts.

Why a process of its own (`HealthProcess`, `cloudshop.liveness_process`): a thread of the service
answered there first, but it needs the service's GIL, and on a saturated node the service often waits
for a core while another of its threads holds it; the thread's answers still took up to 0.4 s. The
probe's process sleeps until a probe connects and shares no lock with the service.

It still tells a wedged service from a busy one: `LoopLag` times the loop's turns and publishes them
on a `HealthBoard` (shared memory), and a loop later than `max_loop_lag` (10 s by default: nothing it
serves can answer in time) fails the probe, so Kubernetes restarts what is stuck and leaves alone what
is working. Readiness (`/readyz`, whether the dependencies answer) is served there too: the service
checks its dependencies every 2.5 s on its loop and publishes each round's answer on the board.
"""

from __future__ import annotations

import asyncio
import json
import logging
import select
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

from cloudshop import liveness_process
from cloudshop.errors import problem
from cloudshop.liveness_process import HealthBoard

log = logging.getLogger("cloudshop.liveness")

# The probe's process starts in tens of milliseconds; this is for a machine far slower than that.
START_TIMEOUT_SECONDS = 10.0
# How often the dependencies are checked for `/readyz` on the probes' port: twice per kubelet period
# (5 s in the manifests), so its answer is never more than a period old.
READINESS_INTERVAL_SECONDS = 2.5


class LoopLag:
    """How late the event loop runs what is due now: the wait a request arriving now has before its
    first line runs, whatever the cause (a long ready queue, the GIL held by another thread, the
    process not scheduled on a busy machine).

    A task on the loop sleeps `interval` seconds at a time and records how late it woke
    (`event_loop_lag_seconds`), and publishes each sample (`publish_to`). While a sample is overdue,
    the lag is at least how overdue it is, so a stalled loop reads as late at once, not only once it
    runs again: `HealthBoard.lag()` computes that in the probe's process.
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
        self._board: HealthBoard | None = None

    def publish_to(self, board: HealthBoard | None) -> None:
        """Writes every sample on `board` too (None: no more), for a process that cannot ask.
        The board's reader times with `time.monotonic`: so must this sampler's clock."""
        self._board = board
        self._publish()

    def _publish(self) -> None:
        if self._board is not None:
            self._board.write_lag(last=self._last, due=self._due or 0.0)

    def start(self) -> None:
        """Samples the running loop (again if the loop it sampled has gone)."""
        loop = asyncio.get_running_loop()
        if self._task is not None and not self._task.done() and self._task.get_loop() is loop:
            return
        self._due = due = self._clock() + self.interval
        self._publish()
        self._task = loop.create_task(self._sample(due), name="event-loop-lag")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._due = None
        self._publish()

    async def _sample(self, due: float) -> None:
        while True:
            await asyncio.sleep(due - self._clock())
            now = self._clock()
            self._last = max(0.0, now - due)
            self._due = due = now + self.interval
            self._publish()
            if self._histogram is not None:
                self._histogram.observe(self._last)


def loop_lag_histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram(
        "event_loop_lag_seconds",
        "How late the event loop ran a timer due now (sampled every 25 ms)",
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
        registry=registry,
    )


# What a readiness round answers: the HTTP status and the JSON body of `/readyz`.
ReadinessRound = Callable[[], Awaitable[tuple[int, bytes]]]


def liveness_options(
    registry: CollectorRegistry,
    *,
    host: str,
    port: int | None,
    max_loop_lag: float,
    readiness: ReadinessRound | None = None,
) -> dict[str, Any]:
    """`Liveness`'s options, the loop's lag recorded in an app's registry."""
    return {
        "loop_lag": LoopLag(histogram=loop_lag_histogram(registry)),
        "host": host,
        "port": port,
        "max_loop_lag": max_loop_lag,
        "readiness": readiness,
    }


class HealthProcess:
    """`GET /healthz` (and HEAD) on `host:port`, answered by a process of its own
    (`cloudshop.liveness_process`): 200 while the event loop's lag is at most `max_loop_lag`
    seconds, 503 once it is later (the loop is stuck). `loop_lag` publishes its samples on the
    process's board for as long as it runs. With `readiness`, `GET /readyz` too: the last answer
    given to `publish_readiness` (a 503 until the first)."""

    def __init__(
        self, *, host: str, port: int, loop_lag: LoopLag, max_loop_lag: float, readiness: bool = False
    ) -> None:
        self.host = host
        self.port = port
        self.loop_lag = loop_lag
        self.max_loop_lag = max_loop_lag
        self.readiness = readiness
        self._process: subprocess.Popen[bytes] | None = None
        self._board: HealthBoard | None = None

    def start(self) -> int:
        """Starts the process and waits until it listens; the bound port (the one asked for, or the
        system's choice for 0), also in `port` from then on."""
        board = HealthBoard.create()
        command = [
            sys.executable,
            "-S",  # standard library only: no site-packages to scan at start
            liveness_process.__file__,
            f"--host={self.host}",
            f"--port={self.port}",
            f"--board-fd={board.fd}",
            f"--max-loop-lag={self.max_loop_lag}",
            *(["--readiness"] if self.readiness else []),
        ]
        # The command is this interpreter and this package's own file, no outside input.
        process = subprocess.Popen(  # noqa: S603
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(board.fd,), close_fds=True
        )
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT_SECONDS)
        line = process.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            process.kill()
            process.wait()
            board.close()
            raise RuntimeError(
                f"the liveness process did not listen on {self.host}:{self.port} within "
                f"{START_TIMEOUT_SECONDS:.0f} s (exit code {process.returncode})"
            )
        self._process, self._board = process, board
        self.loop_lag.publish_to(board)
        self.port = int(line)
        log.info("liveness: /healthz on %s:%d (process %d)", self.host, self.port, process.pid)
        return self.port

    def publish_readiness(self, status: int, body: bytes) -> None:
        if self._board is not None:
            self._board.write_readiness(status, body)

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.close()  # its signal to end
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            process.stdout.close()
        self.loop_lag.publish_to(None)
        if self._board is not None:
            self._board.close()
            self._board = None


class Liveness:
    """Pure ASGI middleware: when the server starts the app (its lifespan), the loop's lag is sampled
    and, given `port`, `HealthProcess` answers on it until the server stops. Without a lifespan (a
    Lambda function, `lifespan="off"`) nothing starts: a function is not probed.

    Given `readiness` too, the dependencies are checked every `readiness_interval` seconds on the
    loop, and each round's answer is published for `/readyz` on that port: the kubelet's readiness
    probe then gets the latest round at once, whatever the load, instead of waiting behind the
    loop's work on the service's port (up to 2 s in the bench's 200 buyers)."""

    def __init__(
        self,
        app: Any,
        *,
        loop_lag: LoopLag,
        host: str,
        port: int | None,
        max_loop_lag: float,
        readiness: ReadinessRound | None = None,
        readiness_interval: float = READINESS_INTERVAL_SECONDS,
    ) -> None:
        self.app = app
        self.loop_lag = loop_lag
        self.readiness = readiness
        self.readiness_interval = readiness_interval
        self.listener = (
            HealthProcess(
                host=host, port=port, loop_lag=loop_lag, max_loop_lag=max_loop_lag, readiness=readiness is not None
            )
            if port is not None
            else None
        )
        self._rounds: asyncio.Task[None] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        self.loop_lag.start()
        if self.listener is not None:
            self.listener.start()
            if self.readiness is not None:
                self._rounds = asyncio.get_running_loop().create_task(
                    self._publish_readiness(self.listener, self.readiness), name="readiness-rounds"
                )
        try:
            await self.app(scope, receive, send)
        finally:
            if self._rounds is not None:
                self._rounds.cancel()
                self._rounds = None
            self.loop_lag.stop()
            if self.listener is not None:
                self.listener.close()

    async def _publish_readiness(self, listener: HealthProcess, readiness: ReadinessRound) -> None:
        while True:
            try:
                status, body = await readiness()
            except Exception:  # a round that raises is a failed round, not the end of the rounds
                log.exception("readiness round failed")
                status, body = 503, json.dumps(problem(503, "Not ready", "The readiness checks raised.")).encode()
            listener.publish_readiness(status, body)
            await asyncio.sleep(self.readiness_interval)
