"""The listener's hardening, at the wire, against real `serve` processes: no public bind
without a token, slow heads cut, connections capped, stalled bodies kept out of the in-flight
cap, and a shutdown bounded by `server.shutdown_grace_s` that still answers what it cuts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import TEST_POLICIES

TOKEN_ENV = "HARDENING_TOKEN"
TOKEN = "tok-hardening-1"
SLOW_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\n"
CHAT = {"model": "quick", "messages": [{"role": "user", "content": "hello"}]}


def config_yaml(server: str = "", slow_ms: float = 10_000, drip_ms: float = 5_000) -> str:
    """Three simulated models: `quick`, `slow` (first byte after `slow_ms`) and `drip` (a
    stream whose chunks come `drip_ms` apart)."""
    models = "".join(
        f"""
  {name}:
    provider: {name}
    upstream_id: {name}
    vendor: V
    origin: us
    tier: standard
    context_window: 8000
    price: {{input_per_mtok: 1.0, output_per_mtok: 1.0}}"""
        for name in ("quick", "slow", "drip")
    )
    return f"""
jurisdiction: us
policies: {TEST_POLICIES}
server:
  port: 0
{server}
providers:
  quick: {{protocol: sim, region: us, sim: {{latency_ms: 1, chunk_ms: 1}}}}
  slow: {{protocol: sim, region: us, sim: {{latency_ms: {slow_ms}, chunk_ms: 1}}}}
  drip: {{protocol: sim, region: us, sim: {{latency_ms: 1, chunk_ms: {drip_ms}}}}}
models:{models}
"""


@dataclass
class Served:
    """A `serve` process, every stdout line it wrote so far (parsed), and its port."""

    process: asyncio.subprocess.Process
    port: int = 0
    lines: list[dict[str, Any]] = field(default_factory=list)
    stderr: list[bytes] = field(default_factory=list)
    pumps: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == name]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "OTEL_"))}
    return {**keep, "OTEL_SDK_DISABLED": "true", **(extra or {})}


@asynccontextmanager
async def serve_process(
    *args: str, config: Path | None = None, env: dict[str, str] | None = None, listen: bool = True
) -> AsyncIterator[Served]:
    """`python -m router serve --port 0 …`, its output pumped; waits for `server.listening`
    (or, with `listen=False`, for the process to exit)."""
    argv = ["--port", "0", *(["--config", str(config)] if config else []), *args]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        "serve",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(env),
    )
    served = Served(process)
    listening = asyncio.get_running_loop().create_future()

    async def pump_stdout() -> None:
        assert process.stdout is not None
        while raw := await process.stdout.readline():
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                served.lines.append(line)
                if line.get("event") == "server.listening" and not listening.done():
                    listening.set_result(int(line["port"]))

    async def pump_stderr() -> None:
        assert process.stderr is not None
        while raw := await process.stderr.readline():
            served.stderr.append(raw)

    served.pumps = [asyncio.create_task(pump_stdout()), asyncio.create_task(pump_stderr())]
    try:
        async with asyncio.timeout(30):
            if listen:
                waiter = asyncio.create_task(process.wait())
                done, _ = await asyncio.wait(
                    {listening, waiter}, return_when=asyncio.FIRST_COMPLETED
                )
                assert listening in done, f"serve exited: {served.lines} {served.stderr}"
                waiter.cancel()
                served.port = listening.result()
            else:
                await process.wait()
                await asyncio.gather(*served.pumps)
        yield served
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        for task in served.pumps:
            task.cancel()


def write_config(tmp_path: Path, server: str = "", **kwargs: float) -> Path:
    path = tmp_path / "router.yaml"
    path.write_text(config_yaml(server, **kwargs), encoding="utf-8")
    return path


async def metric(served: Served, name: str) -> float:
    """One sample of the process's /metrics (0 if absent), over a connection of its own."""
    async with aiohttp.ClientSession() as http, http.get(served.base + "/metrics") as response:
        text = await response.text()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def read_until_closed(reader: asyncio.StreamReader, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes (or resets) the connection, and when
    (`time.monotonic()`)."""
    data = b""
    async with asyncio.timeout(limit_s):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    return data, time.monotonic()


async def request_on(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str = "/healthz"
) -> bytes:
    """A GET on a raw keep-alive connection; its whole response (Content-Length framed)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
        return head + await reader.readexactly(length)


# --- 1. no public bind without a token ------------------------------------------------------


async def test_a_public_bind_without_a_token_is_refused_before_binding() -> None:
    """`--host 0.0.0.0` with no token and no trust: exit 2, a `server.refused` line saying how
    to fix it, and nothing bound (a port we hold is not even tried)."""
    async with serve_process("--host", "0.0.0.0", listen=False) as served:
        assert served.process.returncode == 2
        assert not served.events("server.listening")
        [refused] = served.events("server.refused")
        assert refused["level"] == "error"
        assert refused["host"] == "0.0.0.0"
        assert "token" in refused["reason"]
        assert "server.auth_token_env" in refused["fix"]
        assert "trusted_network" in refused["fix"]
        assert "--trusted-network" in refused["fix"]
        assert served.stderr == []  # `serve` writes JSON lines only, on stdout
    with socket.socket() as held:  # were it to bind, it would fail on this port (exit 1)
        held.bind(("0.0.0.0", 0))
        held.listen()
        port = held.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "router",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env=_env(),
        )
        async with asyncio.timeout(30):
            assert await process.wait() == 2


@pytest.mark.parametrize("host", ["0.0.0.0", "", "10.1.2.3", "::ffff:10.0.0.1", "example.org"])
def test_what_counts_as_public(host: str) -> None:
    from router.server_limits import bind_refusal, is_loopback

    assert not is_loopback(host)
    assert bind_refusal(host, token=False, trusted=False)
    assert bind_refusal(host, token=True, trusted=False) is None
    assert bind_refusal(host, token=False, trusted=True) is None


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
def test_what_counts_as_loopback(host: str) -> None:
    from router.server_limits import bind_refusal, is_loopback

    assert is_loopback(host)
    assert bind_refusal(host, token=False, trusted=False) is None


async def test_a_public_bind_with_a_token_serves_behind_it(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"  auth_token_env: {TOKEN_ENV}")
    async with serve_process("--host", "0.0.0.0", config=config, env={TOKEN_ENV: TOKEN}) as s:
        assert not s.events("server.public_bind")  # a token guards it: nothing to warn about
        assert s.events("server.listening")[0]["addresses"][0].startswith("0.0.0.0:")
        async with aiohttp.ClientSession() as http:
            url = s.base + "/v1/chat/completions"
            async with http.post(url, json=CHAT) as response:
                assert response.status == 401
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with http.post(url, json=CHAT, headers=headers) as response:
                assert response.status == 200


@pytest.mark.parametrize("how", ["flag", "config"])
async def test_a_public_bind_on_a_trusted_network_serves_with_a_warning(
    tmp_path: Path, how: str
) -> None:
    if how == "flag":
        context = serve_process("--host", "0.0.0.0", "--trusted-network")
    else:
        config = write_config(tmp_path, "  trusted_network: true")
        context = serve_process("--host", "0.0.0.0", config=config)
    async with context as served:
        [warning] = served.events("server.public_bind")
        assert warning["level"] == "warning"
        assert warning["trusted_network"] is True
        async with (
            aiohttp.ClientSession() as http,
            http.get(served.base + "/v1/models") as response,
        ):
            assert response.status == 200


# --- 3. heads, connections, bodies ----------------------------------------------------------


async def test_slow_and_silent_heads_are_cut_after_head_timeout(tmp_path: Path) -> None:
    """Clients that send part of a head and stop get 408 and are closed after
    `server.head_timeout_s` (one that sends nothing is closed without an answer); a keep-alive
    connection idling between requests is not theirs to cut, but its next head is timed."""
    config = write_config(tmp_path, "  head_timeout_s: 0.5")
    async with serve_process(config=config) as served:
        idle = await asyncio.open_connection("127.0.0.1", served.port)
        assert b" 200 " in (await request_on(*idle)).split(b"\r\n")[0]
        connections, opened = [], []
        for _ in range(6):  # five send part of a head, the last nothing
            connections.append(await asyncio.open_connection("127.0.0.1", served.port))
            opened.append(time.monotonic())  # (the server's clock starts after this)
        for _reader, writer in connections[:5]:
            writer.write(SLOW_HEAD)
            await writer.drain()
        results = await asyncio.gather(*(read_until_closed(r, 5) for r, _ in connections))
        for (_, closed), start in zip(results, opened, strict=True):
            assert 0.49 <= closed - start <= 1.5, closed - start
        for data, _ in results[:5]:
            assert data.startswith(b"HTTP/1.1 408 "), data
            assert json.loads(data.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
        assert results[5][0] == b""  # the silent one: closed without an answer
        # the idle keep-alive connection outlived them, and serves its next request
        assert b" 200 " in (await request_on(*idle)).split(b"\r\n")[0]
        # ...but a head that stalls on it is cut, timed from its first byte (not from the
        # connection's start, nor from the end of the last request)
        await asyncio.sleep(0.3)
        reader, writer = idle
        writer.write(SLOW_HEAD)
        sent = time.monotonic()
        data, closed = await read_until_closed(reader, 5)
        assert data.startswith(b"HTTP/1.1 408 ")
        assert 0.49 <= closed - sent <= 1.5, closed - sent
        assert await metric(served, 'router_inbound_timeouts_total{phase="head"}') == 7
        for _, writer in [*connections, idle]:
            writer.close()


def chat_request(body: bytes) -> tuple[bytes, bytes]:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    return head, body


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
        return head, await reader.readexactly(length)


async def test_heads_in_pieces_big_bodies_and_pipelining_pass(tmp_path: Path) -> None:
    """What the head clock and the head cap must not touch: a head whose blank line is split
    across reads, bodies far over 64 KiB (with their head, and after it) on one keep-alive
    connection, and pipelined requests."""
    config = write_config(tmp_path, "  head_timeout_s: 2")
    async with serve_process(config=config) as served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        head, body = chat_request(json.dumps(CHAT).encode())
        for cut in (1, 2, 3):  # the blank line split 1, 2 or 3 bytes from its end
            for piece in (head[:-cut], head[-cut:-1] or b"", head[-1:], body):
                if piece:
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.05)
            status, _ = await read_response(reader)
            assert status.startswith(b"HTTP/1.1 200 "), status
        padding = "x" * 200_000
        big = json.dumps({**CHAT, "messages": [{"role": "user", "content": padding}]}).encode()
        for together in (True, False, True):
            head, body = chat_request(big)
            if together:
                writer.write(head + body)
            else:
                writer.write(head)
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.write(body)
            await writer.drain()
            status, _ = await read_response(reader)
            assert status.startswith(b"HTTP/1.1 200 "), status
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 3)
        for _ in range(3):
            status, _ = await read_response(reader)
            assert status.startswith(b"HTTP/1.1 200 "), status
        writer.close()
        assert await metric(served, 'router_inbound_timeouts_total{phase="head"}') == 0
        refused = 'router_inbound_connections_refused_total{reason="head_too_large"}'
        assert await metric(served, refused) == 0


async def test_a_head_over_64_kib_is_refused_and_closed(tmp_path: Path) -> None:
    config = write_config(tmp_path, "  head_timeout_s: 10")
    async with serve_process(config=config) as served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(
            SLOW_HEAD + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 4000) for i in range(20))
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        sent = time.monotonic()
        data, closed = await read_until_closed(reader, 5)
        assert closed - sent < 1.5
        assert data == b"" or data.startswith(b"HTTP/1.1 431 "), data  # (a reset may eat it)
        assert (
            await metric(
                served, 'router_inbound_connections_refused_total{reason="head_too_large"}'
            )
            == 1
        )
        writer.close()


async def test_connections_past_max_connections_are_closed_at_once(tmp_path: Path) -> None:
    """With `max_connections: 3` and three open, a fourth is answered 503 and closed at once;
    once one of the three closes, a new connection is served."""
    config = write_config(tmp_path, "  head_timeout_s: 10\n  max_connections: 3")
    async with serve_process(config=config) as served:
        held = [await asyncio.open_connection("127.0.0.1", served.port) for _ in range(3)]
        for connection in held:  # keep-alive connections that served a request, now idle
            assert b" 200 " in (await request_on(*connection)).split(b"\r\n")[0]
        for _ in range(2):
            started = time.monotonic()
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
            data, closed = await read_until_closed(reader, 5)
            writer.close()
            assert closed - started < 1, closed - started  # at once (0.2 ms here)
            assert data.startswith(b"HTTP/1.1 503 "), data
            assert b"Retry-After: 1" in data
            assert json.loads(data.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "overloaded"
        # the three are untouched
        assert b" 200 " in (await request_on(*held[0])).split(b"\r\n")[0]
        held.pop()[1].close()
        await asyncio.sleep(0.2)
        assert (
            await metric(
                served, 'router_inbound_connections_refused_total{reason="max_connections"}'
            )
            == 2
        )
        assert await metric(served, "router_inbound_connections") == 3  # two held + the scrape
        for _, writer in held:
            writer.close()


async def test_stalled_bodies_do_not_take_the_inflight_slots(tmp_path: Path) -> None:
    """With `max_inflight: 2`, two clients that send a head and one byte of a 1000-byte body
    hold no slot: a whole request is served meanwhile, and each stalled one gets 408
    `request_timeout` after `server.body_timeout_s`."""
    config = write_config(tmp_path, "  max_inflight: 2\n  body_timeout_s: 0.5")
    async with serve_process(config=config) as served:
        stalled = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
            )
            await writer.drain()
            stalled.append((reader, writer))
        await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as http:
            url = served.base + "/v1/chat/completions"
            async with http.post(url, json=CHAT) as response:
                assert response.status == 200, await response.text()
        for reader, writer in stalled:
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 "), head
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
            body = json.loads(await reader.readexactly(length))
            assert body["error"]["code"] == "request_timeout"
            writer.close()


# --- 7. a shutdown bounded by its grace -----------------------------------------------------


async def test_sigterm_cuts_what_outlives_the_grace_with_an_answer_and_exits_in_it(
    tmp_path: Path,
) -> None:
    """Grace 1.5 s; a whole request whose upstream takes 10 s and a stream whose chunks come
    5 s apart are in flight at SIGTERM. New connections are refused at once; a new request on
    an open keep-alive connection gets 503 `shutting_down`; at the end of the grace the whole
    request gets 503 `shutting_down` with Retry-After, the stream an in-band `shutting_down`
    error and no [DONE]; both have their `request.completed` line; the process has exited
    within the grace (plus slack for the interpreter's exit)."""
    grace = 1.5
    config = write_config(tmp_path, f"  shutdown_grace_s: {grace}")
    async with serve_process(config=config) as served:
        url = served.base + "/v1/chat/completions"
        keepalive = await asyncio.open_connection("127.0.0.1", served.port)
        assert b" 200 " in (await request_on(*keepalive)).split(b"\r\n")[0]
        async with aiohttp.ClientSession() as http:

            async def whole() -> tuple[int, dict[str, str], dict[str, Any]]:
                async with http.post(url, json={**CHAT, "model": "slow"}) as response:
                    return response.status, dict(response.headers), await response.json()

            whole_task = asyncio.create_task(whole())
            stream = await http.post(url, json={**CHAT, "model": "drip", "stream": True})
            assert stream.status == 200
            first = await stream.content.readuntil(b"\n\n")
            assert first.startswith(b"data: {")
            async with asyncio.timeout(5):
                while await metric(served, "router_inflight_requests") < 2:
                    await asyncio.sleep(0.02)
            signalled = time.monotonic()
            served.process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(5):
                while not served.events("server.draining"):
                    await asyncio.sleep(0.01)
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", served.port)
            drained = await request_on(*keepalive, path="/v1/models")
            # (GET /v1/models is no chat request: only chat requests are refused while draining)
            assert b" 200 " in drained.split(b"\r\n")[0]
            reader, writer = keepalive
            body = json.dumps(CHAT).encode()
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503 "), head
            rest = (await stream.content.read()).decode()
            stream.release()
            status, headers, answer = await whole_task
        writer.close()
        async with asyncio.timeout(grace + 5):
            code = await served.process.wait()
        took = time.monotonic() - signalled
        await asyncio.gather(*served.pumps)
    assert code == 0
    assert took <= grace + 0.5, took
    assert status == 503
    assert answer["error"]["code"] == "shutting_down"
    assert int(headers["Retry-After"]) >= 1
    events = [json.loads(line[6:]) for line in rest.split("\n\n") if line.startswith("data: {")]
    assert events[-1]["error"]["code"] == "shutting_down"
    assert "[DONE]" not in rest
    completed = {line.get("requested_model"): line for line in served.events("request.completed")}
    assert completed["slow"]["status"] == 503
    assert completed["slow"]["error_code"] == "shutting_down"
    assert completed["drip"]["error_code"] == "shutting_down"
    [draining] = served.events("server.draining")
    assert draining["grace_s"] == grace
    [stopped] = served.events("server.stopped")
    assert stopped["cut"] == 2
    assert stopped["took_s"] <= grace
    assert stopped["closed_in_time"] is True


async def test_sigterm_with_nothing_in_flight_exits_at_once(tmp_path: Path) -> None:
    config = write_config(tmp_path, "  shutdown_grace_s: 20")
    async with serve_process(config=config) as served:
        async with (
            aiohttp.ClientSession() as http,
            http.post(served.base + "/v1/chat/completions", json=CHAT) as response,
        ):
            assert response.status == 200
        signalled = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await served.process.wait() == 0
        assert time.monotonic() - signalled < 2
        await asyncio.gather(*served.pumps)
    [stopped] = served.events("server.stopped")
    assert stopped["cut"] == 0
