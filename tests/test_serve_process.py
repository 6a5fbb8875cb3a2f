"""The real `serve` process: embedded default, the official client, a graceful SIGTERM, and its
startup line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import openai
import pytest

from router import native


@asynccontextmanager
async def serve_process(
    *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int, list[dict[str, object]]]]:
    """`python -m router serve --port 0`, waiting for its `server.listening` line."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        "serve",
        "--port",
        "0",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    lines: list[dict[str, object]] = []
    port = 0
    try:
        async with asyncio.timeout(30):
            while not port:
                raw = await process.stdout.readline()
                assert raw, (
                    (await process.stderr.read()).decode() if process.stderr else "no output"
                )
                line = json.loads(raw)
                lines.append(line)
                if line["event"] == "server.listening":
                    port = int(line["port"])  # type: ignore[call-overload]
        yield process, port, lines
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_embedded_default_serves_the_openai_client() -> None:
    """With no config the process says so loudly and serves the seed's models."""
    async with serve_process() as (_process, port, lines):
        assert any(line["event"] == "config.embedded_default" for line in lines)
        async with openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0
        ) as client:
            reply = await client.chat.completions.create(
                model="gpt-5.5", messages=[{"role": "user", "content": "hello"}]
            )
            assert reply.choices[0].message.content
            ids = {m.id for m in (await client.models.list()).data}
            assert {"claude-fable-5", "kimi-k2.6", "fusion/budget"} <= ids


async def test_sigterm_finishes_in_flight_requests_then_exits() -> None:
    """SIGTERM stops accepting, lets an in-flight stream finish, closes, and exits 0."""
    async with serve_process() as (process, port, _lines):
        async with openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0
        ) as client:
            stream = await client.chat.completions.create(
                model="claude-opus-4.8",
                messages=[{"role": "user", "content": "a long answer please"}],
                stream=True,
            )
            first = await anext(stream)
            process.send_signal(signal.SIGTERM)
            rest = [chunk async for chunk in stream]
        text = "".join((c.choices[0].delta.content or "") for c in [first, *rest] if c.choices)
        assert len(text.split()) > 5
        assert rest[-1].choices[0].finish_reason == "stop"
        async with asyncio.timeout(20):
            assert await process.wait() == 0


@pytest.mark.parametrize("switch", ["", "1"])
async def test_the_startup_line_says_whether_the_span_modules_run_compiled(switch: str) -> None:
    """`span_modules` on `server.listening`: the process's own decision (router/native.py), and
    `disabled` whenever FUSION_ROUTER_NO_EXTENSIONS is set, build or no build."""
    async with serve_process(env={native.DISABLE_ENV: switch}) as (_process, _port, lines):
        [listening] = [line for line in lines if line["event"] == "server.listening"]
        expected = native.native_status(Path(native.__file__).parent, {native.DISABLE_ENV: switch})
        assert listening["span_modules"] == expected[0].reason
        if switch:
            assert listening["span_modules"] == "disabled"
