"""What a runner starts ends with it, even when it is SIGKILLed, and a restart reclaims only its own leftovers.

Fast: plain Python processes stand in for the runner and its servers. `tests/e2e/test_cloudshop_up_killed.py`
does the same with `cloudshop up` and the real servers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cloudshop.local.ledger import LEDGER_FILE, Identity, Ledger, ProcessRecord, identity_of, stop_processes
from cloudshop.local.servers import HOST, free_port
from cloudshop.local.watchdog import RunnerGuard

# A runner in miniature: claims the state dir, starts its watchdog, then one server that listens on a
# port, and waits to be killed.
RUNNER = """
import sys, time
from pathlib import Path
from cloudshop.local.servers import ManagedServer
from cloudshop.local.watchdog import RunnerGuard

class Listener(ManagedServer):
    name = "listener"
    stop_timeout = 3.0

    def _command(self):
        return [sys.executable, "-c",
                "import pathlib, socket, time; s = socket.socket(); s.bind(('127.0.0.1', %d)); s.listen();"
                " pathlib.Path('ready').touch(); time.sleep(600)" % self.port]

    def _prepare(self):
        (self.data_dir / "ready").unlink(missing_ok=True)

    def _is_ready(self):
        return (self.data_dir / "ready").exists()

state = Path(sys.argv[1])
guard = RunnerGuard(state, report=lambda message: print(message, flush=True))
ledger = guard.claim()
guard.start_watchdog()
server = Listener(state / "listener", port=int(sys.argv[2]))
server.observer = ledger
server.start()
print("up", server.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    return identity_of(pid) is not None


def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((HOST, port)) == 0


class MiniRunner:
    """RUNNER in a subprocess of its own session (as a terminal would start it), once it is up."""

    def __init__(self, state: Path, port: int) -> None:
        self.state = state
        self.process = subprocess.Popen(
            [sys.executable, "-c", RUNNER, str(state), str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if line.startswith("up "):
                self.server_pid = int(line.split()[1])
                return
        raise AssertionError("the runner did not come up:\n" + "".join(self.lines))

    @property
    def watchdog_pid(self) -> int:
        ledger = Ledger.read(self.state / LEDGER_FILE)
        assert ledger is not None and ledger.watchdog is not None
        return ledger.watchdog.pid


@pytest.fixture
def start_runner(tmp_path: Path) -> Iterator[Callable[[int], MiniRunner]]:
    runners: list[MiniRunner] = []

    def start(port: int) -> MiniRunner:
        runners.append(MiniRunner(tmp_path, port))
        return runners[-1]

    yield start
    for runner in runners:
        for pid in (runner.process.pid, runner.server_pid):
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
        runner.process.wait()


def test_a_sigkilled_runner_takes_its_servers_and_its_watchdog_with_it(tmp_path, start_runner):
    port = free_port()
    runner = start_runner(port)
    watchdog = runner.watchdog_pid
    assert _port_open(port)

    runner.process.kill()
    runner.process.wait()

    assert _wait_until(lambda: not _alive(runner.server_pid), timeout=5)
    assert not _port_open(port)
    assert _wait_until(lambda: not _alive(watchdog), timeout=5)
    assert not (tmp_path / LEDGER_FILE).exists()
    assert "stopped 1 processes" in (tmp_path / "logs" / "watchdog.log").read_text()


def test_a_restart_reclaims_what_a_run_killed_with_its_watchdog_left_running(tmp_path, start_runner):
    port = free_port()
    first = start_runner(port)
    os.kill(first.watchdog_pid, signal.SIGKILL)
    first.process.kill()
    first.process.wait()
    time.sleep(0.5)
    assert _alive(first.server_pid) and _port_open(port), "a leftover, as after `kill -9` of both"

    second = start_runner(port)

    assert not _alive(first.server_pid)
    said = "".join(second.lines)
    assert f"the previous run (pid {first.process.pid}) was killed and left listener (pid {first.server_pid}" in said
    assert f"reclaimed 1 leftover processes; ports {port} are free again" in said
    assert _port_open(port) and _alive(second.server_pid)


def test_a_second_runner_on_the_same_state_dir_is_refused_while_the_first_runs(tmp_path, start_runner):
    first = start_runner(free_port())

    with pytest.raises(SystemExit) as refusal:
        RunnerGuard(tmp_path, report=print).claim()

    assert f"another `cloudshop up` (pid {first.process.pid}) is running" in str(refusal.value)
    assert _alive(first.server_pid)


def test_a_recorded_pid_now_held_by_another_process_is_left_alone(tmp_path):
    # The kernel handed a recorded pid to an unrelated program: same pid, another start time.
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert _wait_until(lambda: _alive(stranger.pid))
        real = identity_of(stranger.pid)
        assert real is not None
        recorded = ProcessRecord(
            name="moto",
            pid=stranger.pid,
            identity=Identity(boot_id=real.boot_id, start_ticks=real.start_ticks - 1),
            port=1,
        )
        dead_runner = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
        Ledger(
            runner=ProcessRecord(name="cloudshop up", pid=int(dead_runner.stdout), identity=real),
            processes=[recorded],
        ).write(tmp_path / LEDGER_FILE)

        assert not recorded.is_running()
        assert stop_processes([recorded], report=print) == []
        RunnerGuard(tmp_path, report=print).claim()

        assert stranger.poll() is None
        fresh = Ledger.read(tmp_path / LEDGER_FILE)
        assert fresh is not None and fresh.processes == []  # the new run's own ledger
    finally:
        stranger.kill()
        stranger.wait()


def test_stopping_a_recorded_process_uses_its_own_stop_signal_then_kills_what_ignores_it(tmp_path):
    # A stop signal it handles (like PostgreSQL's SIGINT), and a process that ignores SIGTERM.
    polite = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import pathlib, signal, sys, time\n"
            "signal.signal(signal.SIGINT, lambda *_: (pathlib.Path(sys.argv[1]).touch(), sys.exit(0)))\n"
            "time.sleep(60)\n",
            str(tmp_path / "stopped-cleanly"),
        ],
        start_new_session=True,
    )
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"],
        start_new_session=True,
    )
    try:
        time.sleep(0.5)  # both have installed their handlers
        records = [
            ProcessRecord.of(polite.pid, name="polite", stop_signal=signal.SIGINT, stop_timeout=5),
            ProcessRecord.of(stubborn.pid, name="stubborn", stop_timeout=0.5),
        ]
        said: list[str] = []

        started = time.monotonic()
        stopped = stop_processes([r for r in records if r is not None], report=said.append)

        assert {record.name for record in stopped} == {"polite", "stubborn"}
        assert time.monotonic() - started < 4
        assert polite.wait(timeout=1) == 0 and (tmp_path / "stopped-cleanly").exists()
        assert stubborn.wait(timeout=1) == -signal.SIGKILL
        assert any("stubborn" in line and "did not stop within" in line for line in said)
    finally:
        for process in (polite, stubborn):
            process.kill()
            process.wait()
