"""Fusion with tools (issue 16): panelists and the judge deliberate without the client's
tools (tool turns as text, the tools described), the synthesizer gets them and its tool calls
reach the client with the `fusion` object, whole and streamed; the next turn, with the tool
results, is a fresh fusion. Structured output, images and reasoning effort: who gets what."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from router.fusion.prompts import JUDGE_SYSTEM
from tests.fakes.script import Answer, Call, Reasoned, Status, ToolCalls
from tests.fusion_setup import fusion_sidecar, role_of
from tests.test_passthrough import _post, _two_protocols
from tests.test_tools_openai import QUESTION, TOOLS

CALLED = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        }
    ],
}
RESULT = {"role": "tool", "tool_call_id": "call_1", "content": '{"celsius": 4}'}
CALL_AS_TEXT = '[assistant called get_weather (call_1) with {"city": "Oslo"}]'
RESULT_AS_TEXT = '[result of get_weather (call_1): {"celsius": 4}]'
TOOL_KEYS = {"tools", "tool_choice", "parallel_tool_calls"}
STREAMS = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])


async def _ask(
    client: openai.AsyncOpenAI,
    messages: list[dict[str, Any]],
    *,
    stream: bool,
    model: str = "fusion/trio",
    **options: Any,
) -> tuple[Any, dict[str, Any]]:
    """The SDK's answer and the `fusion` object: `create`, or the stream helper's final
    completion (the fusion object rides in the stream's last chunk)."""
    if not stream:
        completion = await client.chat.completions.create(
            model=model,
            messages=messages,  # type: ignore[arg-type]
            **options,
        )
        return completion, (completion.model_extra or {})["fusion"]
    async with client.chat.completions.stream(
        model=model,
        messages=messages,  # type: ignore[arg-type]
        **options,
    ) as events:
        chunks = [event.chunk async for event in events if event.type == "chunk"]
        completion = await events.get_final_completion()
    return completion, (chunks[-1].model_extra or {})["fusion"]


def _calls(calls: list[Call], role: str) -> list[Call]:
    return [c for c in calls if role_of(c) == role]


def _texts(call: Call) -> str:
    """Every text a recorded OpenAI-protocol body's messages hold, joined."""
    out = []
    for message in call.body["messages"]:
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        out.extend(p["text"] for p in parts if p.get("type") == "text" and p["text"])
    return "\n".join(out)


@STREAMS
async def test_an_agent_loop_through_a_fusion_panel(stream: bool) -> None:
    """Turn one: the synthesizer's tool call reaches the client with the fusion object. Turn
    two, with the SDK's own message and the tool result sent back: a fresh fusion answers."""
    async with fusion_sidecar() as s:
        client = s.openai()
        s.wall.script("up-synth-m", [ToolCalls(), Answer("It is 4 degrees in Oslo.")])
        completion, fusion = await _ask(
            client,
            QUESTION,
            stream=stream,
            tools=TOOLS,
            tool_choice="required",
            parallel_tool_calls=False,
        )
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls"
        [call] = choice.message.tool_calls or []
        assert (call.id, call.function.name) == ("call_1", "get_weather")
        assert json.loads(call.function.arguments) == {"city": "Oslo"}
        assert fusion["synthesizer"]["model"] == "synth-m"
        assert fusion["synthesizer"]["status"] == "ok"
        assert fusion["degraded"] == []
        assert [seat["served"] for seat in fusion["seats"]] == ["m1", "m2", "m3"]

        first = list(s.wall.calls)
        panelists, [judge], [synthesizer] = (
            _calls(first, "panelist"),
            _calls(first, "judge"),
            _calls(first, "synthesizer"),
        )
        assert len(panelists) == 3
        for panelist in panelists:
            assert not TOOL_KEYS & set(panelist.body)
            note = panelist.body["messages"][0]
            assert note["role"] == "system"
            assert "- get_weather: The weather in a city" in note["content"]
            assert "requires a tool call" in note["content"]
            assert "At most one tool call per reply." in note["content"]
            assert panelist.body["messages"][1:] == QUESTION
        assert not TOOL_KEYS & set(judge.body)
        assert (synthesizer.body["tools"], synthesizer.body["tool_choice"]) == (TOOLS, "required")
        assert synthesizer.body["parallel_tool_calls"] is False
        assert synthesizer.body["messages"][1:] == QUESTION  # the conversation, as sent
        assert "answer from m1" in synthesizer.body["messages"][0]["content"]  # the panel's

        history = [
            *QUESTION,
            choice.message.model_dump(),
            {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 4}'},
        ]
        s.wall.calls.clear()
        final, fusion = await _ask(client, history, stream=stream, tools=TOOLS)
        assert final.choices[0].message.content == "It is 4 degrees in Oslo."
        assert final.choices[0].finish_reason == "stop"
        assert not final.choices[0].message.tool_calls
        assert fusion["judge"]["status"] == "ok"
        assert len(_calls(s.wall.calls, "panelist")) == 3  # the whole panel sat again
        [synthesizer] = _calls(s.wall.calls, "synthesizer")
        sent = synthesizer.body["messages"]
        assert sent[2]["tool_calls"][0]["id"] == "call_1"
        assert sent[3] == {"role": "tool", "content": '{"celsius": 4}', "tool_call_id": "call_1"}


async def test_panelists_and_the_judge_see_tool_turns_as_text() -> None:
    async with fusion_sidecar() as s:
        await s.openai().chat.completions.create(
            model="fusion/trio",
            messages=[
                {"role": "system", "content": "Be brief."},
                *QUESTION,
                CALLED,
                RESULT,
            ],  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
        )
        for panelist in _calls(s.wall.calls, "panelist"):
            messages = panelist.body["messages"]
            assert [m["role"] for m in messages] == [
                "system",
                "system",
                "user",
                "assistant",
                "user",
            ]
            assert messages[0]["content"] == "Be brief."  # the client's system prompt first
            assert "get_weather" in messages[1]["content"]
            assert messages[3] == {"role": "assistant", "content": CALL_AS_TEXT}
            assert messages[4] == {"role": "user", "content": RESULT_AS_TEXT}
            assert not any("tool_calls" in m or "tool_call_id" in m for m in messages)
        [judge] = _calls(s.wall.calls, "judge")
        question = judge.body["messages"][1]["content"]
        assert CALL_AS_TEXT in question
        assert RESULT_AS_TEXT in question


@STREAMS
async def test_a_failed_synthesizer_falls_back_to_a_text_answer_flagged_degraded(
    stream: bool,
) -> None:
    async with fusion_sidecar() as s:
        for m in ("synth-m", "synth-b"):
            s.wall.script(f"up-{m}", Status(500))
        completion, fusion = await _ask(s.openai(), QUESTION, stream=stream, tools=TOOLS)
        choice = completion.choices[0]
        assert (choice.finish_reason, choice.message.tool_calls) == ("stop", None)
        assert fusion["degraded"] == ["synthesizer"]
        synthesizer = fusion["synthesizer"]
        assert synthesizer["status"] == "failed"
        assert synthesizer["fallback_from"] == fusion["judge"]["findings"]["ranking"][0]
        assert choice.message.content == f"answer from {synthesizer['fallback_from']}"


async def test_a_single_answer_goes_to_the_synthesizer_when_tools_are_offered() -> None:
    """Only the synthesizer can call a tool: one panel answer does not stand in for it (the
    judge is skipped); without tools, it does."""
    async with fusion_sidecar() as s:
        s.wall.script("up-synth-m", ToolCalls())
        one = {"fusion": {"panelists": ["m1"], "quorum": 1}}
        plain = await s.openai().chat.completions.create(
            model="fusion/trio",
            messages=QUESTION,  # type: ignore[arg-type]
            extra_body=one,
        )
        assert plain.choices[0].message.content == "answer from m1"
        assert [role_of(c) for c in s.wall.calls] == ["panelist"]
        s.wall.calls.clear()
        completion = await s.openai().chat.completions.create(
            model="fusion/trio",
            messages=QUESTION,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
            extra_body=one,
        )
        assert completion.choices[0].finish_reason == "tool_calls"
        assert [role_of(c) for c in s.wall.calls] == ["panelist", "synthesizer"]
        assert (completion.model_extra or {})["fusion"]["judge"]["status"] == "skipped"


async def test_streamed_tool_calls_assemble_to_the_whole_answers_calls() -> None:
    behaviour = ToolCalls(
        calls=(
            ("call_a", "get_weather", '{"city": "Oslo", "unit": "celsius"}'),
            ("call_b", "get_weather", '{"city": "Bergen"}'),
        ),
        pieces=5,
    )
    async with fusion_sidecar() as s:
        s.wall.script("up-synth-m", behaviour)
        whole, _ = await _ask(s.openai(), QUESTION, stream=False, tools=TOOLS)
        argument_pieces = 0
        async with s.openai().chat.completions.stream(
            model="fusion/trio",
            messages=QUESTION,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
        ) as events:
            async for event in events:
                argument_pieces += event.type == "tool_calls.function.arguments.delta"
            streamed = await events.get_final_completion()

    def shape(completion: Any) -> list[tuple[str, str, Any]]:
        return [
            (c.id, c.function.name, json.loads(c.function.arguments))
            for c in completion.choices[0].message.tool_calls
        ]

    assert shape(streamed) == shape(whole) == [(i, n, json.loads(a)) for i, n, a in behaviour.calls]
    assert argument_pieces >= 2 * 4  # relayed piece by piece, not gathered
    assert streamed.choices[0].finish_reason == "tool_calls"


@STREAMS
async def test_json_schema_is_the_synthesizers_and_a_note_for_panelists(stream: bool) -> None:
    spec = {
        "name": "weather",
        "schema": {"type": "object", "properties": {"celsius": {"type": "number"}}},
        "strict": True,
    }
    async with fusion_sidecar() as s:
        s.wall.script("up-synth-m", Answer('{"celsius": 4}'))
        completion, fusion = await _ask(
            s.openai(),
            QUESTION,
            stream=stream,
            response_format={"type": "json_schema", "json_schema": spec},
        )
        assert json.loads(completion.choices[0].message.content) == {"celsius": 4}
        assert fusion["degraded"] == []
        for panelist in _calls(s.wall.calls, "panelist"):
            assert "response_format" not in panelist.body
            note = panelist.body["messages"][0]["content"]
            assert 'the schema "weather"' in note
            assert '"celsius": {"type": "number"}' in note
        [judge] = _calls(s.wall.calls, "judge")
        assert judge.body["response_format"] == {"type": "json_object"}  # its own
        [synthesizer] = _calls(s.wall.calls, "synthesizer")
        assert synthesizer.body["response_format"] == {"type": "json_schema", "json_schema": spec}


async def test_images_reach_panelists_and_synthesizer_the_judge_reads_a_mark() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/sky.png"}}
    question = [  # (a system prompt first: `role_of` reads the first message as text)
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]},
    ]
    async with fusion_sidecar() as s:
        completion = await s.openai().chat.completions.create(
            model="fusion/trio",
            messages=question,  # type: ignore[arg-type]
        )
        assert completion.choices[0].message.content == "answer from synth-m"
        for panelist in _calls(s.wall.calls, "panelist"):
            assert panelist.body["messages"] == question
        [synthesizer] = _calls(s.wall.calls, "synthesizer")
        assert synthesizer.body["messages"][1:] == question  # the conversation, as sent
        [judge] = _calls(s.wall.calls, "judge")
        assert "What is this? [1 image attached, not shown]" in judge.body["messages"][1]["content"]
        assert "image_url" not in json.dumps(judge.body)


async def test_reasoning_effort_goes_to_panelists_and_synthesizer_not_the_judge() -> None:
    async with fusion_sidecar() as s:
        s.wall.script("up-synth-m", Reasoned(thinking="Oslo is cold.", then=ToolCalls()))
        completion = await s.openai().chat.completions.create(
            model="fusion/trio",
            messages=QUESTION,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
            reasoning_effort="high",
        )
        message = completion.choices[0].message
        assert (message.model_extra or {}).get("reasoning_content") == "Oslo is cold."
        assert message.tool_calls is not None
        efforts = {role_of(c): c.body.get("reasoning_effort") for c in s.wall.calls}
        assert efforts == {"panelist": "high", "judge": None, "synthesizer": "high"}


async def test_earlier_reasoning_is_the_synthesizers_only() -> None:
    """Reasoning and signed thinking blocks of an earlier turn go back to the synthesizer
    (whose they are), never to the panelists."""
    turn = {**CALLED, "reasoning_content": "I should look it up."}
    async with fusion_sidecar() as s:
        await s.openai().chat.completions.create(
            model="fusion/trio",
            messages=[*QUESTION, turn, RESULT],  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
        )
        for panelist in _calls(s.wall.calls, "panelist"):
            assert "I should look it up." not in json.dumps(panelist.body)
        [synthesizer] = _calls(s.wall.calls, "synthesizer")
        assert synthesizer.body["messages"][2]["reasoning_content"] == "I should look it up."


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"modalities": ["text", "audio"]}, "modalities"),
    ],
)
async def test_what_no_fusion_can_honour_is_a_400_before_any_call(
    extra: dict[str, Any], param: str
) -> None:
    async with fusion_sidecar() as s:
        status, body, _ = await _post(
            s.url, {"model": "fusion/trio", "messages": QUESTION, "tools": TOOLS, **extra}
        )
        assert status == 400, body
        assert (body["error"]["code"], body["error"]["param"]) == ("unsupported_parameter", param)
        assert s.wall.calls == []


async def test_an_anthropic_panelist_deliberates_on_tool_turns_as_text() -> None:
    """A panelist whose protocol wants tools defined beside tool blocks gets none of either;
    the OpenAI synthesizer gets the conversation and the tools."""
    async with _two_protocols() as (url, wall):
        status, body, _ = await _post(
            url,
            {
                "model": "fusion",
                "fusion": {
                    "panelists": ["claude", "gpt"],
                    "judges": ["gpt"],
                    "synthesizers": ["gpt"],
                },
                "messages": [*QUESTION, CALLED, RESULT],
                "tools": TOOLS,
            },
        )
        assert status == 200, body
        [claude] = [c for c in wall.calls if c.model == "up-claude"]
        assert "tools" not in claude.body
        blocks = [b for turn in claude.body["messages"] for b in turn["content"]]
        assert {b["type"] for b in blocks} == {"text"}
        assert [b["text"] for b in blocks][-2:] == [CALL_AS_TEXT, RESULT_AS_TEXT]
        assert "get_weather" in claude.body["system"]
        synthesizer = next(c for c in wall.calls if c.model == "up-gpt" and "tools" in c.body)
        assert synthesizer.body["messages"][-1]["role"] == "tool"


async def test_no_synthesizer_that_carries_the_conversation_is_a_400_naming_it() -> None:
    """Decided before any call: arguments that are not a JSON object only travel to OpenAI's
    protocol; panelists read them as text, but the synthesizer gets them as sent."""
    raw = {
        **CALLED,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": "Oslo"},
            }
        ],
    }
    async with _two_protocols() as (url, wall):
        panel: dict[str, Any] = {"panelists": ["claude", "gpt"], "judges": ["gpt"]}
        request = {"model": "fusion", "messages": [*QUESTION, raw, RESULT], "tools": TOOLS}
        status, body, _ = await _post(
            url, {**request, "fusion": {**panel, "synthesizers": ["claude"]}}
        )
        assert status == 400, body
        assert body["error"]["code"] == "unsupported_parameter"
        assert (
            body["error"]["param"]
            == "messages[].tool_calls[].function.arguments (not a JSON object)"
        )
        assert "synthesizer 'claude'" in body["error"]["message"]
        assert wall.calls == []
        status, body, _ = await _post(
            url, {**request, "fusion": {**panel, "synthesizers": ["claude", "gpt"]}}
        )
        assert status == 200, body
        assert body["fusion"]["synthesizer"]["model"] == "gpt"


async def test_a_plain_question_keeps_its_shape_for_every_role() -> None:
    """Without tools, tool turns or images, panelists get the request as sent and the
    synthesizer one question: no notes, no conversation."""
    async with fusion_sidecar() as s:
        await s.openai().chat.completions.create(
            model="fusion/trio",
            messages=QUESTION,  # type: ignore[arg-type]
            seed=7,
        )
        for panelist in _calls(s.wall.calls, "panelist"):
            assert panelist.body["messages"] == QUESTION
        [synthesizer] = _calls(s.wall.calls, "synthesizer")
        assert [m["role"] for m in synthesizer.body["messages"]] == ["system", "user"]
        assert "answer from m1" in synthesizer.body["messages"][1]["content"]
        assert synthesizer.body["seed"] == 7  # the client's parameters are the answer's
        [judge] = _calls(s.wall.calls, "judge")
        assert judge.body["messages"][0]["content"] == JUDGE_SYSTEM
