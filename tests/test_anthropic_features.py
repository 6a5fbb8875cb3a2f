"""Tools, tool turns, images, structured output and reasoning through the Anthropic adapter
(issue 16), whole and streamed: the exact body the fake Anthropic API received (it refuses
what the real one refuses), and what the official `openai` SDK parses back from the sidecar."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from router.app import create_app
from router.errors import ProviderMalformed
from router.providers.anthropic_request import (
    ANSWER_TOOL_DESCRIPTION,
    JSON_INSTRUCTION,
    to_wire,
    tool_choice,
)
from router.providers.anthropic_response import StreamState, apply_event, from_wire
from router.types import (
    ChatRequest,
    Completion,
    ImagePart,
    Message,
    ReasoningDelta,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
)
from tests.fakes import anthropic_server
from tests.fakes.script import Answer, Reasoned, ToolCalls, Wall
from tests.helpers import TEST_POLICIES, Sidecar, config_from_yaml, serve

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": WEATHER_SCHEMA,
        },
    },
    {"type": "function", "function": {"name": "now"}},  # no description, no parameters
]
ANTHROPIC_TOOLS: list[dict[str, Any]] = [
    {"name": "get_weather", "description": "The weather in a city", "input_schema": WEATHER_SCHEMA},
    {"name": "now", "input_schema": {"type": "object", "properties": {}}},
]
QUESTION: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Oslo?"}]
QUESTION_TURN = {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]}
REPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "celsius": {"type": "integer"}},
    "required": ["city", "celsius"],
    "additionalProperties": False,
}
REPORT_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "weather_report", "schema": REPORT_SCHEMA, "strict": True},
}
REPORT = '{"city": "Oslo", "celsius": 4}'
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def _yaml(upstream: str, model_extra: str = "", upstream_id: str = "up-claude") -> str:
    return f"""
jurisdiction: us
policies: {TEST_POLICIES}
providers:
  pa:
    protocol: anthropic
    base_url: {upstream}
    allow_http: true
    region: us
models:
  claude:
    provider: pa
    upstream_id: {upstream_id}
    vendor: VendorB
    origin: us
    tier: strong
    context_window: 200000
    max_output_tokens: 64000
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
{model_extra}"""


@asynccontextmanager
async def _claude(model_extra: str = "", upstream_id: str = "up-claude") -> AsyncIterator[Sidecar]:
    """A sidecar whose one model, `claude`, is served by the fake Anthropic API as
    `upstream_id` (by default one of no particular generation)."""
    wall = Wall()
    async with serve(anthropic_server.make_app(wall)) as upstream:
        url = str(upstream.make_url("")).rstrip("/")
        app = create_app(config_from_yaml(_yaml(url, model_extra, upstream_id)), environ={})
        async with serve(app) as server:
            s = Sidecar(str(server.make_url("")).rstrip("/"), wall, app)
            try:
                yield s
            finally:
                for client in s.clients:
                    await client.close()


async def _ask(
    client: openai.AsyncOpenAI, messages: list[Any], *, stream: bool, **options: Any
) -> Any:
    """One answer through the SDK: `create`, or its stream helper's final completion (the
    events read one by one, as an agent's UI would)."""
    if not stream:
        return await client.chat.completions.create(model="claude", messages=messages, **options)
    async with client.chat.completions.stream(
        model="claude", messages=messages, **options
    ) as events:
        async for _ in events:
            pass
        return await events.get_final_completion()


def _sent(s: Sidecar, index: int = -1) -> dict[str, Any]:
    """The body the fake Anthropic API received (without `stream`, which the mode sets)."""
    body = dict(s.wall.calls[index].body)
    body.pop("stream")
    return body


STREAM = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
NAMED = {"type": "function", "function": {"name": "now"}}


# --- tools and tool_choice ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "choice"),
    [
        ({}, None),
        ({"tool_choice": "auto"}, {"type": "auto"}),
        ({"tool_choice": "none"}, {"type": "none"}),
        ({"tool_choice": "required"}, {"type": "any"}),
        ({"tool_choice": NAMED}, {"type": "tool", "name": "now"}),
        ({"parallel_tool_calls": True}, None),
        ({"parallel_tool_calls": False}, {"type": "auto", "disable_parallel_tool_use": True}),
        (
            {"tool_choice": "required", "parallel_tool_calls": False},
            {"type": "any", "disable_parallel_tool_use": True},
        ),
        (
            {"tool_choice": NAMED, "parallel_tool_calls": False},
            {"type": "tool", "name": "now", "disable_parallel_tool_use": True},
        ),
        ({"tool_choice": "none", "parallel_tool_calls": False}, {"type": "none"}),
    ],
    ids=lambda v: json.dumps(v, separators=(",", ":")),
)
async def test_tools_and_each_tool_choice_are_translated(
    options: dict[str, Any], choice: dict[str, Any] | None
) -> None:
    """Function tools become Anthropic tools (an empty object schema where none was given);
    `tool_choice` and `parallel_tool_calls: false` become Anthropic's `tool_choice`."""
    async with _claude() as s:
        s.wall.script("up-claude", Answer("It is sunny."))
        await _ask(s.openai(), QUESTION, stream=False, tools=TOOLS, **options)
        expected: dict[str, Any] = {
            "model": "up-claude",
            "messages": [QUESTION_TURN],
            "max_tokens": 4096,
            "tools": ANTHROPIC_TOOLS,
        }
        if choice is not None:
            expected["tool_choice"] = choice
        assert _sent(s) == expected


CALLS = ToolCalls(
    calls=(
        ("toolu_1", "get_weather", '{"city": "Oslo"}'),
        ("toolu_2", "get_weather", '{"city": "Bergen", "days": [1, 2]}'),
    ),
    text="Let me check both.",
)


@STREAM
async def test_tool_calls_come_back_in_openais_shape(stream: bool) -> None:
    """Tool use blocks come back as `tool_calls` with Anthropic's ids, finish `tool_calls`,
    the text beside them as content; streamed, the arguments are the model's own text."""
    async with _claude() as s:
        s.wall.script("up-claude", CALLS)
        completion = await _ask(s.openai(), QUESTION, stream=stream, tools=TOOLS)
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content == "Let me check both."
        calls = [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls]
        if stream:  # the input_json_delta text as the model produced it
            assert calls == list(CALLS.calls)
        else:  # the tool_use block's input object, as compact JSON
            assert calls == [
                ("toolu_1", "get_weather", '{"city":"Oslo"}'),
                ("toolu_2", "get_weather", '{"city":"Bergen","days":[1,2]}'),
            ]


@STREAM
async def test_an_agent_loop_with_the_openai_sdk(stream: bool) -> None:
    """Tool call, tool result, final answer: the SDK's own message goes back as history and
    becomes a `tool_use` turn, the result a `tool_result` block in a user turn."""
    async with _claude() as s:
        client = s.openai()
        s.wall.script("up-claude", [ToolCalls(), Answer("It is 4 degrees in Oslo.")])
        completion = await _ask(client, QUESTION, stream=stream, tools=TOOLS)
        message = completion.choices[0].message
        [call] = message.tool_calls
        assert (call.id, call.function.name) == ("call_1", "get_weather")
        history = [
            *QUESTION,
            message.model_dump(),
            {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 4}'},
        ]
        final = await _ask(client, history, stream=stream, tools=TOOLS)
        assert final.choices[0].message.content == "It is 4 degrees in Oslo."
        assert final.choices[0].finish_reason == "stop"
        assert _sent(s)["messages"] == [
            QUESTION_TURN,
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "call_1",
                        "name": "get_weather",
                        "input": {"city": "Oslo"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": '{"celsius": 4}'}
                ],
            },
        ]


async def test_consecutive_tool_results_share_one_user_turn_results_first() -> None:
    """Two results and a user's note between them: one user turn, the results first (in
    order), then the note; a result sent as text parts keeps them as blocks."""
    calls = [
        {"id": f"c{i}", "type": "function", "function": {"name": "now", "arguments": arguments}}
        for i, arguments in ((1, '{"tz": "CET"}'), (2, '{"tz":"UTC"}'))
    ]
    messages = [
        *QUESTION,
        {"role": "assistant", "content": "Checking.", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "c1", "content": "09:00"},
        {"role": "user", "content": "Also, be brief."},
        {
            "role": "tool",
            "tool_call_id": "c2",
            "content": [{"type": "text", "text": "10:00"}, {"type": "text", "text": "UTC"}],
        },
    ]
    async with _claude() as s:
        s.wall.script("up-claude", Answer("Both checked."))
        completion = await _ask(s.openai(), messages, stream=False, tools=TOOLS)
        assert completion.choices[0].message.content == "Both checked."
        assert _sent(s)["messages"] == [
            QUESTION_TURN,
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "c1", "name": "now", "input": {"tz": "CET"}},
                    {"type": "tool_use", "id": "c2", "name": "now", "input": {"tz": "UTC"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "c1", "content": "09:00"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "c2",
                        "content": [
                            {"type": "text", "text": "10:00"},
                            {"type": "text", "text": "UTC"},
                        ],
                    },
                    {"type": "text", "text": "Also, be brief."},
                ],
            },
        ]


@pytest.mark.parametrize("arguments", ["{}", ""])
async def test_a_call_without_arguments_goes_back_as_an_empty_input(arguments: str) -> None:
    """A call sent back with `{}` or empty arguments is a `tool_use` with an empty input."""
    call = {"id": "c1", "type": "function", "function": {"name": "now", "arguments": arguments}}
    history = [
        *QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "09:00"},
    ]
    async with _claude() as s:
        s.wall.script("up-claude", Answer("It is nine."))
        await _ask(s.openai(), history, stream=False, tools=TOOLS)
        assert _sent(s)["messages"][1]["content"] == [
            {"type": "tool_use", "id": "c1", "name": "now", "input": {}}
        ]


async def test_bind_tools_round_trip_with_langchain() -> None:
    """LangChain's `ChatOpenAI.bind_tools` against a Claude model: the call parses into
    LangChain's `tool_calls`, and the `ToolMessage` goes back as a `tool_result`."""

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"4 degrees in {city}"

    async with _claude() as s:
        s.wall.script("up-claude", [ToolCalls(), Answer("It is 4 degrees in Oslo.")])
        model = ChatOpenAI(
            model="claude",
            base_url=s.base_url,
            api_key="unused",  # type: ignore[arg-type]
            max_retries=0,
        ).bind_tools([get_weather])
        question = HumanMessage("Weather in Oslo?")
        reply = await model.ainvoke([question])
        assert [(c["name"], c["args"], c["id"]) for c in reply.tool_calls] == [
            ("get_weather", {"city": "Oslo"}, "call_1")
        ]
        [sent_tool] = _sent(s)["tools"]
        assert sent_tool["name"] == "get_weather"
        assert sent_tool["input_schema"]["properties"] == {"city": {"type": "string"}}
        result = ToolMessage(get_weather.invoke({"city": "Oslo"}), tool_call_id="call_1")
        final = await model.ainvoke([question, reply, result])
        assert final.content == "It is 4 degrees in Oslo."
        assert _sent(s)["messages"][2] == {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "4 degrees in Oslo"}
            ],
        }


# --- images ---------------------------------------------------------------------------------


async def test_images_become_base64_and_url_sources() -> None:
    """A data URL's bytes go as a base64 source, an https URL as a url source, in place among
    the text parts; `detail` has no Anthropic counterpart."""
    content = [
        {"type": "text", "text": "Compare these."},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg", "detail": "low"}},
    ]
    async with _claude() as s:
        s.wall.script("up-claude", Answer("Both are tiny."))
        completion = await _ask(s.openai(), [{"role": "user", "content": content}], stream=False)
        assert completion.choices[0].message.content == "Both are tiny."
        assert _sent(s)["messages"] == [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare these."},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PIXEL},
                    },
                    {
                        "type": "image",
                        "source": {"type": "url", "url": "https://example.com/a.jpg"},
                    },
                ],
            }
        ]


# --- structured output ----------------------------------------------------------------------


ANSWER_TOOL = {
    "name": "weather_report",
    "description": ANSWER_TOOL_DESCRIPTION,
    "input_schema": REPORT_SCHEMA,
}
FORCED = {"type": "tool", "name": "weather_report", "disable_parallel_tool_use": True}


@STREAM
async def test_json_schema_in_tool_mode_answers_as_content(stream: bool) -> None:
    """Without native structured output, a tool named after the schema is forced; its input
    comes back as the message's content, finish `stop`, no tool calls."""
    async with _claude() as s:
        s.wall.script("up-claude", ToolCalls(calls=(("toolu_9", "weather_report", REPORT),)))
        completion = await _ask(s.openai(), QUESTION, stream=stream, response_format=REPORT_FORMAT)
        choice = completion.choices[0]
        assert (choice.finish_reason, choice.message.tool_calls) == ("stop", None)
        assert json.loads(choice.message.content) == {"city": "Oslo", "celsius": 4}
        assert choice.message.content == (REPORT if stream else '{"city":"Oslo","celsius":4}')
        assert _sent(s) == {
            "model": "up-claude",
            "messages": [QUESTION_TURN],
            "max_tokens": 4096,
            "tools": [ANSWER_TOOL],
            "tool_choice": FORCED,
        }


class WeatherReport(BaseModel):
    city: str
    celsius: int


@STREAM
async def test_the_sdks_parse_helper_gets_its_model_back(stream: bool) -> None:
    """`parse(response_format=Model)` (and the stream helper with it): the SDK's strict schema
    is the answer tool's input schema, and the answer parses into the model."""
    async with _claude() as s:
        client = s.openai()
        s.wall.script("up-claude", ToolCalls(calls=(("toolu_9", "WeatherReport", REPORT),)))
        if stream:
            completion = await _ask(client, QUESTION, stream=True, response_format=WeatherReport)
        else:
            completion = await client.chat.completions.parse(
                model="claude", messages=QUESTION, response_format=WeatherReport
            )
        assert completion.choices[0].message.parsed == WeatherReport(city="Oslo", celsius=4)
        [answer_tool] = _sent(s)["tools"]
        assert answer_tool["name"] == "WeatherReport"
        assert answer_tool["input_schema"]["properties"] == {
            "city": {"title": "City", "type": "string"},
            "celsius": {"title": "Celsius", "type": "integer"},
        }


@pytest.mark.parametrize(
    ("options", "choice", "answer_offered"),
    [
        ({}, {"type": "any"}, True),
        (
            {"tool_choice": "auto", "parallel_tool_calls": False},
            {"type": "any", "disable_parallel_tool_use": True},
            True,
        ),
        ({"tool_choice": "none"}, FORCED, True),
        ({"tool_choice": "required"}, {"type": "any"}, False),
        ({"tool_choice": NAMED}, {"type": "tool", "name": "now"}, False),
    ],
    ids=["default", "auto", "none", "required", "named"],
)
async def test_json_schema_with_tools_in_tool_mode(
    options: dict[str, Any], choice: dict[str, Any], answer_offered: bool
) -> None:
    """The answer tool joins the caller's tools and a tool must be used (one of the caller's,
    or the answer); `none` forces the answer; `required` or a named tool asks for a call of
    the caller's this turn, without the answer tool. Thinking, asked, is left off: forced
    tool use is incompatible with it."""
    async with _claude() as s:
        s.wall.script("up-claude", ToolCalls())
        completion = await _ask(
            s.openai(),
            QUESTION,
            stream=False,
            tools=TOOLS,
            response_format=REPORT_FORMAT,
            reasoning_effort="high",
            **options,
        )
        [call] = completion.choices[0].message.tool_calls
        assert call.function.name == "get_weather"
        assert completion.choices[0].finish_reason == "tool_calls"
        sent = _sent(s)
        assert sent["tools"] == ANTHROPIC_TOOLS + ([ANSWER_TOOL] if answer_offered else [])
        assert sent["tool_choice"] == choice
        assert "thinking" not in sent
        assert sent["max_tokens"] == 4096


async def test_json_schema_with_tools_answering_gives_the_answer_as_content() -> None:
    """Offered beside the caller's tools, the answer tool's input streams back as content."""
    async with _claude() as s:
        s.wall.script("up-claude", ToolCalls(calls=(("toolu_9", "weather_report", REPORT),)))
        completion = await _ask(
            s.openai(), QUESTION, stream=True, tools=TOOLS, response_format=REPORT_FORMAT
        )
        choice = completion.choices[0]
        assert (choice.finish_reason, choice.message.tool_calls) == ("stop", None)
        assert choice.message.content == REPORT


@STREAM
async def test_json_schema_native_goes_as_output_config_format(stream: bool) -> None:
    """A catalog model with native structured output (`structured_output: native`) gets the
    schema as `output_config.format`, beside the caller's tools (strict ones strict there),
    with no answer tool and no JSON instruction; its text is the answer, and the SDK's parse
    helper parses it."""
    strict_schema = {**WEATHER_SCHEMA, "additionalProperties": False}
    function = {**TOOLS[0]["function"], "parameters": strict_schema, "strict": True}
    tools = [{"type": "function", "function": function}]
    async with _claude("    structured_output: native\n") as s:
        client = s.openai()
        s.wall.script("up-claude", Answer(REPORT))
        messages = [{"role": "system", "content": "Be exact."}, *QUESTION]
        if stream:
            completion = await _ask(
                client, messages, stream=True, tools=tools, response_format=WeatherReport
            )
        else:
            completion = await client.chat.completions.parse(
                model="claude", messages=messages, tools=tools, response_format=WeatherReport
            )
        choice = completion.choices[0]
        assert (choice.finish_reason, choice.message.content) == ("stop", REPORT)
        assert choice.message.parsed == WeatherReport(city="Oslo", celsius=4)
        sent = _sent(s)
        schema = sent["output_config"]["format"]["schema"]
        assert set(sent["output_config"]["format"]) == {"type", "schema"}
        assert schema["properties"]["celsius"] == {"title": "Celsius", "type": "integer"}
        assert schema["additionalProperties"] is False
        assert sent["system"] == "Be exact."
        assert sent["tools"] == [
            {**ANTHROPIC_TOOLS[0], "input_schema": strict_schema, "strict": True}
        ]
        assert "tool_choice" not in sent


def test_strict_function_tools_are_strict_only_where_the_model_has_structured_output() -> None:
    """A function's `strict` goes along to a model with native structured output only."""
    strict = [{"type": "function", "function": {**TOOLS[0]["function"], "strict": True}}]
    request = ChatRequest(
        model="claude", messages=(Message("user", "hi"),), passthrough=(("tools", strict),)
    )
    native = to_wire(request, "m", stream=False, structured_output="native")
    tool = to_wire(request, "m", stream=False, structured_output="tool")
    assert native["tools"] == [{**ANTHROPIC_TOOLS[0], "strict": True}]
    assert tool["tools"] == [ANTHROPIC_TOOLS[0]]


def test_json_object_keeps_its_instruction_a_schema_needs_none() -> None:
    """`json_object` is asked by an instruction; a json_schema is enforced without one."""
    plain = ChatRequest(model="claude", messages=(Message("user", "hi"),), json_output=True)
    schema = ChatRequest(
        model="claude",
        messages=(Message("user", "hi"),),
        json_output=True,
        json_schema=REPORT_FORMAT["json_schema"],
    )
    assert to_wire(plain, "m", stream=False)["system"] == JSON_INSTRUCTION
    assert "system" not in to_wire(schema, "m", stream=False)


# --- reasoning ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "thinking", "max_tokens"),
    [
        ({"reasoning_effort": "none"}, None, 4096),
        ({"reasoning_effort": "minimal"}, 1024, 1024 + 4096),
        ({"reasoning_effort": "low"}, 2048, 2048 + 4096),
        ({"reasoning_effort": "medium"}, 8192, 8192 + 4096),
        ({"reasoning_effort": "high"}, 16384, 16384 + 4096),
        ({"reasoning_effort": "xhigh"}, 32768, 32768 + 4096),
        ({"reasoning_effort": "high", "max_completion_tokens": 10000}, 5000, 10000),
        ({"reasoning_effort": "medium", "max_tokens": 60000}, 8192, 60000),
        ({"reasoning_effort": "low", "max_tokens": 2000}, None, 2000),
        ({"reasoning_effort": "medium", "tools": TOOLS, "tool_choice": "required"}, None, 4096),
        ({"reasoning_effort": "medium", "tools": TOOLS, "tool_choice": NAMED}, None, 4096),
        ({"reasoning_effort": "medium", "tools": TOOLS, "tool_choice": "auto"}, 8192, 12288),
        ({"reasoning_effort": "medium", "tools": TOOLS, "tool_choice": "none"}, 8192, 12288),
    ],
    ids=[
        "none",
        "minimal",
        "low",
        "medium",
        "high",
        "xhigh",
        "half-of-the-cap",
        "cap-above-the-budget",
        "cap-too-small",
        "forced-any",
        "forced-tool",
        "auto",
        "tool-choice-none",
    ],
)
async def test_reasoning_effort_becomes_a_thinking_budget(
    options: dict[str, Any], thinking: int | None, max_tokens: int
) -> None:
    """`reasoning_effort` as extended thinking's budget, under `max_tokens`; while thinking,
    `temperature` and `top_p` are left out; forced tool use gets no thinking."""
    async with _claude() as s:
        s.wall.script("up-claude", Answer("Sunny."))
        await _ask(s.openai(), QUESTION, stream=False, temperature=0.3, top_p=0.9, **options)
        sent = _sent(s)
        assert sent["max_tokens"] == max_tokens
        if thinking is None:
            assert "thinking" not in sent
            assert (sent["temperature"], sent["top_p"]) == (0.3, 0.9)
        else:
            assert sent["thinking"] == {"type": "enabled", "budget_tokens": thinking}
            assert not {"temperature", "top_p"} & set(sent)


SIGNED = {"type": "thinking", "thinking": "Oslo: call the tool.", "signature": "sig-oslo"}


@STREAM
async def test_thinking_comes_back_and_goes_back_first_in_its_turn(stream: bool) -> None:
    """A thinking block comes back as `reasoning_content` and in `thinking_blocks` with its
    signature; the SDK's message sent back puts it first in the assistant's turn, which a
    tool-use conversation with thinking on requires."""
    async with _claude() as s:
        client = s.openai()
        s.wall.script(
            "up-claude",
            [
                Reasoned(thinking=SIGNED["thinking"], signature="sig-oslo", then=ToolCalls()),
                Answer("It is 4 degrees in Oslo."),
            ],
        )
        completion = await _ask(
            client, QUESTION, stream=stream, tools=TOOLS, reasoning_effort="medium"
        )
        message = completion.choices[0].message
        extra = message.model_extra or {}
        assert extra["reasoning_content"] == SIGNED["thinking"]
        blocks = extra["thinking_blocks"]  # (streamed: each with its `index`, for the SDK)
        assert [{k: v for k, v in b.items() if k != "index"} for b in blocks] == [SIGNED]
        [call] = message.tool_calls
        history = [
            *QUESTION,
            message.model_dump(),
            {"role": "tool", "tool_call_id": call.id, "content": "4"},
        ]
        final = await _ask(client, history, stream=stream, tools=TOOLS, reasoning_effort="medium")
        assert final.choices[0].message.content == "It is 4 degrees in Oslo."
        sent = _sent(s)
        assert sent["thinking"] == {"type": "enabled", "budget_tokens": 8192}
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


async def test_a_tool_turn_without_its_thinking_is_refused_as_anthropic_would() -> None:
    """The fake holds the real API's rule: the tool-use turn being continued with thinking on
    opens with its thinking block (dropping it is the caller's error, reported as such)."""
    arguments = '{"tz": "CET"}'
    call = {"id": "c1", "type": "function", "function": {"name": "now", "arguments": arguments}}
    history = [
        *QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "09:00"},
    ]
    async with _claude() as s:
        with pytest.raises(openai.BadRequestError):
            await _ask(s.openai(), history, stream=False, tools=TOOLS, reasoning_effort="low")
        assert len(s.wall.calls) == 1


def test_plain_reasoning_content_is_a_no_op_thinking_blocks_go_back_as_they_came() -> None:
    """Unsigned `reasoning_content` is not sent; signed and redacted thinking blocks go back
    first in their turn, in their order, with their own fields only (not a stream's `index`)."""
    redacted = {"type": "redacted_thinking", "data": "EmwKAhgBEgy"}
    request = ChatRequest(
        model="claude",
        messages=(
            Message("user", "hi"),
            Message("assistant", "Hello.", reasoning="unsigned thoughts"),
            Message("user", "again"),
            Message("assistant", "Hi again.", thinking_blocks=(redacted, {**SIGNED, "index": 1})),
            Message("user", "bye"),
        ),
    )
    assert to_wire(request, "m", stream=False)["messages"][1:4] == [
        {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]},
        {"role": "user", "content": [{"type": "text", "text": "again"}]},
        {"role": "assistant", "content": [redacted, SIGNED, {"type": "text", "text": "Hi again."}]},
    ]


# --- adaptive thinking ----------------------------------------------------------------------


ADAPTIVE = "    thinking: adaptive\n"
OPUS = "claude-opus-4-8"  # Claude 4.7 and later: adaptive thinking only, the fake holds it
SONNET = "claude-sonnet-4-6"  # takes both kinds of thinking, and sampling parameters


@pytest.mark.parametrize(
    ("options", "effort", "max_tokens"),
    [
        ({"reasoning_effort": "none"}, None, 4096),
        ({"reasoning_effort": "minimal"}, "low", 1024 + 4096),
        ({"reasoning_effort": "low"}, "low", 2048 + 4096),
        ({"reasoning_effort": "medium"}, "medium", 8192 + 4096),
        ({"reasoning_effort": "high"}, "high", 16384 + 4096),
        ({"reasoning_effort": "xhigh"}, "xhigh", 32768 + 4096),
        ({"reasoning_effort": "high", "max_completion_tokens": 10000}, "high", 10000),
        ({"reasoning_effort": "low", "max_tokens": 2000}, "low", 2000),
        ({"reasoning_effort": "medium", "tools": TOOLS, "tool_choice": "required"}, None, 4096),
        ({"reasoning_effort": "medium", "tools": TOOLS, "tool_choice": NAMED}, None, 4096),
        ({"reasoning_effort": "medium", "tools": TOOLS, "tool_choice": "auto"}, "medium", 12288),
        ({"reasoning_effort": "medium", "tools": TOOLS, "tool_choice": "none"}, "medium", 12288),
    ],
    ids=[
        "none",
        "minimal",
        "low",
        "medium",
        "high",
        "xhigh",
        "the-cap-stays",
        "no-minimum-under-a-small-cap",
        "forced-any",
        "forced-tool",
        "auto",
        "tool-choice-none",
    ],
)
async def test_reasoning_effort_becomes_adaptive_thinking_and_an_effort(
    options: dict[str, Any], effort: str | None, max_tokens: int
) -> None:
    """A catalog model with `thinking: adaptive`: `reasoning_effort` is adaptive thinking
    (with its text asked for) and `output_config.effort`, never a budget, which the model
    refuses; `max_tokens` leaves a budget's room when no cap was asked, a cap stays the cap
    (with no minimum to meet), and forced tool use gets neither thinking nor an effort. The
    whole body, exactly."""
    async with _claude(ADAPTIVE, upstream_id=OPUS) as s:
        s.wall.script(OPUS, ToolCalls() if "tools" in options else Answer("Sunny."))
        await _ask(s.openai(), QUESTION, stream=False, **options)
        expected: dict[str, Any] = {"model": OPUS, "messages": [QUESTION_TURN]}
        expected["max_tokens"] = max_tokens
        if "tools" in options:
            expected["tools"] = ANTHROPIC_TOOLS
            expected["tool_choice"] = tool_choice(options["tool_choice"], None)
        if effort is not None:
            expected["thinking"] = {"type": "adaptive", "display": "summarized"}
            expected["output_config"] = {"effort": effort}
        assert _sent(s) == expected


@pytest.mark.parametrize("effort", ["none", "high"])
async def test_adaptive_thinking_leaves_sampling_out_only_while_thinking(effort: str) -> None:
    """On a model that takes both (Claude 4.6), `temperature` and `top_p` go along without
    thinking and are left out with it, as with a budget."""
    async with _claude(ADAPTIVE, upstream_id=SONNET) as s:
        s.wall.script(SONNET, Answer("Sunny."))
        await _ask(
            s.openai(), QUESTION, stream=False, temperature=0.3, top_p=0.9, reasoning_effort=effort
        )
        sent = _sent(s)
        if effort == "none":
            assert (sent["temperature"], sent["top_p"]) == (0.3, 0.9)
            assert not {"thinking", "output_config"} & set(sent)
        else:
            assert not {"temperature", "top_p"} & set(sent)
            assert sent["thinking"]["type"] == "adaptive"


@STREAM
async def test_adaptive_thinking_comes_back_and_goes_back_first_in_its_turn(stream: bool) -> None:
    """Adaptive thinking's blocks come back as `reasoning_content` and `thinking_blocks` (the
    text there because `display: summarized` asked for it: Claude 4.7 and later omit it by
    default), whole and streamed, and go back first in the tool-use turn being continued."""
    async with _claude(ADAPTIVE, upstream_id=OPUS) as s:
        client = s.openai()
        s.wall.script(
            OPUS,
            [
                Reasoned(thinking=SIGNED["thinking"], signature="sig-oslo", then=ToolCalls()),
                Answer("It is 4 degrees in Oslo."),
            ],
        )
        completion = await _ask(
            client, QUESTION, stream=stream, tools=TOOLS, reasoning_effort="xhigh"
        )
        message = completion.choices[0].message
        extra = message.model_extra or {}
        assert extra["reasoning_content"] == SIGNED["thinking"]
        blocks = [{k: v for k, v in b.items() if k != "index"} for b in extra["thinking_blocks"]]
        assert blocks == [SIGNED]
        [call] = message.tool_calls
        history = [
            *QUESTION,
            message.model_dump(),
            {"role": "tool", "tool_call_id": call.id, "content": "4"},
        ]
        final = await _ask(client, history, stream=stream, tools=TOOLS, reasoning_effort="xhigh")
        assert final.choices[0].message.content == "It is 4 degrees in Oslo."
        sent = _sent(s)
        assert (sent["thinking"], sent["output_config"]) == (
            {"type": "adaptive", "display": "summarized"},
            {"effort": "xhigh"},
        )
        assert sent["messages"][1]["content"][0] == SIGNED


@STREAM
async def test_adaptive_effort_sits_beside_the_native_format(stream: bool) -> None:
    """With native structured output, the effort joins the schema in one `output_config`;
    the answer parses."""
    async with _claude(ADAPTIVE + "    structured_output: native\n", upstream_id=OPUS) as s:
        client = s.openai()
        s.wall.script(OPUS, Reasoned(then=Answer(REPORT)))
        options: dict[str, Any] = {"response_format": WeatherReport, "reasoning_effort": "medium"}
        if stream:
            completion = await _ask(client, QUESTION, stream=True, **options)
        else:
            completion = await client.chat.completions.parse(
                model="claude", messages=QUESTION, **options
            )
        assert completion.choices[0].message.content == REPORT
        assert completion.choices[0].message.parsed == WeatherReport(city="Oslo", celsius=4)
        config = _sent(s)["output_config"]
        assert set(config) == {"format", "effort"}
        assert (config["format"]["type"], config["effort"]) == ("json_schema", "medium")


async def test_json_schema_in_tool_mode_gets_no_adaptive_thinking() -> None:
    """json_schema in tool mode forces the answer tool: no thinking and no effort."""
    async with _claude(ADAPTIVE, upstream_id=OPUS) as s:
        s.wall.script(OPUS, ToolCalls(calls=(("toolu_9", "weather_report", REPORT),)))
        completion = await _ask(
            s.openai(),
            QUESTION,
            stream=False,
            response_format=REPORT_FORMAT,
            reasoning_effort="high",
        )
        assert json.loads(completion.choices[0].message.content) == json.loads(REPORT)
        sent = _sent(s)
        assert sent["tool_choice"] == FORCED
        assert not {"thinking", "output_config"} & set(sent)


async def test_a_budget_to_a_model_that_thinks_adaptively_is_refused_as_anthropic_would() -> None:
    """The catalog key matters: left at `thinking: budget`, a Claude 4.7+ model gets a
    budget, which it refuses (a 400 for the caller, with Anthropic's message)."""
    async with _claude(upstream_id=OPUS) as s:
        with pytest.raises(openai.BadRequestError):
            await _ask(s.openai(), QUESTION, stream=False, reasoning_effort="high")
        assert _sent(s)["thinking"] == {"type": "enabled", "budget_tokens": 16384}


def test_adaptive_thinking_text_is_omitted_unless_asked() -> None:
    """The fake holds the real default: Claude 4.7 and later send thinking blocks without
    their text unless `display: summarized` asks for it; earlier models send it."""
    adaptive = {"type": "adaptive"}
    assert not anthropic_server.thinking_shown({"model": OPUS, "thinking": adaptive})
    assert anthropic_server.thinking_shown(
        {"model": OPUS, "thinking": {**adaptive, "display": "summarized"}}
    )
    assert anthropic_server.thinking_shown({"model": SONNET, "thinking": adaptive})


BASE = {"model": SONNET, "max_tokens": 4096, "messages": [QUESTION_TURN]}
HEADERS = {"anthropic-version": "2023-06-01"}


@pytest.mark.parametrize(
    ("body", "refused"),
    [
        ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}}, False),
        ({"thinking": {"type": "adaptive", "display": "omitted"}}, False),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, False),
        ({"model": OPUS, "thinking": {"type": "enabled", "budget_tokens": 1024}}, True),
        ({"model": OPUS, "thinking": {"type": "disabled"}}, True),
        ({"thinking": {"type": "adaptive", "budget_tokens": 1024}}, True),
        ({"thinking": {"type": "adaptive", "display": "full"}}, True),
        ({"thinking": {"type": "adaptive"}, "temperature": 0.5}, True),
        ({"thinking": {"type": "adaptive"}, "top_p": 0.5}, True),
        ({"output_config": {"effort": "minimal"}}, True),
        ({"output_config": {"effort": "low", "verbosity": "low"}}, True),
        ({"output_config": {}}, True),
        ({"model": OPUS, "temperature": 0.5}, True),
        (
            {
                "thinking": {"type": "adaptive"},
                "tools": ANTHROPIC_TOOLS,
                "tool_choice": {"type": "any"},
            },
            True,
        ),
    ],
)
def test_the_fake_holds_adaptive_thinkings_rules(body: dict[str, Any], refused: bool) -> None:
    """What the real API refuses with adaptive thinking and on Claude 4.7 and later: budgets
    there (and `disabled`), a budget or an unknown display with adaptive, sampling changes
    and forced tool use while thinking, an effort it has no level for, sampling parameters on
    the newer models at all."""
    problem = anthropic_server.request_problem(HEADERS, {**BASE, **body})
    assert (problem is not None) == refused, problem


@pytest.mark.xfail(
    strict=True,
    reason="gap: Claude 4.7 and later refuse temperature/top_p/top_k even without thinking; "
    "the catalog has no key saying a model takes no sampling parameters",
)
async def test_sampling_parameters_reach_a_model_that_refuses_them() -> None:
    async with _claude(ADAPTIVE, upstream_id=OPUS) as s:
        s.wall.script(OPUS, Answer("Sunny."))
        await _ask(s.openai(), QUESTION, stream=False, temperature=0.3)


@pytest.mark.xfail(
    strict=True,
    reason="gap: Claude 4.7 and later refuse a prefilled (trailing) assistant turn; the "
    "adapter sends one as a prefill",
)
async def test_a_prefill_reaches_a_model_that_refuses_it() -> None:
    async with _claude(ADAPTIVE, upstream_id=OPUS) as s:
        s.wall.script(OPUS, Answer("Sunny."))
        prefill = {"role": "assistant", "content": "The weather is"}
        await _ask(s.openai(), [*QUESTION, prefill], stream=False)


# --- the pure translations: whole, streamed, and what is malformed ---------------------------


def _events_of(blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """A stream's events: message_start, each block's start, deltas and stop, the end."""
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "model": "claude-x",
                "usage": {"input_tokens": 5, "output_tokens": 1},
            },
        }
    ]
    for index, (start, deltas) in enumerate(blocks):
        events.append({"type": "content_block_start", "index": index, "content_block": start})
        events.extend({"type": "content_block_delta", "index": index, "delta": d} for d in deltas)
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 9},
        }
    )
    return events


def _fold(
    events: list[dict[str, Any]], answer: str | None = None
) -> tuple[list[StreamEvent], StreamEnd]:
    state = StreamState(answer=answer)
    out = [e for e in (apply_event(state, event, "pa") for event in events) if e is not None]
    return out, state.end(ChatRequest(model="claude", messages=(Message("user", "hi"),)))


def _assemble(events: list[StreamEvent]) -> list[tuple[str, str, str]]:
    """Tool-call deltas assembled by index, as an OpenAI client does."""
    calls: dict[int, list[str]] = {}
    for e in events:
        if isinstance(e, ToolCallDelta):
            if e.id is not None:
                assert e.index not in calls
                assert e.name is not None
                assert e.arguments == ""
                calls[e.index] = [e.id, e.name, ""]
            else:
                calls[e.index][2] += e.arguments
    assert sorted(calls) == list(range(len(calls)))
    return [(i, n, a) for i, n, a in (calls[k] for k in sorted(calls))]


def _whole(blocks: list[dict[str, Any]], answer: str | None = None) -> Completion:
    body = {
        "id": "msg_1",
        "model": "claude-x",
        "content": blocks,
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 5, "output_tokens": 9},
    }
    return from_wire(
        body, ChatRequest(model="claude", messages=(Message("user", "hi"),)), "pa", answer=answer
    )


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def _cut_calls(draw: st.DrawFn) -> list[tuple[str, str, dict[str, Any], list[str], bool]]:
    """Tool calls (id, name, input, the input's JSON text cut into pieces, input in the
    start event instead): the JSON as a model might write it, cut anywhere."""
    calls = []
    for i in range(draw(st.integers(1, 3))):
        value = draw(st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=4))
        spaced = draw(st.booleans())
        text = json.dumps(value, ensure_ascii=draw(st.booleans()), indent=2 if spaced else None)
        cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=8)))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        calls.append(
            (
                f"toolu_{i}",
                draw(st.sampled_from(["get_weather", "now", "f"])),
                value,
                pieces,
                draw(st.booleans()),
            )
        )
    return calls


@settings(max_examples=150, deadline=None)
@given(calls=_cut_calls(), thinking=st.booleans(), text=st.booleans())
def test_streamed_tool_calls_assemble_to_the_whole_answers_calls(
    calls: list[tuple[str, str, dict[str, Any], list[str], bool]], thinking: bool, text: bool
) -> None:
    """However the input JSON is cut into `input_json_delta` pieces (or sent whole in the
    block's start), the deltas assemble by index to the model's JSON and to the same calls
    as the whole answer; thinking and text blocks before them do not shift the indexes."""
    blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    whole: list[dict[str, Any]] = []
    if thinking:
        blocks.append(
            (
                {"type": "thinking", "thinking": "", "signature": ""},
                [
                    {"type": "thinking_delta", "thinking": "hm"},
                    {"type": "signature_delta", "signature": "s"},
                ],
            )
        )
        whole.append({"type": "thinking", "thinking": "hm", "signature": "s"})
    if text:
        blocks.append(({"type": "text", "text": ""}, [{"type": "text_delta", "text": "Calling."}]))
        whole.append({"type": "text", "text": "Calling."})
    for call_id, name, value, pieces, in_start in calls:
        start = {
            "type": "tool_use",
            "id": call_id,
            "name": name,
            "input": value if in_start else {},
        }
        deltas = (
            [] if in_start else [{"type": "input_json_delta", "partial_json": p} for p in pieces]
        )
        blocks.append((start, deltas))
        whole.append({"type": "tool_use", "id": call_id, "name": name, "input": value})
    events, end = _fold(_events_of(blocks))
    completion = _whole(whole)
    streamed = _assemble(events)
    assert (
        [(i, n, json.loads(a)) for i, n, a in streamed]
        == [(c.id, c.name, json.loads(c.arguments)) for c in completion.tool_calls]
        == [(i, n, v) for i, n, v, _, _ in calls]
    )
    for (_, _, arguments), (_, _, value, pieces, in_start) in zip(streamed, calls, strict=True):
        assert arguments == (
            json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            if in_start
            else "".join(pieces)
        )
    assert end.finish_reason == completion.finish_reason == "tool_calls"
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == completion.text
    assert [e.block for e in events if isinstance(e, ReasoningDelta) and e.block] == list(
        completion.thinking_blocks
    )


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    pieces=st.integers(min_value=1, max_value=30),
    arguments=st.lists(
        st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=3),
        min_size=1,
        max_size=3,
    ),
)
async def test_streamed_tool_calls_through_the_sidecar_match_the_whole_answer(
    pieces: int, arguments: list[dict[str, str]]
) -> None:
    """End to end with the SDK's stream helper: the same calls as the whole answer."""
    behaviour = ToolCalls(
        calls=tuple(
            (f"toolu_{i}", "get_weather", json.dumps(a, ensure_ascii=False))
            for i, a in enumerate(arguments)
        ),
        pieces=pieces,
    )
    async with _claude() as s:
        s.wall.script("up-claude", behaviour)
        client = s.openai()
        whole = await _ask(client, QUESTION, stream=False, tools=TOOLS)
        streamed = await _ask(client, QUESTION, stream=True, tools=TOOLS)

    def shape(completion: Any) -> list[tuple[str, str, Any]]:
        return [
            (c.id, c.function.name, json.loads(c.function.arguments))
            for c in completion.choices[0].message.tool_calls
        ]

    assert shape(streamed) == shape(whole) == [(i, n, json.loads(a)) for i, n, a in behaviour.calls]
    assert [c.function.arguments for c in streamed.choices[0].message.tool_calls] == [
        a for _, _, a in behaviour.calls
    ]


def test_the_answer_tools_input_streams_as_text_and_ends_normally() -> None:
    """The answer tool's `input_json_delta` pieces are text deltas, and its `tool_use` stop
    is a normal end, whole and streamed."""
    start = {"type": "tool_use", "id": "toolu_9", "name": "weather_report", "input": {}}
    deltas = [{"type": "input_json_delta", "partial_json": p} for p in ('{"city": "Os', 'lo"}')]
    events, end = _fold(_events_of([(start, deltas)]), answer="weather_report")
    assert events == [TextDelta('{"city": "Os'), TextDelta('lo"}')]
    assert end.finish_reason == "stop"
    whole = _whole([{**start, "input": {"city": "Oslo"}}], answer="weather_report")
    assert (whole.text, whole.tool_calls, whole.finish_reason) == ('{"city":"Oslo"}', (), "stop")


def test_redacted_thinking_is_kept_whole_and_streamed() -> None:
    """A redacted thinking block comes back whole at its start; a thinking block's text as
    it streams, then the block with its signature once it closes."""
    redacted = {"type": "redacted_thinking", "data": "EmwKAhgBEgy"}
    text = {"type": "text", "text": "Done."}
    events, _ = _fold(
        _events_of(
            [
                (redacted, []),
                (
                    {"type": "thinking", "thinking": "", "signature": ""},
                    [
                        {"type": "thinking_delta", "thinking": "a"},
                        {"type": "thinking_delta", "thinking": "b"},
                        {"type": "signature_delta", "signature": "sig"},
                    ],
                ),
                (text, []),
            ]
        )
    )
    thought = {"type": "thinking", "thinking": "ab", "signature": "sig"}
    assert events == [
        ReasoningDelta("", block=redacted),
        ReasoningDelta("a"),
        ReasoningDelta("b"),
        ReasoningDelta("", block=thought),
        TextDelta("Done."),
    ]
    whole = _whole([redacted, thought, text])
    assert (whole.reasoning, whole.thinking_blocks, whole.text) == (
        "ab",
        (redacted, thought),
        "Done.",
    )
    assert whole.finish_reason == "stop"  # tool_use with no call for the caller


@pytest.mark.parametrize(
    ("block", "streamed"),
    [
        ({"type": "tool_use", "id": "t1", "name": "f", "input": "not an object"}, True),
        ({"type": "tool_use", "id": 7, "name": "f", "input": {}}, True),
        ({"type": "redacted_thinking"}, True),
        # (streamed, a thinking block's signature comes in its own delta)
        ({"type": "thinking", "thinking": "no signature"}, False),
    ],
)
def test_off_shape_blocks_are_malformed(block: dict[str, Any], streamed: bool) -> None:
    """A tool call or thinking block of the wrong shape is `ProviderMalformed`, not a 500."""
    with pytest.raises(ProviderMalformed):
        _whole([block])
    if not streamed:
        return
    start = {"type": "content_block_start", "index": 0, "content_block": block}
    with pytest.raises(ProviderMalformed):
        apply_event(StreamState(), start, "pa")


def test_an_image_without_a_data_url_is_a_url_source_and_detail_changes_nothing() -> None:
    """Any URL that is not a data URL goes as a url source (Anthropic fetches it); `detail`
    is a no-op."""
    low = ChatRequest(
        model="claude", messages=(Message("user", "", (ImagePart("http://x/a.png", "low"),)),)
    )
    auto = ChatRequest(
        model="claude", messages=(Message("user", "", (ImagePart("http://x/a.png"),)),)
    )
    assert to_wire(low, "m", stream=False) == to_wire(auto, "m", stream=False)
    assert to_wire(low, "m", stream=False)["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "url", "url": "http://x/a.png"}}
    ]
