"""What the caller sent reaches each upstream protocol as sent, or translated (issue 16, first
part): text parts keep their boundaries; `max_completion_tokens` keeps its name on OpenAI."""

from __future__ import annotations

import dataclasses
from typing import Any

import aiohttp
import pytest

from router.providers import Provider
from router.types import ChatRequest, Message, ProviderCall, Timeouts
from tests.fakes.script import Answer
from tests.helpers import sidecar
from tests.test_providers_contract import Harness, _harness  # noqa: F401  # the fixture

PARTS = ("First line.", "Second line.")


def _call(request: ChatRequest) -> ProviderCall:
    return ProviderCall(request, "m1", Timeouts(connect=1.0, first_byte=2.0, idle=1.0, total=10.0))


async def _sent(harness: Harness, request: ChatRequest) -> Any:
    """The body the upstream received for `request` (whole, then streamed: the same)."""
    harness.wall.script("m1", Answer("ok"))
    provider: Provider = harness.provider
    await provider.complete(_call(request))
    events = provider.stream(_call(dataclasses.replace(request, stream=True)))
    async for _ in events:
        pass
    whole, streamed = (c.body for c in harness.wall.calls[-2:])
    for body in (whole, streamed):
        body.pop("stream", None)
        body.pop("stream_options", None)
    assert whole == streamed
    return whole


async def test_text_parts_keep_their_boundaries(harness: Harness) -> None:
    """A list of text parts is sent as parts (blocks), never glued into one string."""
    request = ChatRequest(
        model="m1",
        messages=(Message("user", "\n".join(PARTS), PARTS),),
    )
    body = await _sent(harness, request)
    if harness.protocol.name in {"openai", "anthropic"}:
        assert body["messages"][0]["content"] == [{"type": "text", "text": t} for t in PARTS]
    else:
        assert body["contents"][0]["parts"] == [{"text": t} for t in PARTS]


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_the_output_cap_keeps_the_callers_name_on_openai(
    harness: Harness, field: str
) -> None:
    """OpenAI's reasoning models take only `max_completion_tokens`: it is never rewritten;
    the other protocols get their own name for it."""
    request = ChatRequest(
        model="m1",
        messages=(Message("user", "hi"),),
        max_tokens=77,
        max_tokens_field=field,  # type: ignore[arg-type]
    )
    body = await _sent(harness, request)
    if harness.protocol.name == "openai":
        assert body[field] == 77
        other = "max_tokens" if field == "max_completion_tokens" else "max_completion_tokens"
        assert other not in body
    elif harness.protocol.name == "anthropic":
        assert body["max_tokens"] == 77
    else:
        assert body["generationConfig"]["maxOutputTokens"] == 77


async def test_the_openai_sdk_request_reaches_openai_as_sent() -> None:
    """Through the sidecar with the official client: parts and `max_completion_tokens`."""
    async with sidecar() as s:
        s.wall.script("up-model-a", Answer("fine"))
        reply = await s.openai().chat.completions.create(
            model="m-a",
            messages=[{"role": "user", "content": [{"type": "text", "text": t} for t in PARTS]}],
            max_completion_tokens=40,
        )
        assert reply.choices[0].message.content == "fine"
        body = s.wall.calls[-1].body
        assert body["messages"][0]["content"] == [{"type": "text", "text": t} for t in PARTS]
        assert body["max_completion_tokens"] == 40
        assert "max_tokens" not in body


async def test_both_output_caps_at_once_is_a_400() -> None:
    async with sidecar() as s, aiohttp.ClientSession() as http:
        async with http.post(
            f"{s.url}/v1/chat/completions",
            json={
                "model": "m-a",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 5,
                "max_completion_tokens": 6,
            },
        ) as response:
            body = await response.json()
        assert response.status == 400
        assert body["error"]["code"] == "invalid_request"
        assert s.wall.calls == []
