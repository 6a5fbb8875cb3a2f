"""Every adapter bounds every wait by the attempt's total clock; nothing outside times it.

The router gives a self-clocked adapter no outer timeout, so a body or stream that drips
slower than the total clock but faster than the idle clock must still be cut at the total
clock by the adapter itself. A real aiohttp server on 127.0.0.1 port 0 drips the bytes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from router.config import SimProfile
from router.errors import ProviderTimeout
from router.providers import AnthropicProvider, GeminiProvider, OpenAIProvider, SimProvider
from router.providers.base import Provider
from router.types import ChatRequest, Message, ProviderCall, TextDelta, Timeouts
from router.upstream_http import UpstreamClient
from tests.helpers import serve

DRIP_S = 0.1  # a byte this often: well inside the idle clock
TOTAL_S = 0.6


async def drip(request: web.Request) -> web.StreamResponse:
    """200, then a never-ending trickle: spaces (JSON whitespace) or SSE comment lines."""
    await request.read()
    sse = request.headers.get("Accept") == "text/event-stream"  # what each adapter sends
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream" if sse else "application/json"}
    )
    await response.prepare(request)
    try:
        for _ in range(200):
            await response.write(b": tick\n" if sse else b" ")
            await asyncio.sleep(DRIP_S)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return response


@pytest.fixture
async def dripping() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", drip)
    async with serve(app) as server:
        yield str(server.make_url("")).rstrip("/")


def call(total_s: float) -> ProviderCall:
    request = ChatRequest(model="m", messages=(Message("user", "hi"),))
    timeouts = Timeouts(connect=1.0, first_byte=5.0, idle=5.0, total=total_s)
    return ProviderCall(request, "up-m", timeouts, deadline=time.monotonic() + total_s)


def adapters(session: UpstreamClient, base: str) -> list[Provider]:
    return [
        OpenAIProvider("po", session, f"{base}/v1", None),
        AnthropicProvider("pa", session, base, None),
        GeminiProvider("pg", session, f"{base}/v1beta", None),
    ]


async def test_the_simulated_adapter_is_cut_at_the_total_clock_too() -> None:
    """Nothing outside an adapter times it: the simulated provider bounds its own waits."""
    slow = SimProvider("sim", SimProfile(latency_ms=5000))
    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as info:
        await slow.complete(call(TOTAL_S))
    assert info.value.phase == "total"
    assert TOTAL_S - 0.05 <= time.monotonic() - started < TOTAL_S + 0.5
    dripping = SimProvider("sim", SimProfile(chunk_ms=5000))
    events = dripping.stream(call(TOTAL_S))
    assert isinstance(await anext(events), TextDelta)
    with pytest.raises(ProviderTimeout) as info:
        await anext(events)
    assert info.value.phase == "total"


@pytest.mark.parametrize("index", [0, 1, 2], ids=["openai", "anthropic", "gemini"])
async def test_a_dripping_body_is_cut_at_the_total_clock(dripping: str, index: int) -> None:
    async with UpstreamClient() as session:
        adapter = adapters(session, dripping)[index]
        started = time.monotonic()
        with pytest.raises(ProviderTimeout) as info:
            await adapter.complete(call(TOTAL_S))
        took = time.monotonic() - started
    assert info.value.phase == "total"
    assert TOTAL_S - 0.05 <= took < TOTAL_S + 0.5


@pytest.mark.parametrize("index", [0, 1, 2], ids=["openai", "anthropic", "gemini"])
async def test_a_stream_of_comments_is_cut_at_the_total_clock(dripping: str, index: int) -> None:
    async with UpstreamClient() as session:
        adapter = adapters(session, dripping)[index]
        started = time.monotonic()
        events = adapter.stream(call(TOTAL_S))
        with pytest.raises(ProviderTimeout) as info:
            await anext(events)
        took = time.monotonic() - started
        await events.aclose()  # type: ignore[attr-defined]
    assert info.value.phase == "total"
    assert TOTAL_S - 0.05 <= took < TOTAL_S + 0.5
