"""A lean pooled HTTP/1.1 client transport for asyncio: `PooledTransport`, an `httpx.AsyncBaseTransport`.

Every call between services, every DynamoDB call and the local gateway's proxy go through it. It
replaces `httpx.AsyncHTTPTransport` (httpcore + h11) because of what a py-spy profile of the order
service under load showed: ~37% of its CPU in httpcore's `AsyncConnectionPool`, which on every
request and every release walks all pooled connections and asks the OS, for each idle one, whether
its socket is readable (`has_expired`), plus h11's pure-Python parsing. Here:

- each origin (scheme, host, port) keeps a LIFO stack of idle connections, and only the connection
  handed out is looked at: the asyncio protocol already learnt from `eof_received`/`connection_lost`
  whether the peer closed it, so no syscall is needed to know;
- responses are parsed by httptools (llhttp, in C: what uvicorn parses requests with) in an
  `asyncio.Protocol`, so a response costs a few C callbacks instead of h11's state machine;
- a request is written with one `transport.write`.

`Endpoint` drives the pool for the service and DynamoDB clients without building httpx's request
and response objects, which cost more than the pool itself once httpcore was gone. Measured with
`python -m cloudshop.bench_http` (client CPU per call): the numbers are in the docstrings of
`cloudshop.clients` and `cloudshop.dynamodb`. The local gateway proxies through the transport with
httpx objects (it forwards arbitrary headers and is not shipped).

Bounds, as httpx's pool has them: at most `max_connections` per origin (a request waits for one at
most the `pool` timeout, then `httpx.PoolTimeout`), at most `max_idle_connections` kept idle per
origin, and an idle connection is not reused after `idle_expiry_seconds`. Timeouts are httpx's, per
request (`request.extensions["timeout"]`, the dict `httpx.Timeout.as_dict()` gives): `connect`,
`read` (the longest wait for the next bytes of the answer), `write` (the longest wait for the
socket to take the request) and `pool`. Failures are raised as the httpx exceptions callers already
handle (`ConnectError`, `ConnectTimeout`, `ReadTimeout`, `WriteTimeout`, `PoolTimeout`,
`RemoteProtocolError`, `ReadError`, `WriteError`).

The whole answer is read before `handle_async_request` returns (every caller reads all of it; the
gateway relays at most what a service answers); the `httpx.Response` carries it as its raw stream,
so `aread()`, `aiter_raw()` and `aclose()` work as usual. asyncio only (uvloop or the default loop):
the services all run on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import httptools
import httpx

# An idle connection older than this is closed rather than reused. Below every peer's own keep-alive
# timeout, so the peer never closes a connection just as a request is sent on it: uvicorn keeps one
# 75 s (--timeout-keep-alive), but Node's http server (dynalite) only 5 s, counted from its last
# write, which is a little before our clock starts.
IDLE_EXPIRY_SECONDS = 4.0
DEFAULT_TIMEOUTS: dict[str, float | None] = httpx.Timeout(5.0).as_dict()
# RFC 9110 §9.2.2: a request with one of these methods may be repeated automatically.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
# A request body up to this size goes out in the same write as the head.
_COALESCE_BYTES = 64 * 1024


class _NoAnswer(Exception):
    """The connection ended before any byte of the answer arrived (it may be retried: see below)."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class _Body(httpx.AsyncByteStream):
    """An answer already read: its raw bytes, as one chunk."""

    __slots__ = ("_body",)

    def __init__(self, body: bytes) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._body:
            yield self._body


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: the asyncio protocol that parses its answers with httptools.

    `broken` is the one health flag the pool reads before reusing a connection: set when the peer
    sent EOF or the connection was lost (asyncio tells the protocol, no syscall needed), on a parse
    error, on bytes that arrive while no request waits for them, and when a request on it failed.
    """

    def __init__(self, origin: _Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.origin = origin
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.broken = False
        self.counted = True  # holds one of the origin's `max_connections` slots
        self.in_pool = False
        self.idle_since = 0.0
        self.served = 0
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._paused = False
        self._head = False
        self._status = 0
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._received = False
        self._headers_done = False
        self._complete = False
        self._keep_alive = False
        self._last_read = 0.0
        self._read_timeout = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or self.parser is None:
            # Nothing was asked: a confused or hostile peer. Never reuse this connection.
            self._break()
            return
        self._received = True
        self._last_read = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("The server switched protocols, which is not supported."))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"Malformed HTTP answer: {exc}"))

    def eof_received(self) -> bool:
        self.broken = True
        self._ended(None)
        return False  # the transport closes itself; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.broken = True
        self._ended(exc)
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_exception(httpx.WriteError(f"The connection was lost: {exc!r}"))
        if self.in_pool:
            self.origin.forget(self)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- httptools callbacks -------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._complete:
            self.broken = True  # a second answer to one request

    def on_status(self, status: bytes) -> None:
        self._reason = status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._headers_done = True
        parser = self.parser
        if self._head and parser is not None and parser.get_status_code() >= 200:
            # An answer to HEAD has no body whatever its Content-Length says; llhttp cannot be told
            # so, so this parser (which would wait for that body) is replaced for the next request.
            self._status = parser.get_status_code()
            self._keep_alive = parser.should_keep_alive()
            self.parser = None
            self._done()

    def on_body(self, body: bytes) -> None:
        if self._complete:
            self.broken = True  # a body after an answer to HEAD, or after a complete answer
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code() if parser is not None else 0
        if 100 <= status < 200:
            # An interim answer (100 Continue, 103 Early Hints): the final one follows.
            self._headers = []
            self._headers_done = False
            return
        if self._head or self._complete or parser is None:
            return
        self._status = status
        self._keep_alive = parser.should_keep_alive()
        self._done()

    # -- the exchange --------------------------------------------------------------------------------
    async def exchange(
        self, data: bytes, body: bytes, *, head: bool, timeouts: dict[str, Any]
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes, bool]:
        """Send one request and wait for its whole answer: (status, reason, headers, body, keep-alive)."""
        transport = self.transport
        assert transport is not None
        if self.parser is None:
            self.parser = httptools.HttpResponseParser(self)
        self._head = head
        self._headers = []
        self._body = []
        self._status = 0
        self._received = self._headers_done = self._complete = False
        waiter = self._waiter = self.loop.create_future()
        try:
            # One write, so one send(2) and one segment for the head and the body together: two
            # writes cost a second system call per request (every DynamoDB call is a POST) and
            # make the server read twice.
            transport.write(data + body if body else data)
            if self._paused:
                await self._drained(timeouts.get("write"))
            if not waiter.done():
                read_timeout = timeouts.get("read")
                if read_timeout is not None:
                    self._read_timeout = read_timeout
                    self._last_read = self.loop.time()
                    self._timer = self.loop.call_later(read_timeout, self._check_read)
                    try:
                        await waiter
                    finally:
                        self._timer.cancel()
                        self._timer = None
                else:
                    await waiter
            else:
                waiter.result()
        finally:
            self._waiter = None
        answer = b"".join(self._body)
        return self._status, self._reason, self._headers, answer, self._keep_alive

    async def _drained(self, timeout: float | None) -> None:
        drain = self._drain = self.loop.create_future()
        timer = None
        if timeout is not None:

            def expire() -> None:
                if not drain.done():
                    drain.set_exception(httpx.WriteTimeout("Timed out sending the request."))

            timer = self.loop.call_later(timeout, expire)
        try:
            await drain
        finally:
            self._drain = None
            if timer is not None:
                timer.cancel()

    def _check_read(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        # httpx's read timeout bounds each wait for data, not the whole answer: re-arm while bytes flow.
        quiet = self.loop.time() - self._last_read
        if quiet < self._read_timeout:
            self._timer = self.loop.call_later(self._read_timeout - quiet, self._check_read)
            return
        self.broken = True
        waiter.set_exception(httpx.ReadTimeout("Timed out waiting for the answer."))

    def _done(self) -> None:
        self._complete = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: Exception) -> None:
        self.broken = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def _ended(self, exc: Exception | None) -> None:
        """The peer closed (EOF) or the connection was lost while a request may be waiting."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if not self._received:
            waiter.set_exception(_NoAnswer("The server closed the connection without answering.", exc))
        elif exc is None and self._headers_done and not self._complete and self._delimited_by_close():
            self._keep_alive = False
            self._done()
        elif exc is not None:
            waiter.set_exception(httpx.ReadError(f"The connection was lost while reading the answer: {exc!r}"))
        else:
            waiter.set_exception(httpx.RemoteProtocolError("The server closed the connection mid-answer."))

    def _delimited_by_close(self) -> bool:
        """An answer with neither Content-Length nor chunked encoding ends when the connection does."""
        names = {name.lower() for name, _ in self._headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _break(self) -> None:
        self.broken = True
        if self.transport is not None:
            self.transport.close()

    def close(self, *, abort: bool = False) -> None:
        self.broken = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            with contextlib.suppress(RuntimeError):  # its event loop is already closed
                if abort:
                    transport.abort()
                else:
                    transport.close()


class _Origin:
    """The connections to one (scheme, host, port): a LIFO stack of idle ones and a count of all."""

    def __init__(self, pool: PooledTransport, *, scheme: str, host: str, port: int) -> None:
        self.pool = pool
        self.host = host
        self.port = port
        self.tls = scheme == "https"
        self.idle: deque[_Connection] = deque()
        self.count = 0  # connections open or being opened, idle ones included
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()

    async def acquire(self, loop: asyncio.AbstractEventLoop, timeouts: dict[str, Any], *, fresh: bool) -> _Connection:
        """A connection to send one request on: the most recently used idle one, a new one, or the
        first one another request gives back (waiting at most the `pool` timeout)."""
        if not fresh:
            idle = self.idle
            while idle:
                connection = idle.pop()
                connection.in_pool = False
                transport = connection.transport
                if (
                    not connection.broken
                    and transport is not None
                    and not transport.is_closing()
                    and loop.time() - connection.idle_since < self.pool.idle_expiry
                ):
                    return connection
                self.drop(connection)
        if self.count < self.pool.max_connections:
            self.count += 1
            return await self._open(loop, timeouts.get("connect"))
        handed = await self._wait(loop, timeouts.get("pool"))
        if handed is not None:
            return handed
        return await self._open(loop, timeouts.get("connect"))  # handed a free slot

    async def _wait(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> _Connection | None:
        waiter: asyncio.Future[_Connection | None] = loop.create_future()
        self.waiters.append(waiter)
        timer = None
        if timeout is not None:

            def expire() -> None:
                if not waiter.done():
                    waiter.set_exception(httpx.PoolTimeout("Timed out waiting for a free connection."))

            timer = loop.call_later(timeout, expire)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed a connection (or a slot) just as this request was cancelled: pass it on.
                handed = waiter.result()
                if handed is None:
                    self.free_slot()
                else:
                    self.release(handed)
            with contextlib.suppress(ValueError):
                self.waiters.remove(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    async def _open(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> _Connection:
        """A new connection; the caller has already counted it."""
        connection = _Connection(self, loop)
        try:
            async with asyncio.timeout(timeout):
                if self.tls:
                    await loop.create_connection(
                        lambda: connection,
                        self.host,
                        self.port,
                        ssl=self.pool.ssl_context(),
                        server_hostname=self.host,
                    )
                else:
                    await loop.create_connection(lambda: connection, self.host, self.port)
        except BaseException as exc:
            connection.counted = False
            connection.close(abort=True)
            self.free_slot()
            if isinstance(exc, TimeoutError):
                raise httpx.ConnectTimeout(f"Timed out connecting to {self.host}:{self.port}.") from exc
            if isinstance(exc, OSError):
                raise httpx.ConnectError(f"Could not connect to {self.host}:{self.port}: {exc}") from exc
            raise
        return connection

    def release(self, connection: _Connection) -> None:
        """A connection whose answer was read whole: to the next waiter, else onto the idle stack."""
        transport = connection.transport
        if connection.broken or transport is None or transport.is_closing() or self.pool.closed:
            self.drop(connection)
            return
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        loop = connection.loop
        now = loop.time()
        idle = self.idle
        if idle and (len(idle) >= self.pool.max_idle_connections or now - idle[0].idle_since >= self.pool.idle_expiry):
            # The oldest idle connection goes: over the cap, or expired (trimmed one per release, so a
            # quiet origin's stale connections go without a sweep).
            oldest = idle.popleft()
            oldest.in_pool = False
            self.drop(oldest)
        connection.idle_since = now
        connection.in_pool = True
        idle.append(connection)

    def drop(self, connection: _Connection, *, abort: bool = False) -> None:
        """Close a connection and give its slot to the next waiter."""
        connection.close(abort=abort)
        if connection.counted:
            connection.counted = False
            self.free_slot()

    def forget(self, connection: _Connection) -> None:
        """An idle connection the peer closed: off the stack."""
        connection.in_pool = False
        with contextlib.suppress(ValueError):
            self.idle.remove(connection)
        if connection.counted:
            connection.counted = False
            self.free_slot()

    def free_slot(self) -> None:
        self.count -= 1
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                self.count += 1
                waiter.set_result(None)
                return


class PooledTransport(httpx.AsyncBaseTransport):
    """A pooled keep-alive HTTP/1.1 (and HTTP/1.1 over TLS) transport for httpx requests.

    `max_connections` and `max_idle_connections` are per origin. `ssl_context` is for `https://`
    origins (default: `ssl.create_default_context()`, the system's CAs, host names checked);
    `timeouts` is used for a request that carries no `timeout` extension.
    """

    def __init__(
        self,
        *,
        max_connections: int = 100,
        max_idle_connections: int = 32,
        idle_expiry_seconds: float = IDLE_EXPIRY_SECONDS,
        ssl_context: ssl.SSLContext | None = None,
        timeouts: dict[str, float | None] | None = None,
    ) -> None:
        self.max_connections = max(1, max_connections)
        self.max_idle_connections = max(1, min(max_idle_connections, self.max_connections))
        self.idle_expiry = idle_expiry_seconds
        self.timeouts = timeouts or DEFAULT_TIMEOUTS
        self.closed = False
        self._ssl_context = ssl_context
        self._origins: dict[tuple[str, str, int], _Origin] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    def origin(self, url: httpx.URL) -> _Origin:
        scheme = url.scheme
        port = url.port or (443 if scheme == "https" else 80)
        key = (scheme, url.host, port)
        origin = self._origins.get(key)
        if origin is None:
            if scheme not in ("http", "https"):
                raise httpx.UnsupportedProtocol(f"Unsupported URL scheme {scheme!r}.")
            origin = self._origins[key] = _Origin(self, scheme=scheme, host=url.host, port=port)
        return origin

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        head, body = await _encode(request)
        timeouts = request.extensions.get("timeout") or self.timeouts
        status, reason, headers, content = await self.roundtrip(
            request.url, request.method, head, body, timeouts=timeouts
        )
        return httpx.Response(
            status,
            headers=headers,
            stream=_Body(content),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
            request=request,
        )

    async def roundtrip(
        self, url: httpx.URL, method: str, head: bytes, body: bytes, *, timeouts: dict[str, Any]
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes]:
        """Send a request already encoded (`head` up to its blank line, then `body`) to `url`'s origin
        and read its whole answer: (status, reason phrase, raw headers, body)."""
        if self.closed:
            raise RuntimeError("The transport is closed.")
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._rebind(loop)
        origin = self.origin(url)
        if len(body) <= _COALESCE_BYTES:
            head, body = head + body, b""
        fresh = False
        while True:
            connection = await origin.acquire(loop, timeouts, fresh=fresh)
            try:
                status, reason, headers, content, keep_alive = await connection.exchange(
                    head, body, head=method == "HEAD", timeouts=timeouts
                )
            except _NoAnswer as exc:
                origin.drop(connection, abort=True)
                # A reused connection that ends before a byte of the answer is almost always the
                # keep-alive race: the peer closed it as idle while the request was on its way, so
                # it never read the request. But "almost": a server may also have read it, acted,
                # and died before answering. So, as RFC 9112 §9.3.1 allows, only a request whose
                # method is idempotent is repeated, once, on a new connection; for the others the
                # callers decide (the service and DynamoDB clients retry the writes they know
                # carry an idempotency key or a condition).
                if connection.served and not fresh and method in IDEMPOTENT_METHODS:
                    fresh = True
                    continue
                if isinstance(exc.cause, OSError):
                    raise httpx.ReadError(str(exc)) from exc.cause
                raise httpx.RemoteProtocolError(str(exc)) from exc
            except BaseException:
                # Failed, timed out or cancelled mid-exchange: the connection may hold half an answer,
                # so it is closed, never pooled.
                origin.drop(connection, abort=True)
                raise
            break
        connection.served += 1
        if keep_alive:
            origin.release(connection)
        else:
            origin.drop(connection)
        return status, reason, headers, content

    def _rebind(self, loop: asyncio.AbstractEventLoop) -> None:
        """First use, or use from another event loop (tests): connections of the old loop are dropped."""
        if self._loop is not None:
            for origin in self._origins.values():
                for connection in origin.idle:
                    connection.in_pool = False
                    connection.close(abort=True)
            self._origins = {}
        self._loop = loop

    async def aclose(self) -> None:
        """Close the idle connections; those in use are closed when their requests end."""
        self.closed = True
        for origin in self._origins.values():
            while origin.idle:
                connection = origin.idle.pop()
                connection.in_pool = False
                origin.drop(connection)
            while origin.waiters:
                waiter = origin.waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(httpx.PoolTimeout("The transport was closed."))


class Answer:
    """A whole HTTP answer, as `Endpoint.request` returns it: `status_code`, raw `headers` (name and
    value bytes, as received) and `content`. Reads like the part of `httpx.Response` callers use."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: list[tuple[bytes, bytes]], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    def header(self, name: str) -> str | None:
        """The first value of header `name` (any case), or None."""
        wanted = name.lower().encode("ascii")
        for key, value in self.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    def json(self) -> Any:
        return json.loads(self.content)


# A path that needs no percent-encoding and no dot-segment removal: sent exactly as given, which is
# what httpx.URL would make of it too. Anything else goes through httpx.URL, so the two agree.
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9\-._~/:@!$&'()*+,;=]*")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class Endpoint:
    """Requests to one base URL with the least work per call, for the service and DynamoDB clients.

    On a `PooledTransport` a request is encoded straight from its method, target, header dict and
    body, and the answer comes back as an `Answer`: no `httpx.Request`, `httpx.URL` or
    `httpx.Response` is built. Those cost more than the pool itself: 112 µs of CPU per service call
    through them, 48 µs without (`python -m cloudshop.bench_http`, a GET, uvloop). On any
    other transport (the tests' `httpx.MockTransport`), the same request goes through
    `httpx.Request` and `handle_async_request`, so tests see ordinary httpx requests.

    The wire request is what `httpx.Request(method, url, headers=headers, content=body)` would send,
    header for header in the same order: `host` (unless given), `content-length: 0` for POST, PUT
    or PATCH without a body, the headers, then the body's `content-length`.
    """

    def __init__(self, base_url: str, transport: httpx.AsyncBaseTransport) -> None:
        url = httpx.URL(base_url)
        self.url = url
        self._root = f"{url.scheme}://{url.netloc.decode('ascii')}"
        self._prefix = url.raw_path.decode("ascii").split("?", 1)[0].rstrip("/")
        self._host = url.netloc.decode("ascii")
        self.transport = transport
        self._pooled = transport if isinstance(transport, PooledTransport) else None

    def target(self, path: str, params: Any = None) -> str:
        """The request target for `path` (relative to the base URL's path) and query `params`."""
        if params is None and _PLAIN_PATH.fullmatch(path) and "/." not in path:
            return self._prefix + path
        return httpx.URL(self._root + self._prefix + path, params=params).raw_path.decode("ascii")

    async def request(
        self, method: str, target: str, *, headers: dict[str, str], body: bytes, timeouts: dict[str, Any]
    ) -> Answer:
        """Send one request (`target` from `self.target`) and read its whole answer."""
        pooled = self._pooled
        if pooled is None:
            return await self._through_httpx(method, target, headers=headers, body=body, timeouts=timeouts)
        lines = [f"{method} {target} HTTP/1.1\r\n"]
        if "host" not in headers:
            lines.append(f"host: {self._host}\r\n")
        if not body and method in _BODY_METHODS:
            lines.append("content-length: 0\r\n")
        lines += [f"{name}: {value}\r\n" for name, value in headers.items()]
        if body:
            lines.append(f"content-length: {len(body)}\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("ascii")
        # One CRLF per line appended: a CR or LF inside a name, a value or the target would add one.
        if head.count(b"\n") != len(lines) or head.count(b"\r") != len(lines):
            raise httpx.LocalProtocolError("A header name, value or the request target contains CR or LF.")
        status, _, raw, content = await pooled.roundtrip(self.url, method, head, body, timeouts=timeouts)
        return Answer(status, raw, content)

    async def _through_httpx(
        self, method: str, target: str, *, headers: dict[str, str], body: bytes, timeouts: dict[str, Any]
    ) -> Answer:
        request = httpx.Request(
            method, self._root + target, headers=headers, content=body or None, extensions={"timeout": timeouts}
        )
        response = await self.transport.handle_async_request(request)
        try:
            content = await response.aread()
        finally:
            await response.aclose()
        return Answer(response.status_code, response.headers.raw, content)

    async def aclose(self) -> None:
        await self.transport.aclose()


async def _encode(request: httpx.Request) -> tuple[bytes, bytes]:
    """The request's head and body as they go on the wire."""
    url = request.url
    parts = [request.method.encode("ascii"), b" ", url.raw_path, b" HTTP/1.1\r\n"]
    raw = request.headers.raw
    chunked = False
    for name, value in raw:
        parts += (name, b": ", value, b"\r\n")
        if name.lower() == b"transfer-encoding":
            chunked = value.lower() == b"chunked"
    parts.append(b"\r\n")
    head = b"".join(parts)
    # One line per header, the request line and the blank line: a CR or LF inside a name, a value or
    # the target would add a line (header injection), which h11 would refuse too.
    if head.count(b"\n") != len(raw) + 2 or head.count(b"\r") != len(raw) + 2:
        raise httpx.LocalProtocolError("A header name, value or the request target contains CR or LF.")
    try:
        body = request.content
    except httpx.RequestNotRead:
        body = await request.aread()
    if chunked:
        body = (b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)) if body else b"0\r\n\r\n"
    return head, body
