"""The OpenAI Responses API (`POST /v1/responses`, issue 17): the official `openai` SDK's
`responses.create`, `responses.stream` and `responses.parse` against the sidecar, in front of
fake chat-completions and Anthropic upstreams. The request is translated into the one core's
chat request (asserted on what the upstream received); the answer comes back as a `response`
object or its typed events, which the SDK's stream helper assembles."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai._models import construct_type
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent
from pydantic import BaseModel
from structlog.testing import capture_logs

from router.app import create_app
from router.errors import InvalidRequest
from router.inbound import Limits
from router.responses_in import translate
from router.responses_out import OpenAIResponses, ResponseEvents
from router.responses_shapes import open_thinking, seal_thinking
from router.types import (
    Completion,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from tests.fakes import openai_server
from tests.fakes.script import Answer, CutStream, Reasoned, Status, ToolCalls, Wall
from tests.fusion_setup import fusion_sidecar, roles
from tests.helpers import KEYS, Sidecar, config_from_yaml, serve, sidecar, two_provider_yaml
from tests.test_passthrough import _two_protocols

STREAM = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
WEATHER: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "strict": False,
}
CHAT_WEATHER = {
    "type": "function",
    "function": {k: v for k, v in WEATHER.items() if k != "type"},
}
PNG = "data:image/png;base64,iVBORw0KGgo="


async def _answer(client: openai.AsyncOpenAI, *, stream: bool, **request: Any) -> Any:
    """One response through the SDK: `create`, or its stream helper's final response (the
    events read one by one, as an agent's UI would)."""
    if not stream:
        return await client.responses.create(**request)
    async with client.responses.stream(**request) as events:
        async for _ in events:
            pass
        return await events.get_final_response()


async def _events(url: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A streamed response's raw SSE events: (the `event:` line, the data)."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/v1/responses", json={**body, "stream": True}) as response,
    ):
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"] == "text/event-stream"
        text = await response.text()
    out = []
    for block in text.split("\n\n"):
        if block.strip():
            name, data = block.split("\n")
            out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def _sent(s: Sidecar, index: int = -1) -> dict[str, Any]:
    """What the chat-completions upstream received."""
    return s.wall.calls[index].body  # type: ignore[no-any-return]


def _stream_flags(stream: bool) -> dict[str, Any]:
    """What a chat body carries for its mode."""
    return (
        {"stream": True, "stream_options": {"include_usage": True}} if stream else {"stream": False}
    )


# --- the basics ---------------------------------------------------------------------------


@STREAM
async def test_a_string_input_is_one_user_message_and_comes_back_as_a_response(
    stream: bool,
) -> None:
    """`input` as a string, `instructions` first as a system message; the response object
    with its id, status, output message, usage and our `router` object."""
    async with sidecar() as s:
        response = await _answer(
            s.openai(), stream=stream, model="m-a", input="Hi there", instructions="Be brief."
        )
        assert _sent(s) == {
            "model": "up-model-a",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi there"},
            ],
            **_stream_flags(stream),
        }
        assert response.id.startswith("resp_")
        assert response.object == "response"
        assert response.status == "completed"
        assert response.model == "m-a"
        assert response.output_text == "Hello from the fake."
        [message] = response.output
        assert (message.type, message.role, message.status) == ("message", "assistant", "completed")
        assert [(c.type, c.text, c.annotations) for c in message.content] == [
            ("output_text", "Hello from the fake.", [])
        ]
        usage = response.usage
        assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (11, 7, 18)
        assert usage.input_tokens_details.cached_tokens == 0
        assert usage.output_tokens_details.reasoning_tokens == 0
        assert response.instructions == "Be brief."
        assert response.store is False
        router = (response.model_extra or {})["router"]
        assert router["provider"] == "up-a"
        assert [a["outcome"] for a in router["attempts"]] == ["success"]


async def test_the_response_id_is_the_request_id_and_the_headers_say_who_served() -> None:
    """`resp_<request id>`, with the same served-by headers as chat."""
    async with sidecar() as s:
        raw = await s.openai().responses.with_raw_response.create(model="both", input="hi")
        response = raw.parse()
        assert response.id == f"resp_{raw.headers['x-request-id']}"
        assert raw.headers["x-router-model"] == "m-a"
        assert raw.headers["x-router-provider"] == "up-a"


async def test_items_in_every_role_and_shape_become_chat_messages() -> None:
    """Messages of each role (developer is a system message), text parts kept as parts, an
    assistant's earlier answer as sent back, metadata echoed and not sent upstream, and
    `safety_identifier` as the user."""
    async with sidecar() as s:
        response = await s.openai().responses.create(
            model="m-a",
            instructions="You are terse.",
            input=[
                {"role": "developer", "content": "Answer in English."},
                {"role": "user", "content": [{"type": "input_text", "text": "One"}]},
                {
                    "type": "message",
                    "role": "assistant",
                    "id": "msg_1",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "Two", "annotations": []}],
                },
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Three"},
                        {"type": "input_text", "text": "Four"},
                    ],
                },
            ],
            temperature=0.5,
            top_p=0.9,
            max_output_tokens=300,
            metadata={"team": "search"},
            safety_identifier="user-42",
        )
        assert _sent(s) == {
            "model": "up-model-a",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "system", "content": "Answer in English."},
                {"role": "user", "content": [{"type": "text", "text": "One"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Two"}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Three"},
                        {"type": "text", "text": "Four"},
                    ],
                },
            ],
            "stream": False,
            "temperature": 0.5,
            "top_p": 0.9,
            "max_completion_tokens": 300,
            "user": "user-42",
        }
        assert response.metadata == {"team": "search"}
        assert (response.temperature, response.top_p, response.max_output_tokens) == (0.5, 0.9, 300)
        assert response.safety_identifier == "user-42"


@STREAM
async def test_images_by_url_and_data_url_reach_the_upstream_as_image_parts(stream: bool) -> None:
    """`input_image` parts by `image_url` (a data URL, an https URL) with their detail."""
    async with sidecar() as s:
        await _answer(
            s.openai(),
            stream=stream,
            model="m-a",
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What are these?"},
                        {"type": "input_image", "image_url": PNG, "detail": "low"},
                        {"type": "input_image", "image_url": "https://example.com/cat.png"},
                    ],
                }
            ],
        )
        assert _sent(s)["messages"] == [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What are these?"},
                    {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                ],
            }
        ]


# --- function tools -----------------------------------------------------------------------


@STREAM
async def test_a_function_tool_loop(stream: bool) -> None:
    """Function call, its output sent back with the call (the SDK's own items), final text:
    the tools, choice and call history in chat's shape upstream."""
    async with sidecar() as s:
        s.wall.script("up-model-a", [ToolCalls(), Answer("It is 4 degrees in Oslo.")])
        client = s.openai()
        ask: dict[str, Any] = {
            "model": "m-a",
            "tools": [WEATHER],
            "tool_choice": "auto",
            "parallel_tool_calls": False,
        }
        question = {"role": "user", "content": "Weather in Oslo?"}
        first = await _answer(client, stream=stream, input=[question], **ask)
        [call] = first.output
        assert (call.type, call.call_id, call.name, call.arguments, call.status) == (
            "function_call",
            "call_1",
            "get_weather",
            '{"city": "Oslo"}',
            "completed",
        )
        assert first.output_text == ""
        assert _sent(s) == {
            "model": "up-model-a",
            "messages": [{"role": "user", "content": "Weather in Oslo?"}],
            **_stream_flags(stream),
            "tools": [CHAT_WEATHER],
            "tool_choice": "auto",
            "parallel_tool_calls": False,
        }
        history = [
            question,
            *(item.model_dump() for item in first.output),
            {"type": "function_call_output", "call_id": call.call_id, "output": "4 degrees"},
        ]
        final = await _answer(client, stream=stream, input=history, **ask)
        assert final.output_text == "It is 4 degrees in Oslo."
        assert _sent(s)["messages"] == [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "4 degrees"},
        ]


async def test_consecutive_calls_and_the_message_before_them_are_one_assistant_turn() -> None:
    """Text, then two calls: one assistant message with both calls; their outputs as two
    tool messages (a list output as text parts); a named `tool_choice` in chat's shape."""
    async with sidecar() as s:
        call = {"type": "function_call", "name": "get_weather"}
        await s.openai().responses.create(
            model="m-a",
            tools=[WEATHER],
            tool_choice={"type": "function", "name": "get_weather"},
            input=[
                {"role": "user", "content": "Oslo and Bergen?"},
                {"role": "assistant", "content": "Checking both."},
                {**call, "call_id": "c1", "arguments": '{"city": "Oslo"}'},
                {**call, "call_id": "c2", "arguments": '{"city": "Bergen"}'},
                {"type": "function_call_output", "call_id": "c1", "output": "4"},
                {
                    "type": "function_call_output",
                    "call_id": "c2",
                    "output": [{"type": "input_text", "text": "9"}],
                },
            ],
        )
        sent = _sent(s)
        assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
        assert sent["messages"][1:] == [
            {
                "role": "assistant",
                "content": "Checking both.",
                "tool_calls": [
                    {
                        "id": c,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": f'{{"city": "{city}"}}'},
                    }
                    for c, city in (("c1", "Oslo"), ("c2", "Bergen"))
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "4"},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "9"}]},
        ]


async def test_the_streamed_events_are_the_documented_ones_in_order() -> None:
    """Each event's `event:` line is its type, numbered from 0; a message's events, then a
    function call's; `response.completed` with the whole response."""
    async with sidecar() as s:
        s.wall.script("up-model-a", ToolCalls(text="Let me check.", pieces=2))
        events = await _events(
            s.url, {"model": "m-a", "input": "Weather in Oslo?", "tools": [WEATHER]}
        )
        assert all(name == data["type"] for name, data in events)
        assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
        kinds = [name for name, _ in events]
        deltas = kinds.count("response.output_text.delta")
        assert kinds == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            *["response.output_text.delta"] * deltas,
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
        by_kind: dict[str, dict[str, Any]] = {}  # each kind's first event
        for name, data in events:
            by_kind.setdefault(name, data)
        created = by_kind["response.created"]["response"]
        assert (created["status"], created["output"], created["usage"]) == ("in_progress", [], None)
        message_id = by_kind["response.output_item.added"]["item"]["id"]
        assert by_kind["response.output_text.done"] == {
            "type": "response.output_text.done",
            "sequence_number": kinds.index("response.output_text.done"),
            "item_id": message_id,
            "output_index": 0,
            "content_index": 0,
            "text": "Let me check.",
            "logprobs": [],
        }
        assert by_kind["response.function_call_arguments.done"]["arguments"] == '{"city": "Oslo"}'
        assert by_kind["response.function_call_arguments.done"]["output_index"] == 1
        done = [data["item"] for name, data in events if name == "response.output_item.done"]
        completed = by_kind["response.completed"]["response"]
        assert completed["status"] == "completed"
        assert completed["output"] == done
        usage = completed["usage"]
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
        assert completed["router"]["provider"] == "up-a"


# --- structured output and reasoning -------------------------------------------------------


class Weather(BaseModel):
    city: str
    degrees: int


@STREAM
async def test_a_json_schema_text_format_is_chats_response_format(stream: bool) -> None:
    """`responses.parse` / `stream(text_format=...)`: the SDK's strict schema upstream as
    `response_format`, the answer parsed into the model."""
    async with sidecar() as s:
        s.wall.script("up-model-a", Answer('{"city": "Oslo", "degrees": 4}'))
        client = s.openai()
        if stream:
            async with client.responses.stream(
                model="m-a", input="Oslo?", text_format=Weather
            ) as events:
                parsed = await events.get_final_response()
        else:
            parsed = await client.responses.parse(model="m-a", input="Oslo?", text_format=Weather)
        assert parsed.output_parsed == Weather(city="Oslo", degrees=4)
        response_format = _sent(s)["response_format"]
        assert response_format["type"] == "json_schema"
        spec = response_format["json_schema"]
        assert (spec["name"], spec["strict"]) == ("Weather", True)
        assert spec["schema"]["required"] == ["city", "degrees"]


async def test_json_object_and_text_formats() -> None:
    """`json_object` is chat's; `text` asks nothing of the upstream."""
    async with sidecar() as s:
        client = s.openai()
        await client.responses.create(
            model="m-a", input="x", text={"format": {"type": "json_object"}}
        )
        assert _sent(s)["response_format"] == {"type": "json_object"}
        await client.responses.create(model="m-a", input="x", text={"format": {"type": "text"}})
        assert "response_format" not in _sent(s)


@STREAM
async def test_reasoning_effort_goes_up_and_the_reasoning_comes_back_and_goes_back(
    stream: bool,
) -> None:
    """`reasoning.effort` as chat's `reasoning_effort`; the upstream's reasoning as a
    reasoning item's `reasoning_text`, before the message; sent back, it is the assistant
    turn's `reasoning_content` again."""
    async with sidecar() as s:
        s.wall.script(
            "up-model-a", Reasoned(thinking="Think: it rains in Bergen.", then=Answer("Rain."))
        )
        client = s.openai()
        ask = {"model": "m-a", "reasoning": {"effort": "high", "summary": "auto"}}
        response = await _answer(client, stream=stream, input="Bergen?", **ask)
        assert _sent(s)["reasoning_effort"] == "high"
        reasoning, message = response.output
        assert (reasoning.type, message.type) == ("reasoning", "message")
        assert [(c.type, c.text) for c in reasoning.content] == [
            ("reasoning_text", "Think: it rains in Bergen.")
        ]
        assert reasoning.summary == []
        assert reasoning.encrypted_content is None  # no thinking blocks to carry
        assert response.output_text == "Rain."
        assert response.reasoning.effort == "high"
        history = [
            {"role": "user", "content": "Bergen?"},
            *(item.model_dump() for item in response.output),
            {"role": "user", "content": "Thanks"},
        ]
        await _answer(client, stream=stream, input=history, **ask)
        assert _sent(s)["messages"][1] == {
            "role": "assistant",
            "content": [{"type": "text", "text": "Rain."}],
            "reasoning_content": "Think: it rains in Bergen.",
        }


@STREAM
async def test_an_answer_cut_at_max_output_tokens_is_incomplete(stream: bool) -> None:
    """A `length` finish: status `incomplete` with its reason (streamed: `response.incomplete`
    ends the stream, as the API does)."""
    async with sidecar() as s:
        s.wall.script("up-model-a", Answer("Once upon a", finish_reason="length"))
        body = {"model": "m-a", "input": "Tell a story", "max_output_tokens": 3}
        if stream:
            events = await _events(s.url, body)
            name, last = events[-1]
            assert name == "response.incomplete"
            response = last["response"]
        else:
            response = (await s.openai().responses.create(**body)).model_dump()
        assert response["status"] == "incomplete"
        assert response["incomplete_details"] == {"reason": "max_output_tokens"}
        assert response["output"][0]["status"] == "incomplete"
        assert response["output"][0]["content"][0]["text"] == "Once upon a"
        assert _sent(s)["max_completion_tokens"] == 3


# --- what is refused ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "param", "code", "words"),
    [
        (
            {"previous_response_id": "resp_1"},
            "previous_response_id",
            "unsupported_parameter",
            "stateless",
        ),
        ({"conversation": "conv_1"}, "conversation", "unsupported_parameter", "stateless"),
        ({"store": True}, "store", "unsupported_parameter", "stores no response"),
        ({"background": True}, "background", "unsupported_parameter", "background"),
        ({"truncation": "auto"}, "truncation", "unsupported_parameter", "never cut"),
        ({"tools": [{"type": "web_search"}]}, "tools[0]", "unsupported_parameter", "'web_search'"),
        (
            {"tools": [WEATHER, {"type": "file_search", "vector_store_ids": ["vs_1"]}]},
            "tools[1]",
            "unsupported_parameter",
            "'file_search'",
        ),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "web_search_preview"}},
            "tool_choice",
            "unsupported_parameter",
            "hosted tools",
        ),
        (
            {"include": ["message.output_text.logprobs"]},
            "include[0]",
            "unsupported_parameter",
            "log probabilities",
        ),
        ({"include": ["everything"]}, "include[0]", "invalid_request", "everything"),
        ({"frobnicate": 1}, "frobnicate", "unsupported_parameter", "frobnicate"),
        ({"service_tier": []}, "service_tier", "invalid_request", "string"),
        ({"tools": [{**WEATHER, "parameters": []}]}, "tools[0]", "invalid_request", "an object"),
        ({"tools": [{**WEATHER, "strict": 0}]}, "tools[0]", "invalid_request", "'strict'"),
        ({"base_url": "http://elsewhere"}, "base_url", "forbidden_field", "config"),
        ({"max_output_tokens": 0}, "max_output_tokens", "invalid_request", "positive"),
        ({"temperature": 3}, "temperature", "invalid_request", "0 to 2"),
        ({"reasoning": {"effort": "extreme"}}, "reasoning.effort", "invalid_request", "high"),
        (
            {"text": {"format": {"type": "json_schema", "name": "no spaces", "schema": {}}}},
            "text.format",
            "invalid_request",
            "name",
        ),
        (
            {"input": [{"type": "item_reference", "id": "msg_1"}]},
            "input[0].type",
            "unsupported_parameter",
            "stateless",
        ),
        (
            {"input": [{"type": "web_search_call", "id": "ws_1"}]},
            "input[0].type",
            "unsupported_content",
            "web_search_call",
        ),
        ({"input": []}, "input", "invalid_request", "non-empty"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}]},
            "input[0].content[0]",
            "unsupported_content",
            "input_file",
        ),
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}
                ]
            },
            "input[0].content[0].file_id",
            "unsupported_content",
            "file store",
        ),
        (
            {
                "instructions": "Be brief.",
                "input": [
                    {
                        "role": "user",
                        "content": [{"type": "input_image", "image_url": "ftp://x/y.png"}],
                    }
                ],
            },
            "input[0]",
            "unsupported_content",
            "http(s) URL",
        ),
        (
            {
                "input": [
                    {"role": "user", "content": "x"},
                    {"type": "function_call_output", "call_id": "c9", "output": "4"},
                ]
            },
            "input[1]",
            "invalid_request",
            "'c9' answers no earlier",
        ),
        (
            {"input": [{"role": "user", "content": "x", "name": "ann"}]},
            "input[0].name",
            "unsupported_parameter",
            "name",
        ),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role", "invalid_request", "role"),
    ],
)
async def test_what_is_refused_is_a_400_naming_it(
    request_: dict[str, Any], param: str, code: str, words: str
) -> None:
    """In OpenAI's error shape (the SDK raises `BadRequestError`), before any upstream call."""
    async with sidecar() as s:
        body = {"model": "m-a", "input": "hi", **request_}
        with pytest.raises(openai.BadRequestError) as caught:
            await s.openai().responses.create(model="m-a", input="hi", extra_body=body)
        error = caught.value.body
        assert isinstance(error, dict)
        assert (error["param"], error["code"], error["type"]) == (
            param,
            code,
            "invalid_request_error",
        )
        assert words in error["message"]
        assert s.wall.calls == []


async def test_store_false_and_the_accepted_no_ops_are_served() -> None:
    """`store: false`, `reasoning.summary`, `include` of encrypted reasoning,
    `truncation: disabled`, `prompt_cache_key`: answered, nothing of them upstream."""
    async with sidecar() as s:
        response = await s.openai().responses.create(
            model="m-a",
            input="hi",
            store=False,
            include=["reasoning.encrypted_content"],
            truncation="disabled",
            prompt_cache_key="session-1",
            background=False,
        )
        assert response.output_text == "Hello from the fake."
        assert _sent(s) == {
            "model": "up-model-a",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": False,
        }


async def test_an_unknown_model_and_a_stored_response_are_404s() -> None:
    """OpenAI's error shape: the SDK raises `NotFoundError`; retrieving or deleting a response
    by id says nothing is stored."""
    async with sidecar() as s:
        client = s.openai()
        with pytest.raises(openai.NotFoundError) as caught:
            await client.responses.create(model="no-such-model", input="hi")
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["code"] == "unknown_model"
        for call in (client.responses.retrieve("resp_1"), client.responses.delete("resp_1")):
            with pytest.raises(openai.NotFoundError) as caught:
                await call
            assert "stateless" in str(caught.value)
        assert s.wall.calls == []


async def test_a_denied_model_never_reaches_its_upstream(tmp_path: Path) -> None:
    """Policy gates /v1/responses as it does chat: a 403 naming the rule, no upstream call."""
    (tmp_path / "us.yaml").write_text(
        'jurisdiction: us\nversion: "t1"\ndefault: allow\nrules:\n  - id: deny-b\n'
        "    effect: deny\n    reason: test\n    match:\n      models: [m-b]\n"
    )
    wall = Wall()
    async with serve(openai_server.make_app(wall)) as upstream:
        yaml = two_provider_yaml(str(upstream.make_url("")).rstrip("/"), policies=tmp_path)
        app = create_app(config_from_yaml(yaml), environ=dict(KEYS))
        async with serve(app) as server:
            url = str(server.make_url("")).rstrip("/")
            async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as c:
                with pytest.raises(openai.PermissionDeniedError) as caught:
                    await c.responses.create(model="m-b", input="hi")
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "policy_denied"
    assert "deny-b" in caught.value.body["message"]
    assert wall.calls == []


# --- faults -------------------------------------------------------------------------------


async def test_the_fallback_serves_a_stream_when_the_primary_is_down_before_the_first_byte() -> (
    None
):
    """Route `both`: the first target answers 503, the second serves the stream."""
    async with sidecar() as s:
        s.wall.script("up-model-a", Status(503))
        response = await _answer(s.openai(), stream=True, model="both", input="hi")
        assert response.output_text == "Hello from the fake."
        assert response.model == "m-b"
        router = (response.model_extra or {})["router"]
        assert [a["outcome"] for a in router["attempts"]] == ["provider_fault", "success"]


async def test_a_stream_cut_after_its_first_byte_ends_with_response_failed_and_an_error() -> None:
    """In-band, in the Responses format: `response.failed` with the output so far and its
    error, then an `error` event (flat and nested); the SDK raises `APIError`."""
    async with sidecar() as s:
        s.wall.script("up-model-a", CutStream(after=2, text="one two three four"))
        with capture_logs() as logs:
            events = await _events(s.url, {"model": "m-a", "input": "hi"})
            await asyncio.sleep(0.05)
        (failed_name, failed), (error_name, error) = events[-2:]
        assert (failed_name, error_name) == ("response.failed", "error")
        response = failed["response"]
        assert response["status"] == "failed"
        code = response["error"]["code"]
        assert code in ("stream_truncated", "provider_unavailable")
        [message] = response["output"]
        assert message["status"] == "incomplete"
        assert message["content"][0]["text"] == "one two "
        assert error["code"] == error["error"]["code"] == code
        assert error["message"] == error["error"]["message"]
        assert error["sequence_number"] == failed["sequence_number"] + 1
        [line] = [e for e in logs if e["event"] == "request.completed"]
        assert (line["error_code"], line["stream_truncated"]) == (code, True)
        with pytest.raises(openai.APIError):
            await _answer(s.openai(), stream=True, model="m-a", input="hi")


# --- fusion, other protocols, the log line ------------------------------------------------


@STREAM
async def test_a_fusion_panel_answers_on_the_responses_api(stream: bool) -> None:
    """The synthesizer's answer as the response, with the `fusion` object."""
    async with fusion_sidecar() as s:
        response = await _answer(
            s.openai(), stream=stream, model="fusion/trio", input="When was the bridge built?"
        )
        assert response.output_text == "answer from synth-m"
        assert response.model == "fusion/trio"
        fusion = (response.model_extra or {})["fusion"]
        assert fusion["panel"] == "trio"
        assert [seat["served"] for seat in fusion["seats"]] == ["m1", "m2", "m3"]
        assert sorted(role for role, _ in roles(s.wall)) == [
            "judge",
            "panelist",
            "panelist",
            "panelist",
            "synthesizer",
        ]
        assert response.usage.total_tokens == sum(fusion["usage"].values())


@asynccontextmanager
async def _claude() -> AsyncIterator[tuple[openai.AsyncOpenAI, Wall]]:
    async with (
        _two_protocols() as (url, wall),
        openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
    ):
        yield client, wall


@STREAM
async def test_an_anthropic_upstream_serves_the_responses_api(stream: bool) -> None:
    """Instructions as Anthropic's `system`, the answer back as a response."""
    async with _claude() as (client, wall):
        response = await _answer(
            client, stream=stream, model="claude-only", input="hi", instructions="Be brief."
        )
        assert response.output_text == "from claude"
        [call] = wall.calls
        assert call.model == "up-claude"
        assert call.body["system"] == "Be brief."
        assert call.body["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]}
        ]


SIGNED = {"type": "thinking", "thinking": "Oslo: call the tool.", "signature": "sig-oslo"}


@STREAM
async def test_anthropic_thinking_goes_back_with_its_signature_through_encrypted_content(
    stream: bool,
) -> None:
    """A tool loop with thinking on: the thinking block comes back sealed in the reasoning
    item's `encrypted_content` and goes back first in its assistant turn, signature and all,
    as Anthropic requires."""
    async with _claude() as (client, wall):
        wall.script(
            "up-claude",
            [
                Reasoned(thinking=SIGNED["thinking"], signature="sig-oslo", then=ToolCalls()),
                Answer("It is 4 degrees in Oslo."),
            ],
        )
        ask: dict[str, Any] = {
            "model": "claude-only",
            "tools": [WEATHER],
            "reasoning": {"effort": "medium"},
        }
        question = {"role": "user", "content": "Weather in Oslo?"}
        first = await _answer(client, stream=stream, input=[question], **ask)
        reasoning, call = first.output
        assert [c.text for c in reasoning.content] == [SIGNED["thinking"]]
        assert open_thinking(reasoning.encrypted_content) == [SIGNED]
        history = [
            question,
            *(item.model_dump() for item in first.output),
            {"type": "function_call_output", "call_id": call.call_id, "output": "4"},
        ]
        final = await _answer(client, stream=stream, input=history, **ask)
        assert final.output_text == "It is 4 degrees in Oslo."
        sent = wall.calls[-1].body
        assert sent["messages"][1] == {
            "role": "assistant",
            "content": [
                SIGNED,
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                },
            ],
        }


@STREAM
async def test_the_request_completed_line_is_the_one_core_s(stream: bool) -> None:
    """One `request.completed` line, as for chat: path, model asked and served, tokens."""
    async with sidecar() as s:
        with capture_logs() as logs:
            await _answer(s.openai(), stream=stream, model="m-a", input="hi")
            await asyncio.sleep(0.05)
        [line] = [e for e in logs if e["event"] == "request.completed"]
        assert {k: line[k] for k in ("method", "path", "status", "requested_model")} == {
            "method": "POST",
            "path": "/v1/responses",
            "status": 200,
            "requested_model": "m-a",
        }
        assert (line["served_model"], line["provider"], line["kind"], line["stream"]) == (
            "m-a",
            "up-a",
            "model",
            stream,
        )
        assert (line["input_tokens"], line["output_tokens"]) == (11, 7)


# --- the stream writer against the SDK's own assembler ------------------------------------

_piece = st.one_of(
    st.text(min_size=1, max_size=4).map(TextDelta),
    st.text(min_size=1, max_size=4).map(ReasoningDelta),
    st.tuples(st.integers(0, 2), st.text(max_size=4)),
)


def _stream_of(pieces: list[Any]) -> list[StreamEvent]:
    """Tool-call pieces in OpenAI's shape: a call's id and name on its first piece only."""
    seen: set[int] = set()
    out: list[StreamEvent] = []
    for piece in pieces:
        if isinstance(piece, tuple):
            index, arguments = piece
            first = index not in seen
            seen.add(index)
            out.append(
                ToolCallDelta(
                    index, f"c{index}" if first else None, f"f{index}" if first else None, arguments
                )
            )
        else:
            out.append(piece)
    return out


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(pieces=st.lists(_piece, max_size=16), reason=st.sampled_from(["stop", "tool_calls"]))
def test_any_stream_is_assembled_by_the_sdk_into_what_was_streamed(
    pieces: list[Any], reason: str
) -> None:
    """Whatever the order of text, reasoning and (interleaved) tool-call pieces, the events
    are numbered from 0, every item added is done, and the SDK's stream state assembles a
    final response with the text, reasoning and calls that went in."""
    events = _stream_of(pieces)
    writer = ResponseEvents(
        "r1", "m", 0, {"tools": [], "tool_choice": "auto", "parallel_tool_calls": True}
    )
    wire = b""
    for n, event in enumerate(events):
        wire += (
            writer.event(event.text, role=n == 0)
            if isinstance(event, TextDelta)
            else writer.piece(event, role=n == 0)
        )
    wire += (writer.role() if not events else b"") + writer.finish(reason)
    wire += writer.done(Usage(3, 4), {"router": {"provider": "p"}})
    datas = [
        json.loads(block.split("\ndata: ")[1]) for block in wire.decode().split("\n\n") if block
    ]
    assert [d["sequence_number"] for d in datas] == list(range(len(datas)))
    added = [d["output_index"] for d in datas if d["type"] == "response.output_item.added"]
    finished = [d["output_index"] for d in datas if d["type"] == "response.output_item.done"]
    assert added == list(range(len(added)))
    assert sorted(finished) == added
    state: ResponseStreamState[None] = ResponseStreamState(input_tools=[], text_format=openai.omit)
    for data in datas:
        state.handle_event(construct_type(type_=ResponseStreamEvent, value=data))
    final = state._completed_response
    assert final is not None
    assert final.output_text == "".join(e.text for e in events if isinstance(e, TextDelta))
    reasoning = [
        c.text for item in final.output if item.type == "reasoning" for c in item.content or ()
    ]
    assert "".join(reasoning) == "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    calls = {
        item.call_id: (item.name, item.arguments)
        for item in final.output
        if item.type == "function_call"
    }
    expected: dict[str, tuple[str, str]] = {}
    for e in events:
        if isinstance(e, ToolCallDelta):
            name, arguments = expected.get(f"c{e.index}", (f"f{e.index}", ""))
            expected[f"c{e.index}"] = (name, arguments + e.arguments)
    assert calls == expected
    assert final.usage is not None
    assert final.usage.total_tokens == 7


@given(blocks=st.lists(st.dictionaries(st.text(max_size=5), st.text(max_size=5)), max_size=3))
def test_sealed_thinking_opens_to_what_was_sealed(blocks: list[dict[str, str]]) -> None:
    """The seal round-trips; another's encrypted content is not ours to open."""
    assert open_thinking(seal_thinking(blocks)) == blocks
    assert open_thinking("gAAAAABo-openai-encrypted") is None
    with pytest.raises(ValueError, match="does not open"):
        open_thinking(seal_thinking(blocks)[:-3] + "!!!")


# --- the translation, pure ----------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-3, 3) | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _object(required: dict[str, Any], *optional: str) -> Any:
    """Objects of one shape: `required` keys' strategies, and `optional` keys of any JSON."""
    return st.fixed_dictionaries(required, optional=dict.fromkeys(optional, _json))


_PART = _object(
    {"type": st.sampled_from(["input_text", "output_text", "input_image", "refusal", "x"])},
    *("text", "image_url", "detail", "file_id", "refusal"),
)
_ITEM = st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "function_call", "function_call_output", "reasoning"])},
    optional={
        "role": st.sampled_from(["user", "assistant", "system", "developer", "tool"]) | _json,
        "content": _json | st.lists(_PART, max_size=3),
        "output": _json | st.lists(_PART, max_size=2),
        **dict.fromkeys(("call_id", "name", "arguments", "encrypted_content"), _json),
    },
)
_FIELDS: dict[str, Any] = {
    **dict.fromkeys(
        (
            *("instructions", "stream", "stream_options", "max_output_tokens", "temperature"),
            *("top_p", "metadata", "user", "safety_identifier", "service_tier", "store"),
            *("parallel_tool_calls", "include", "background", "truncation", "prompt_cache_key"),
            *("fusion", "previous_response_id"),
        ),
        _json,
    ),
    "reasoning": _json | _object({}, "effort", "summary"),
    "text": _json
    | st.fixed_dictionaries(
        {},
        optional={
            "format": _json | _object({"type": _json}, "name", "schema", "strict"),
            "verbosity": _json,
        },
    ),
    "tools": _json
    | st.lists(
        _object({"type": st.just("function") | _json}, "name", "parameters", "strict"),
        max_size=2,
    ),
    "tool_choice": _json | _object({"type": st.sampled_from(["function", "mcp"])}, "name"),
}


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    fields=st.lists(st.sampled_from(sorted(_FIELDS)), max_size=2, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: _FIELDS[k] for k in keys})
    ),
    items=st.just("hi") | st.lists(_ITEM, min_size=1, max_size=3) | _json,
)
def test_any_request_is_translated_or_refused_naming_a_field(
    fields: dict[str, Any], items: Any
) -> None:
    """Whatever JSON sits in whichever field, the translation answers a chat request or an
    `InvalidRequest` with a param; never another exception (a 500)."""
    outcome: Any
    try:
        outcome = translate({"model": "m-a", "input": items, **fields}, Limits())
    except InvalidRequest as exc:
        outcome = exc
    if isinstance(outcome, InvalidRequest):
        assert outcome.param
    else:
        assert outcome.chat.model == "m-a"


def test_a_gemini_thought_signature_rides_on_the_function_call_item_and_back() -> None:
    """A call's upstream fields (Gemini's `extra_content`) are on its `function_call` item, and
    go back on the chat tool call when the item is sent back."""
    signature = {"google": {"thought_signature": "sig-g"}}
    completion = Completion(
        "",
        "tool_calls",
        Usage(1, 1),
        "g",
        tool_calls=(ToolCall("c1", "now", "{}", (("extra_content", signature),)),),
    )
    [item] = OpenAIResponses().whole("r1", "gem", completion, Usage(1, 1), {})["output"]
    assert item["extra_content"] == signature
    parsed = translate(
        {
            "model": "gem",
            "input": [
                {"role": "user", "content": "time?"},
                item,
                {"type": "function_call_output", "call_id": "c1", "output": "09:00"},
            ],
        },
        Limits(),
    )
    assert parsed.chat.messages[1].tool_calls == (
        {
            "id": "c1",
            "type": "function",
            "function": {"name": "now", "arguments": "{}"},
            "extra_content": signature,
        },
    )


async def test_text_verbosity_goes_to_openai_upstreams_and_is_refused_elsewhere() -> None:
    """A field of OpenAI's own: sent as chat's `verbosity`; a protocol without it is a 400."""
    async with _claude() as (client, wall):
        await client.responses.create(model="gpt", input="hi", text={"verbosity": "low"})
        assert wall.calls[-1].body["verbosity"] == "low"
        with pytest.raises(openai.BadRequestError) as caught:
            await client.responses.create(
                model="claude-only", input="hi", text={"verbosity": "low"}
            )
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["param"] == "verbosity"
        assert len(wall.calls) == 1
