"""`cloudshop up` killed rather than interrupted: its servers end with it, and a restart reclaims leftovers.

Issue 10: after a SIGKILL, an OOM kill or a closed terminal, PostgreSQL, moto and dynalite kept their
ports and the next `make run` refused to start. These tests kill the real runner and check the processes
themselves (every descendant it had, found through /proc), not only its ports.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from cloudshop.local.ledger import LEDGER_FILE, Identity, Ledger, ProcessRecord, identity_of
from tests.fixtures.platform import free_base_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EMBEDDED_PORTS = range(0, 7)  # gateway, five services, moto
FULL_PORTS = range(0, 13)  # ... and dynalite, PostgreSQL, Kafka, its controller, Prometheus, ElasticMQ


def _descendants(root: int) -> dict[int, tuple[Identity, str]]:
    """Every process below `root` now, with its identity (so a reused pid is not mistaken for it)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found: dict[int, tuple[Identity, str]] = {}
    pending = list(children.get(root, []))
    while pending:
        pid = pending.pop()
        identity = identity_of(pid)
        if identity is None:
            continue
        try:
            cmdline = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found[pid] = (identity, cmdline)
        pending += children.get(pid, [])
    return found


# Each service's probe process (`cloudshop.liveness`): its service's child, not the runner's, so not on
# the ledger; it ends by itself when its service ends (these tests check that it is gone too).
PROBE_PROCESS = "cloudshop/liveness_process.py"


def _on_ledger(processes: dict[int, tuple[Identity, str]] | dict[int, str]) -> list[int]:
    """The pids the runner itself started and recorded: all but the services' probe processes."""
    return [pid for pid, seen in processes.items() if PROBE_PROCESS not in (seen if isinstance(seen, str) else seen[1])]


def _still_running(processes: dict[int, tuple[Identity, str]]) -> dict[int, str]:
    return {pid: cmdline for pid, (identity, cmdline) in processes.items() if identity_of(pid) == identity}


def _open_ports(base: int, offsets: range) -> list[int]:
    def is_open(port: int) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    return [base + offset for offset in offsets if is_open(base + offset)]


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


class Run:
    """One `cloudshop up`, started as a user starts it, in a session of its own as a terminal would."""

    def __init__(self, state: Path, base: int, *, profile: str = "embedded", log_name: str = "up.log") -> None:
        self.state, self.base = state, base
        self.log = state.parent / f"{state.name}-{log_name}"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AWS_") and k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")
        }
        argv = [sys.executable, "-m", "cloudshop.cli", "up", "--profile", profile]
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(
                [*argv, "--state-dir", str(state), "--base-port", str(base)],
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                start_new_session=True,
            )
        self.started: dict[int, tuple[Identity, str]] = {}

    @property
    def output(self) -> str:
        return self.log.read_text()

    def wait_up(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while "cloudshop is up" not in self.output:
            assert self.process.poll() is None, f"cloudshop up exited with {self.process.returncode}:\n{self.output}"
            assert time.monotonic() < deadline, f"cloudshop up was not up within {timeout}s:\n{self.output}"
            time.sleep(0.3)
        self.started = _descendants(self.process.pid)

    def pid_of(self, fragment: str) -> int:
        return next(pid for pid, (_, cmdline) in self.started.items() if fragment in cmdline)


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    """The runs a test starts; whatever of them is left when it ends is killed, so a failure leaks nothing."""
    started: list[Run] = []
    yield started
    for run in started:
        if run.process.poll() is None:
            run.process.kill()
        run.process.wait()
        for pid in _still_running(run.started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_sigkilled_runner_takes_every_process_it_started_with_it(tmp_path: Path, runs: list[Run]) -> None:
    base = free_base_port()
    run = Run(tmp_path / "state", base)
    runs.append(run)
    run.wait_up()
    names = " ".join(cmdline for _, cmdline in run.started.values())
    assert "cloudshop.local.watchdog" in names and "moto" in names and "functions.user.app" in names
    assert len(run.started) >= 9  # watchdog, moto, six uvicorns, the poller

    run.process.kill()
    run.process.wait()

    assert _wait_until(lambda: not _still_running(run.started), timeout=15), _still_running(run.started)
    assert _open_ports(base, EMBEDDED_PORTS) == []
    assert not (run.state / LEDGER_FILE).exists()
    # Everything but the watchdog itself (and the probe processes) was on the ledger, and the
    # watchdog stopped it all; the probe processes ended with their services.
    assert any(PROBE_PROCESS in cmdline for _, cmdline in run.started.values())
    stopped = len(_on_ledger(run.started)) - 1
    assert f"stopped {stopped} processes" in (run.state / "logs" / "watchdog.log").read_text()


def test_a_closed_terminal_stops_everything_in_order(tmp_path: Path, runs: list[Run]) -> None:
    base = free_base_port()
    run = Run(tmp_path / "state", base)
    runs.append(run)
    run.wait_up()

    run.process.send_signal(signal.SIGHUP)

    assert run.process.wait(timeout=60) == 0, run.output
    assert "stopped." in run.output
    assert _wait_until(lambda: not _still_running(run.started), timeout=10), _still_running(run.started)
    assert _open_ports(base, EMBEDDED_PORTS) == []
    # The runner stopped everything itself; its watchdog had nothing left to do.
    assert "ended without stopping" not in (run.state / "logs" / "watchdog.log").read_text()
    assert not (run.state / LEDGER_FILE).exists()


def test_a_restart_reclaims_what_a_killed_run_left_and_comes_up(tmp_path: Path, runs: list[Run]) -> None:
    base = free_base_port()
    state = tmp_path / "state"
    first = Run(state, base)
    runs.append(first)
    first.wait_up()
    # As if the watchdog had gone down with the runner (`kill -9` of both): the servers survive.
    os.kill(first.pid_of("cloudshop.local.watchdog"), signal.SIGKILL)
    first.process.kill()
    first.process.wait()
    time.sleep(1)
    leftovers = _still_running(first.started)
    assert len(leftovers) >= 8 and httpx.get(f"http://127.0.0.1:{base}/healthz", timeout=5).status_code == 200

    second = Run(state, base, log_name="up-again.log")
    runs.append(second)
    second.wait_up()

    assert _still_running(first.started) == {}
    said = second.output
    assert f"the previous run (pid {first.process.pid}) was killed and left" in said
    assert f"reclaimed {len(_on_ledger(leftovers))} leftover processes" in said
    assert f"gateway (pid {first.pid_of('cloudshop.gateway')}, port {base})" in said
    assert httpx.get(f"http://127.0.0.1:{base}/api/v1/products", timeout=10).status_code == 200

    second.process.send_signal(signal.SIGINT)
    assert second.process.wait(timeout=60) == 0, second.output
    assert _wait_until(lambda: not _still_running(second.started), timeout=10), _still_running(second.started)
    assert _open_ports(base, EMBEDDED_PORTS) == []


def test_a_port_held_by_a_stranger_is_named_and_the_stranger_is_left_alone(tmp_path: Path) -> None:
    base = free_base_port()
    moto_port = base + 6
    stranger = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket, sys, time\n"
            "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(120)\n",
            str(moto_port),
        ]
    )
    try:
        assert _wait_until(lambda: _open_ports(base, range(6, 7)) == [moto_port], timeout=10)
        # The previous run's ledger names the stranger's pid: it belonged to that run's moto once,
        # and the kernel has since given it to the stranger (another start time).
        own = identity_of(stranger.pid)
        assert own is not None
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        state = tmp_path / "state"
        state.mkdir()
        Ledger(
            runner=ProcessRecord(name="cloudshop up", pid=int(dead.stdout), identity=own),
            processes=[
                ProcessRecord(
                    name="moto",
                    pid=stranger.pid,
                    identity=Identity(boot_id=own.boot_id, start_ticks=own.start_ticks - 5),
                    port=moto_port,
                )
            ],
        ).write(state / LEDGER_FILE)

        answer = subprocess.run(
            [sys.executable, "-m", "cloudshop.cli", "up", "--state-dir", str(state), "--base-port", str(base)],
            capture_output=True,
            text=True,
            timeout=60,
        )

        assert answer.returncode != 0
        said = answer.stdout + answer.stderr
        assert f"port already in use: {moto_port} (moto)" in said
        assert "reclaimed" not in said
        assert stranger.poll() is None, "a process the runner did not start is never killed"
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.postgres
@pytest.mark.kafka
def test_the_full_profile_servers_end_with_a_sigkilled_runner(tmp_path: Path, runs: list[Run]) -> None:
    base = free_base_port()
    run = Run(tmp_path / "state", base, profile="full")
    runs.append(run)
    run.wait_up(timeout=180)
    postmaster = run.pid_of("bin/postgres -D")
    dynalite = run.pid_of("dynalite/cli.js")
    kafka = run.pid_of("kafka.Kafka")
    elasticmq = run.pid_of("org.elasticmq.server.Main")
    backends = [pid for pid, (_, cmdline) in run.started.items() if cmdline.startswith("postgres: ")]
    assert backends, "PostgreSQL's own processes are counted too"

    run.process.kill()
    run.process.wait()

    assert _wait_until(lambda: not _still_running(run.started), timeout=40), _still_running(run.started)
    assert {postmaster, dynalite, kafka, elasticmq, *backends}.isdisjoint(_still_running(run.started))
    assert _open_ports(base, FULL_PORTS) == []
    # The postmaster got its fast shutdown (SIGINT), not a SIGKILL: the cluster was closed cleanly.
    assert "database system is shut down" in (run.state / "postgres" / "postgres.log").read_text()
