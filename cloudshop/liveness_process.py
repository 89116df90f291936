"""The probes' own process: `/healthz` (and `/readyz`) answered by a small process that the service's
load never delays, from what the service publishes on a shared board.

Why a process, not a thread of the service: a thread needs the service's GIL to answer, and on a
saturated node the service process is itself waiting for a core while another of its threads holds
the GIL; in the bench's 200 buyers on two cores, the thread's answers still took up to 0.4 s. This
process sleeps in `select()` until a probe connects, holds no lock the service holds, and the kernel
runs a task that wakes from sleep ahead of the busy ones: the answer is a matter of microseconds of
CPU, never of the service's queue.

It reads, never writes, the service's state: `HealthBoard` is a few KB of shared memory where the
service's loop-lag sampler (`cloudshop.liveness.LoopLag`) writes its last lag and when its next
sample is due, and, with `--readiness`, where the service publishes its readiness answer after each
round of dependency checks (`cloudshop.liveness.Liveness`). A loop later than `--max-loop-lag`
seconds is stuck, not busy: both probes then fail.

Lifecycle: the service starts it with a pipe on its stdin and ends it by closing the pipe; if the
service dies, however, the kernel closes the pipe and this process exits too (it never outlives
what it vouches for). It prints the port it bound on its first line of stdout.

Standard library only, run with `python -S <this file>`: it starts in ~50 ms here, takes ~13 MB of
RSS (6 MB of it its own, the rest the interpreter's shared pages), and imports nothing the
service's code could slow down or break.
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

# The loop's lag: the last sample's lag, and when the next sample is due (time.monotonic). Then the
# last readiness answer: a sequence number (odd while it is being written), its HTTP status (0: none
# yet) and its body's length, followed by the body.
_LAG = struct.Struct("=dd")
_READINESS = struct.Struct("=QHH")
READINESS_BODY_MAX = 2048
_BOARD_SIZE = _LAG.size + _READINESS.size + READINESS_BODY_MAX


class HealthBoard:
    """What the probe's process answers from, shared between processes: a few KB of memory behind a
    file descriptor, written by the service and read by the probe's process.

    The loop's lag: the service publishes after each sample; a reader computes the lag now as LoopLag
    does: the last sample's lag, or how overdue the next sample is, whichever is more. `time.monotonic`
    is the system's monotonic clock, the same in both processes. A read that overlaps a write can mix
    two samples' fields: both are recent, and the next probe reads again.

    Readiness: the service's last answer to `/readyz` (status and body), written under a sequence
    number (a seqlock: odd while a write is under way), so a reader never returns half of one answer
    and half of another.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.ftruncate(fd, _BOARD_SIZE)
        self._memory = mmap.mmap(fd, _BOARD_SIZE)
        self._sequence = 0

    @classmethod
    def create(cls) -> HealthBoard:
        """A new board on an anonymous file (memfd on Linux, an unlinked temporary file elsewhere)."""
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("cloudshop-health", 0)
        else:  # macOS: no memfd
            import tempfile

            with tempfile.TemporaryFile() as file:
                fd = os.dup(file.fileno())
        return cls(fd)

    def write_lag(self, *, last: float, due: float) -> None:
        _LAG.pack_into(self._memory, 0, last, due)

    def lag(self, now: float | None = None) -> float:
        last, due = _LAG.unpack_from(self._memory, 0)
        if due == 0.0:  # not sampling (yet, or any more)
            return last
        return max(last, (time.monotonic() if now is None else now) - due)

    def write_readiness(self, status: int, body: bytes) -> None:
        """Publishes a readiness answer (one writer: the service's event loop)."""
        if len(body) > READINESS_BODY_MAX:
            raise ValueError(f"a readiness answer is at most {READINESS_BODY_MAX} bytes, not {len(body)}")
        self._sequence += 1  # odd: a write is under way
        _READINESS.pack_into(self._memory, _LAG.size, self._sequence, 0, 0)
        self._memory[_LAG.size + _READINESS.size : _LAG.size + _READINESS.size + len(body)] = body
        self._sequence += 1
        _READINESS.pack_into(self._memory, _LAG.size, self._sequence, status, len(body))

    def readiness(self) -> tuple[int, bytes] | None:
        """The last readiness answer published, or None if there is none yet."""
        for _ in range(100):
            sequence, status, length = _READINESS.unpack_from(self._memory, _LAG.size)
            if sequence % 2:
                time.sleep(0.0005)  # the writer is mid-write: microseconds
                continue
            start = _LAG.size + _READINESS.size
            body = bytes(self._memory[start : start + length])
            if _READINESS.unpack_from(self._memory, _LAG.size)[0] == sequence:
                return (status, body) if status else None
        return None

    def close(self) -> None:
        self._memory.close()
        os.close(self.fd)


def answer(head: bytes, board: HealthBoard, *, max_loop_lag: float, readiness: bool) -> bytes:
    """The whole HTTP/1.1 response to a request whose head (request line and headers) is `head`.

    `/healthz`: 200 while the service's loop lag is at most `max_loop_lag`, else 503 (stuck). With
    `readiness`, `/readyz` too: the service's last published answer (503 until there is one), and a
    503 as well while the loop is stuck, since a stuck service serves nothing."""
    method, _, rest = head.partition(b" ")
    path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
    if path != b"/healthz" and not (readiness and path == b"/readyz"):
        served = "/healthz and /readyz are" if readiness else "Only /healthz is"
        return _response(404, {"status": "not found", "detail": f"{served} served on this port."})
    if method not in (b"GET", b"HEAD"):
        return _response(405, {"status": "method not allowed"}, extra=b"allow: GET, HEAD\r\n")
    head_only = method == b"HEAD"
    lag = board.lag()
    if lag > max_loop_lag:
        return _response(503, {"status": "stalled", "loop_lag_seconds": round(lag, 3)}, head_only=head_only)
    if path == b"/healthz":
        return _response(200, {"status": "ok"}, head_only=head_only)
    published = board.readiness()
    if published is None:
        return _response(503, {"status": "starting"}, head_only=head_only)
    status, body = published
    content_type = b"application/problem+json" if status >= 400 else b"application/json"
    return _raw_response(status, body, content_type, head_only=head_only)


_REASONS = {200: b"OK", 404: b"Not Found", 405: b"Method Not Allowed", 503: b"Service Unavailable"}


def _response(status: int, body: dict[str, Any], *, head_only: bool = False, extra: bytes = b"") -> bytes:
    return _raw_response(status, json.dumps(body).encode(), b"application/json", head_only=head_only, extra=extra)


def _raw_response(
    status: int, payload: bytes, content_type: bytes, *, head_only: bool = False, extra: bytes = b""
) -> bytes:
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\ncache-control: no-store\r\n"
        b"connection: close\r\n%s\r\n" % (status, _REASONS.get(status, b""), content_type, len(payload), extra)
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


def serve(listener: socket.socket, board: HealthBoard, *, max_loop_lag: float, readiness: bool, parent: int) -> None:
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
                head = _read_head(connection)
                connection.sendall(answer(head, board, max_loop_lag=max_loop_lag, readiness=readiness))
            except OSError:
                continue  # the client went away or said nothing in time: the next one


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True, help="0: the system's choice (printed)")
    parser.add_argument("--board-fd", type=int, required=True, help="the HealthBoard's file descriptor")
    parser.add_argument("--max-loop-lag", type=float, required=True, help="seconds; later is stuck")
    parser.add_argument("--readiness", action="store_true", help="serve /readyz, as the service publishes it")
    args = parser.parse_args(argv)
    # Ctrl-C in the terminal that runs the platform reaches the whole process group: the service
    # shuts down and closes the pipe; this process ends then, not first with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    board = HealthBoard(args.board_fd)
    listener = socket.create_server((args.host, args.port), backlog=64)
    print(listener.getsockname()[1], flush=True)
    serve(listener, board, max_loop_lag=args.max_loop_lag, readiness=args.readiness, parent=sys.stdin.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
