"""Child processes and loopback HTTP servers that never outlive the rehearsal.

Every child runs in its own session (process group), writes to a log file, and is stopped by killing
its whole group. Every wait is bounded, and a wait that runs out names what did not come up and
quotes the end of its log.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from cloudshop.local.servers import HOST, free_port

LOG_TAIL_LINES = 60

__all__ = ["HOST", "Child", "LoopbackServer", "RehearsalError", "free_port", "log_tail", "wait_until"]


_RUNNING: set[Child] = set()


@atexit.register
def _stop_leftovers() -> None:
    # An interrupted test run must not leave Lambda hosts and pods behind.
    for child in list(_RUNNING):
        with contextlib.suppress(Exception):
            child.stop(grace=1.0)


class RehearsalError(AssertionError):
    """A step of the rehearsal failed; the message says which and carries the evidence (logs, answers)."""


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return f"--- last {lines} lines of {path} ---\n" + "\n".join(text[-lines:])


def wait_until(
    what: str, ready: Callable[[], bool], *, timeout: float, interval: float = 0.1, evidence: Callable[[], str]
) -> None:
    """Poll `ready` until it answers True; after `timeout` seconds fail, naming `what` with `evidence()`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except RehearsalError:
            raise
        except Exception as exc:  # a probe that fails only means "not yet"
            last_error = exc
        time.sleep(interval)
    cause = f" (last probe error: {type(last_error).__name__}: {last_error})" if last_error else ""
    raise RehearsalError(f"{what} did not come up within {timeout:.0f}s{cause}\n{evidence()}")


class Child:
    """One child process in its own process group, its output in `log`."""

    def __init__(self, name: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _RUNNING.add(self)
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def evidence(self) -> str:
        state = "running" if self.running else f"exited with {self.process.returncode if self.process else None}"
        return f"{self.name} ({state})\n{log_tail(self.log)}"

    def wait_http(self, url: str, *, timeout: float, accept: Callable[[httpx.Response], bool] | None = None) -> None:
        """Wait until `url` answers (2xx unless `accept` says otherwise); fail early if the process exits."""

        def ready() -> bool:
            if not self.running:
                raise RehearsalError(f"{self.name} exited before it answered {url}\n{self.evidence()}")
            response = httpx.get(url, timeout=2.0)
            return accept(response) if accept else response.is_success

        wait_until(f"{self.name} ({url})", ready, timeout=timeout, interval=0.2, evidence=self.evidence)

    def stop(self, grace: float = 5.0) -> None:
        process = self.process
        _RUNNING.discard(self)
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace)
        # The group id is the leader's pid; children of the leader may still be alive.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 in a daemon thread (one thread per request)."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], *, port: int | None = None) -> None:
        self.port = port or free_port()
        self._server = ThreadingHTTPServer((HOST, self.port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=handler.__name__, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        # shutdown() waits for serve_forever() to notice, so only a server that serves is asked to.
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
