"""What a running `cloudshop up` has started, written down so that nothing it started outlives it.

The runner records each process it spawns in `<state-dir>/processes.json` the moment it is spawned:
its name, pid, port and argv, how to stop it, and its identity (the boot id and the kernel's start time
of that pid). Two readers act on the file:

- the watchdog (`cloudshop.local.watchdog`), as soon as the runner dies without stopping them;
- the next `cloudshop up` on the same state dir, if the watchdog died too.

Either one stops a recorded process only while its pid still names the *same* process: same boot,
same start time. If the kernel has since given the pid to an unrelated program, that program is left
alone. The argv is kept for reports only and is no identity: as root, `setpriv` execs into `postgres`
after the record is made, and PostgreSQL rewrites its own process titles. Identity comes from Linux's
/proc. Where /proc is missing, nothing is ever stopped from the ledger, and a port that is still
held gets the runner's usual refusal.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudshop.local.servers import _port_open

if TYPE_CHECKING:
    from cloudshop.local.servers import ManagedServer

LEDGER_FILE = "processes.json"
_PROC = Path("/proc")


@dataclass(frozen=True)
class Identity:
    """A process as the kernel knows it: no other process in the same boot shares both values."""

    boot_id: str
    start_ticks: int


def identity_of(pid: int) -> Identity | None:
    """The identity of the live process with this pid now, or None (no such process, or a zombie)."""
    try:
        boot_id = (_PROC / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # Field 2, the command name, is parenthesised and may itself hold spaces and parentheses; the
    # state (field 3) and the start time in clock ticks since boot (field 22) come after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return Identity(boot_id=boot_id, start_ticks=int(fields[19]))


@dataclass(frozen=True)
class ProcessRecord:
    """One process the runner started: enough to recognise it later and to stop it as its server would."""

    name: str
    pid: int
    identity: Identity
    argv: tuple[str, ...] = ()
    port: int = 0
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 10.0
    stop_wave: int = 1

    @classmethod
    def of(
        cls,
        pid: int,
        *,
        name: str,
        argv: Iterable[str] = (),
        port: int = 0,
        stop_signal: int = signal.SIGTERM,
        stop_timeout: float = 10.0,
        stop_wave: int = 1,
    ) -> ProcessRecord | None:
        """The record of the live process `pid`, or None if it has already gone."""
        identity = identity_of(pid)
        if identity is None:
            return None
        return cls(
            name=name,
            pid=pid,
            identity=identity,
            argv=tuple(argv),
            port=port,
            stop_signal=int(stop_signal),
            stop_timeout=stop_timeout,
            stop_wave=stop_wave,
        )

    def is_running(self) -> bool:
        """Whether this very process still runs (not merely some process with the same pid)."""
        return identity_of(self.pid) == self.identity

    def describe(self) -> str:
        return f"{self.name} (pid {self.pid}" + (f", port {self.port})" if self.port else ")")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessRecord:
        return cls(**{**data, "identity": Identity(**data["identity"]), "argv": tuple(data.get("argv", ()))})


@dataclass
class Ledger:
    """The file's content: the runner, its watchdog, and the processes the runner spawned, in start order."""

    runner: ProcessRecord
    watchdog: ProcessRecord | None = None
    processes: list[ProcessRecord] = field(default_factory=list)

    def write(self, path: Path) -> None:
        """Replace the file in one step, so a reader never sees half of it."""
        content = {
            "runner": self.runner.to_json(),
            "watchdog": self.watchdog.to_json() if self.watchdog else None,
            "processes": [record.to_json() for record in self.processes],
        }
        scratch = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        scratch.write_text(json.dumps(content, indent=2))
        os.replace(scratch, path)

    @classmethod
    def read(cls, path: Path) -> Ledger | None:
        """The ledger in `path`, or None if there is none (or it is unreadable, e.g. cut short by a full disk)."""
        try:
            content = json.loads(path.read_text())
            return cls(
                runner=ProcessRecord.from_json(content["runner"]),
                watchdog=ProcessRecord.from_json(content["watchdog"]) if content.get("watchdog") else None,
                processes=[ProcessRecord.from_json(record) for record in content["processes"]],
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


class ProcessLedger:
    """The runner's live ledger. It observes its servers (`ManagedServer.observer`) and rewrites the
    file on every change. The services start side by side, hence the lock."""

    def __init__(self, path: Path, *, runner: ProcessRecord) -> None:
        self.path = path
        self._ledger = Ledger(runner=runner)
        self._lock = threading.Lock()
        self._ledger.write(path)

    @property
    def processes(self) -> list[ProcessRecord]:
        with self._lock:
            return list(self._ledger.processes)

    def set_watchdog(self, record: ProcessRecord | None) -> None:
        with self._lock:
            self._ledger.watchdog = record
            self._ledger.write(self.path)

    def spawned(self, server: ManagedServer, *, pid: int, argv: Sequence[str]) -> None:
        record = ProcessRecord.of(
            pid,
            name=server.label,
            argv=argv,
            port=server.port,
            stop_signal=server.stop_signal,
            stop_timeout=server.stop_timeout,
            stop_wave=server.stop_wave,
        )
        if record is None:
            return  # it has exited already; start() reports that
        with self._lock:
            self._ledger.processes.append(record)
            self._ledger.write(self.path)

    def ended(self, server: ManagedServer, *, pid: int) -> None:
        with self._lock:
            self._ledger.processes = [record for record in self._ledger.processes if record.pid != pid]
            self._ledger.write(self.path)

    def remove(self) -> None:
        with self._lock:
            self.path.unlink(missing_ok=True)


def _signal(record: ProcessRecord, signum: int) -> bool:
    """Send `signum` to the recorded process if it is still that process; False if it is not.

    The pidfd pins the process that holds the pid when the pidfd is opened. The identity check
    comes after the open, so pid reuse cannot slip in between the check and the signal.
    """
    try:
        pidfd = os.pidfd_open(record.pid)
    except ProcessLookupError:
        return False
    except OSError:  # a kernel without pidfds (before 5.3): check, then signal by pid
        pidfd = None
    try:
        if not record.is_running():
            return False
        if pidfd is None:
            os.kill(record.pid, signum)
        else:
            signal.pidfd_send_signal(pidfd, signum)
        return True
    except (ProcessLookupError, PermissionError):
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _kill_group(record: ProcessRecord) -> None:
    # Each server leads its own process group (ManagedServer starts it in a new session). This runs
    # only while the leader is verified alive, or just after it exited: while any member is left
    # the group id cannot be handed out again, and once none is, killpg finds nothing.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(record.pid, signal.SIGKILL)


def stop_processes(records: Sequence[ProcessRecord], *, report: Callable[[str], None]) -> list[ProcessRecord]:
    """Stop the recorded processes that are still the processes recorded; return the ones that stopped.

    This is `ManagedServer.stop()` for a runner that is gone: each process gets its own stop signal
    (PostgreSQL's is SIGINT, its fast shutdown, so the postmaster ends its backends and leaves a
    clean cluster), its own stop timeout, then SIGKILL for its whole process group. Lower stop waves
    go first, so the services stop before the servers they use. Within a wave every process is
    signalled at once, and a wave takes as long as its slowest member.
    """
    stopped: list[ProcessRecord] = []
    alive = [record for record in records if record.is_running()]
    for wave in sorted({record.stop_wave for record in alive}):
        deadlines: dict[ProcessRecord, float] = {}
        for record in (r for r in alive if r.stop_wave == wave):
            if _signal(record, record.stop_signal):
                deadlines[record] = time.monotonic() + record.stop_timeout
            elif record.is_running():
                report(f"{record.describe()}: not allowed to signal it; left running")
        killed: set[ProcessRecord] = set()
        while deadlines:
            for record, deadline in list(deadlines.items()):
                if not record.is_running():
                    _kill_group(record)
                    stopped.append(record)
                    del deadlines[record]
                elif record in killed:
                    if time.monotonic() > deadline:
                        report(f"{record.describe()} survived SIGKILL for 5s; left running")
                        del deadlines[record]
                elif time.monotonic() > deadline:
                    report(f"{record.describe()} did not stop within {record.stop_timeout:.0f}s: killing it")
                    if _signal(record, signal.SIGKILL):
                        _kill_group(record)
                    killed.add(record)
                    deadlines[record] = time.monotonic() + 5.0
            time.sleep(0.05)
    return stopped


def wait_for_ports_to_close(ports: Iterable[int], *, timeout: float = 10.0) -> list[int]:
    """Wait until nothing listens on `ports` any more; return the ports still open at the timeout."""
    deadline = time.monotonic() + timeout
    waiting = [port for port in ports if port]
    while True:
        waiting = [port for port in waiting if _port_open(port)]
        if not waiting or time.monotonic() > deadline:
            return waiting
        time.sleep(0.1)
