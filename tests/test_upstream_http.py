"""The upstream HTTP/1.1 client against real sockets on 127.0.0.1 port 0.

A raw asyncio server plays each wire behaviour exactly (keep-alive, `Connection: close`,
chunked and until-close bodies, garbage, a close before or during the answer), so each test
sees the bytes a real upstream could send, not what a framework would tidy up.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trustme

from router.upstream_http import (
    BadResponse,
    ConnectFailed,
    Disconnected,
    Endpoint,
    TimedOut,
    UpstreamClient,
    render_request,
)

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request (head and Content-Length body) off the wire, b"" at EOF."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


@asynccontextmanager
async def raw_server(answer: Answer) -> AsyncIterator[tuple[Endpoint, list[int]]]:
    """A server on port 0 running `answer` per connection; yields its endpoint and a list
    that gets one entry per accepted connection."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await answer(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    endpoint = Endpoint.prepare(f"http://127.0.0.1:{port}/v1/x", {"Content-Type": "text/plain"})
    try:
        yield endpoint, connections
    finally:
        server.close()
        await server.wait_closed()


async def fetch(client: UpstreamClient, endpoint: Endpoint, body: bytes = b"hi") -> bytes:
    response = await client.post(
        endpoint, render_request(endpoint, body, None), connect_timeout=1, within=5
    )
    try:
        data = bytearray()
        while piece := await response.read_some():
            data += piece
        return bytes(data)
    finally:
        response.release()


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while request := await read_request(reader):
        body = request.split(b"\r\n\r\n", 1)[1]
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()


async def test_sequential_calls_share_one_connection() -> None:
    async with raw_server(keep_alive) as (endpoint, connections), UpstreamClient() as client:
        answers = [await fetch(client, endpoint, f"call {i}".encode()) for i in range(5)]
    assert answers == [f"call {i}".encode() for i in range(5)]
    assert len(connections) == 1


async def test_the_request_carries_prepared_and_per_call_headers() -> None:
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()

    async with raw_server(record) as (endpoint, _), UpstreamClient() as client:
        data = render_request(endpoint, b"{}", {"traceparent": "00-abc-01"})
        response = await client.post(endpoint, data, connect_timeout=1, within=5)
        assert response.status == 204
        assert await response.read_some() == b""
        response.release()
    head = seen[0].split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"POST /v1/x HTTP/1.1"
    assert head[1].startswith(b"Host: 127.0.0.1:")
    assert b"Content-Type: text/plain" in head
    assert b"traceparent: 00-abc-01" in head
    assert b"Content-Length: 2" in head
    assert any(line.startswith(b"User-Agent: fusion-router/") for line in head)
    assert b"Accept-Encoding: identity" in head  # we cannot read a compressed answer


async def test_connection_close_is_not_reused() -> None:
    async def close_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()

    async with raw_server(close_each) as (endpoint, connections), UpstreamClient() as client:
        assert [await fetch(client, endpoint) for _ in range(3)] == [b"ok"] * 3
    assert len(connections) == 3


async def test_a_body_delimited_by_the_close_is_whole() -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of ")
        await writer.drain()
        writer.write(b"it")
        await writer.drain()

    async with raw_server(until_close) as (endpoint, _), UpstreamClient() as client:
        assert await fetch(client, endpoint) == b"all of it"


async def test_chunked_body_and_an_interim_100_continue() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"data: 1\n\n", b"data: 2\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with raw_server(chunked) as (endpoint, _), UpstreamClient() as client:
        assert await fetch(client, endpoint) == b"data: 1\n\ndata: 2\n\n"


async def test_a_server_that_closed_an_idle_connection_gets_a_new_one() -> None:
    async def one_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()  # keep-alive announced, then closed while the client idles

    async with raw_server(one_then_close) as (endpoint, connections), UpstreamClient() as client:
        assert await fetch(client, endpoint) == b"ok"
        await asyncio.sleep(0.05)  # the close reaches the client
        assert await fetch(client, endpoint) == b"ok"
    assert len(connections) == 2


@pytest.mark.parametrize(
    ("answer_bytes", "error", "began"),
    [
        (b"", Disconnected, False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nonly", Disconnected, True),
        (b"SSH-2.0-OpenSSH_9.6\r\n", BadResponse, None),
    ],
    ids=["closed-before-answer", "closed-mid-body", "not-http"],
)
async def test_broken_answers_raise_their_error(
    answer_bytes: bytes, error: type[Exception], began: bool | None
) -> None:
    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer_bytes)
        await writer.drain()

    async with raw_server(broken) as (endpoint, _), UpstreamClient() as client:
        with pytest.raises(error) as caught:
            await fetch(client, endpoint)
    if began is not None:
        assert isinstance(caught.value, Disconnected)
        assert caught.value.began is began


async def test_a_refused_connection_is_connect_failed() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    endpoint = Endpoint.prepare(f"http://127.0.0.1:{port}/", {})
    async with UpstreamClient() as client:
        with pytest.raises(ConnectFailed):
            await client.post(
                endpoint, render_request(endpoint, b"", None), connect_timeout=1, within=5
            )


async def test_large_bodies_pause_the_socket_and_arrive_whole() -> None:
    size = 4 * 1024 * 1024

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // 65536):
            writer.write(b"x" * 65536)
            await writer.drain()

    async with raw_server(big) as (endpoint, _), UpstreamClient() as client:
        response = await client.post(
            endpoint, render_request(endpoint, b"", None), connect_timeout=1, within=5
        )
        await asyncio.sleep(0.2)  # the server writes ahead while nobody reads
        assert response._buffered <= 512 * 1024  # paused near the mark, not 4 MiB in memory
        total = 0
        while piece := await response.read_some():
            total += len(piece)
        response.release()
    assert total == size


def test_endpoints_refuse_other_schemes_and_header_injection() -> None:
    with pytest.raises(ValueError, match="http"):
        Endpoint.prepare("ftp://example.com/", {})
    with pytest.raises(ValueError, match="header"):
        Endpoint.prepare("http://example.com/", {"X-A": "1\r\nX-Injected: 2"})
    endpoint = Endpoint.prepare("https://example.com/v1/chat?x=1", {})
    assert endpoint.origin.port == 443
    assert endpoint.origin.tls
    assert endpoint.head.startswith(b"POST /v1/chat?x=1 HTTP/1.1\r\nHost: example.com\r\n")


async def test_a_cut_body_never_looks_complete() -> None:
    """What arrived before the cut is handed out, then the failure: never a short 'whole' body."""

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial": ')
        await writer.drain()

    async with raw_server(cut) as (endpoint, _), UpstreamClient() as client:
        response = await client.post(
            endpoint, render_request(endpoint, b"", None), connect_timeout=1, within=5
        )
        await asyncio.sleep(0.05)  # the bytes and the close have both arrived
        assert response.take() == b'{"partial": '
        assert not response.at_end
        with pytest.raises(Disconnected):
            await response.read_some()
        response.release()


async def test_bytes_past_the_answer_close_the_connection() -> None:
    async def extra(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")
            await writer.drain()

    async with raw_server(extra) as (endpoint, connections), UpstreamClient() as client:
        assert await fetch(client, endpoint) == b"ok"
        assert await fetch(client, endpoint) == b"ok"
    assert len(connections) == 2  # the first connection was not trusted again


async def test_a_long_lived_connection_keeps_its_header_allowance_per_answer() -> None:
    """The header size limit applies to each answer, not to a connection's lifetime."""

    async def many_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        filler = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 200) for i in range(20))
        while await read_request(reader):
            writer.write(b"HTTP/1.1 200 OK\r\n" + filler + b"Content-Length: 2\r\n\r\nok")
            await writer.drain()

    async with raw_server(many_headers) as (endpoint, connections), UpstreamClient() as client:
        for _ in range(40):  # 40 answers of ~4.3 KB of headers: 170 KB over the connection
            assert await fetch(client, endpoint) == b"ok"
    assert len(connections) == 1


async def test_chunked_trailers_do_not_leak_into_the_next_answer() -> None:
    answers = iter(
        [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n"
            b"X-Trailer: leaked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ]
    )

    async def two(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            writer.write(next(answers))
            await writer.drain()

    async with raw_server(two) as (endpoint, connections), UpstreamClient() as client:
        assert await fetch(client, endpoint) == b"ok"
        data = render_request(endpoint, b"", None)
        response = await client.post(endpoint, data, connect_timeout=1, within=5)
        assert "X-Trailer" not in response.headers
        assert response.headers["Content-Length"] == "2"
        assert await response.read_some() == b"ok"
        response.release()
    assert len(connections) == 1


async def test_a_reset_cuts_a_body_delimited_by_the_close() -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"partial": ')
        await writer.drain()
        await asyncio.sleep(0.05)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST, not FIN

    async with raw_server(reset) as (endpoint, _), UpstreamClient() as client:
        with pytest.raises(Disconnected) as caught:
            await fetch(client, endpoint)
    assert caught.value.began


async def test_transfer_coding_framing_follows_llhttp() -> None:
    """`chunked` framed only as the last coding; another last coding runs until the close."""

    async def coded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\nwhole body")
        await writer.drain()

    async with raw_server(coded) as (endpoint, _), UpstreamClient() as client:
        assert await fetch(client, endpoint) == b"whole body"


@pytest.mark.parametrize(
    "answer_bytes",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (200 * 1024),  # a header line that never ends
    ],
    ids=["switching-protocols", "endless-header"],
)
async def test_unusable_heads_are_bad_responses(answer_bytes: bytes) -> None:
    async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer_bytes)
        await writer.drain()
        await asyncio.sleep(1)  # no close: the client must give up on its own

    async with raw_server(send) as (endpoint, _), UpstreamClient() as client:
        with pytest.raises(BadResponse):
            await asyncio.wait_for(fetch(client, endpoint), 0.9)


async def test_a_close_after_an_interim_answer_is_before_the_answer() -> None:
    async def interim(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()

    async with raw_server(interim) as (endpoint, _), UpstreamClient() as client:
        with pytest.raises(Disconnected) as caught:
            await fetch(client, endpoint)
    assert not caught.value.began  # nothing of the answer itself had come


async def test_keep_alive_timeout_shortens_reuse() -> None:
    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            writer.write(b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=2\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async with raw_server(short) as (endpoint, connections), UpstreamClient() as client:
        assert await fetch(client, endpoint) == b"ok"
        assert await fetch(client, endpoint) == b"ok"  # at once: reused
        await asyncio.sleep(1.1)  # past timeout=2 minus a second of margin: not reused
        assert await fetch(client, endpoint) == b"ok"
    assert len(connections) == 2


async def test_a_burst_s_connections_are_dropped_once_stale() -> None:
    """After 8 concurrent calls, steady single calls keep one connection; the other seven
    close once past the reuse window instead of staying open unused."""

    async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            writer.write(
                b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1.2\r\nContent-Length: 2\r\n\r\nok"
            )
            await writer.drain()

    async with raw_server(ok) as (endpoint, connections), UpstreamClient() as client:
        assert await asyncio.gather(*(fetch(client, endpoint) for _ in range(8))) == [b"ok"] * 8
        assert len(connections) == 8
        await asyncio.sleep(0.3)  # past the 0.2 s reuse window (timeout 1.2 minus 1)
        assert await fetch(client, endpoint) == b"ok"  # a fresh connection; the stale ones go
        idle = next(iter(client._pools.values())).idle
        assert len(idle) == 1
        assert sum(not c.closed for c in client._open) == 1  # the seven stale ones were closed


async def test_https_with_a_trusted_certificate_reuses_its_connection() -> None:
    """Production upstreams are HTTPS: verified against the client's trust store, by name."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await keep_alive(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)

    async def resolve(host: str, port: int) -> str:
        return "127.0.0.1" if host == "localhost" else host

    try:
        good = Endpoint.prepare(f"https://localhost:{port}/v1/x", {})
        async with UpstreamClient(ssl_context=trusting, resolve=resolve) as client:
            assert await fetch(client, good, b"one") == b"one"
            assert await fetch(client, good, b"two") == b"two"
        assert len(connections) == 1
        wrong_name = Endpoint.prepare(f"https://127.0.0.1:{port}/v1/x", {})  # cert is for localhost
        async with UpstreamClient(ssl_context=trusting) as client:
            with pytest.raises(ConnectFailed) as caught:
                await fetch(client, wrong_name)
        assert caught.value.certificate
    finally:
        server.close()
        await server.wait_closed()


def sse_tail(gap: float, tail: bytes = b"0\r\n\r\n") -> Answer:
    """Chunked SSE answers whose terminator comes `gap` seconds after the `[DONE]` event."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            event = b"data: [DONE]\n\n"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(event), event)
            )
            await writer.drain()
            await asyncio.sleep(gap)
            writer.write(tail)
            await writer.drain()

    return answer


async def read_to_done(client: UpstreamClient, endpoint: Endpoint, *, expect_end: bool) -> None:
    """One streamed call, read until its `[DONE]` event and released there, as adapters do."""
    response = await client.post(
        endpoint, render_request(endpoint, b"{}", None), connect_timeout=1, within=5
    )
    seen = bytearray()
    while b"[DONE]" not in seen:
        seen += await response.read_some()
    if expect_end:
        response.expect_end()
    response.release()


async def test_a_stream_released_at_its_terminal_event_keeps_its_connection() -> None:
    async with raw_server(sse_tail(0.02)) as (endpoint, connections), UpstreamClient() as client:
        for _ in range(3):
            await read_to_done(client, endpoint, expect_end=True)
            await asyncio.sleep(0.05)  # the terminator arrives after the release
        assert len(connections) == 1


async def test_a_stream_released_before_its_end_was_expected_is_closed() -> None:
    async with raw_server(sse_tail(0.02)) as (endpoint, connections), UpstreamClient() as client:
        for _ in range(2):
            await read_to_done(client, endpoint, expect_end=False)
            await asyncio.sleep(0.05)
        assert len(connections) == 2  # an abandoned stream's upstream is told to stop


@pytest.mark.parametrize(
    "tail",
    [
        b"",  # the terminator never comes: closed when the drain window ends
        b"4000\r\n" + b"x" * 0x4000 + b"\r\n" + b"4000\r\n" + b"x" * 0x4000 + b"\r\n",  # too much
        b"0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",  # bytes past the end
    ],
)
async def test_a_drain_that_does_not_end_cleanly_closes_the_connection(tail: bytes) -> None:
    async with (
        raw_server(sse_tail(0.0, tail)) as (endpoint, connections),
        UpstreamClient(drain_s=0.05) as client,
    ):
        await read_to_done(client, endpoint, expect_end=True)
        await asyncio.sleep(0.15)
        await read_to_done(client, endpoint, expect_end=True)
        assert len(connections) == 2


def trickle(gaps: list[float]) -> Answer:
    """A chunked answer whose head comes after gaps[0] s and each next chunk after the next gap."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(gaps[0])
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        for i, gap in enumerate(gaps[1:]):
            await asyncio.sleep(gap)
            writer.write(b"1\r\n%d\r\n" % i)
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    return answer


async def test_a_head_later_than_its_clock_times_out_and_closes() -> None:
    async with raw_server(trickle([5.0])) as (endpoint, _), UpstreamClient() as client:
        data = render_request(endpoint, b"{}", None)
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimedOut):
            await client.post(endpoint, data, connect_timeout=1, within=0.1)
        assert asyncio.get_running_loop().time() - started < 1.0
        assert not client._pools[endpoint.origin].idle  # the late answer cannot reach a next call


async def test_a_stalled_body_times_out_on_its_read_clock() -> None:
    async with raw_server(trickle([0.0, 0.0, 5.0])) as (endpoint, _), UpstreamClient() as client:
        data = render_request(endpoint, b"{}", None)
        response = await client.post(endpoint, data, connect_timeout=1, within=1)
        assert await response.read_some(within=1) == b"0"
        with pytest.raises(TimedOut):
            await response.read_some(within=0.1)
        response.release()


async def test_a_read_clock_longer_than_an_earlier_one_is_honoured() -> None:
    # the first read arms the one timer for 50 ms; the second read, allowed a second, gets its
    # bytes after 200 ms: the early timer must find its deadline moved and wait on
    gaps = [0.0, 0.01, 0.2, 0.0]
    async with raw_server(trickle(gaps)) as (endpoint, _), UpstreamClient() as client:
        data = render_request(endpoint, b"{}", None)
        response = await client.post(endpoint, data, connect_timeout=1, within=1)
        body = bytearray(await response.read_some(within=0.05))
        while piece := await response.read_some(within=1):
            body += piece
        response.release()
    assert bytes(body) == b"012"
