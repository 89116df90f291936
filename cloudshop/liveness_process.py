"""The liveness probe's own process: `/healthz` answered by a small process that the service's load
never delays, from the event loop's lag that the service publishes on a shared board.

Why a process, not a thread of the service: a thread needs the service's GIL to answer, and on a
saturated node the service process is itself waiting for a core while another of its threads holds
the GIL; in the bench's 200 buyers on two cores, the thread's answers still took up to 0.4 s. This
process sleeps in `select()` until a probe connects, holds no lock the service holds, and the kernel
runs a task that wakes from sleep ahead of the busy ones: the answer is a matter of microseconds of
CPU, never of the service's queue.

It reads, never writes, the service's state: `LagBoard` is 16 bytes of shared memory where the
service's loop-lag sampler (`cloudshop.liveness.LoopLag`) writes its last lag and when its next
sample is due. A loop later than `--max-loop-lag` seconds is stuck, not busy: the probe then fails.

Lifecycle: the service starts it with a pipe on its stdin and ends it by closing the pipe; if the
service dies, however, the kernel closes the pipe and this process exits too (it never outlives
what it vouches for). It prints the port it bound on its first line of stdout.

Standard library only, run with `python -S <this file>`: it starts in a few milliseconds and weighs
a few MB, and it imports nothing the service's code could slow down or break.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import select
import signal
import socket
import struct
import sys
import time
from typing import Any

# A probe's request is a line and a few headers; anything longer is not a probe.
MAX_REQUEST_BYTES = 8192
# A client that connects and says nothing is dropped after this: one process answers, in turn, and a
# probe sends its request at once. Only the kubelet reaches this port (no NetworkPolicy admits it).
CLIENT_TIMEOUT_SECONDS = 0.5

_BOARD = struct.Struct("=dd")  # the last sample's lag; when the next sample is due (time.monotonic)


class LagBoard:
    """The event loop's lag, shared between processes: 16 bytes of memory behind a file descriptor.

    The writer (the service) publishes after each sample; a reader computes the lag now as LoopLag
    does: the last sample's lag, or how overdue the next sample is, whichever is more. `time.monotonic`
    is the system's monotonic clock, the same in both processes. A read that overlaps a write can mix
    two samples' fields: both are recent, and the next probe reads again.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.ftruncate(fd, _BOARD.size)
        self._memory = mmap.mmap(fd, _BOARD.size)

    @classmethod
    def create(cls) -> LagBoard:
        """A new board on an anonymous file (memfd on Linux, an unlinked temporary file elsewhere)."""
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("cloudshop-loop-lag", 0)
        else:  # macOS: no memfd
            import tempfile

            with tempfile.TemporaryFile() as file:
                fd = os.dup(file.fileno())
        board = cls(fd)
        board.write(last=0.0, due=0.0)
        return board

    def write(self, *, last: float, due: float) -> None:
        _BOARD.pack_into(self._memory, 0, last, due)

    def lag(self, now: float | None = None) -> float:
        last, due = _BOARD.unpack_from(self._memory, 0)
        if due == 0.0:  # not sampling (yet, or any more)
            return last
        return max(last, (time.monotonic() if now is None else now) - due)

    def close(self) -> None:
        self._memory.close()
        os.close(self.fd)


def answer(head: bytes, lag: float, max_loop_lag: float) -> bytes:
    """The whole HTTP/1.1 response to a request whose head (request line and headers) is `head`,
    given the service's loop lag now."""
    method, _, rest = head.partition(b" ")
    path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
    if path != b"/healthz":
        return _response(404, {"status": "not found", "detail": "Only /healthz is served on this port."})
    if method not in (b"GET", b"HEAD"):
        return _response(405, {"status": "method not allowed"}, extra=b"allow: GET, HEAD\r\n")
    if lag > max_loop_lag:
        body = {"status": "stalled", "loop_lag_seconds": round(lag, 3)}
        return _response(503, body, head_only=method == b"HEAD")
    return _response(200, {"status": "ok"}, head_only=method == b"HEAD")


_REASONS = {200: b"OK", 404: b"Not Found", 405: b"Method Not Allowed", 503: b"Service Unavailable"}


def _response(status: int, body: dict[str, Any], *, head_only: bool = False, extra: bytes = b"") -> bytes:
    payload = json.dumps(body).encode()
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\ncache-control: no-store\r\n"
        b"connection: close\r\n%s\r\n" % (status, _REASONS[status], len(payload), extra)
    )
    return head if head_only else head + payload


def _read_head(connection: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head and len(head) < MAX_REQUEST_BYTES:
        chunk = connection.recv(MAX_REQUEST_BYTES - len(head))
        if not chunk:
            break
        head += chunk
    return head


def serve(listener: socket.socket, board: LagBoard, max_loop_lag: float, parent: int) -> None:
    """Answers probes until `parent` (a readable fd: the service's end of the pipe) closes."""
    while True:
        readable, _, _ = select.select([listener.fileno(), parent], [], [])
        if parent in readable:
            if not os.read(parent, 4096):
                return  # the service closed the pipe, or died
            continue
        try:
            connection, _ = listener.accept()
        except OSError:
            continue
        with connection:
            try:
                connection.settimeout(CLIENT_TIMEOUT_SECONDS)
                connection.sendall(answer(_read_head(connection), board.lag(), max_loop_lag))
            except OSError:
                continue  # the client went away or said nothing in time: the next one


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True, help="0: the system's choice (printed)")
    parser.add_argument("--board-fd", type=int, required=True, help="the LagBoard's file descriptor")
    parser.add_argument("--max-loop-lag", type=float, required=True, help="seconds; later is stuck")
    args = parser.parse_args(argv)
    # Ctrl-C in the terminal that runs the platform reaches the whole process group: the service
    # shuts down and closes the pipe; this process ends then, not first with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    board = LagBoard(args.board_fd)
    listener = socket.create_server((args.host, args.port), backlog=64)
    print(listener.getsockname()[1], flush=True)
    serve(listener, board, args.max_loop_lag, parent=sys.stdin.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
