"""PooledTransport against real servers: uvicorn in a thread, and scripted raw asyncio servers for the
misbehaviour uvicorn never shows (a keep-alive race, garbage, a truncated answer). Every test runs on
the default asyncio loop and on uvloop, as the services do."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cloudshop.http_pool import Answer, Endpoint, PooledTransport
from cloudshop.local.servers import self_signed_certificate

pytestmark = pytest.mark.anyio

BIG = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture(params=[pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"), "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> object:
    return request.param


class Peers:
    """The client ports the server saw: one per connection the client opened."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.lock = threading.Lock()

    def saw(self, request: Request) -> int:
        port = request.client.port if request.client else 0
        with self.lock:
            if port not in self.ports:
                self.ports.append(port)
        return port

    def clear(self) -> None:
        with self.lock:
            self.ports.clear()


def build_app(peers: Peers) -> Starlette:
    async def item(request: Request) -> Response:
        port = peers.saw(request)
        return JSONResponse({"n": request.path_params["n"], "port": port})

    async def echo(request: Request) -> Response:
        peers.saw(request)
        return Response(await request.body(), media_type="application/octet-stream")

    async def chunked(request: Request) -> Response:
        peers.saw(request)

        async def parts() -> AsyncIterator[bytes]:
            for n in range(5):
                yield f"part-{n};".encode()
                await asyncio.sleep(0.001)

        return StreamingResponse(parts(), media_type="text/plain")

    async def closing(request: Request) -> Response:
        peers.saw(request)
        return JSONResponse({"bye": True}, headers={"connection": "close"})

    async def slow(request: Request) -> Response:
        peers.saw(request)
        await asyncio.sleep(float(request.query_params["seconds"]))
        return JSONResponse({"slept": request.query_params["seconds"]})

    async def big(request: Request) -> Response:
        peers.saw(request)
        return Response(BIG, media_type="application/octet-stream")

    async def status(request: Request) -> Response:
        peers.saw(request)
        return Response(status_code=int(request.path_params["code"]))

    async def inspect(request: Request) -> Response:
        peers.saw(request)
        return JSONResponse(
            {
                "method": request.method,
                "raw_path": request.scope["raw_path"].decode(),
                "query": request.scope["query_string"].decode(),
                "headers": [[name.decode(), value.decode()] for name, value in request.scope["headers"]],
                "body": (await request.body()).decode(),
            }
        )

    return Starlette(
        routes=[
            Route("/inspect/{rest:path}", inspect, methods=["GET", "POST", "PUT", "DELETE"]),
            Route("/items/{n}", item, methods=["GET", "HEAD"]),
            Route("/echo", echo, methods=["POST"]),
            Route("/chunked", chunked),
            Route("/close", closing),
            Route("/slow", slow),
            Route("/big", big),
            Route("/status/{code}", status),
        ]
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Uvicorn:
    def __init__(self, *, keep_alive_seconds: float) -> None:
        self.peers = Peers()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            build_app(self.peers),
            host="127.0.0.1",
            port=self.port,
            log_level="error",
            lifespan="off",
            timeout_keep_alive=keep_alive_seconds,  # type: ignore[arg-type]
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Uvicorn:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def server() -> Iterator[Uvicorn]:
    with Uvicorn(keep_alive_seconds=75) as running:
        yield running


@pytest.fixture
def peers(server: Uvicorn) -> Peers:
    server.peers.clear()
    return server.peers


@asynccontextmanager
async def pooled(**options: object) -> AsyncIterator[PooledTransport]:
    transport = PooledTransport(**options)  # type: ignore[arg-type]
    try:
        yield transport
    finally:
        await transport.aclose()


async def send(
    transport: httpx.AsyncBaseTransport,
    method: str,
    url: str,
    *,
    content: bytes | None = None,
    timeout: httpx.Timeout | None = None,
) -> httpx.Response:
    extensions = {"timeout": timeout.as_dict()} if timeout is not None else {}
    request = httpx.Request(method, url, content=content, extensions=extensions)
    response = await transport.handle_async_request(request)
    try:
        await response.aread()
    finally:
        await response.aclose()
    return response


def idle_count(transport: PooledTransport) -> int:
    return sum(len(origin.idle) for origin in transport._origins.values())


def open_count(transport: PooledTransport) -> int:
    return sum(origin.count for origin in transport._origins.values())


# -- against uvicorn ---------------------------------------------------------------------------------


async def test_sequential_requests_reuse_one_kept_alive_connection(server: Uvicorn, peers: Peers) -> None:
    async with pooled() as transport:
        answers = [await send(transport, "GET", f"{server.url}/items/{n}") for n in range(20)]
    assert [answer.json()["n"] for answer in answers] == [str(n) for n in range(20)]
    assert len(peers.ports) == 1


async def test_the_answer_reads_as_an_httpx_response(server: Uvicorn, peers: Peers) -> None:
    async with pooled() as transport:
        response = await send(transport, "GET", f"{server.url}/items/7")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.reason_phrase == "OK"
    assert response.http_version == "HTTP/1.1"
    assert response.json()["n"] == "7"


async def test_a_chunked_answer_is_read_whole_and_the_connection_reused(server: Uvicorn, peers: Peers) -> None:
    async with pooled() as transport:
        first = await send(transport, "GET", f"{server.url}/chunked")
        second = await send(transport, "GET", f"{server.url}/chunked")
    assert first.headers["transfer-encoding"] == "chunked"
    assert first.content == second.content == b"part-0;part-1;part-2;part-3;part-4;"
    assert len(peers.ports) == 1


async def test_connection_close_from_the_server_is_not_reused(server: Uvicorn, peers: Peers) -> None:
    async with pooled() as transport:
        assert (await send(transport, "GET", f"{server.url}/close")).json() == {"bye": True}
        assert idle_count(transport) == 0
        assert open_count(transport) == 0
        await send(transport, "GET", f"{server.url}/items/1")
    assert len(peers.ports) == 2


async def test_head_204_and_304_answers_have_no_body_and_keep_the_connection(server: Uvicorn, peers: Peers) -> None:
    async with pooled() as transport:
        head = await send(transport, "HEAD", f"{server.url}/items/1")
        empty = await send(transport, "GET", f"{server.url}/status/204")
        not_modified = await send(transport, "GET", f"{server.url}/status/304")
        after = await send(transport, "GET", f"{server.url}/items/2")
    assert head.status_code == 200
    assert int(head.headers["content-length"]) > 0
    assert head.content == b""
    assert (empty.status_code, empty.content) == (204, b"")
    assert (not_modified.status_code, not_modified.content) == (304, b"")
    assert after.json()["n"] == "2"
    assert len(peers.ports) == 1


async def test_one_mebibyte_each_way(server: Uvicorn, peers: Peers) -> None:
    async with pooled() as transport:
        echoed = await send(transport, "POST", f"{server.url}/echo", content=BIG)
        fetched = await send(transport, "GET", f"{server.url}/big")
    assert echoed.content == BIG
    assert fetched.content == BIG
    assert len(peers.ports) == 1


async def test_many_concurrent_callers_each_get_their_own_answer(server: Uvicorn, peers: Peers) -> None:
    def expected(n: int) -> bytes:
        return f"body-{n};".encode() * 100 if n % 3 == 0 else str(n).encode()

    answers: dict[int, bytes] = {}

    async def one(n: int) -> None:
        if n % 3 == 0:
            answers[n] = (await send(transport, "POST", f"{server.url}/echo", content=expected(n))).content
        else:
            answers[n] = (await send(transport, "GET", f"{server.url}/items/{n}")).json()["n"].encode()

    async with pooled(max_connections=10) as transport:
        async with anyio.create_task_group() as group:
            for n in range(300):
                group.start_soon(one, n)
        assert open_count(transport) <= 10
    assert answers == {n: expected(n) for n in range(300)}
    assert len(peers.ports) <= 10


async def test_a_full_pool_makes_the_next_request_wait_then_time_out(server: Uvicorn, peers: Peers) -> None:
    async with pooled(max_connections=2) as transport:
        slow = f"{server.url}/slow?seconds=0.5"
        async with anyio.create_task_group() as group:
            group.start_soon(send, transport, "GET", slow)
            group.start_soon(send, transport, "GET", slow)
            await anyio.sleep(0.1)
            with pytest.raises(httpx.PoolTimeout):
                await send(transport, "GET", f"{server.url}/items/1", timeout=httpx.Timeout(5.0, pool=0.1))
            # Given more patience, the waiter gets a connection the slow ones give back.
            answer = await send(transport, "GET", f"{server.url}/items/2", timeout=httpx.Timeout(5.0, pool=2.0))
        assert answer.json()["n"] == "2"
        assert open_count(transport) <= 2
    assert len(peers.ports) == 2


async def test_a_slow_answer_is_a_read_timeout_and_its_connection_is_closed(server: Uvicorn, peers: Peers) -> None:
    async with pooled() as transport:
        with pytest.raises(httpx.ReadTimeout):
            await send(transport, "GET", f"{server.url}/slow?seconds=1", timeout=httpx.Timeout(5.0, read=0.1))
        assert (idle_count(transport), open_count(transport)) == (0, 0)
        assert (await send(transport, "GET", f"{server.url}/items/3")).json()["n"] == "3"
    assert len(peers.ports) == 2


async def test_a_cancelled_request_never_leaves_its_connection_in_the_pool(server: Uvicorn, peers: Peers) -> None:
    async with pooled() as transport:
        await send(transport, "GET", f"{server.url}/items/0")
        with anyio.move_on_after(0.1) as scope:
            await send(transport, "GET", f"{server.url}/slow?seconds=0.3")
        assert scope.cancelled_caught
        assert (idle_count(transport), open_count(transport)) == (0, 0)
        # The late answer to the cancelled request must not be read as the answer to this one.
        await anyio.sleep(0.3)
        answers = [(await send(transport, "GET", f"{server.url}/items/{n}")).json()["n"] for n in range(1, 4)]
    assert answers == ["1", "2", "3"]


async def test_a_request_cancelled_while_waiting_for_a_connection_leaves_the_pool_whole(
    server: Uvicorn, peers: Peers
) -> None:
    async with pooled(max_connections=1) as transport:
        async with anyio.create_task_group() as group:
            group.start_soon(send, transport, "GET", f"{server.url}/slow?seconds=0.2")
            await anyio.sleep(0.05)
            with anyio.move_on_after(0.05) as scope:
                await send(transport, "GET", f"{server.url}/items/1")
            assert scope.cancelled_caught
        assert (await send(transport, "GET", f"{server.url}/items/2")).json()["n"] == "2"
        assert open_count(transport) == idle_count(transport) == 1
    assert len(peers.ports) == 1


async def test_an_idle_connection_the_server_closed_is_dropped_not_used() -> None:
    with Uvicorn(keep_alive_seconds=0.1) as short:
        async with pooled() as transport:
            first = await send(transport, "GET", f"{short.url}/items/1")
            await anyio.sleep(0.4)  # uvicorn closes the idle connection after 0.1 s
            assert idle_count(transport) == 0
            second = await send(transport, "GET", f"{short.url}/items/2")
        assert first.json()["port"] != second.json()["port"]


async def test_an_idle_connection_past_its_expiry_is_replaced(server: Uvicorn, peers: Peers) -> None:
    async with pooled(idle_expiry_seconds=0.05) as transport:
        await send(transport, "GET", f"{server.url}/items/1")
        await anyio.sleep(0.1)
        await send(transport, "GET", f"{server.url}/items/2")
        assert open_count(transport) == 1
    assert len(peers.ports) == 2


async def test_idle_connections_are_capped(server: Uvicorn, peers: Peers) -> None:
    async with pooled(max_connections=8, max_idle_connections=2) as transport:
        async with anyio.create_task_group() as group:
            for _ in range(8):
                group.start_soon(send, transport, "GET", f"{server.url}/slow?seconds=0.1")
        assert idle_count(transport) == open_count(transport) == 2
    assert len(peers.ports) == 8


async def test_an_unreachable_origin_is_a_connect_error() -> None:
    async with pooled() as transport:
        with pytest.raises(httpx.ConnectError):
            await send(transport, "GET", f"http://127.0.0.1:{free_port()}/")
        assert open_count(transport) == 0


async def test_a_request_through_httpx_async_client(server: Uvicorn, peers: Peers) -> None:
    async with httpx.AsyncClient(transport=PooledTransport(), base_url=server.url) as client:
        response = await client.get("/items/5", params={"q": "a b"})
        posted = await client.post("/echo", json={"k": "v"})
    assert response.json()["n"] == "5"
    assert posted.json() == {"k": "v"}


# -- against scripted raw servers --------------------------------------------------------------------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


@asynccontextmanager
async def raw_server(script: Script) -> AsyncIterator[tuple[str, list[int]]]:
    """A server on this loop; `script(reader, writer, n)` serves its n-th connection."""
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        try:
            await script(reader, writer, len(connections) - 1)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", connections
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return head


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def closes_on_the_second_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
    """Answers one request per connection, then closes on the next one without a byte of answer: the
    keep-alive race (the server closed the idle connection as the request arrived)."""
    await read_request(reader)
    writer.write(OK)
    await writer.drain()
    await read_request(reader)


async def test_an_idempotent_request_lost_to_the_keep_alive_race_is_retried_once() -> None:
    async with raw_server(closes_on_the_second_request) as (url, connections), pooled() as transport:
        assert (await send(transport, "GET", f"{url}/a")).content == b"ok"
        assert (await send(transport, "GET", f"{url}/b")).content == b"ok"
    assert len(connections) == 2


async def test_a_post_lost_to_the_keep_alive_race_is_not_repeated() -> None:
    async with raw_server(closes_on_the_second_request) as (url, connections), pooled() as transport:
        await send(transport, "POST", f"{url}/a", content=b"{}")
        with pytest.raises(httpx.RemoteProtocolError):
            await send(transport, "POST", f"{url}/b", content=b"{}")
        assert open_count(transport) == 0
    assert len(connections) == 1


async def test_a_new_connection_closed_without_an_answer_is_not_retried() -> None:
    async def hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)

    async with raw_server(hangs_up) as (url, connections), pooled() as transport:
        with pytest.raises(httpx.RemoteProtocolError):
            await send(transport, "GET", f"{url}/a")
    assert len(connections) == 1


async def test_a_malformed_answer_is_a_protocol_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with raw_server(garbage) as (url, _), pooled() as transport:
        with pytest.raises(httpx.RemoteProtocolError):
            await send(transport, "GET", f"{url}/a")
        assert open_count(transport) == 0


async def test_an_answer_cut_short_is_a_protocol_error() -> None:
    async def truncates(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        await writer.drain()

    async with raw_server(truncates) as (url, _), pooled() as transport:
        with pytest.raises(httpx.RemoteProtocolError):
            await send(transport, "GET", f"{url}/a")
        assert open_count(transport) == 0


async def test_an_answer_without_length_ends_with_the_connection() -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of ")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"it")

    async with raw_server(until_close) as (url, _), pooled() as transport:
        response = await send(transport, "GET", f"{url}/a")
        assert response.content == b"all of it"
        assert open_count(transport) == 0


async def test_an_interim_100_continue_is_skipped() -> None:
    async def interim(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
            await writer.drain()

    async with raw_server(interim) as (url, connections), pooled() as transport:
        first = await send(transport, "GET", f"{url}/a")
        second = await send(transport, "GET", f"{url}/b")
    assert (first.status_code, first.content, second.content) == (200, b"ok", b"ok")
    assert len(connections) == 1


async def test_bytes_sent_while_a_connection_is_idle_retire_it() -> None:
    async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await read_request(reader)
            writer.write(OK)
            await writer.drain()
            await asyncio.sleep(0.02)
            writer.write(b"HTTP/1.1 200 OK\r\n")  # unasked

    async with raw_server(chatty) as (url, connections), pooled() as transport:
        await send(transport, "GET", f"{url}/a")
        await anyio.sleep(0.1)
        assert (await send(transport, "GET", f"{url}/b")).content == b"ok"
    assert len(connections) == 2


async def test_a_peer_that_stops_reading_is_a_write_timeout() -> None:
    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await asyncio.sleep(1)

    async with raw_server(never_reads) as (url, _), pooled() as transport:
        with pytest.raises(httpx.WriteTimeout):
            # More than the loopback socket buffers hold, so the transport has to wait for the peer.
            await send(transport, "POST", f"{url}/a", content=BIG * 64, timeout=httpx.Timeout(5.0, write=0.2))
        assert open_count(transport) == 0


async def test_a_header_with_a_line_break_is_refused_before_sending() -> None:
    async with pooled() as transport:
        request = httpx.Request("GET", "http://127.0.0.1:9/", headers={"x-evil": "a\r\nx-injected: 1"})
        with pytest.raises(httpx.LocalProtocolError):
            await transport.handle_async_request(request)


# -- TLS -----------------------------------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    key_pem, certificate_pem = self_signed_certificate("localhost", days=1)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate_pem)
    key_path.write_bytes(key_pem)
    return cert_path, key_path


async def test_https_with_a_trusted_certificate_keeps_alive_and_an_untrusted_one_is_refused(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                await read_request(reader)
                writer.write(OK)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        trusting = ssl.create_default_context(cafile=str(cert))
        async with pooled(ssl_context=trusting) as transport:
            answers = [await send(transport, "GET", f"https://localhost:{port}/{n}") for n in range(3)]
        assert [answer.content for answer in answers] == [b"ok"] * 3
        assert len(connections) == 1
        async with pooled() as default:  # the system's CAs: a self-signed certificate is refused
            with pytest.raises(httpx.ConnectError):
                await send(default, "GET", f"https://localhost:{port}/")
    finally:
        server.close()


def test_an_https_origin_gets_the_default_verifying_context() -> None:
    transport = PooledTransport()
    origin = transport.origin(httpx.URL("https://dynamodb.eu-west-1.amazonaws.com/"))
    context = transport.ssl_context()
    assert (origin.tls, origin.host, origin.port) == (True, "dynamodb.eu-west-1.amazonaws.com", 443)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_one_transport_serves_successive_event_loops(server: Uvicorn, peers: Peers) -> None:
    transport = PooledTransport()

    async def fetch(n: int) -> str:
        answer: str = (await send(transport, "GET", f"{server.url}/items/{n}")).json()["n"]
        return answer

    # The first loop's idle connection cannot serve the second loop; it is dropped, not used.
    assert asyncio.run(fetch(1)) == "1"
    assert asyncio.run(fetch(2)) == "2"
    assert len(peers.ports) == 2


# -- Endpoint: the same wire request with or without httpx's objects ---------------------------------


@pytest.mark.parametrize(
    ("method", "path", "params", "body"),
    [
        ("GET", "/inspect/products/p-1", None, b""),
        ("GET", "/inspect/products", {"ids": "p1,p2", "q": "a b/ü"}, b""),
        ("POST", "/inspect/reservations", None, b'{"order_id":"o-1"}'),
        ("POST", "/inspect/reservations/o-1/release", None, b""),
        ("DELETE", "/inspect/a b/ü?x=1", None, b""),
        ("PUT", "/inspect/x/../y/./z%2Fw", None, b"[]"),
    ],
)
async def test_an_endpoint_sends_what_httpx_would_send(
    server: Uvicorn, peers: Peers, method: str, path: str, params: dict[str, str] | None, body: bytes
) -> None:
    headers = {"x-service-token": "t", "x-request-id": "r-1", "content-type": "application/json"}
    timeouts = httpx.Timeout(5.0).as_dict()
    seen = []
    for transport in (PooledTransport(), httpx.AsyncHTTPTransport()):
        endpoint = Endpoint(server.url, transport)
        try:
            answer = await endpoint.request(
                method, endpoint.target(path, params), headers=dict(headers), body=body, timeouts=timeouts
            )
        finally:
            await endpoint.aclose()
        assert isinstance(answer, Answer)
        assert answer.status_code == 200
        seen.append(answer.json())
    direct, through_httpx = seen
    assert direct == through_httpx
    assert direct["body"] == body.decode()


def test_a_target_is_the_path_as_given_when_httpx_would_leave_it_alone() -> None:
    endpoint = Endpoint("http://127.0.0.1:8001/base/", PooledTransport())
    assert endpoint.target("/internal/products/p-1") == "/base/internal/products/p-1"
    assert endpoint.target("/internal/products", {"ids": "p1"}) == "/base/internal/products?ids=p1"
    assert endpoint.target("/a b") == "/base/a%20b"
    assert endpoint.target("/x/../y") == "/base/y"


async def test_an_endpoint_refuses_a_header_with_a_line_break() -> None:
    endpoint = Endpoint("http://127.0.0.1:9", PooledTransport())
    with pytest.raises(httpx.LocalProtocolError):
        await endpoint.request(
            "GET", "/", headers={"x-evil": "a\r\nx-injected: 1"}, body=b"", timeouts=httpx.Timeout(1.0).as_dict()
        )


def test_an_answer_finds_headers_in_any_case() -> None:
    answer = Answer(200, [(b"Content-Type", b"application/json"), (b"X-Amz-Crc32", b"42")], b"{}")
    assert answer.header("x-amz-crc32") == "42"
    assert answer.header("CONTENT-TYPE") == "application/json"
    assert answer.header("retry-after") is None
    assert answer.json() == {}
