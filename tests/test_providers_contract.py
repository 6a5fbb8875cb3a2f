"""One contract suite run against every HTTP adapter, each against its own fake server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from router.errors import (
    ProviderAuthFailed,
    ProviderError,
    ProviderMalformed,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    StreamTruncated,
)
from router.providers import AnthropicProvider, GeminiProvider, OpenAIProvider, Provider, Secret
from router.types import (
    ChatRequest,
    Completion,
    Message,
    ProviderCall,
    StreamEnd,
    TextDelta,
    Timeouts,
)
from router.upstream_http import UpstreamClient
from tests.fakes import anthropic_server, gemini_server, openai_server
from tests.fakes.script import (
    Answer,
    CutStream,
    Delay,
    Hang,
    InBandError,
    Malformed,
    Reset,
    StallStream,
    Status,
    Wall,
)

CANARY = "sk-CANARY-contract-0123456789"


@dataclass
class Protocol:
    name: str
    make_app: Callable[[Wall], web.Application]
    base_path: str
    make_provider: Callable[[UpstreamClient, str, Secret], Provider]
    key_header: str


PROTOCOLS = [
    Protocol(
        "openai",
        openai_server.make_app,
        "/v1",
        lambda s, u, k: OpenAIProvider("up", s, u, k),
        "Authorization",
    ),
    Protocol(
        "anthropic",
        anthropic_server.make_app,
        "",
        lambda s, u, k: AnthropicProvider("up", s, u, k),
        "x-api-key",
    ),
    Protocol(
        "gemini",
        gemini_server.make_app,
        "/v1beta",
        lambda s, u, k: GeminiProvider("up", s, u, k),
        "x-goog-api-key",
    ),
]


@dataclass
class Harness:
    wall: Wall
    provider: Provider
    protocol: Protocol


@pytest.fixture(name="harness", params=PROTOCOLS, ids=lambda p: p.name)
async def _harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    protocol: Protocol = request.param
    wall = Wall()
    server = TestServer(protocol.make_app(wall), host="127.0.0.1", port=0)
    await server.start_server()
    async with UpstreamClient() as session:
        base = str(server.make_url(protocol.base_path)).rstrip("/")
        yield Harness(wall, protocol.make_provider(session, base, Secret(CANARY)), protocol)
    await server.close()


def call(
    model: str = "m1", *, stream: bool = False, first_byte: float = 2.0, idle: float = 1.0
) -> ProviderCall:
    request = ChatRequest(
        model=model,
        messages=(Message("system", "Be brief."), Message("user", "What is 2+2?")),
        stream=stream,
        max_tokens=50,
        temperature=0.2,
    )
    return ProviderCall(
        request, model, Timeouts(connect=1.0, first_byte=first_byte, idle=idle, total=10.0)
    )


async def collect(provider: Provider, c: ProviderCall) -> tuple[str, StreamEnd | None]:
    text, end = "", None
    async for event in provider.stream(c):
        if isinstance(event, TextDelta):
            text += event.text
        else:
            assert end is None, "two terminal events"
            end = event
    return text, end


async def test_complete_returns_text_and_usage(harness: Harness) -> None:
    """A plain answer comes back whole, with the upstream's token usage."""
    harness.wall.script("m1", Answer("Four.", input_tokens=13, output_tokens=2))
    result = await harness.provider.complete(call())
    assert isinstance(result, Completion)
    assert result.text == "Four."
    assert (result.usage.input_tokens, result.usage.output_tokens) == (13, 2)
    assert result.finish_reason == "stop"
    assert len(harness.wall.calls) == 1
    assert harness.wall.calls[0].model == "m1"
    assert harness.wall.calls[0].stream is False


async def test_stream_yields_deltas_then_end_with_usage(harness: Harness) -> None:
    """A stream is text deltas in order, then exactly one end event with usage."""
    harness.wall.script("m1", Answer("two plus two is four", input_tokens=9, output_tokens=5))
    text, end = await collect(harness.provider, call(stream=True))
    assert text == "two plus two is four"
    assert end is not None
    assert (end.usage.input_tokens, end.usage.output_tokens) == (9, 5)
    assert harness.wall.calls[0].stream is True


async def test_system_prompt_and_params_reach_the_wire(harness: Harness) -> None:
    """The system prompt, the user turn and max_tokens arrive in the protocol's own fields."""
    harness.wall.script("m1", Answer())
    await harness.provider.complete(call())
    flat = repr(harness.wall.calls[0].body)
    assert "Be brief." in flat
    assert "What is 2+2?" in flat
    assert "50" in flat


@pytest.mark.parametrize(
    ("behaviour", "error", "outcome"),
    [
        (Status(500), ProviderUnavailable, "provider_fault"),
        (Status(503), ProviderUnavailable, "provider_fault"),
        (Status(529, "overloaded"), ProviderUnavailable, "provider_fault"),
        (Status(429, "slow down", retry_after="7"), ProviderRateLimited, "throttled"),
        (Status(400, "bad field"), ProviderRejected, "caller_fault"),
        (Status(401, "bad key"), ProviderAuthFailed, "provider_fault"),
        (Malformed(), ProviderMalformed, "provider_fault"),
        (Reset(), ProviderUnavailable, "provider_fault"),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, str | type) else None,
)
async def test_failures_are_classified(
    harness: Harness, behaviour: Any, error: type[ProviderError], outcome: str
) -> None:
    """Every upstream failure becomes the one error class the router expects."""
    harness.wall.script("m1", behaviour)
    with pytest.raises(error) as info:
        await harness.provider.complete(call())
    assert info.value.outcome == outcome
    if isinstance(behaviour, Status) and behaviour.retry_after:
        assert isinstance(info.value, ProviderRateLimited)
        assert info.value.retry_after == 7.0


async def test_context_length_is_a_caller_fault_with_its_reason(harness: Harness) -> None:
    """A context-length refusal is recognised so routing can pick a larger model."""
    harness.wall.script(
        "m1",
        Status(
            400,
            "This model's maximum context length is 8192 tokens",
            code="context_length_exceeded",
        ),
    )
    with pytest.raises(ProviderRejected) as info:
        await harness.provider.complete(call())
    assert info.value.reason == "context_length_exceeded"


async def test_streamed_failures_are_classified(harness: Harness) -> None:
    """Errors before the first chunk surface from the stream call, like non-stream ones."""
    harness.wall.script("m1", Status(503))
    with pytest.raises(ProviderUnavailable):
        await collect(harness.provider, call(stream=True))


async def test_cut_stream_is_truncated_not_success(harness: Harness) -> None:
    """A stream that closes without its terminal marker is never a success."""
    harness.wall.script("m1", CutStream(after=2))
    with pytest.raises(StreamTruncated):
        await collect(harness.provider, call(stream=True))


async def test_in_band_stream_error_is_a_provider_error(harness: Harness) -> None:
    """An error event inside a 200 stream fails the attempt."""
    harness.wall.script("m1", InBandError(after=1))
    with pytest.raises(ProviderError):
        await collect(harness.provider, call(stream=True))


async def test_silent_provider_hits_first_byte_clock(harness: Harness) -> None:
    """A provider that accepts and says nothing is cut at the first-byte timeout."""
    harness.wall.script("m1", Hang(30))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ProviderTimeout) as info:
        await harness.provider.complete(call(first_byte=0.3))
    assert loop.time() - started < 2.0
    assert info.value.phase == "first_byte"


async def test_slow_first_byte_inside_clock_succeeds(harness: Harness) -> None:
    """An answer that starts before the first-byte clock runs out is a success."""
    harness.wall.script("m1", Delay(0.2, Answer("late but fine")))
    result = await harness.provider.complete(call(first_byte=1.5))
    assert result.text == "late but fine"


async def test_stalled_stream_hits_idle_clock(harness: Harness) -> None:
    """A stream that goes silent mid-way is cut at the idle timeout."""
    harness.wall.script("m1", StallStream(after=2, seconds=30))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ProviderTimeout) as info:
        await collect(harness.provider, call(stream=True, idle=0.3))
    assert loop.time() - started < 2.0
    assert info.value.phase in ("idle", "first_byte")


async def test_key_goes_in_its_header_and_nowhere_else(harness: Harness) -> None:
    """The key travels only in the protocol's key header: not in the URL, body, repr or errors."""
    harness.wall.script("m1", Answer())
    await harness.provider.complete(call())
    received = harness.wall.calls[0]
    header_values = {k.lower(): v for k, v in received.headers.items()}
    assert CANARY in header_values[harness.protocol.key_header.lower()]
    assert CANARY not in received.path
    assert CANARY not in received.query
    assert CANARY not in repr(received.body)
    assert CANARY not in repr(harness.provider)
    harness.wall.script("m1", Status(401, "invalid key " + CANARY))
    with pytest.raises(ProviderAuthFailed) as info:
        await harness.provider.complete(call())
    assert CANARY not in str(info.value)
    assert CANARY not in repr(info.value.body())


async def test_no_redirects_are_followed(harness: Harness) -> None:
    """A 307 is a provider fault; its target is never called."""
    harness.wall.script("m1", Status(307, "moved"))
    with pytest.raises(ProviderUnavailable):
        await harness.provider.complete(call())
    assert len(harness.wall.calls) == 1
