"""The servers of `cloudshop up` end with it, even when it is killed rather than interrupted.

Ctrl-C lets the runner stop everything itself. After SIGKILL, an OOM kill or a closed terminal, it
cannot. So next to the runner sits a watchdog: a small process (`python -m cloudshop.local.watchdog`)
that waits for the runner to end and then stops every process the runner's ledger
(`cloudshop.local.ledger`) still lists.

Why not `prctl(PR_SET_PDEATHSIG)` on each server? It fails here in four ways:
- it fires when the *thread* that forked the child ends, not the process. The runner starts the
  services from a thread pool whose threads end after start-up, so they would die on the spot;
- the kernel clears it when the child changes credentials. As root, PostgreSQL runs through
  `setpriv` as another user, and would lose it;
- it reaches only direct children. PostgreSQL's backends are the postmaster's children, each in a
  session of its own;
- it sends one signal, with no wait and no SIGKILL after it. PostgreSQL takes SIGTERM as "smart
  shutdown", which waits for clients to go.

The watchdog learns of the runner's death from a pipe. The runner holds the only write end, and the
kernel closes it however the runner ends, so the watchdog wakes at once and never polls a pid that may
be reused. As a backstop it also notices when it is re-parented. It runs in a session of its own,
out of reach of the terminal's Ctrl-C and hang-up and of a kill aimed at the runner's process group.
It stops each recorded process as that process's server would: its own stop signal, its own
timeout, then SIGKILL for its process group.

The watchdog also holds the runner's lock on the state dir (an inherited descriptor of the same open
file). So a new `cloudshop up` waits while a dead run is still being cleaned up. If the watchdog has
been killed too, the new run stops the leftovers itself, through the same ledger, after checking
that each one is still the process recorded (`RunnerGuard.claim`).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cloudshop.local.ledger import (
    LEDGER_FILE,
    Ledger,
    ProcessLedger,
    ProcessRecord,
    stop_processes,
    wait_for_ports_to_close,
)

LOCK_FILE = "runner.lock"
# The longest the watchdog of a killed run may still be busy: Kafka's stop timeout (30 s) after the
# services' (10 s), with room for a SIGKILL. A new run waits that long for it, then gives up.
WATCHDOG_GRACE_SECONDS = 60.0


def _log(message: str) -> None:
    print(f"[cloudshop watchdog {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _wait_for_runner_to_end(pipe_fd: int, runner_pid: int) -> None:
    while True:
        readable, _, _ = select.select([pipe_fd], [], [], 0.5)
        if readable and not os.read(pipe_fd, 64):
            return  # end of file: the runner's write end is closed, so the runner has ended
        if os.getppid() != runner_pid:
            return  # re-parented: the runner has ended


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m cloudshop.local.watchdog`: started by `cloudshop up`, not by hand."""
    parser = argparse.ArgumentParser(prog="python -m cloudshop.local.watchdog", description=main.__doc__)
    parser.add_argument("--ledger", type=Path, required=True, help="the runner's ledger file")
    parser.add_argument("--runner-pid", type=int, required=True)
    parser.add_argument("--pipe-fd", type=int, required=True, help="read end of a pipe only the runner writes to")
    args = parser.parse_args(argv)
    # The runner answers Ctrl-C and hang-up itself; the watchdog stays until the runner has gone.
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    _wait_for_runner_to_end(args.pipe_fd, args.runner_pid)
    ledger = Ledger.read(args.ledger)
    if ledger is None or not ledger.processes:
        return 0  # an orderly stop: the runner stopped everything itself
    _log(
        f"the runner (pid {args.runner_pid}) ended without stopping "
        + ", ".join(record.describe() for record in ledger.processes)
        + "; stopping them"
    )
    stopped = stop_processes(ledger.processes, report=_log)
    left = [record for record in ledger.processes if record.is_running()]
    if left:
        ledger.processes = left
        ledger.write(args.ledger)
        _log("still running: " + ", ".join(record.describe() for record in left))
        return 1
    args.ledger.unlink(missing_ok=True)
    _log(f"stopped {len(stopped)} processes")
    return 0


class RunnerGuard:
    """What `cloudshop up` holds while it runs, so that a killed run never blocks the next one.

    - `claim()`: the exclusive lock on `<state-dir>/runner.lock`. A second runner on the same state
      dir is refused while the first lives, and waits while a dead run's watchdog is still cleaning
      up. A dead run's leftovers are stopped if they are still the processes recorded. Returns the
      new ledger;
    - `start_watchdog()`: the watchdog, before any server starts;
    - `release()`: after an orderly stop, the ledger goes and the watchdog is dismissed; anything
      still listed is left to the watchdog to stop.
    """

    def __init__(self, state_dir: Path, *, report: Callable[[str], None]) -> None:
        self.state_dir = state_dir
        self.report = report
        self.ledger_path = state_dir / LEDGER_FILE
        self.ledger: ProcessLedger | None = None
        self._lock_fd: int | None = None
        self._pipe_fd: int | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    def claim(self) -> ProcessLedger | None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_lock(lock_fd):
                self._wait_for_previous_run(lock_fd)
            self._reclaim_leftovers()
        except BaseException:
            os.close(lock_fd)
            raise
        self._lock_fd = lock_fd
        runner = ProcessRecord.of(os.getpid(), name="cloudshop up", argv=sys.argv)
        if runner is None:
            self.report("no /proc here: if this run is killed, its servers cannot be recognised and stopped for you")
            return None
        self.ledger = ProcessLedger(self.ledger_path, runner=runner)
        return self.ledger

    def _wait_for_previous_run(self, lock_fd: int) -> None:
        previous = self._refuse_if_a_runner_lives()
        watchdog = f" (pid {previous.watchdog.pid})" if previous.watchdog else ""
        self.report(
            f"the previous run (pid {previous.runner.pid}) was killed; "
            f"waiting for its watchdog{watchdog} to stop what it started ..."
        )
        deadline = time.monotonic() + WATCHDOG_GRACE_SECONDS
        while not _try_lock(lock_fd):
            self._refuse_if_a_runner_lives()  # another new run may have got the lock first
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"[cloudshop] the watchdog of the previous run still holds {self.state_dir / LOCK_FILE} "
                    f"after {WATCHDOG_GRACE_SECONDS:.0f}s; see {self.state_dir / 'logs' / 'watchdog.log'}."
                )
            time.sleep(0.2)

    def _refuse_if_a_runner_lives(self) -> Ledger:
        """The ledger of the run holding the lock, if its runner is dead; otherwise refuse to start."""
        holder = Ledger.read(self.ledger_path)
        if holder is not None and not holder.runner.is_running():
            return holder
        who = f" (pid {holder.runner.pid})" if holder else ""
        stop_it = f"Ctrl-C in its terminal, or `kill {holder.runner.pid}`" if holder else "Ctrl-C in its terminal"
        raise SystemExit(
            f"[cloudshop] another `cloudshop up`{who} is running with the state dir {self.state_dir}.\n"
            f"[cloudshop] stop it ({stop_it}), or start this one with another --state-dir and --base-port."
        )

    def _reclaim_leftovers(self) -> None:
        previous = Ledger.read(self.ledger_path)
        for scratch in self.state_dir.glob(f".{LEDGER_FILE}.*"):
            scratch.unlink(missing_ok=True)  # a write cut short by the kill
        if previous is None:
            return
        leftovers = [record for record in previous.processes if record.is_running()]
        if leftovers:
            self.report(
                f"the previous run (pid {previous.runner.pid}) was killed and left "
                + ", ".join(record.describe() for record in leftovers)
                + " running; stopping them"
            )
            stopped = stop_processes(leftovers, report=self.report)
            ports = [record.port for record in stopped if record.port]
            busy = wait_for_ports_to_close(ports)
            freed = sorted(set(ports) - set(busy))
            self.report(
                f"reclaimed {len(stopped)} leftover processes"
                + (f"; ports {', '.join(map(str, freed))} are free again" if freed else "")
            )
        self.ledger_path.unlink(missing_ok=True)

    def start_watchdog(self) -> None:
        assert self._lock_fd is not None, "claim() first"
        if self.ledger is None:
            return  # nothing it could recognise
        read_fd, self._pipe_fd = os.pipe()
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "cloudshop.local.watchdog",
            "--ledger",
            str(self.ledger_path),
            "--runner-pid",
            str(os.getpid()),
            "--pipe-fd",
            str(read_fd),
        ]
        try:
            with open(logs / "watchdog.log", "ab") as log:
                self._watchdog = subprocess.Popen(  # noqa: S603 - fixed argv
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    # The lock descriptor too, so the state dir stays locked until the watchdog is done.
                    pass_fds=(read_fd, self._lock_fd),
                    start_new_session=True,
                )
        finally:
            os.close(read_fd)
        self.ledger.set_watchdog(ProcessRecord.of(self._watchdog.pid, name="watchdog", argv=argv))

    def release(self) -> None:
        if self.ledger is not None and not self.ledger.processes:
            self.ledger.remove()
        if self._pipe_fd is not None:
            os.close(self._pipe_fd)  # the watchdog wakes up, and stops whatever is still listed
            self._pipe_fd = None
        if self._watchdog is not None:
            try:
                self._watchdog.wait(timeout=WATCHDOG_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
                self._watchdog.wait()
            self._watchdog = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
