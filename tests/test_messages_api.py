"""The Anthropic Messages API (issue 17): the official `anthropic` SDK against `/v1/messages`,
whole and streamed (its stream helper assembles the final message), over an OpenAI-protocol
and an Anthropic-protocol fake and through a fusion panel: the exact bodies the upstreams
received, Anthropic's event sequence, and Anthropic's error shapes and SDK exception classes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from router.app import create_app
from router.errors import (
    AllUpstreamsUnavailable,
    DeadlineExceeded,
    InvalidRequest,
    MethodNotAllowed,
    Overloaded,
    PayloadTooLarge,
    PolicyDenied,
    RateLimited,
    RouterError,
    StreamTruncated,
    Unauthorized,
    UnknownModel,
)
from router.inbound import Limits
from router.messages_in import THINKING_EFFORT, validate_messages
from router.messages_out import ANTHROPIC_MESSAGES, MessageEvents
from router.providers.anthropic_request import THINKING_BUDGET
from router.token_estimate import IMAGE_TOKENS
from router.types import (
    Completion,
    LogprobsDelta,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from tests.fakes import anthropic_server, gemini_server, openai_server
from tests.fakes.script import Answer, CutStream, Reasoned, Status, ToolCalls, Wall
from tests.fusion_setup import fusion_sidecar
from tests.helpers import config_from_yaml, serve

TOKEN = "tok-messages-api-7f3a"
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
HI: list[Any] = [{"role": "user", "content": "hi"}]
CLAUDE = "up-claude-sonnet-4-5"  # takes thinking budgets (Claude 4.7 and later take none)
GEMINI = "up-gemini"


def _yaml(openai_url: str, anthropic_url: str, gemini_url: str, policies: Path, server: str) -> str:
    return f"""
jurisdiction: us
policies: {policies}
retry: {{transient_base_s: 0.01, transient_cap_s: 0.02, throttle_base_s: 0.01, throttle_cap_s: 0.02}}
{server}
providers:
  po:
    protocol: openai
    base_url: {openai_url}/v1
    allow_http: true
    region: us
    timeouts: {{connect_s: 1, first_byte_s: 2, idle_s: 2, total_s: 5}}
  pa:
    protocol: anthropic
    base_url: {anthropic_url}
    allow_http: true
    region: us
    timeouts: {{connect_s: 1, first_byte_s: 2, idle_s: 2, total_s: 5}}
  pg:
    protocol: gemini
    base_url: {gemini_url}/v1beta
    allow_http: true
    region: us
    timeouts: {{connect_s: 1, first_byte_s: 2, idle_s: 2, total_s: 5}}
models:
  gpt:
    provider: po
    upstream_id: up-gpt
    vendor: VendorA
    origin: us
    tier: strong
    context_window: 200000
    max_output_tokens: 64000
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
  claude:
    provider: pa
    upstream_id: {CLAUDE}
    vendor: VendorB
    origin: us
    tier: strong
    context_window: 200000
    max_output_tokens: 64000
    price: {{input_per_mtok: 3.0, output_per_mtok: 15.0}}
  gem:
    provider: pg
    upstream_id: {GEMINI}
    vendor: Google
    origin: us
    tier: strong
    context_window: 200000
    max_output_tokens: 64000
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
  blocked:
    provider: po
    upstream_id: up-blocked
    vendor: VendorC
    origin: us
    tier: strong
    context_window: 200000
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
routes:
  claude-sonnet-4-5: [claude, gpt]
"""


POLICY = """jurisdiction: us
version: "messages-1"
default: allow
rules:
  - id: deny-blocked
    effect: deny
    reason: export restricted
    match:
      models: [blocked]
"""


@dataclass
class Bed:
    """A sidecar in front of an OpenAI fake (`gpt`, `blocked`), an Anthropic fake (`claude`)
    and a Gemini fake (`gem`), all logging to `wall`."""

    url: str
    wall: Wall
    clients: list[anthropic.AsyncAnthropic] = field(default_factory=list)

    def client(self, api_key: str = TOKEN) -> anthropic.AsyncAnthropic:
        c = anthropic.AsyncAnthropic(base_url=self.url, api_key=api_key, max_retries=0)
        self.clients.append(c)
        return c

    def sent(self, index: int = -1) -> Any:
        """The body the upstreams received last (or at `index`)."""
        return self.wall.calls[index].body


@asynccontextmanager
async def bed(*, token: bool = False) -> AsyncIterator[Bed]:
    wall = Wall()
    server = "server: {auth_token_env: MESSAGES_TOKEN}" if token else ""
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "us.yaml").write_text(POLICY)
        async with (
            serve(openai_server.make_app(wall)) as po,
            serve(anthropic_server.make_app(wall)) as pa,
            serve(gemini_server.make_app(wall)) as pg,
        ):
            loaded = config_from_yaml(
                _yaml(
                    str(po.make_url("")).rstrip("/"),
                    str(pa.make_url("")).rstrip("/"),
                    str(pg.make_url("")).rstrip("/"),
                    Path(folder),
                    server,
                )
            )
            app = create_app(loaded, environ={"MESSAGES_TOKEN": TOKEN})
            async with serve(app) as sidecar:
                b = Bed(str(sidecar.make_url("")).rstrip("/"), wall)
                try:
                    yield b
                finally:
                    for c in b.clients:
                        await c.close()


async def _post(url: str, body: Any, path: str = "/v1/messages") -> tuple[int, bytes, Any]:
    async with aiohttp.ClientSession() as http, http.post(f"{url}{path}", json=body) as r:
        return r.status, await r.read(), r.headers


def _events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """An SSE body as (event name, data) pairs; every event has both lines."""
    out = []
    for chunk in raw.decode().split("\n\n"):
        if not chunk:
            continue
        event, data = chunk.split("\n")
        assert event.startswith("event: "), chunk
        assert data.startswith("data: "), chunk
        out.append((event[len("event: ") :], json.loads(data[len("data: ") :])))
    return out


def _shape(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Each event in short: its type, a block's index and kind, a delta's kind."""
    out = []
    for name, data in events:
        assert name == data["type"]  # the event line names the data's type, as Anthropic's do
        if name == "content_block_start":
            out.append(f"start {data['index']} {data['content_block']['type']}")
        elif name == "content_block_delta":
            out.append(f"delta {data['index']} {data['delta']['type']}")
        elif name == "content_block_stop":
            out.append(f"stop {data['index']}")
        else:
            out.append(name)
    return out


# --- whole ------------------------------------------------------------------------------------


async def test_a_whole_answer_is_an_anthropic_message_and_the_upstream_gets_openai_fields() -> None:
    async with bed() as b:
        b.wall.script("up-gpt", Answer("Hello there.", input_tokens=12, output_tokens=3))
        raw = await b.client().messages.with_raw_response.create(
            model="gpt",
            max_tokens=300,
            system="Be brief.",
            messages=HI,
            stop_sequences=["END"],
            metadata={"user_id": "user-42"},
            extra_body={"temperature": 0.5, "top_p": 0.9},
        )
        message = await raw.parse()
        assert b.sent() == {
            "model": "up-gpt",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hi"},
            ],
            "stream": False,
            "max_completion_tokens": 300,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop": ["END"],
            "user": "user-42",
        }
    assert message.id == f"msg_{raw.headers['x-request-id']}"
    assert (message.type, message.role, message.model) == ("message", "assistant", "gpt")
    assert [(c.type, c.text) for c in message.content] == [("text", "Hello there.")]  # type: ignore[union-attr]
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 3)
    assert message.model_extra is not None
    assert message.model_extra["router"]["provider"] == "po"
    assert raw.headers["x-router-model"] == "gpt"


async def test_an_agents_model_name_as_a_route_reaches_the_anthropic_upstream() -> None:
    """A route named like a Claude model (as agents hard-code them) serves Anthropic's own
    protocol: the body the Anthropic fake checked and took."""
    async with bed() as b:
        b.wall.script(CLAUDE, Answer("From Claude."))
        message = await b.client().messages.create(
            model="claude-sonnet-4-5",
            max_tokens=256,
            system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        )
        assert b.sent() == {
            "model": CLAUDE,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "max_tokens": 256,
            "stream": False,
            "system": "Be brief.",
        }
    assert message.content[0].type == "text"
    assert message.content[0].text == "From Claude."
    assert message.model == "claude"


# --- streamed ---------------------------------------------------------------------------------


async def test_a_stream_is_anthropics_event_sequence() -> None:
    """Reasoning, text and a tool call from an OpenAI upstream: one block each, numbered in
    order, each `event:` line naming its data's type; usage and the stop reason at the end."""
    async with bed() as b:
        calls = (("call_1", "get_weather", '{"city": "Oslo"}'),)
        b.wall.script(
            "up-gpt", Reasoned(thinking="Think.", then=ToolCalls(calls=calls, text="Checking."))
        )
        status, raw, headers = await _post(
            b.url,
            {"model": "gpt", "max_tokens": 100, "stream": True, "messages": HI, "tools": [WEATHER]},
        )
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    events = _events(raw)
    assert _shape(events) == [
        "message_start",
        "ping",
        "start 0 thinking",
        *["delta 0 thinking_delta"] * 3,
        "stop 0",
        "start 1 text",
        "delta 1 text_delta",
        "stop 1",
        "start 2 tool_use",
        *["delta 2 input_json_delta"] * 3,
        "stop 2",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert (start["content"], start["model"], start["stop_reason"]) == ([], "gpt", None)
    tool = events[10][1]["content_block"]
    assert tool == {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert set(delta["usage"]) == {"input_tokens", "output_tokens"}
    assert delta["router"]["provider"] == "po"  # our extension object rides on message_delta


@pytest.mark.parametrize(
    ("model", "upstream"), [("gpt", "up-gpt"), ("claude", CLAUDE), ("gem", GEMINI)]
)
async def test_the_stream_helper_assembles_what_the_whole_answer_holds(
    model: str, upstream: str
) -> None:
    """Thinking (signed by Anthropic; another vendor's unsigned), text and a tool call's input
    (with Gemini's thought signature): on each upstream protocol, the SDK's stream helper
    builds the same content as the whole answer."""
    async with bed() as b:
        b.wall.script(upstream, Reasoned(then=ToolCalls(text="Checking.")))
        client = b.client()
        ask: dict[str, Any] = {
            "model": model,
            "max_tokens": 4000,
            "messages": HI,
            "tools": [WEATHER],
            "thinking": {"type": "enabled", "budget_tokens": 2048},
        }
        whole = await client.messages.create(**ask)
        async with client.messages.stream(**ask) as stream:
            streamed = await stream.get_final_message()
    content = [c.model_dump(exclude_none=True) for c in whole.content]
    assert [c.model_dump(exclude_none=True) for c in streamed.content] == content
    signature = "sig-fake-1" if model == "claude" else ""
    call: dict[str, Any] = {
        "type": "tool_use",
        "id": "call_1",
        "name": "get_weather",
        "input": {"city": "Oslo"},
    }
    if model == "gem":
        google = {"thought_signature": base64.b64encode(b"sig-fake-1").decode()}
        call["extra_content"] = {"google": google}
    assert content == [
        {
            "type": "thinking",
            "thinking": "The user wants the weather. I should call the tool.",
            "signature": signature,
        },
        {"type": "text", "text": "Checking."},
        call,
    ]
    assert whole.stop_reason == streamed.stop_reason == "tool_use"
    assert streamed.usage.output_tokens > 0


async def test_the_primary_down_before_the_first_byte_the_fallback_streams() -> None:
    async with bed() as b:
        b.wall.script(CLAUDE, Status(503))
        b.wall.script("up-gpt", Answer("From the fallback."))
        client = b.client()
        async with client.messages.stream(
            model="claude-sonnet-4-5", max_tokens=100, messages=HI
        ) as stream:
            final = await stream.get_final_message()
            headers = stream.response.headers
    assert final.content[0].type == "text"
    assert final.content[0].text == "From the fallback."
    assert final.model == "gpt"
    assert headers["x-router-attempted"].split(",")[-1] == "po"
    assert headers["x-router-attempted"].startswith("pa")


async def test_a_stream_cut_upstream_ends_with_anthropics_in_band_error() -> None:
    async with bed() as b:
        b.wall.script("up-gpt", CutStream(after=2))
        status, raw, _ = await _post(
            b.url, {"model": "gpt", "max_tokens": 100, "stream": True, "messages": HI}
        )
        assert status == 200
        events = _events(raw)
        assert _shape(events)[:3] == ["message_start", "ping", "start 0 text"]
        name, error = events[-1]
        assert name == "error"
        assert error["type"] == "error"
        assert error["error"]["type"] == "api_error"
        assert error["error"]["code"] == "stream_truncated"
        with pytest.raises(anthropic.APIStatusError) as raised:
            async with b.client().messages.stream(model="gpt", max_tokens=100, messages=HI) as s:
                await s.get_final_message()
        assert raised.value.type == "api_error"


# --- tools ------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_tool_use_loop_over_an_openai_upstream(stream: bool) -> None:
    async with bed() as b:
        b.wall.script("up-gpt", [ToolCalls(), Answer("It is sunny in Oslo.")])
        client = b.client()
        ask: dict[str, Any] = {"model": "gpt", "max_tokens": 500, "tools": [WEATHER]}
        question = {"role": "user", "content": "Weather in Oslo?"}

        async def turn(messages: list[Any]) -> anthropic.types.Message:
            if not stream:
                return await client.messages.create(messages=messages, **ask)
            async with client.messages.stream(messages=messages, **ask) as s:
                return await s.get_final_message()

        first = await turn([question])
        assert first.stop_reason == "tool_use"
        call = first.content[-1]
        assert call.type == "tool_use"
        assert (call.id, call.name, call.input) == ("call_1", "get_weather", {"city": "Oslo"})
        result = {"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21 C"}
        final = await turn(
            [
                question,
                {"role": "assistant", "content": first.content},
                {"role": "user", "content": [result, {"type": "text", "text": "Thanks!"}]},
            ]
        )
        assert final.content[0].type == "text"
        assert final.content[0].text == "It is sunny in Oslo."
        assert final.stop_reason == "end_turn"
        assert b.sent()["messages"] == [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "content": "Sunny, 21 C", "tool_call_id": "call_1"},
            {"role": "user", "content": "Thanks!"},
        ]
        assert b.sent()["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "The weather in a city",
                    "parameters": WEATHER["input_schema"],
                },
            }
        ]


async def test_a_tool_use_loop_with_thinking_over_an_anthropic_upstream() -> None:
    """The signed thinking block and the tool_use go back as they came; an `is_error` result
    is marked in its text."""
    async with bed() as b:
        b.wall.script(CLAUDE, [Reasoned(then=ToolCalls()), Answer("No data.")])
        client = b.client()
        ask: dict[str, Any] = {
            "model": "claude",
            "max_tokens": 8000,
            "tools": [WEATHER],
            "thinking": {"type": "enabled", "budget_tokens": 2048},
        }
        first = await client.messages.create(messages=HI, **ask)
        result = {
            "type": "tool_result",
            "tool_use_id": "call_1",
            "content": [{"type": "text", "text": "station offline"}],
            "is_error": True,
        }
        final = await client.messages.create(
            messages=[
                *HI,
                {"role": "assistant", "content": first.content},
                {"role": "user", "content": [result]},
            ],
            **ask,
        )
        sent = b.sent()
    assert final.content[0].type == "text"
    assert final.content[0].text == "No data."
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert sent["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {
                    "type": "thinking",
                    "thinking": "The user wants the weather. I should call the tool.",
                    "signature": "sig-fake-1",
                },
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "call_1",
                    "content": "Error: station offline",
                }
            ],
        },
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_tool_use_loop_over_gemini_sends_the_thought_signature_back(stream: bool) -> None:
    """Gemini's thought signature rides on the tool_use block (`extra_content`, ours) and goes
    back to Gemini with the call."""
    signature = base64.b64encode(b"sig-fake-1").decode()
    async with bed() as b:
        b.wall.script(GEMINI, [Reasoned(then=ToolCalls()), Answer("Sunny.")])
        client = b.client()
        ask: dict[str, Any] = {"model": "gem", "max_tokens": 500, "tools": [WEATHER]}
        if stream:
            async with client.messages.stream(messages=HI, **ask) as s:
                first = await s.get_final_message()
        else:
            first = await client.messages.create(messages=HI, **ask)
        call = first.content[-1]
        assert call.type == "tool_use"
        assert call.model_extra == {"extra_content": {"google": {"thought_signature": signature}}}
        result = {"type": "tool_result", "tool_use_id": call.id, "content": "21 C"}
        final = await client.messages.create(
            messages=[
                *HI,
                {"role": "assistant", "content": first.content},
                {"role": "user", "content": [result]},
            ],
            **ask,
        )
        contents = b.sent()["contents"]
    assert final.content[0].type == "text"
    assert final.content[0].text == "Sunny."
    assert contents[1]["parts"][-1] == {
        "functionCall": {"id": "call_1", "name": "get_weather", "args": {"city": "Oslo"}},
        "thoughtSignature": signature,
    }


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        (
            {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
            {
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                "parallel_tool_calls": False,
            },
        ),
        (
            {"type": "auto", "disable_parallel_tool_use": True},
            {"tool_choice": "auto", "parallel_tool_calls": False},
        ),
    ],
)
async def test_tool_choice_becomes_openais(choice: dict[str, Any], sent: dict[str, Any]) -> None:
    async with bed() as b:
        await b.client().messages.create(
            model="gpt",
            max_tokens=100,
            messages=HI,
            tools=[WEATHER],
            tool_choice=choice,  # type: ignore[arg-type]
        )
        body = b.sent()
    assert {k: body[k] for k in ("tool_choice", "parallel_tool_calls") if k in body} == sent


# --- images, system, thinking, structured output ---------------------------------------------

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
IMAGES: list[Any] = [
    {"type": "text", "text": "What are these?"},
    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
]


async def test_images_reach_openai_as_image_url_parts_and_anthropic_as_image_blocks() -> None:
    async with bed() as b:
        client = b.client()
        for model in ("gpt", "claude"):
            await client.messages.create(
                model=model, max_tokens=100, messages=[{"role": "user", "content": IMAGES}]
            )
        to_openai, to_anthropic = b.sent(0), b.sent(1)
    assert to_openai["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What are these?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            ],
        }
    ]
    assert to_anthropic["messages"] == [{"role": "user", "content": IMAGES}]


async def test_an_image_reaches_gemini_as_inline_data() -> None:
    async with bed() as b:
        await b.client().messages.create(
            model="gem", max_tokens=100, messages=[{"role": "user", "content": IMAGES[:2]}]
        )
        contents = b.sent()["contents"]
    assert contents == [
        {
            "role": "user",
            "parts": [
                {"text": "What are these?"},
                {"inlineData": {"mimeType": "image/png", "data": PNG}},
            ],
        }
    ]


async def test_system_blocks_are_one_system_message_of_parts() -> None:
    async with bed() as b:
        await b.client().messages.create(
            model="gpt",
            max_tokens=100,
            system=[
                {"type": "text", "text": "You are terse."},
                {
                    "type": "text",
                    "text": "Answer in French.",
                    "cache_control": {"type": "ephemeral"},
                },
            ],
            messages=HI,
        )
        sent = b.sent()
    assert sent["messages"][0] == {
        "role": "system",
        "content": [
            {"type": "text", "text": "You are terse."},
            {"type": "text", "text": "Answer in French."},
        ],
    }


@pytest.mark.parametrize(
    ("thinking", "config", "effort"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, None, "minimal"),
        ({"type": "enabled", "budget_tokens": 5000}, None, "low"),
        ({"type": "enabled", "budget_tokens": 8192}, None, "medium"),
        ({"type": "enabled", "budget_tokens": 20000, "display": "summarized"}, None, "high"),
        ({"type": "enabled", "budget_tokens": 40000}, None, "xhigh"),
        ({"type": "adaptive"}, None, "high"),
        ({"type": "adaptive"}, {"effort": "low"}, "low"),
        ({"type": "adaptive"}, {"effort": "max"}, "xhigh"),
        (None, {"effort": "medium"}, "medium"),
        ({"type": "disabled"}, None, None),
    ],
)
async def test_thinking_becomes_reasoning_effort(
    thinking: dict[str, Any] | None, config: dict[str, Any] | None, effort: str | None
) -> None:
    async with bed() as b:
        body: dict[str, Any] = {"model": "gpt", "max_tokens": 50000, "messages": HI}
        if thinking is not None:
            body["thinking"] = thinking
        if config is not None:
            body["output_config"] = config
        status, raw, _ = await _post(b.url, body)
        assert status == 200, raw
        assert b.sent().get("reasoning_effort") == effort


def test_the_budget_table_is_the_anthropic_adapters_read_backwards() -> None:
    """Each effort's budget (what the adapter sends) maps back to that effort."""
    assert {e: b for b, e in THINKING_EFFORT} == THINKING_BUDGET


async def test_a_thinking_budget_reaches_an_anthropic_upstream_as_a_budget() -> None:
    async with bed() as b:
        await b.client().messages.create(
            model="claude",
            max_tokens=20000,
            messages=HI,
            thinking={"type": "enabled", "budget_tokens": 10000},
        )
        sent = b.sent()
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 8192}  # "medium"
    assert sent["max_tokens"] == 20000


async def test_output_config_format_is_a_json_schema_named_output() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    async with bed() as b:
        b.wall.script("up-gpt", Answer('{"a": 1}'))
        message = await b.client().messages.create(
            model="gpt",
            max_tokens=100,
            messages=HI,
            output_config={"format": {"type": "json_schema", "schema": schema}},
        )
        sent = b.sent()
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema},
    }
    assert message.content[0].type == "text"
    assert json.loads(message.content[0].text) == {"a": 1}


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"top_k": 5}, "top_k", "unsupported_parameter"),
        ({"container": "c1"}, "container", "unsupported_parameter"),
        ({"temperature": 1.5}, "temperature", "invalid_request"),
        ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences", "invalid_request"),
        ({"metadata": {"team": "x"}}, "metadata.team", "unsupported_parameter"),
        (
            {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
            "tools[0].type",
            "unsupported_parameter",
        ),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 512}},
            "thinking.budget_tokens",
            "invalid_request",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "messages[0].content[0]",
            "unsupported_content",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "x", "flavour": 1}]}
                ]
            },
            "messages[0].content[0].flavour",
            "unsupported_parameter",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t9"}]}
                ]
            },
            "messages[0].content[0].tool_use_id",
            "invalid_request",
        ),
        (
            {"messages": [{"role": "user", "content": "x", "api_key": "sk-1"}]},
            "messages[0].api_key",
            "forbidden_field",
        ),
    ],
)
async def test_what_is_not_carried_is_a_400_naming_it_before_any_call(
    body: dict[str, Any], param: str, code: str
) -> None:
    async with bed() as b:
        with pytest.raises(anthropic.BadRequestError) as raised:
            await b.client().messages.create(
                model="gpt", max_tokens=100, messages=HI, extra_body=body
            )
        assert b.wall.calls == []
    error = raised.value
    assert error.type == "invalid_request_error"
    assert error.body["type"] == "error"  # type: ignore[index]
    assert (error.body["error"]["param"], error.body["error"]["code"]) == (param, code)  # type: ignore[index]


async def test_a_request_the_sdk_would_not_send_gets_anthropics_error_shape() -> None:
    async with bed() as b:
        no_max = await _post(b.url, {"model": "gpt", "messages": HI})
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{b.url}/v1/messages", data=b"null", headers={"Content-Type": "application/json"}
            ) as r:
                not_object = (r.status, await r.json())
            async with http.get(f"{b.url}/v1/messages") as r:
                wrong_method = (r.status, await r.json())
            async with http.post(
                f"{b.url}/v1/messages",
                data=b'{"model": "gpt", "model": "gpt"}',
                headers={"Content-Type": "application/json"},
            ) as r:
                twice = (r.status, await r.json())
    assert no_max[0] == 400
    assert json.loads(no_max[1])["error"] == {
        "type": "invalid_request_error",
        "message": "'max_tokens' is required: a positive integer",
        "code": "invalid_request",
        "param": "max_tokens",
    }
    assert not_object[0] == 400
    assert not_object[1]["error"]["code"] == "invalid_json"
    assert wrong_method == (
        405,
        {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": "method GET is not allowed here",
                "code": "method_not_allowed",
            },
        },
    )
    assert twice[0] == 400
    assert twice[1]["error"]["code"] == "duplicate_key"


async def test_a_wrong_x_api_key_is_a_401_authentication_error() -> None:
    async with bed(token=True) as b:
        with pytest.raises(anthropic.AuthenticationError) as raised:
            await b.client(api_key="wrong").messages.create(
                model="gpt", max_tokens=100, messages=HI
            )
        assert raised.value.type == "authentication_error"
        assert raised.value.body["error"]["code"] == "unauthorized"  # type: ignore[index]
        assert b.wall.calls == []
        answer = await b.client().messages.create(model="gpt", max_tokens=100, messages=HI)
        assert answer.content


async def test_a_policy_denial_is_a_403_permission_error_naming_the_rule() -> None:
    async with bed() as b:
        with pytest.raises(anthropic.PermissionDeniedError) as raised:
            await b.client().messages.create(model="blocked", max_tokens=100, messages=HI)
        assert b.wall.calls == []  # the denied model never reached its upstream
    error = raised.value
    assert error.type == "permission_error"
    assert "deny-blocked" in str(error.api_message)
    assert error.body["error"]["rule_id"] == "deny-blocked"  # type: ignore[index]
    assert error.body["error"]["code"] == "policy_denied"  # type: ignore[index]


async def test_an_unknown_model_is_a_404_not_found_error() -> None:
    async with bed() as b:
        with pytest.raises(anthropic.NotFoundError) as raised:
            await b.client().messages.create(model="claude-opus-9", max_tokens=100, messages=HI)
    assert raised.value.type == "not_found_error"
    assert raised.value.body["error"]["code"] == "unknown_model"  # type: ignore[index]


async def test_upstreams_asking_to_wait_is_a_429_rate_limit_error() -> None:
    async with bed() as b:
        b.wall.script("up-gpt", Status(429, retry_after="1"))
        b.wall.script(CLAUDE, Status(429, retry_after="1"))
        with pytest.raises(anthropic.RateLimitError) as limited:
            await b.client().messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=HI)
    assert limited.value.type == "rate_limit_error"
    assert limited.value.response.headers["retry-after"] == "1"
    assert limited.value.body["error"]["code"] == "rate_limited"  # type: ignore[index]


async def test_every_upstream_failing_is_a_502_api_error() -> None:
    async with bed() as b:
        b.wall.script("up-gpt", Status(500))
        with pytest.raises(anthropic.InternalServerError) as failed:
            await b.client().messages.create(model="gpt", max_tokens=100, messages=HI)
    assert (failed.value.status_code, failed.value.type) == (502, "api_error")
    assert failed.value.body["error"]["code"] == "all_providers_failed"  # type: ignore[index]
    attempts = failed.value.body["error"]["attempts"]  # type: ignore[index]
    assert {a["code"] for a in attempts} == {"provider_unavailable"}


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (InvalidRequest("x"), "invalid_request_error"),
        (Unauthorized("x"), "authentication_error"),
        (PolicyDenied("x", rule_id="r"), "permission_error"),
        (UnknownModel("m"), "not_found_error"),
        (MethodNotAllowed("GET", ["POST"]), "invalid_request_error"),
        (PayloadTooLarge("x"), "request_too_large"),
        (RateLimited("x", retry_after=1), "rate_limit_error"),
        (RouterError("x"), "api_error"),
        (StreamTruncated("x", provider="p"), "api_error"),
        (Overloaded("x"), "overloaded_error"),
        (AllUpstreamsUnavailable("x", retry_after=None), "overloaded_error"),
        (DeadlineExceeded("x"), "timeout_error"),
    ],
)
def test_each_status_has_anthropics_error_type(error: RouterError, kind: str) -> None:
    body = ANTHROPIC_MESSAGES.error_body(error)
    assert body["type"] == "error"
    assert body["error"]["type"] == kind
    assert body["error"]["code"] == error.code
    assert ANTHROPIC_MESSAGES.stream_error(error) == (
        b"event: error\ndata: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"
    )


# --- fusion, the log line, count_tokens --------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_fusion_panel_answers_through_the_messages_api(stream: bool) -> None:
    async with fusion_sidecar() as s:
        body = {"model": "fusion/trio", "max_tokens": 500, "messages": HI, "stream": stream}
        status, raw, headers = await _post(s.url, body)
    assert status == 200, raw
    assert headers["X-Router-Model"] == "fusion/trio"
    if stream:
        events = _events(raw)
        text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
        last = events[-2][1]
        assert (last["type"], last["delta"]["stop_reason"]) == ("message_delta", "end_turn")
        fusion = last["fusion"]
    else:
        message = json.loads(raw)
        assert message["type"] == "message"
        text = message["content"][0]["text"]
        fusion = message["fusion"]
    assert text == "answer from synth-m"
    assert fusion["panel"] == "trio"


async def test_each_request_has_one_request_completed_line() -> None:
    async with bed() as b:
        client = b.client()
        with capture_logs(processors=[merge_contextvars]) as logs:
            whole = await client.messages.with_raw_response.create(
                model="gpt", max_tokens=100, messages=HI
            )
            async with client.messages.stream(model="claude", max_tokens=100, messages=HI) as s:
                await s.get_final_message()
            with pytest.raises(anthropic.NotFoundError):
                await client.messages.create(model="nope", max_tokens=100, messages=HI)
            for _ in range(50):
                lines = [e for e in logs if e["event"] == "request.completed"]
                if len(lines) == 3:
                    break
                await asyncio.sleep(0.01)  # (the line follows the response)
    lines = [e for e in logs if e["event"] == "request.completed"]
    assert [(e["path"], e["status"], e.get("stream")) for e in lines] == [
        ("/v1/messages", 200, False),
        ("/v1/messages", 200, True),
        ("/v1/messages", 404, False),
    ]
    assert lines[0]["request_id"] == whole.headers["x-request-id"]
    assert (lines[1]["served_model"], lines[1]["provider"]) == ("claude", "pa")
    assert lines[2]["error_code"] == "unknown_model"


async def test_count_tokens_is_an_honest_estimate() -> None:
    async with bed() as b:
        client = b.client()
        counted = await client.messages.count_tokens(
            model="claude-sonnet-4-5",
            system="s" * 40,  # 10 tokens at 4 characters a token
            messages=[{"role": "user", "content": [{"type": "text", "text": "u" * 80}, IMAGES[1]]}],
        )
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.count_tokens(model="nope", messages=HI)
        with pytest.raises(anthropic.BadRequestError) as raised:
            await client.messages.count_tokens(
                model="gpt", messages=HI, extra_body={"max_tokens": 10}
            )
        assert b.wall.calls == []  # counting calls no upstream
    assert counted.input_tokens == 10 + 20 + IMAGE_TOKENS
    assert counted.model_extra == {
        "router": {"method": "estimate: 4 characters a token, 1600 tokens an image"}
    }
    assert raised.value.body["error"]["param"] == "max_tokens"  # type: ignore[index]


# --- the writer, event by event ---------------------------------------------------------------


def test_a_whole_answer_renders_thinking_text_then_tool_use() -> None:
    completion = Completion(
        text="Checking.",
        finish_reason="tool_calls",
        usage=Usage(5, 6),
        response_model="x",
        tool_calls=(ToolCall("c1", "f", '{"a": 1}'), ToolCall("c2", "g", "")),
        reasoning="hm",
        thinking_blocks=({"type": "redacted_thinking", "data": "xyz"},),
    )
    body = ANTHROPIC_MESSAGES.whole("r1", "m", completion, Usage(5, 6), {"router": {}})
    assert body == {
        "id": "msg_r1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [
            {"type": "redacted_thinking", "data": "xyz"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}},
            {"type": "tool_use", "id": "c2", "name": "g", "input": {}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 6},
        "router": {},
    }


_texts = st.text(alphabet='ab {}"é', max_size=6)
_arguments = st.dictionaries(
    st.sampled_from(["city", "n", "tags"]),
    st.one_of(st.integers(-5, 5), _texts, st.lists(st.booleans(), max_size=2)),
    max_size=3,
)
_events_strategy = st.lists(
    st.one_of(
        st.builds(TextDelta, _texts),
        st.builds(ReasoningDelta, _texts),
        st.builds(
            lambda t, s: ReasoningDelta(t, {"type": "thinking", "thinking": t, "signature": s}),
            _texts,
            st.sampled_from(["", "sig"]),
        ),
        st.builds(lambda d: ReasoningDelta("", {"type": "redacted_thinking", "data": d}), _texts),
        st.tuples(_arguments, st.integers(1, 4)),  # a tool call, its arguments in pieces
        st.builds(LogprobsDelta, st.none()),
    ),
    max_size=10,
)


def _tool_pieces(raw: list[Any]) -> tuple[list[StreamEvent], list[dict[str, Any]]]:
    """The events, each tool call as the adapters send one (a first piece with its id and
    name, then its arguments' JSON text in pieces), and each call's arguments."""
    out: list[StreamEvent] = []
    calls: list[dict[str, Any]] = []
    for item in raw:
        if not isinstance(item, tuple):
            out.append(item)
            continue
        arguments, pieces = item
        text = json.dumps(arguments) if arguments else ""
        size = max(1, -(-len(text) // pieces))
        index = len(calls)
        calls.append(arguments)
        out.append(ToolCallDelta(index, f"c{index}", "f", ""))
        out.extend(
            ToolCallDelta(index, None, None, text[i : i + size]) for i in range(0, len(text), size)
        )
    return out, calls


@settings(max_examples=300, deadline=None)
@given(_events_strategy, st.sampled_from(["stop", "length", "tool_calls", "content_filter"]))
def test_any_stream_is_a_valid_sequence_the_sdk_assembles(raw: list[Any], finish: str) -> None:
    """Whatever the events, the bytes are Anthropic's grammar (blocks numbered in order, each
    started once and stopped once, deltas only to started blocks) and the SDK's own
    accumulator rebuilds every text, reasoning, signature and tool call from them."""
    events, arguments = _tool_pieces(raw)
    writer = MessageEvents("r", "m", 0)
    out = b"".join(
        writer.event(e.text, role=i == 0)
        if isinstance(e, TextDelta)
        else writer.piece(e, role=i == 0)
        for i, e in enumerate(events)
    )
    if not events:
        out += writer.role()
    out += writer.finish(finish) + writer.done(Usage(3, 4), None)
    parsed = _events(out)
    names = [n for n, _ in parsed]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    started: list[int] = []
    stopped: set[int] = set()
    for name, data in parsed:
        if name == "content_block_start":
            assert data["index"] == len(started)
            started.append(data["index"])
        elif name == "content_block_delta":
            assert data["index"] in started
            assert data["index"] not in stopped
        elif name == "content_block_stop":
            assert data["index"] in started
            assert data["index"] not in stopped
            stopped.add(data["index"])
    assert stopped == set(started)
    snapshot = None
    buffers: dict[int, bytes] = {}
    for _, data in parsed:
        if data["type"] != "ping":
            snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=buffers)  # type: ignore[arg-type]
    assert snapshot is not None
    blocks = snapshot.content
    text = "".join(b.text for b in blocks if b.type == "text")
    assert text == "".join(e.text for e in events if isinstance(e, TextDelta))
    thinking = "".join(b.thinking for b in blocks if b.type == "thinking")
    assert thinking == "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    whole = [e.block for e in events if isinstance(e, ReasoningDelta) and e.block is not None]
    assert [b.signature for b in blocks if b.type == "thinking" and b.signature] == [
        b["signature"] for b in whole if b.get("signature")
    ]
    assert [b.data for b in blocks if b.type == "redacted_thinking"] == [
        b["data"] for b in whole if b["type"] == "redacted_thinking"
    ]
    calls = [b for b in blocks if b.type == "tool_use"]
    assert [(c.id, c.name, c.input) for c in calls] == [
        (f"c{i}", "f", a) for i, a in enumerate(arguments)
    ]
    stops = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal"}
    tool_stop = "tool_use" if calls else "end_turn"
    assert snapshot.stop_reason == (tool_stop if finish == "tool_calls" else stops[finish])
    assert (snapshot.usage.input_tokens, snapshot.usage.output_tokens) == (3, 4)


def test_a_tool_use_input_becomes_the_calls_arguments_and_limits_hold() -> None:
    request, fusion = validate_messages(
        {
            "model": "gpt",
            "max_tokens": 10,
            "messages": [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "mine", "signature": ""},
                        {"type": "tool_use", "id": "t1", "name": "f", "input": {"x": "é"}},
                    ],
                },
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
            ],
            "fusion": {"quorum": 1},
        },
        Limits(),
    )
    assistant = request.messages[1]
    assert assistant.tool_calls == (
        {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"x":"é"}'}},
    )
    assert (assistant.reasoning, assistant.thinking_blocks) == ("mine", ())
    assert (request.messages[2].role, request.messages[2].tool_call_id) == ("tool", "t1")
    assert fusion == {"quorum": 1}
    assert request.include_usage


async def test_a_sidecar_at_its_inflight_cap_is_a_503_overloaded_error() -> None:
    """The Anthropic SDK's view of the in-flight cap: 503, `overloaded_error`, our code."""
    from tests.fakes.script import Hang
    from tests.helpers import sidecar

    async with sidecar("server: {max_inflight: 1}") as s:
        s.wall.script("up-model-a", Hang(2.0))
        client = anthropic.AsyncAnthropic(base_url=s.url, api_key="unused", max_retries=0)
        held = asyncio.create_task(client.messages.create(model="m-a", max_tokens=100, messages=HI))
        while not s.wall.calls:  # the first request holds the one slot
            await asyncio.sleep(0.01)
        with pytest.raises(anthropic.InternalServerError) as refused:
            await client.messages.create(model="m-a", max_tokens=100, messages=HI)
        assert (refused.value.status_code, refused.value.type) == (503, "overloaded_error")
        assert refused.value.body["error"]["code"] == "overloaded"  # type: ignore[index]
        held.cancel()
        with contextlib.suppress(asyncio.CancelledError, anthropic.APIError):
            await held
        await client.close()
