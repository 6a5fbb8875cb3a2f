"""Tool calling through OpenAI-compatible upstreams (issue 16, first part): `tools`,
`tool_choice` and `parallel_tool_calls` go as sent, tool calls come back whole and streamed in
OpenAI's shape, and the conversation with tool results goes on. (Anthropic, Gemini, the
simulator and fusion have files of their own.)"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakes.script import Answer, OddShape, ToolCalls
from tests.helpers import sidecar
from tests.test_passthrough import _post, _two_protocols

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
QUESTION: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Oslo?"}]


async def _ask(client: openai.AsyncOpenAI, *, stream: bool, **options: Any) -> Any:
    """One answer to QUESTION with TOOLS through the SDK: `create`, or its stream helper's
    final completion (the events read one by one, as an agent's UI would)."""
    if not stream:
        return await client.chat.completions.create(
            model="m-a",
            messages=QUESTION,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
            **options,
        )
    async with client.chat.completions.stream(
        model="m-a",
        messages=QUESTION,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        **options,
    ) as events:
        async for _ in events:
            pass
        return await events.get_final_completion()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_an_agent_loop_with_the_openai_sdk(stream: bool) -> None:
    """Tool call, tool result, final answer: what the SDK parses, and what the upstream got."""
    async with sidecar() as s:
        client = s.openai()
        s.wall.script("up-model-a", [ToolCalls(), Answer("It is 4 degrees in Oslo.")])
        completion = await _ask(
            client, stream=stream, tool_choice="auto", parallel_tool_calls=False
        )
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls is not None
        [call] = choice.message.tool_calls
        assert (call.id, call.function.name) == ("call_1", "get_weather")
        assert json.loads(call.function.arguments) == {"city": "Oslo"}
        sent = s.wall.calls[0].body
        assert sent["tools"] == TOOLS
        assert (sent["tool_choice"], sent["parallel_tool_calls"]) == ("auto", False)
        follow_up = [
            *QUESTION,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": call.function.arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 4}'},
        ]
        final = await client.chat.completions.create(
            model="m-a",
            messages=follow_up,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
        )
        assert final.choices[0].message.content == "It is 4 degrees in Oslo."
        second = s.wall.calls[1].body["messages"]
        assert second[1]["tool_calls"][0]["id"] == call.id
        assert second[1]["content"] is None
        assert second[2] == {"role": "tool", "content": '{"celsius": 4}', "tool_call_id": call.id}


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    pieces=st.integers(min_value=1, max_value=40),
    calls=st.lists(
        st.tuples(
            st.sampled_from(["get_weather", "lookup", "f"]),
            st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=3),
        ),
        min_size=1,
        max_size=3,
    ),
)
async def test_streamed_tool_call_deltas_assemble_to_the_whole_answers_calls(
    pieces: int, calls: list[tuple[str, dict[str, str]]]
) -> None:
    """However the upstream cuts the arguments, the SDK assembles the same calls from the
    stream as from the whole answer."""
    behaviour = ToolCalls(
        calls=tuple(
            (f"call_{i}", name, json.dumps(args, ensure_ascii=False))
            for i, (name, args) in enumerate(calls)
        ),
        pieces=pieces,
    )
    async with sidecar() as s:
        s.wall.script("up-model-a", behaviour)
        client = s.openai()
        whole = await _ask(client, stream=False)
        streamed = await _ask(client, stream=True)

    def shape(completion: Any) -> list[tuple[str, str, Any]]:
        return [
            (c.id, c.function.name, json.loads(c.function.arguments))
            for c in completion.choices[0].message.tool_calls
        ]

    assert shape(streamed) == shape(whole) == [(i, n, json.loads(a)) for i, n, a in behaviour.calls]


async def test_arguments_that_are_no_json_object_go_only_where_text_is_taken() -> None:
    """A model's malformed arguments, sent back as history, stay text to OpenAI; Anthropic
    takes arguments as an object, so its targets are skipped (none left: a 400 naming it)."""
    history = [
        *QUESTION,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "4 degrees"},
    ]
    async with _two_protocols() as (url, wall):
        status, body, _ = await _post(
            url, {"model": "claude-first", "messages": history, "tools": TOOLS}
        )
        assert status == 200, body
        assert [c.model for c in wall.calls] == ["up-gpt"]
        sent = wall.calls[0].body["messages"][1]["tool_calls"][0]["function"]["arguments"]
        assert sent == '{"city": "Oslo"'
        status, body, _ = await _post(
            url, {"model": "claude-only", "messages": history, "tools": TOOLS}
        )
        assert status == 400, body
        assert body["error"]["code"] == "unsupported_parameter"
        assert body["error"]["param"].startswith("messages[].tool_calls[].function.arguments")
        assert "anthropic" in body["error"]["message"]
        assert [c.model for c in wall.calls] == ["up-gpt"]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "code_interpreter"}]}, "tools[0]"),
        ({"tools": "get_weather"}, "tools"),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": TOOLS, "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ],
)
async def test_bad_tool_fields_are_a_400_naming_them(extra: dict[str, Any], param: str) -> None:
    async with sidecar() as s:
        status, body, _ = await _post(s.url, {"model": "m-a", "messages": QUESTION, **extra})
        assert status == 400, body
        assert body["error"]["param"] == param
        assert s.wall.calls == []


async def test_the_sdks_streamed_answer_goes_back_as_history() -> None:
    """The SDK's parsed message (with `refusal`, `audio`, `annotations`... as null) is sent
    back as the next turn's history; nulls are no fields to refuse."""
    async with sidecar() as s:
        client = s.openai()
        s.wall.script("up-model-a", [ToolCalls(), Answer("It is 4 degrees in Oslo.")])
        completion = await _ask(client, stream=True)
        message = completion.choices[0].message
        assert message.tool_calls
        history = [
            *QUESTION,
            message.model_dump(),
            {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "4"},
        ]
        final = await client.chat.completions.create(
            model="m-a",
            messages=history,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
        )
        assert final.choices[0].message.content == "It is 4 degrees in Oslo."
        assert not {"refusal", "audio", "parsed"} & set(s.wall.calls[1].body["messages"][1])


async def test_tool_calls_from_a_server_that_numbers_none() -> None:
    """Deltas without `index` (some OpenAI-compatible servers): an `id` starts the next call."""
    behaviour = ToolCalls(
        calls=(("c1", "get_weather", '{"city": "Oslo"}'), ("c2", "lookup", '{"q": 1}')),
        indexed=False,
    )
    async with sidecar() as s:
        s.wall.script("up-model-a", behaviour)
        completion = await _ask(s.openai(), stream=True)
        calls = completion.choices[0].message.tool_calls or []
        assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
            ("c1", "get_weather", '{"city": "Oslo"}'),
            ("c2", "lookup", '{"q": 1}'),
        ]


@pytest.mark.parametrize("key", ["tool_choice", "parallel_tool_calls"])
async def test_tool_options_without_tools_are_a_400(key: str) -> None:
    async with sidecar() as s:
        value: Any = "auto" if key == "tool_choice" else True
        status, body, _ = await _post(s.url, {"model": "m-a", "messages": QUESTION, key: value})
        assert status == 400, body
        assert body["error"]["param"] == key
        assert s.wall.calls == []


def test_an_assistant_turn_with_text_parts_and_tool_calls_keeps_its_parts() -> None:
    from router.providers.openai import to_wire
    from router.types import ChatRequest, Message

    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    turn = Message("assistant", "a\nb", ("a", "b"), tool_calls=(call,))
    body = to_wire(ChatRequest(model="m", messages=(turn,)), "m", stream=False)
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "a"},
        {"type": "text", "text": "b"},
    ]
    assert body["messages"][0]["tool_calls"] == [call]


SIGNED = {"google": {"thought_signature": "c2lnbmF0dXJl"}}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_tool_calls_extra_fields_reach_the_client(stream: bool) -> None:
    """Fields beyond OpenAI's own on a returned call (Gemini's OpenAI-compatible API puts a
    thought signature in `extra_content`) come back, for the client to send on the next turn."""
    call = {
        "id": "c1",
        "type": "function",
        "extra_content": SIGNED,
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    whole = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "up-model-a",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                "finish_reason": "tool_calls",
            }
        ],
    }
    piece = {"index": 0, **call}
    chunk = {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "up-model-a",
        "choices": [{"index": 0, "delta": {"tool_calls": [piece]}, "finish_reason": "tool_calls"}],
    }
    async with sidecar() as s:
        s.wall.script("up-model-a", OddShape(body=json.dumps(whole), events=(json.dumps(chunk),)))
        completion = await _ask(s.openai(), stream=stream)
        [returned] = completion.choices[0].message.tool_calls or []
        assert returned.id == "c1"
        assert (returned.model_extra or {}).get("extra_content") == SIGNED


async def test_a_tool_may_take_parameters_named_like_refused_fields() -> None:
    """`headers`, `api_key`, `proxy` refused as request fields are a tool's own names inside
    its parameters' `properties` (an HTTP tool of an MCP server takes `headers`)."""
    http_tool = {
        "type": "function",
        "function": {
            "name": "fetch",
            "parameters": {
                "type": "object",
                "properties": {"url": {"type": "string"}, "headers": {"type": "object"}},
                "$defs": {"api_key": {"type": "string"}},
            },
        },
    }
    async with sidecar() as s:
        status, body, _ = await _post(
            s.url, {"model": "m-a", "messages": QUESTION, "tools": [http_tool]}
        )
        assert status == 200, body
        assert s.wall.calls[0].body["tools"] == [http_tool]
        status, body, _ = await _post(
            s.url, {"model": "m-a", "messages": QUESTION, "tools": [http_tool], "headers": {}}
        )
        assert (status, body["error"]["code"]) == (400, "forbidden_field")
