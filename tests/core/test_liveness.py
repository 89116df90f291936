"""Liveness on a port of its own (`cloudshop.liveness`): answered by a process of its own while the
event loop is busy and while the service holds its GIL, failed once the loop is stuck, started and
stopped with the server's lifespan, and never outliving the service."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette

from cloudshop.liveness import HealthProcess, Liveness, LoopLag
from cloudshop.liveness_process import HealthBoard
from cloudshop.local.servers import free_port
from cloudshop.settings import Settings
from cloudshop.web import create_app


def probe(port: int, path: str = "/healthz", method: str = "GET") -> tuple[int, bytes]:
    """What a kubelet's HTTP probe sees: a new connection, one request."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


class LoopThread:
    """An event loop on a thread of its own, as uvicorn's, whose lag a `LoopLag` samples; `stall()`
    blocks it until released, as a wedged handler would."""

    def __init__(self, lag: LoopLag) -> None:
        self.loop = asyncio.new_event_loop()
        self.lag = lag
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> LoopThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=5)
        return self

    async def _start(self) -> None:
        self.lag.start()

    @contextmanager
    def stalled(self) -> Iterator[threading.Event]:
        """The loop blocked (not merely busy) until the block ends or the event is set."""
        release, blocked = threading.Event(), threading.Event()

        def block() -> None:
            blocked.set()
            release.wait(30)

        self.loop.call_soon_threadsafe(block)
        assert blocked.wait(5)
        try:
            yield release
        finally:
            release.set()

    def __exit__(self, *_: object) -> None:
        self.loop.call_soon_threadsafe(self.lag.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


@contextmanager
def listening(max_loop_lag: float) -> Iterator[tuple[HealthProcess, LoopLag]]:
    lag = LoopLag(interval=0.01)
    health = HealthProcess(host="127.0.0.1", port=0, loop_lag=lag, max_loop_lag=max_loop_lag)
    health.port = health.start()
    try:
        yield health, lag
    finally:
        health.close()


@pytest.fixture
def listener() -> Iterator[tuple[HealthProcess, LoopLag]]:
    with listening(max_loop_lag=0.5) as health_and_lag:
        yield health_and_lag


def test_a_probe_is_answered_while_the_loop_is_stuck_short_of_the_bound() -> None:
    with listening(max_loop_lag=60) as (health, lag), LoopThread(lag) as loop, loop.stalled():
        # Given the loop blocked, not turning at all (short of the 60 s bound),
        # when the kubelet probes, the answer comes while the loop is still blocked: no turn was needed.
        status, body = probe(health.port)
    assert status == 200 and body == b'{"status": "ok"}'


def test_a_loop_stuck_beyond_the_bound_fails_the_probe_and_passes_again_once_it_turns(
    listener: tuple[HealthProcess, LoopLag],
) -> None:
    health, lag = listener
    with LoopThread(lag) as loop:
        with loop.stalled():
            # Given the loop stuck for longer than the 0.5 s bound,
            deadline = time.monotonic() + 10
            status, body = probe(health.port)
            while status != 503 and time.monotonic() < deadline:
                time.sleep(0.05)
                status, body = probe(health.port)
            # then the probe fails and says why;
            assert status == 503, body
            assert b'"status": "stalled"' in body and b"loop_lag_seconds" in body
        # once the loop turns again, it passes.
        deadline = time.monotonic() + 10
        while probe(health.port)[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert probe(health.port)[0] == 200


def test_the_listener_answers_only_healthz_and_only_to_reads(listener: tuple[HealthProcess, LoopLag]) -> None:
    health, _ = listener
    assert probe(health.port, "/healthz?probe=kubelet")[0] == 200
    assert probe(health.port, "/healthz", method="HEAD") == (200, b"")
    assert probe(health.port, "/readyz")[0] == 404
    assert probe(health.port, "/metrics")[0] == 404
    assert probe(health.port, "/healthz", method="POST")[0] == 405


def test_a_silent_or_garbled_client_does_not_hold_the_listener(listener: tuple[HealthProcess, LoopLag]) -> None:
    health, _ = listener
    # Given one client that connects and says nothing, and one that sends noise,
    silent = socket.create_connection(("127.0.0.1", health.port))
    noisy = socket.create_connection(("127.0.0.1", health.port))
    try:
        noisy.sendall(b"\x00\xff garbage\r\n\r\n")
        # then a probe behind them is still answered (the silent one is dropped after its timeout).
        assert probe(health.port)[0] == 200
        assert noisy.recv(64).startswith(b"HTTP/1.1 404")
    finally:
        silent.close()
        noisy.close()


def test_a_service_app_serves_liveness_on_its_port_for_as_long_as_it_runs() -> None:
    port = free_port()
    settings = Settings(environment="test", log_level="WARNING", health_port=port)  # type: ignore[call-arg]
    app = create_app(service="test", settings=settings, routers=[])

    # Given the app started by its server (the lifespan runs),
    with TestClient(app) as client:
        # the liveness port answers, and the loop's lag is measured;
        assert probe(port)[0] == 200
        deadline = time.monotonic() + 5
        while "event_loop_lag_seconds_count 0.0" in client.get("/metrics").text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "event_loop_lag_seconds_count 0.0" not in client.get("/metrics").text
    # once the server stops, the port is closed.
    with pytest.raises(ConnectionRefusedError):
        probe(port)


def test_without_a_port_nothing_listens_and_the_app_serves_as_before() -> None:
    app = create_app(service="test", settings=Settings(environment="test", log_level="WARNING"), routers=[])
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200


# A service process that starts its liveness process, reports both ports' owner, then does what it is
# told on stdin: "hold" holds its GIL in one C call (a regular expression that backtracks for
# seconds: no thread of the process runs meanwhile), "quit" stops the liveness process and ends.
SERVICE = textwrap.dedent(
    """
    import asyncio, os, re, sys, threading
    from cloudshop.liveness import HealthProcess, LoopLag

    lag = LoopLag(interval=0.01)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result()
    loop.call_soon_threadsafe(lag.start)
    health = HealthProcess(host="127.0.0.1", port=0, loop_lag=lag, max_loop_lag=60, readiness=True)
    port = health.start()
    health.publish_readiness(200, b'{"status": "ready", "checks": ["database"]}')
    print(port, health._process.pid, flush=True)
    for line in sys.stdin:
        if line.strip() == "hold":
            print("holding", flush=True)
            re.match(r"(a+)+b", "a" * 25)  # about 1.5 s here
            print("released", flush=True)
        elif line.strip() == "quit":
            health.close()
            print("closed", flush=True)
            break
    """
)


@contextmanager
def service_process() -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    service = subprocess.Popen(
        [sys.executable, "-c", SERVICE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert service.stdin is not None and service.stdout is not None
    try:
        port, liveness_pid = (int(word) for word in service.stdout.readline().split())
        yield service, port, liveness_pid
    finally:
        service.kill()
        service.wait()


def process_gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if zombie(pid):  # ended; reaping it is its parent's (or, once orphaned, init's) business
            return True
        time.sleep(0.05)
    return False


def zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_a_probe_is_answered_while_the_service_holds_its_gil() -> None:
    with service_process() as (service, port, _):
        assert service.stdin is not None and service.stdout is not None
        # Given the service holding its GIL in one long C call (no thread of it can run),
        service.stdin.write("hold\n")
        service.stdin.flush()
        assert service.stdout.readline().strip() == "holding"
        # when the kubelet probes, the answers come while the service still holds it (a thread of
        # the service could only answer once the call ended, after "released").
        assert probe(port)[0] == 200
        assert probe(port, "/readyz") == (200, b'{"status": "ready", "checks": ["database"]}')
        still_holding = not select.select([service.stdout], [], [], 0)[0]
        assert service.stdout.readline().strip() == "released"
        assert still_holding


def test_the_liveness_process_ends_with_the_server_and_with_the_service_if_it_dies() -> None:
    with service_process() as (service, port, liveness_pid):
        assert service.stdin is not None and service.stdout is not None
        assert probe(port)[0] == 200
        service.stdin.write("quit\n")
        service.stdin.flush()
        assert service.stdout.readline().strip() == "closed"
        assert process_gone(liveness_pid)
    with service_process() as (service, port, liveness_pid):
        assert probe(port)[0] == 200
        # Killed outright, the service closes nothing itself: the kernel closes its pipe.
        service.send_signal(signal.SIGKILL)
        service.wait()
        assert process_gone(liveness_pid)
    with pytest.raises(ConnectionRefusedError):
        probe(port)


def test_readiness_is_the_last_published_round_and_never_half_of_two() -> None:
    board = HealthBoard.create()
    try:
        assert board.readiness() is None
        answers = [(200, b'{"status": "ready"}' * 50), (503, b'{"title": "Not ready"}')]
        board.write_readiness(*answers[0])
        done = threading.Event()

        def publish() -> None:
            while not done.is_set():
                for status, body in answers:
                    board.write_readiness(status, body)

        writer = threading.Thread(target=publish)
        writer.start()
        seen: set[tuple[int, bytes] | None] = set()
        try:
            # Read while the writer switches between the two answers, until both were read whole.
            deadline = time.monotonic() + 10
            while seen != set(answers) and time.monotonic() < deadline:
                seen |= {board.readiness() for _ in range(1000)}
                assert seen <= set(answers), seen - set(answers)  # never a torn or missing answer
        finally:
            done.set()
            writer.join()
        assert seen == set(answers)
        with pytest.raises(ValueError):
            board.write_readiness(200, b"x" * 4096)
    finally:
        board.close()


class Dependency:
    """A readiness check that fails while `down` is set."""

    def __init__(self) -> None:
        self.down = False

    async def __call__(self) -> None:
        if self.down:
            raise ConnectionRefusedError("the dependency is down")


def test_readiness_on_the_probe_port_follows_each_round_of_checks() -> None:
    dependency = Dependency()

    async def readiness_round() -> tuple[int, bytes]:
        try:
            await dependency()
        except ConnectionRefusedError:
            return 503, b'{"title": "Not ready", "failing": {"database": "ConnectionRefusedError"}}'
        return 200, b'{"status": "ready", "checks": ["database"]}'

    options = {"host": "127.0.0.1", "port": 0, "max_loop_lag": 60, "readiness_interval": 0.05}
    app = Liveness(Starlette(), loop_lag=LoopLag(interval=0.01), readiness=readiness_round, **options)  # type: ignore[arg-type]
    assert app.listener is not None

    def readyz_becomes(status: int) -> tuple[int, bytes]:
        deadline = time.monotonic() + 10
        answer = probe(app.listener.port, "/readyz")  # type: ignore[union-attr]
        while answer[0] != status and time.monotonic() < deadline:
            time.sleep(0.02)
            answer = probe(app.listener.port, "/readyz")  # type: ignore[union-attr]
        return answer

    # Given the server started (its lifespan runs the rounds),
    with TestClient(app):
        # each round's answer is what the probe port gives, as the dependency comes and goes.
        assert readyz_becomes(200) == (200, b'{"status": "ready", "checks": ["database"]}')
        dependency.down = True
        status, body = readyz_becomes(503)
        assert status == 503 and b"ConnectionRefusedError" in body
        dependency.down = False
        assert readyz_becomes(200)[0] == 200


def test_a_service_app_publishes_its_readiness_on_the_probe_port() -> None:
    port = free_port()
    settings = Settings(environment="test", log_level="WARNING", health_port=port)  # type: ignore[call-arg]
    app = create_app(service="test", settings=settings, routers=[], readiness={"dependency": Dependency()})
    with TestClient(app) as client:
        deadline = time.monotonic() + 10
        while probe(port, "/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        # The same answer as the service's own port gives.
        status, body = probe(port, "/readyz")
        assert (status, json.loads(body)) == (200, client.get("/readyz").json())
