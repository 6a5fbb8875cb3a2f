"""Log hygiene at the wire: every line a real `serve` process writes is JSON through the redaction,
and none carries a token, a key, a prompt or a completion, whatever the clients and upstreams do.

The canaries below are put where traffic carries them (the inbound token in `Authorization`,
the upstream keys in the provider's environment variables, the prompt in the body, the
completion in the fake upstream's answer); the scans look for them, and for the marker
`CANARY` they all share, in every line of stdout and stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp.http_exceptions import BadHttpMessage, BadStatusLine
from hypothesis import given, settings
from hypothesis import strategies as st

from router import logs
from tests.fakes import openai_server
from tests.fakes.script import (
    Answer,
    CutStream,
    InBandError,
    Malformed,
    MalformedEvent,
    Reset,
    Status,
    Wall,
)
from tests.helpers import serve, two_provider_yaml

MARKER = "canary"  # in every canary, in any case: no line may contain it
TOKEN = "tok-CANARY-inbound-9d1f2e7a"  # the sidecar's own token (server.auth_token_env)
WRONG_TOKEN = "tok-CANARY-wrong-1a2b3c4d"
PROMPT = "violet heron CANARY-PROMPT-5b7c0e"
COMPLETION = "CANARY-COMPLETION-3e8d1f"
KEY_A = "sk-CANARY-upstream-a-4f6a1c9e"
KEY_B = "sk-CANARY-upstream-b-8b2d0e7f"
CANARIES = (TOKEN, WRONG_TOKEN, PROMPT, COMPLETION, KEY_A, KEY_B, "CANARY-PROMPT", MARKER)

TOKEN_ENV = "HYGIENE_TOKEN"
SERVER_YAML = f"server:\n  auth_token_env: {TOKEN_ENV}\n  max_body_bytes: 4096\n"


# --- a real `serve` process, every line of its output kept -----------------------------------


@dataclass
class Served:
    """A running `python -m router serve` and every line it has written so far."""

    process: asyncio.subprocess.Process
    port: int
    stdout: list[bytes] = field(default_factory=list)
    stderr: list[bytes] = field(default_factory=list)
    pumps: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self) -> list[bytes]:
        """SIGTERM, wait for the exit (0), and return every line of stdout and stderr."""
        self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await self.process.wait() == 0
            await asyncio.gather(*self.pumps)
        return [*self.stdout, *self.stderr]


# breakers that never open: every fault of the matrix reaches the fake upstream
BREAKER_YAML = "    breaker: {fail_max: 1000, rate_min_calls: 100000, demote_min_calls: 100000}\n"


def write_config(tmp_path: Path, upstream: str) -> Path:
    """The two-provider config of `tests.helpers`, behind the canary token."""
    text = two_provider_yaml(upstream, SERVER_YAML).replace(
        "    region: us\n", "    region: us\n" + BREAKER_YAML
    )
    path = tmp_path / "router.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@asynccontextmanager
async def serve_process(config: Path, level: str = "info") -> AsyncIterator[Served]:
    """`python -m router serve --port 0 --config …` with the canary token and keys set."""
    env = {**os.environ, TOKEN_ENV: TOKEN, "TEST_KEY_A": KEY_A, "TEST_KEY_B": KEY_B}
    env["ROUTER_LOG_LEVEL"] = level
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        "serve",
        "--port",
        "0",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        limit=1 << 24,  # a line of any length is read whole
    )
    listening: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def pump(stream: asyncio.StreamReader | None, lines: list[bytes]) -> None:
        assert stream is not None
        while raw := await stream.readline():
            lines.append(raw)
            if listening.done():
                continue
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                if isinstance(line, dict) and line.get("event") == "server.listening":
                    listening.set_result(int(line["port"]))
        if not listening.done():
            listening.set_exception(AssertionError(f"serve exited: {lines!r}"))

    served = Served(process, 0)
    served.pumps = [
        asyncio.create_task(pump(process.stdout, served.stdout)),
        asyncio.create_task(pump(process.stderr, served.stderr)),
    ]
    try:
        async with asyncio.timeout(30):
            served.port = await listening
        yield served
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await asyncio.gather(*served.pumps, return_exceptions=True)


def scan(lines: list[bytes]) -> list[dict[str, Any]]:
    """Every line parsed; fails on a line that is not one JSON object or carries a canary."""
    events = []
    for raw in lines:
        text = raw.decode("utf-8")
        try:
            event = json.loads(text)
        except ValueError:
            pytest.fail(f"a line that is not JSON: {text!r}")
        assert isinstance(event, dict), text
        # the raw line, and its decoded form (a canary spelt with JSON escapes is still one)
        for form in (text.lower(), json.dumps(event, ensure_ascii=False).lower()):
            for canary in CANARIES:
                assert canary.lower() not in form, f"{canary!r} in {text!r}"
        events.append(event)
    return events


def walk(value: Any) -> Iterator[Any]:
    """`value` and everything nested in it."""
    yield value
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk(v)


async def exchange(port: int, data: bytes, *, close: bool = False) -> bytes:
    """Send raw bytes on a fresh connection; the answer (or what came before the server hung up).

    With `close`, the client hangs up right after sending (a truncated body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if close:
            return b""
        async with asyncio.timeout(5):
            return await reader.read()
    except ConnectionError:
        return b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def chat_body(model: str = "m-a", *, stream: bool = False) -> bytes:
    return json.dumps(
        {"model": model, "stream": stream, "messages": [{"role": "user", "content": PROMPT}]}
    ).encode()


# --- 4: malformed HTTP never reaches the logs raw ----------------------------------------------


def raw(*head: bytes, body: bytes = b"", eol: bytes = b"\r\n") -> bytes:
    """An HTTP/1.1 message from its head's lines and a body."""
    return eol.join(head) + eol + eol + body


def malformed_requests() -> list[tuple[str, bytes]]:
    """Requests aiohttp's parser refuses, each quoting the token or the prompt."""
    body = chat_body()
    post = b"POST /v1/chat/completions HTTP/1.1"
    host = b"Host: x"
    auth = f"Authorization: Bearer {TOKEN}".encode()
    length = f"Content-Length: {len(body)}".encode()
    chunked = b"Transfer-Encoding: chunked"
    chunks = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    token, prompt = TOKEN.encode(), PROMPT.encode()
    return [
        # bare LF: aiohttp's message quotes the head and the start of the body
        ("bare LF", raw(post, host, auth, length, body=body, eol=b"\n")),
        ("bare LF in the head", raw(post, host + b"\n" + auth, length, body=body)),
        ("invalid method", raw(b"P\x01ST /v1/chat/completions HTTP/1.1", auth, body=body)),
        ("invalid version", raw(b"POST /v1/" + prompt.replace(b" ", b"%20") + b" HTTP/9.x", auth)),
        ("space in the target", raw(b"POST /v1/chat " + token + b" HTTP/1.1", host)),
        ("invalid header name", raw(post, host, b"X-Bad\x01: " + token, length, body=body)),
        ("NUL in a header value", raw(post, host, auth + b"\x00" + prompt)),
        ("header without colon", raw(post, host, prompt, auth)),
        ("smuggling: CL and TE", raw(post, host, auth, length, chunked, body=chunks)),
        ("smuggling: two lengths", raw(post, host, auth, length, b"Content-Length: 3", body=body)),
        ("bad Content-Length", raw(post, host, auth, b"Content-Length: " + prompt, body=body)),
        (
            "unknown transfer coding",
            raw(
                post,
                host,
                auth,
                b"Connection: close",
                b"Transfer-Encoding: " + prompt.replace(b" ", b"-") + b", chunked",
                body=chunks,
            ),
        ),
        ("oversized header", raw(post, host, auth, b"X-Big: " + (prompt + b" ") * 400)),
        ("oversized request line", raw(b"GET /v1/models?" + (token + b"&") * 400 + b" HTTP/1.1")),
        ("invalid chunk size", raw(post, host, auth, chunked, body=b"ZZ" + prompt + b"\r\n")),
        ("chunk without CRLF", raw(post, host, auth, chunked, body=b"4\r\n" + body + b"\r\n")),
    ]


def bad_json_requests() -> list[tuple[str, bytes, str]]:
    """Well-formed HTTP, bodies the router refuses: (name, body, content type)."""
    prompt = json.dumps(PROMPT)
    said = f'[{{"role": "user", "content": {prompt}}}]'
    bodies = [
        ("truncated JSON", chat_body()[:-3]),
        ("not JSON", PROMPT.encode()),
        ("duplicate key", f'{{"model": "m-a", {prompt}: 1, {prompt}: 2}}'.encode()),
        ("unknown field", f'{{"model": "m-a", "messages": {said}, {prompt}: {prompt}}}'.encode()),
        (
            "forbidden field",
            f'{{"model": "m-a", "api_key": "{KEY_A}", "messages": {said}}}'.encode(),
        ),
        ("wrong role", f'{{"model": "m-a", "messages": [{{"role": {prompt}}}]}}'.encode()),
        (
            "content part",
            f'{{"model": "m-a", "messages": [{{"role": "user", "content": [{{"type": {prompt}}}]}}]}}'.encode(),
        ),
        ("invalid UTF-8", b'{"model": "m-a", "messages": "\xff' + PROMPT.encode() + b'"}'),
        ("lone surrogate", f'{{"model": "m-a", "messages": "\\ud800{PROMPT}"}}'.encode()),
        ("NaN", f'{{"model": "m-a", "temperature": NaN, "messages": {said}}}'.encode()),
    ]
    form = ("form", f"model=m-a&content={PROMPT}".encode(), "application/x-www-form-urlencoded")
    return [*((name, body, "application/json") for name, body in bodies), form]


@pytest.mark.parametrize("level", ["info", "debug"])
async def test_malformed_http_and_bad_json_reach_the_logs_as_json_without_request_bytes(
    tmp_path: Path, level: str
) -> None:
    """aiohttp's parser errors quote the request (bare LF: its head and the start of its body);
    they are logged as `server.bad_request` with class and status only, on stdout, as JSON (at
    debug level too, where aiohttp also reports a first request's bad method)."""
    async with serve_process(write_config(tmp_path, "http://127.0.0.1:9"), level) as served:
        port = served.port
        for name, data in malformed_requests():
            answer = await exchange(port, data)
            assert answer.startswith(b"HTTP/1.") or not answer, (name, answer[:200])
            assert b" 200 " not in answer.split(b"\r\n", 1)[0], name
        # the first request of a connection with a bad method is logged at debug; the second
        # request on a kept-alive connection at error level (now `server.bad_request`, warning)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            writer.write(b"GARBAGE /" + TOKEN.encode() + b" HTTP/1.1\r\n\r\n")
            assert b"400 Bad Request" in await reader.read()
        writer.close()
        # a chunked body cut short: the client hangs up in the middle of a chunk
        body = chat_body()
        head = (
            b"POST /v1/chat/completions HTTP/1.1",
            b"Host: x",
            f"Authorization: Bearer {TOKEN}".encode(),
        )
        chunk = f"{len(body) + 40:x}\r\n".encode() + body
        await exchange(port, raw(*head, b"Transfer-Encoding: chunked", body=chunk), close=True)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            for name, data, content_type in bad_json_requests():
                async with session.post(
                    "/v1/chat/completions",
                    data=data,
                    headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type},
                ) as response:
                    assert 400 <= response.status < 500, (name, await response.text())
            # the sidecar still serves after all that
            async with session.get(
                "/v1/models", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as response:
                assert response.status == 200
        await asyncio.sleep(0.2)  # the hung-up chunked request finishes on the server
        events = scan(await served.stop())
    assert not served.stderr, served.stderr
    bad = [e for e in events if e["event"] == logs.HTTP_BAD_REQUEST]
    assert len(bad) >= 10, events
    assert all(e["status"] == 400 and e["error"] for e in bad), bad
    assert {e["level"] for e in bad} == ({"warning", "debug"} if level == "debug" else {"warning"})
    assert not any("exception" in e for e in bad)
    assert events[-1]["event"] == "server.stopped"
    assert not any(isinstance(x, str) and x == "locals" for e in events for x in walk(e))


# --- 5: tracebacks keep frames, never locals or quoted traffic --------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo what `logs.configure` does to the process (structlog, logging, warnings, hooks)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    hooks = (warnings.showwarning, sys.excepthook, threading.excepthook, sys.unraisablehook)
    try:
        yield
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)
        warnings.showwarning, sys.excepthook, threading.excepthook, sys.unraisablehook = hooks


def _handle(prompt: str) -> None:
    completion = f"{COMPLETION} {prompt}"  # a local holding request and response content
    raise ValueError(f"the handler failed after {len(completion)} characters")


def _parse(head: bytes) -> None:
    raise BadStatusLine(f"Bad status line:\n  b'{head.decode()}'\n    ^")


def _read(body: bytes) -> None:
    try:
        _parse(body)
    except BadHttpMessage as exc:
        raise RuntimeError("the request could not be read") from exc


@pytest.mark.usefixtures("restore_logging")
def test_json_tracebacks_have_frames_but_no_locals_and_no_quoted_request() -> None:
    """`log.exception` (as `request.unhandled_error` does) renders frames (file, line,
    function), never the locals holding the prompt, nor a parser exception's quote."""
    out = io.StringIO()
    logs.configure("info", json=True, stream=out)
    log = logs.get_logger()
    prompt = PROMPT  # a local of the logging frame as well
    try:
        _handle(prompt)
    except ValueError:
        log.exception("request.unhandled_error", path="/v1/chat/completions")
    head = f"POST / HTTP/1.1\nAuthorization: Bearer {TOKEN}\n\n{PROMPT}".encode()
    try:
        _read(head)
    except RuntimeError:
        log.exception("request.unhandled_error", path="/v1/chat/completions")
    first, second = scan([line.encode() for line in out.getvalue().splitlines()])
    assert first["event"] == "request.unhandled_error"
    (stack,) = first["exception"]
    assert stack["exc_type"] == "ValueError"
    assert [f["name"] for f in stack["frames"]][-1] == "_handle"
    assert all({"filename", "lineno", "name"} <= set(f) for f in stack["frames"])
    assert not any(x == "locals" for x in walk(first))
    effect, cause = second["exception"]  # the one logged first, then its cause
    assert effect["exc_type"] == "RuntimeError"
    assert effect["exc_value"] == "the request could not be read"
    assert cause["exc_type"] == "BadStatusLine"
    assert cause["exc_value"].startswith("BadStatusLine 400 (message withheld")
    assert [f["name"] for f in cause["frames"]][-2:] == ["_read", "_parse"]


@pytest.mark.usefixtures("restore_logging")
def test_console_tracebacks_have_frames_but_no_locals_and_no_quoted_request() -> None:
    """The console renderer (a TTY) prints the standard traceback text: frames, no locals (no
    rich or better-exceptions pretty traceback), the parser's quote withheld."""
    out = io.StringIO()
    logs.configure("info", json=False, stream=out)
    log = logs.get_logger()
    head = f"POST / HTTP/1.1\nAuthorization: Bearer {TOKEN}\n\n{PROMPT}".encode()
    try:
        _read(head)
    except RuntimeError:
        log.exception("request.unhandled_error")
    try:
        _handle(PROMPT)
    except ValueError:
        log.exception("request.unhandled_error")
    text = out.getvalue()
    assert "Traceback (most recent call last)" in text
    assert "in _parse" in text
    assert "in _handle" in text
    assert "BadStatusLine 400 (message withheld" in text
    for canary in CANARIES:
        assert canary.lower() not in text.lower(), canary


# --- the standard library, warnings and uncaught exceptions ----------------------------------


@pytest.mark.usefixtures("restore_logging")
def test_warnings_and_stdlib_records_become_json_lines() -> None:
    """After `logs.configure`, `warnings.warn` and any `logging` logger write JSON lines."""
    out = io.StringIO()
    with warnings.catch_warnings():  # restores the warnings hook `configure` sets
        warnings.simplefilter("always")
        logs.configure("info", json=True, stream=out)
        warnings.warn("a library is unhappy", RuntimeWarning, stacklevel=1)
    logging.getLogger("asyncio").error("Fatal error on transport", exc_info=OSError("broken"))
    logging.getLogger("aiohttp.server").debug("dropped at info level")
    head = f"POST / HTTP/1.1\nAuthorization: Bearer {TOKEN}\n\n{PROMPT}"
    logging.getLogger("aiohttp.server").error(
        "Error handling request from %s", "10.0.0.9", exc_info=BadHttpMessage(head)
    )
    logging.getLogger("asyncio").error("Exception in callback: %r", BadHttpMessage(head))
    loop = asyncio.new_event_loop()
    try:  # what asyncio logs for a failed task nobody awaited: its repr quotes the exception
        future = loop.create_future()
        future.set_exception(BadHttpMessage(head))
        future.exception()
        loop.call_exception_handler(
            {
                "message": "Task exception was never retrieved",
                "exception": future.exception(),
                "future": future,
            }
        )
    finally:
        loop.close()
    lines = [x.encode() for x in out.getvalue().splitlines()]
    warning, transport, bad, callback, task = scan(lines)
    assert warning["event"] == logs.PYTHON_WARNING
    assert warning["category"] == "RuntimeWarning"
    assert warning["message"] == "a library is unhappy"
    assert warning["level"] == "warning"
    assert transport["event"] == logs.PYTHON_LOG
    assert transport["logger"] == "asyncio"
    assert transport["message"] == "Fatal error on transport"
    assert transport["exception"][0]["exc_type"] == "OSError"
    assert bad == {
        "event": logs.HTTP_BAD_REQUEST,
        "error": "BadHttpMessage",
        "status": 400,
        "remote": "10.0.0.9",
        "level": "warning",
        "timestamp": bad["timestamp"],
    }
    assert callback["message"].startswith("Exception in callback: BadHttpMessage 400 (message")
    assert task["event"] == logs.PYTHON_LOG
    assert task["message"].startswith("Task exception was never retrieved\nfuture: <Future")
    assert "BadHttpMessage 400 (message withheld" in task["message"]
    assert task["level"] == "error"
    (stack,) = task["exception"]
    assert stack["exc_type"] == "BadHttpMessage"
    assert stack["exc_value"].startswith("BadHttpMessage 400 (message withheld")


PROCESS_SCRIPT = f"""
import gc, logging, threading, warnings
from aiohttp.http_exceptions import BadStatusLine
from router import logs

logs.configure("info")
warnings.warn("a deprecated call", UserWarning)
logging.getLogger("aiohttp.web").warning("a web warning")

def crash():
    raise BadStatusLine("b'{TOKEN}'")

thread = threading.Thread(target=crash, name="worker")
thread.start()
thread.join()

class Leaky:
    def __del__(self):
        raise ValueError("in __del__")

Leaky()
gc.collect()
prompt = "{PROMPT}"
raise SystemError("the end")
"""


def test_a_process_writes_only_json_for_warnings_and_uncaught_exceptions() -> None:
    """In a process that called `logs.configure`: warnings, library loggers, an exception in a
    thread, one in `__del__`, and the one that ends the process are JSON lines on stdout."""
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", PROCESS_SCRIPT],
        capture_output=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 1
    assert result.stderr == b"", result.stderr.decode()
    events = scan(result.stdout.splitlines())
    assert [(e["event"], e.get("where")) for e in events] == [
        (logs.PYTHON_WARNING, None),
        (logs.PYTHON_LOG, None),
        (logs.PYTHON_UNCAUGHT, "thread"),
        (logs.PYTHON_UNCAUGHT, "unraisable"),
        (logs.PYTHON_UNCAUGHT, "main"),
    ]
    thread, unraisable, main = events[2:]
    assert thread["thread"] == "worker"
    assert thread["exception"][0]["exc_type"] == "BadStatusLine"
    assert unraisable["object"] == "function"
    assert unraisable["exception"][0]["exc_value"] == "in __del__"
    assert main["level"] == "critical"
    assert main["exception"][0]["exc_value"] == "the end"
    assert not any(x == "locals" for e in events for x in walk(e))


# --- the whole fault matrix through a real process -------------------------------------------


@dataclass
class Matrix:
    """The requests of the fault matrix, and what each answered."""

    session: aiohttp.ClientSession
    wall: Wall
    answers: dict[str, int] = field(default_factory=dict)

    async def chat(
        self,
        name: str,
        *,
        model: str = "m-a",
        stream: bool = False,
        body: bytes | None = None,
        token: str = TOKEN,
    ) -> None:
        async with self.session.post(
            "/v1/chat/completions",
            data=chat_body(model, stream=stream) if body is None else body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        ) as response:
            with contextlib.suppress(aiohttp.ClientPayloadError):
                await response.read()
            self.answers[name] = response.status


@pytest.mark.parametrize("level", ["info", "debug"])
async def test_every_line_of_the_fault_matrix_is_json_without_canaries(
    tmp_path: Path, level: str
) -> None:
    """A real `serve` in front of a fake OpenAI upstream; the inbound token, the upstream keys,
    the prompt and the completion are canaries. Every fault in turn, then SIGTERM: every line
    of stdout and stderr is JSON and carries none of them."""
    wall = Wall()
    echo = f"the upstream quotes the request: {PROMPT}"
    async with serve(openai_server.make_app(wall)) as upstream:
        config = write_config(tmp_path, str(upstream.make_url("")).rstrip("/"))
        async with (
            serve_process(config, level) as served,
            aiohttp.ClientSession(f"http://127.0.0.1:{served.port}") as session,
        ):
            m = Matrix(session, wall)
            answer = Answer(f"the answer is {COMPLETION} indeed")
            wall.script("up-model-a", answer)
            await m.chat("whole")
            await m.chat("streamed", stream=True)
            wall.script("up-model-a", Status(500, echo))
            await m.chat("upstream 500")
            wall.script("up-model-a", [Status(429, echo, retry_after="1"), answer])
            await m.chat("upstream 429 with Retry-After")
            wall.script("up-model-a", Reset())
            await m.chat("upstream reset")
            wall.script("up-model-a", CutStream(after=2, text=f"{COMPLETION} two three four"))
            await m.chat("cut stream", stream=True)
            wall.script("up-model-a", CutStream(after=1, text=f"{COMPLETION} two", abort=True))
            await m.chat("aborted stream", stream=True)
            wall.script("up-model-a", Malformed())
            await m.chat("malformed JSON body")
            await m.chat("malformed JSON event", stream=True)
            wall.script("up-model-a", MalformedEvent(answer=Answer(f"{COMPLETION} b c d")))
            await m.chat("malformed event mid-stream", stream=True)
            wall.script("up-model-a", InBandError(text=f"{COMPLETION} two three"))
            await m.chat("in-band error", stream=True)
            wall.script("up-model-a", Status(401, f"bad key {KEY_A}"))
            wall.script("up-model-b", Status(403, echo))
            await m.chat("upstream auth failure")
            await m.chat("route: both fail", model="both")
            wall.script("up-model-a", answer)
            await m.chat("bad inbound JSON", body=chat_body()[:-2])
            await m.chat("unknown model", model="no-such-model")
            await m.chat("wrong token", token=WRONG_TOKEN)
            await m.chat("oversized body", body=chat_body()[:-3] + b" " * 5000 + b"]}")
            # a request the HTTP parser refuses, with the token and the prompt in it
            bare_lf = dict(malformed_requests())["bare LF"]
            m.answers["bare LF"] = int((await exchange(served.port, bare_lf)).split()[1])
            # the client goes away in the middle of a stream
            wall.script("up-model-a", Answer(f"{COMPLETION} " + "word " * 40, chunk_delay=0.02))
            async with session.post(
                "/v1/chat/completions",
                data=chat_body(stream=True),
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            ) as response:
                assert response.status == 200
                await response.content.readany()
                response.close()
            m.answers["client disconnect"] = 200
            await asyncio.sleep(0.3)  # the sidecar notices and cancels the upstream call
            lines = await served.stop()
    events = scan(lines)
    assert not served.stderr, served.stderr
    # what each fault answered (the exact statuses of upstream faults are the error tree's)
    throttled = m.answers.pop("upstream 429 with Retry-After")
    assert throttled in (200, 429)  # retried after Retry-After, or refused: the retry budget's
    refused = {"upstream 500", "upstream reset"}
    refused |= {"malformed JSON body", "malformed JSON event", "upstream auth failure"}
    refused |= {"route: both fail"}
    assert all(m.answers[name] >= 400 for name in refused), m.answers
    assert {name: m.answers[name] for name in m.answers.keys() - refused} == {
        "whole": 200,
        "streamed": 200,
        "cut stream": 200,  # streams that began answer 200 and end in an error event
        "aborted stream": 200,
        "malformed event mid-stream": 200,
        "in-band error": 200,
        "bad inbound JSON": 400,
        "unknown model": 404,
        "wrong token": 401,
        "oversized body": 413,
        "bare LF": 400,
        "client disconnect": 200,
    }, m.answers
    # the canaries did go where they belong: the keys and the prompt reached the upstream
    assert wall.calls[0].headers["Authorization"] == f"Bearer {KEY_A}"
    assert PROMPT in json.dumps(wall.calls[0].body)
    completed = [e for e in events if e["event"] == "request.completed"]
    assert len(completed) >= len(m.answers) - 1
    assert events[-1]["event"] == "server.stopped"


_plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.sampled_from(
        ["sk-abcdef1234", "AIzaSyAAAAAAAA", "Bearer tok_123456", "x sk-ant-abcdefg y"]
    )
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3)
        | st.tuples(children, children)
        | st.dictionaries(
            st.sampled_from(["key", "Token", "note", "x-api-key", "Authorization", "model"]),
            children,
            max_size=3,
        )
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["event", "model", "API_KEY", "Authorization", "password", "path", "n", "tags", "x"]
        ),
        _plain_values,
        max_size=8,
    )
)
def test_redaction_masks_as_the_plain_scrub_of_every_value(event: dict[str, Any]) -> None:
    """`redact` (its common cases inline) gives what the plain version gives: a secret key's
    value masked, every other value through `_scrub`."""
    plain = {
        key: logs.REDACTED if key.lower() in logs._SECRET_KEYS else logs._scrub(value)
        for key, value in event.items()
    }
    assert logs.redact(None, "info", dict(event)) == plain


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 253_402_300_799 * 10**9 + 999_999_999), min_size=1, max_size=6))
def test_timestamps_are_what_datetime_writes_in_utc_with_microseconds(times: list[int]) -> None:
    """`utc_timestamper` (the date and time of day formatted once a second) stamps what
    `datetime` writes for the same instant, in UTC with all six digits, in any order of
    calls (a second it remembered never leaks into another's)."""
    clock = iter(times)
    stamp = logs.utc_timestamper(lambda: next(clock))
    for now in times:
        second, nanoseconds = divmod(now, 1_000_000_000)
        expected = (
            datetime.fromtimestamp(second, tz=UTC)
            .replace(microsecond=nanoseconds // 1000)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z")
        )
        assert stamp(None, "info", {})["timestamp"] == expected


@pytest.mark.usefixtures("restore_logging")
def test_lines_logged_from_several_threads_are_each_written_whole() -> None:
    """Each line is one write under one lock: threads logging at once never interleave."""
    out = io.StringIO()
    logs.configure("info", json=True, stream=out)
    log = logs.get_logger()

    def chatter(thread: int) -> None:
        for n in range(200):
            log.info("test.line", thread=thread, n=n, padding="x" * 300)

    workers = [threading.Thread(target=chatter, args=(t,)) for t in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert sorted((line["thread"], line["n"]) for line in lines) == [
        (t, n) for t in range(4) for n in range(200)
    ]


@pytest.mark.usefixtures("restore_logging")
def test_without_a_stream_lines_go_to_stdout_as_it_is_when_written() -> None:
    """`configure()` without a stream writes to whatever `sys.stdout` is at each line (as
    structlog's `PrintLogger` did): a caller that redirects stdout gets the lines."""
    logs.configure("info", json=True)
    redirected = io.StringIO()
    with contextlib.redirect_stdout(redirected):
        logs.get_logger().info("test.redirected", n=1)
    (line,) = redirected.getvalue().splitlines()
    assert json.loads(line)["event"] == "test.redirected"
