"""Tools, tool turns, images, structured output and reasoning through the Gemini protocol
(issue 16), whole and streamed: a sidecar in front of the fake Gemini API, driven by the
official `openai` SDK. Each test checks the exact body Gemini got and what the SDK parsed."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.app import create_app
from router.providers.gemini import GeminiStream, from_wire, minted_id
from router.types import (
    ChatRequest,
    Message,
    ReasoningDelta,
    StreamEnd,
    TextDelta,
    ToolCallDelta,
)
from tests.fakes import gemini_server
from tests.fakes.script import Answer, Reasoned, ToolCalls, Wall
from tests.helpers import TEST_POLICIES, Sidecar, config_from_yaml, serve

UPSTREAM = "up-gemini"
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
CLOCK = {"type": "object", "properties": {"tz": {"type": "string"}}}
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": WEATHER,
        },
    },
    {"type": "function", "function": {"name": "local_time", "parameters": CLOCK}},
    {"type": "function", "function": {"name": "ping"}},  # no parameters
]
DECLARATIONS = [
    {
        "functionDeclarations": [
            {
                "name": "get_weather",
                "description": "The weather in a city",
                "parametersJsonSchema": WEATHER,
            },
            {"name": "local_time", "parametersJsonSchema": CLOCK},
            {"name": "ping"},
        ]
    }
]
QUESTION: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Oslo?"}]
ASKED = {"role": "user", "parts": [{"text": "Weather in Oslo?"}]}
SIGNATURE = base64.b64encode(b"sig-fake-1").decode()  # the fake's thoughtSignature, as sent
THINKING = "The user wants the weather. I should call the tool."
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5Er"
    "kJggg=="
)


def _yaml(url: str) -> str:
    return f"""
jurisdiction: us
policies: {TEST_POLICIES}
providers:
  pg:
    protocol: gemini
    base_url: {url}/v1beta
    allow_http: true
    region: us
models:
  gem:
    provider: pg
    upstream_id: {UPSTREAM}
    vendor: Google
    origin: us
    tier: strong
    context_window: 100000
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
"""


@asynccontextmanager
async def gemini_sidecar() -> AsyncIterator[Sidecar]:
    """A sidecar whose one model `gem` is served by the fake Gemini API."""
    wall = Wall()
    async with serve(gemini_server.make_app(wall)) as upstream:
        loaded = config_from_yaml(_yaml(str(upstream.make_url("")).rstrip("/")))
        app = create_app(loaded, environ={})
        async with serve(app) as server:
            s = Sidecar(str(server.make_url("")).rstrip("/"), wall, app)
            try:
                yield s
            finally:
                for c in s.clients:
                    await c.close()


async def _ask(s: Sidecar, *, stream: bool, messages: Any = None, **options: Any) -> Any:
    """One answer through the SDK: `create`, or its stream helper's final completion (the
    events read one by one, as an agent's UI would)."""
    client = s.openai()
    messages = QUESTION if messages is None else messages
    if not stream:
        return await client.chat.completions.create(model="gem", messages=messages, **options)
    async with client.chat.completions.stream(model="gem", messages=messages, **options) as events:
        async for _ in events:
            pass
        return await events.get_final_completion()


def _calls(completion: Any) -> list[tuple[str, str, Any, Any]]:
    """The answer's tool calls as (id, name, arguments parsed, extra_content)."""
    return [
        (
            c.id,
            c.function.name,
            json.loads(c.function.arguments),
            (c.model_extra or {}).get("extra_content"),
        )
        for c in completion.choices[0].message.tool_calls or ()
    ]


STREAMS = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])


@STREAMS
@pytest.mark.parametrize(
    ("tool_choice", "config"),
    [
        (None, None),
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
    ids=["unset", "auto", "none", "required", "named"],
)
async def test_tools_and_each_tool_choice_reach_gemini_translated(
    stream: bool, tool_choice: Any, config: Any
) -> None:
    """Function tools are `functionDeclarations` (their JSON Schema as `parametersJsonSchema`,
    none for a function without parameters); `tool_choice` is `functionCallingConfig`."""
    async with gemini_sidecar() as s:
        s.wall.script(UPSTREAM, Answer("No tool needed."))
        options: dict[str, Any] = {"tools": TOOLS}
        if tool_choice is not None:
            options["tool_choice"] = tool_choice
        completion = await _ask(s, stream=stream, **options)
        assert completion.choices[0].message.content == "No tool needed."
        assert completion.choices[0].finish_reason == "stop"
        expected: dict[str, Any] = {"contents": [ASKED], "tools": DECLARATIONS}
        if config is not None:
            expected["toolConfig"] = {"functionCallingConfig": config}
        [sent] = s.wall.calls
        assert sent.body == expected
        assert sent.stream is stream


TWO_CALLS = ToolCalls(
    calls=(
        ("fc-1", "get_weather", '{"city": "Oslo"}'),
        ("fc-2", "get_weather", '{"city": "Bergen"}'),
    ),
    text="Let me check both.",
)


@STREAMS
async def test_tool_calls_come_back_with_geminis_ids_and_finish_reason_tool_calls(
    stream: bool,
) -> None:
    """Gemini's function calls (it says STOP) are OpenAI tool calls with Gemini's ids, next to
    the answer's text, with `finish_reason: "tool_calls"`."""
    async with gemini_sidecar() as s:
        s.wall.script(UPSTREAM, TWO_CALLS)
        completion = await _ask(s, stream=stream, tools=TOOLS)
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content == "Let me check both."
        assert _calls(completion) == [
            ("fc-1", "get_weather", {"city": "Oslo"}, None),
            ("fc-2", "get_weather", {"city": "Bergen"}, None),
        ]


@STREAMS
async def test_calls_without_ids_get_stable_minted_ids(stream: bool) -> None:
    """Gemini 2.5 sends calls without ids: each gets one from the response id and its place in
    the answer, the same whole or streamed."""
    behaviour = ToolCalls(calls=(("", "get_weather", '{"city": "Oslo"}'), ("", "ping", "")))
    async with gemini_sidecar() as s:
        s.wall.script(UPSTREAM, behaviour)
        completion = await _ask(s, stream=stream, tools=TOOLS)
        ids = [f"gemini-call-{gemini_server.RESPONSE_ID}-{i}" for i in (0, 1)]
        assert _calls(completion) == [
            (ids[0], "get_weather", {"city": "Oslo"}, None),
            (ids[1], "ping", {}, None),
        ]
        assert ids == [minted_id(gemini_server.RESPONSE_ID, i) for i in (0, 1)]


def test_a_minted_id_without_a_usable_response_id_is_the_calls_place() -> None:
    """A response id that is not a short token is left out of a minted id."""
    assert minted_id(None, 3) == "gemini-call-3"
    assert minted_id("x" * 65, 0) == "gemini-call-0"
    assert minted_id("a b", 1) == "gemini-call-1"
    assert minted_id("Ct1U-a_9", 2) == "gemini-call-Ct1U-a_9-2"


@STREAMS
async def test_parallel_tool_calls_false_keeps_only_the_first_call(stream: bool) -> None:
    """Gemini has no switch for it: the answer's first call is returned, the rest dropped, and
    Gemini is sent nothing for it."""
    async with gemini_sidecar() as s:
        s.wall.script(UPSTREAM, TWO_CALLS)
        completion = await _ask(s, stream=stream, tools=TOOLS, parallel_tool_calls=False)
        assert _calls(completion) == [("fc-1", "get_weather", {"city": "Oslo"}, None)]
        assert completion.choices[0].finish_reason == "tool_calls"
        assert s.wall.calls[0].body == {"contents": [ASKED], "tools": DECLARATIONS}


async def test_streamed_calls_arrive_as_openai_deltas() -> None:
    """Each function call is one delta in OpenAI's shape: index, id, type, name and its whole
    arguments; the stream finishes with `tool_calls`."""
    async with gemini_sidecar() as s, aiohttp.ClientSession() as http:
        s.wall.script(UPSTREAM, ToolCalls(calls=TWO_CALLS.calls, pieces=1))
        body = {"model": "gem", "messages": QUESTION, "tools": TOOLS, "stream": True}
        async with http.post(f"{s.url}/v1/chat/completions", json=body) as response:
            raw = await response.text()
    chunks = [
        json.loads(line[6:])
        for line in raw.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]
    deltas = [d for c in chunks for ch in c["choices"] for d in ch["delta"].get("tool_calls", [])]
    assert deltas == [
        {
            "index": 0,
            "id": "fc-1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
        },
        {
            "index": 1,
            "id": "fc-2",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Bergen"}'},
        },
    ]
    finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert finishes == ["tool_calls"]


@STREAMS
async def test_an_agent_loop_round_trips_the_thought_signature(stream: bool) -> None:
    """Reasoning, a signed tool call, its result, the final answer: the call's thought
    signature comes back in `extra_content` and goes back to Gemini on its `functionCall`
    part; the result is a `functionResponse` named after the call, with Gemini's id."""
    first = Reasoned(
        thinking=THINKING, then=ToolCalls(calls=(("fc-7", "get_weather", '{"city": "Oslo"}'),))
    )
    async with gemini_sidecar() as s:
        s.wall.script(UPSTREAM, [first, Answer("It is 4 degrees in Oslo.")])
        completion = await _ask(s, stream=stream, tools=TOOLS, reasoning_effort="low")
        message = completion.choices[0].message
        signed = {"google": {"thought_signature": SIGNATURE}}
        assert _calls(completion) == [("fc-7", "get_weather", {"city": "Oslo"}, signed)]
        assert (message.model_extra or {})["reasoning_content"] == THINKING
        history = [
            *QUESTION,
            message.model_dump(),  # as an agent keeps it: reasoning_content and all
            {"role": "tool", "tool_call_id": "fc-7", "content": '{"celsius": 4}'},
        ]
        final = await _ask(s, stream=stream, messages=history, tools=TOOLS)
        assert final.choices[0].message.content == "It is 4 degrees in Oslo."
        assert final.choices[0].finish_reason == "stop"
        assert s.wall.calls[1].body == {
            "contents": [
                ASKED,
                {
                    "role": "model",
                    "parts": [
                        {
                            "functionCall": {
                                "id": "fc-7",
                                "name": "get_weather",
                                "args": {"city": "Oslo"},
                            },
                            "thoughtSignature": SIGNATURE,
                        }
                    ],
                },
                {
                    "role": "user",
                    "parts": [
                        {
                            "functionResponse": {
                                "id": "fc-7",
                                "name": "get_weather",
                                "response": {"celsius": 4},
                            }
                        }
                    ],
                },
            ],
            "tools": DECLARATIONS,
        }


@STREAMS
async def test_consecutive_results_share_one_turn_and_minted_ids_stay_here(stream: bool) -> None:
    """Two results in a row are one `user` turn of `functionResponse` parts, each named after
    its call; a text result is `{"result": ...}`. Ids minted here are not sent to Gemini."""
    behaviour = ToolCalls(
        calls=(("", "get_weather", '{"city": "Oslo"}'), ("", "local_time", '{"tz": "CET"}'))
    )
    async with gemini_sidecar() as s:
        s.wall.script(UPSTREAM, [behaviour, Answer("Done.")])
        completion = await _ask(s, stream=stream, tools=TOOLS)
        message = completion.choices[0].message
        first, second = (c.id for c in message.tool_calls or ())
        history = [
            *QUESTION,
            message.model_dump(),
            {"role": "tool", "tool_call_id": second, "content": "12:00"},
            {"role": "tool", "tool_call_id": first, "content": '{"celsius": 4}'},
            {"role": "user", "content": "Thanks."},
        ]
        final = await _ask(s, stream=stream, messages=history, tools=TOOLS)
        assert final.choices[0].message.content == "Done."
        assert s.wall.calls[1].body["contents"] == [
            ASKED,
            {
                "role": "model",
                "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
                    {"functionCall": {"name": "local_time", "args": {"tz": "CET"}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "local_time", "response": {"result": "12:00"}}},
                    {"functionResponse": {"name": "get_weather", "response": {"celsius": 4}}},
                    {"text": "Thanks."},
                ],
            },
        ]


async def test_an_assistant_turn_with_text_and_calls_keeps_both() -> None:
    """An assistant's text goes before its calls in the `model` turn; a tool result that is a
    JSON value but not an object is wrapped as `{"result": ...}`."""
    call = {
        "id": "fc-1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    history = [
        *QUESTION,
        {"role": "assistant", "content": "Checking.", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "fc-1", "content": "[1, 2]"},
    ]
    async with gemini_sidecar() as s:
        s.wall.script(UPSTREAM, Answer("Done."))
        await _ask(s, stream=False, messages=history, tools=TOOLS)
        assert s.wall.calls[0].body["contents"][1:] == [
            {
                "role": "model",
                "parts": [
                    {"text": "Checking."},
                    {
                        "functionCall": {
                            "id": "fc-1",
                            "name": "get_weather",
                            "args": {"city": "Oslo"},
                        }
                    },
                ],
            },
            {
                "role": "user",
                "parts": [
                    {
                        "functionResponse": {
                            "id": "fc-1",
                            "name": "get_weather",
                            "response": {"result": "[1, 2]"},
                        }
                    }
                ],
            },
        ]


async def test_a_call_without_arguments_goes_back_to_gemini() -> None:
    """A call to a function without parameters (`{}`) and its result go back to Gemini."""
    call = {"id": "fc-1", "type": "function", "function": {"name": "ping", "arguments": "{}"}}
    history = [
        *QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "fc-1", "content": "pong"},
    ]
    async with gemini_sidecar() as s:
        s.wall.script(UPSTREAM, Answer("Done."))
        await _ask(s, stream=False, messages=history, tools=TOOLS)
        assert s.wall.calls[0].body["contents"][1:] == [
            {
                "role": "model",
                "parts": [{"functionCall": {"id": "fc-1", "name": "ping", "args": {}}}],
            },
            {
                "role": "user",
                "parts": [
                    {
                        "functionResponse": {
                            "id": "fc-1",
                            "name": "ping",
                            "response": {"result": "pong"},
                        }
                    }
                ],
            },
        ]


@STREAMS
async def test_a_result_for_no_earlier_call_is_a_400_without_a_call(stream: bool) -> None:
    """Gemini needs the function's name, found only through an earlier call with that id: a
    result for no such call is the caller's mistake (OpenAI refuses it too), said at the door."""
    history = [*QUESTION, {"role": "tool", "tool_call_id": "nowhere", "content": "4"}]
    async with gemini_sidecar() as s, aiohttp.ClientSession() as http:
        body = {"model": "gem", "messages": history, "tools": TOOLS, "stream": stream}
        async with http.post(f"{s.url}/v1/chat/completions", json=body) as response:
            answer = await response.json()
        assert response.status == 400, answer
        assert (answer["error"]["code"], answer["error"]["param"]) == (
            "invalid_request",
            "messages[1].tool_call_id",
        )
        assert s.wall.calls == []


@STREAMS
async def test_a_data_url_image_is_inline_data_in_its_place(stream: bool) -> None:
    """Text and image parts keep their order; a data URL's bytes are `inlineData`."""
    content = [
        {"type": "text", "text": "What is this?"},
        {
            "type": "image_url",
            "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"},
        },
        {"type": "text", "text": "Be brief."},
    ]
    async with gemini_sidecar() as s:
        s.wall.script(UPSTREAM, Answer("A dot."))
        completion = await _ask(s, stream=stream, messages=[{"role": "user", "content": content}])
        assert completion.choices[0].message.content == "A dot."
        assert s.wall.calls[0].body == {
            "contents": [
                {
                    "role": "user",
                    "parts": [
                        {"text": "What is this?"},
                        {"inlineData": {"mimeType": "image/png", "data": PNG}},
                        {"text": "Be brief."},
                    ],
                }
            ]
        }


async def test_an_https_image_url_is_a_400_naming_the_field_and_gemini() -> None:
    """Gemini needs an image's bytes and the sidecar never fetches a URL: with Gemini the only
    target, the request is refused by name, and nothing is called."""
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    async with gemini_sidecar() as s, aiohttp.ClientSession() as http:
        body = {"model": "gem", "messages": [{"role": "user", "content": content}]}
        async with http.post(f"{s.url}/v1/chat/completions", json=body) as response:
            answer = await response.json()
        assert response.status == 400, answer
        error = answer["error"]
        assert error["code"] == "unsupported_parameter"
        assert error["param"] == "messages[].content[].image_url (an http URL)"
        assert "gemini" in error["message"]
        assert s.wall.calls == []


FORECAST = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "celsius": {"type": "integer"}},
    "required": ["city", "celsius"],
    "additionalProperties": False,
}


@STREAMS
async def test_json_schema_is_response_json_schema(stream: bool) -> None:
    """`response_format: json_schema` is `responseMimeType` JSON with the schema as sent in
    `responseJsonSchema`; its name and `strict` have no Gemini field."""
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "forecast", "schema": FORECAST, "strict": True},
    }
    async with gemini_sidecar() as s:
        s.wall.script(UPSTREAM, Answer('{"city": "Oslo", "celsius": 4}'))
        completion = await _ask(s, stream=stream, response_format=response_format)
        assert json.loads(completion.choices[0].message.content) == {"city": "Oslo", "celsius": 4}
        assert s.wall.calls[0].body == {
            "contents": [ASKED],
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseJsonSchema": FORECAST,
            },
        }


class Forecast(pydantic.BaseModel):
    city: str
    celsius: int


@STREAMS
async def test_the_sdks_parse_helper_gets_its_model_back(stream: bool) -> None:
    """The SDK's own structured-output helpers (a pydantic model as `response_format`) send
    their strict schema on to Gemini and parse the answer into the model."""
    async with gemini_sidecar() as s:
        s.wall.script(UPSTREAM, Answer('{"city": "Oslo", "celsius": 4}'))
        client = s.openai()
        if stream:
            async with client.chat.completions.stream(
                model="gem", messages=QUESTION, response_format=Forecast
            ) as events:
                async for _ in events:
                    pass
                completion = await events.get_final_completion()
        else:
            completion = await client.chat.completions.parse(
                model="gem", messages=QUESTION, response_format=Forecast
            )
        assert completion.choices[0].message.parsed == Forecast(city="Oslo", celsius=4)
        config = s.wall.calls[0].body["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        schema = config["responseJsonSchema"]  # the SDK's strict schema, as it sent it
        assert (schema["required"], schema["additionalProperties"]) == (["city", "celsius"], False)
        assert {k: v["type"] for k, v in schema["properties"].items()} == {
            "city": "string",
            "celsius": "integer",
        }


@pytest.mark.parametrize(
    ("effort", "thinking"),
    [
        ("none", {"thinkingBudget": 0}),
        ("minimal", {"thinkingBudget": 512, "includeThoughts": True}),
        ("low", {"thinkingBudget": 1024, "includeThoughts": True}),
        ("medium", {"thinkingBudget": 8192, "includeThoughts": True}),
        ("high", {"thinkingBudget": 24576, "includeThoughts": True}),
        ("xhigh", {"thinkingBudget": 24576, "includeThoughts": True}),
    ],
)
async def test_reasoning_effort_is_a_thinking_config(effort: str, thinking: Any) -> None:
    """`reasoning_effort` is `generationConfig.thinkingConfig`, by the documented table."""
    async with gemini_sidecar() as s:
        s.wall.script(UPSTREAM, Answer("Four."))
        completion = await _ask(s, stream=False, reasoning_effort=effort)
        assert completion.choices[0].message.content == "Four."
        assert s.wall.calls[0].body == {
            "contents": [ASKED],
            "generationConfig": {"thinkingConfig": thinking},
        }


async def test_thought_text_is_reasoning_content_and_thinking_tokens_are_output() -> None:
    """Thought parts are `reasoning_content`, never answer text; the thinking's tokens count
    as output, whole and streamed (the stream's reasoning arrives as deltas)."""
    behaviour = Reasoned(thinking=THINKING, then=Answer("Four.", input_tokens=9, output_tokens=2))
    thoughts = len(THINKING.split())
    async with gemini_sidecar() as s:
        s.wall.script(UPSTREAM, behaviour)
        whole = await _ask(s, stream=False, reasoning_effort="high")
        message = whole.choices[0].message
        assert (message.content, (message.model_extra or {})["reasoning_content"]) == (
            "Four.",
            THINKING,
        )
        assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (9, 2 + thoughts)
        client = s.openai()
        pieces, text = [], ""
        stream = await client.chat.completions.create(
            model="gem",
            messages=QUESTION,
            reasoning_effort="high",
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = None
        async for chunk in stream:
            for choice in chunk.choices:
                extra = choice.delta.model_extra or {}
                if "reasoning_content" in extra:
                    assert not text, "reasoning after the answer began"
                    pieces.append(extra["reasoning_content"])
                text += choice.delta.content or ""
            usage = chunk.usage or usage
        assert len(pieces) == behaviour.pieces
        assert ("".join(pieces), text) == (THINKING, "Four.")
        assert usage is not None
        assert usage.completion_tokens == 2 + thoughts


@STREAMS
async def test_reasoning_sent_back_is_a_no_op(stream: bool) -> None:
    """`reasoning_content` and Anthropic's `thinking_blocks` on an assistant turn are accepted
    and not sent: Gemini takes no thought text back, and the signatures are Anthropic's."""
    history = [
        *QUESTION,
        {
            "role": "assistant",
            "content": "Cold.",
            "reasoning_content": "Think.",
            "thinking_blocks": [{"type": "thinking", "thinking": "Think.", "signature": "s"}],
        },
        {"role": "user", "content": "How cold?"},
    ]
    async with gemini_sidecar() as s:
        s.wall.script(UPSTREAM, Answer("4 degrees."))
        completion = await _ask(s, stream=stream, messages=history)
        assert completion.choices[0].message.content == "4 degrees."
        assert s.wall.calls[0].body == {
            "contents": [
                ASKED,
                {"role": "model", "parts": [{"text": "Cold."}]},
                {"role": "user", "parts": [{"text": "How cold?"}]},
            ]
        }


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    pieces=st.integers(min_value=1, max_value=12),
    text=st.sampled_from(["", "Checking.", "Let me look at that for you."]),
    calls=st.lists(
        st.tuples(
            st.sampled_from(["", "fc-a", "fc-b"]),
            st.sampled_from(["get_weather", "local_time", "ping"]),
            st.dictionaries(st.text(max_size=6), st.text(max_size=10), max_size=3),
        ),
        min_size=1,
        max_size=4,
    ),
)
async def test_streamed_calls_assemble_to_the_whole_answers_calls_through_the_sdk(
    pieces: int, text: str, calls: list[tuple[str, str, dict[str, str]]]
) -> None:
    """However the fake cuts its chunks, the SDK assembles the same calls from the stream as
    from the whole answer: the ids, the names and the arguments the model produced."""
    behaviour = ToolCalls(
        calls=tuple((i, n, json.dumps(a, ensure_ascii=False)) for i, n, a in calls),
        text=text,
        pieces=pieces,
    )
    async with gemini_sidecar() as s:
        s.wall.script(UPSTREAM, behaviour)
        whole = await _ask(s, stream=False, tools=TOOLS)
        streamed = await _ask(s, stream=True, tools=TOOLS)
    expected = [
        (i or minted_id(gemini_server.RESPONSE_ID, n), name, args, None)
        for n, (i, name, args) in enumerate(calls)
    ]
    assert _calls(streamed) == _calls(whole) == expected
    assert streamed.choices[0].message.content == whole.choices[0].message.content == (text or None)


# --- the stream reader on its own: any cut of the upstream's parts into chunks ---------------

_PART = st.one_of(
    st.builds(lambda t: {"text": t, "thought": True}, st.text(min_size=1, max_size=8)),
    st.builds(lambda t: {"text": t}, st.text(min_size=1, max_size=8)),
    st.builds(
        lambda i, n, a, sig: {
            "functionCall": {"name": n, "args": a, **({"id": i} if i else {})},
            **({"thoughtSignature": sig} if sig else {}),
        },
        st.sampled_from(["", "c1", "c2"]),
        st.sampled_from(["f", "g"]),
        st.dictionaries(st.text(max_size=4), st.integers() | st.text(max_size=4), max_size=3),
        st.sampled_from(["", "c2ln"]),
    ),
)


def _response(parts: list[dict[str, Any]], last: bool) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    data: dict[str, Any] = {"candidates": [candidate], "responseId": "r1", "modelVersion": "m"}
    if last:
        candidate["finishReason"] = "STOP"
        data["usageMetadata"] = {"promptTokenCount": 3, "candidatesTokenCount": 4}
    return data


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(_PART, min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=8), max_size=6),
    parallel=st.booleans(),
)
def test_any_cut_of_a_stream_reads_as_the_whole_answer(
    parts: list[dict[str, Any]], cuts: list[int], parallel: bool
) -> None:
    """Reading the answer's parts cut into chunks anywhere (empty chunks included) gives the
    same text, reasoning, calls (as OpenAI's deltas assemble them) and finish reason as
    reading the whole answer; with `parallel_tool_calls: false`, both keep the first call."""
    request = ChatRequest(
        model="gem",
        messages=(Message("user", "hi"),),
        passthrough=(("tools", ({"type": "function", "function": {"name": "f"}},)),)
        + ((("parallel_tool_calls", False),) if not parallel else ()),
    )
    whole = from_wire(_response(parts, last=True), request, "pg")
    bounds = [0, *sorted(min(c, len(parts)) for c in cuts), len(parts)]
    state = GeminiStream(request, "pg")
    events = []
    for n, (a, b) in enumerate(itertools.pairwise(bounds)):
        events += state.read(_response(parts[a:b], last=n == len(bounds) - 2))
    end = state.end()
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    assembled: dict[int, list[Any]] = {}
    for e in events:
        if isinstance(e, ToolCallDelta):
            call = assembled.setdefault(e.index, [e.id, e.name, "", dict(e.extra)])
            call[2] += e.arguments
    assert isinstance(end, StreamEnd)
    assert (text, reasoning, end.finish_reason) == (
        whole.text,
        whole.reasoning,
        whole.finish_reason,
    )
    assert [tuple(assembled[i]) for i in sorted(assembled)] == [
        (c.id, c.name, c.arguments, dict(c.extra)) for c in whole.tool_calls
    ]
    assert sorted(assembled) == list(range(len(assembled)))
    assert end.usage == whole.usage
    produced = [p["functionCall"] for p in parts if "functionCall" in p]
    assert [json.loads(c.arguments) for c in whole.tool_calls] == [
        p["args"] for p in produced[: None if parallel else 1]
    ]
