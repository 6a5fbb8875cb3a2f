"""Images, structured output, reasoning and the answer options (`n`, log probabilities,
service tier, predicted output, modalities) through OpenAI-protocol upstreams (issue 16): sent
as they came, and what comes back reaches the official SDK whole and streamed. Protocols that
cannot carry one skip their targets (none left: a 400 naming the field and the protocol)."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from pydantic import BaseModel

from tests.fakes.script import Answer, Detailed, Reasoned, ToolCalls
from tests.helpers import sidecar
from tests.test_passthrough import _post, _two_protocols

PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
LOOK: list[dict[str, Any]] = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in these pictures?"},
            {"type": "image_url", "image_url": {"url": PIXEL}},
            {
                "type": "image_url",
                "image_url": {"url": "https://example.com/a.jpg", "detail": "low"},
            },
        ],
    }
]
HI: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Oslo?"}]


async def test_images_reach_openai_as_the_caller_sent_them() -> None:
    async with sidecar() as s:
        s.wall.script("up-model-a", Answer("A pixel and a photo."))
        completion = await s.openai().chat.completions.create(
            model="m-a",
            messages=LOOK,  # type: ignore[arg-type]
        )
        assert completion.choices[0].message.content == "A pixel and a photo."
        assert s.wall.calls[0].body["messages"] == LOOK


class Weather(BaseModel):
    city: str
    degrees: int


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_json_schema_goes_as_sent_and_the_sdk_parses_the_answer(stream: bool) -> None:
    async with sidecar() as s:
        client = s.openai()
        s.wall.script("up-model-a", Answer('{"city": "Oslo", "degrees": 4}'))
        if stream:
            async with client.chat.completions.stream(
                model="m-a",
                messages=HI,  # type: ignore[arg-type]
                response_format=Weather,
            ) as events:
                async for _ in events:
                    pass
                completion = await events.get_final_completion()
        else:
            completion = await client.chat.completions.parse(
                model="m-a",
                messages=HI,  # type: ignore[arg-type]
                response_format=Weather,
            )
        assert completion.choices[0].message.parsed == Weather(city="Oslo", degrees=4)
        sent = s.wall.calls[0].body["response_format"]
        assert sent["type"] == "json_schema"
        assert (sent["json_schema"]["name"], sent["json_schema"]["strict"]) == ("Weather", True)
        assert sent["json_schema"]["schema"]["required"] == ["city", "degrees"]


async def test_reasoning_effort_goes_as_sent_and_reasoning_comes_back_whole() -> None:
    async with sidecar() as s:
        s.wall.script("up-model-a", Reasoned(then=Answer("4 degrees.")))
        completion = await s.openai().chat.completions.create(
            model="m-a",
            messages=HI,  # type: ignore[arg-type]
            reasoning_effort="high",
        )
        message = completion.choices[0].message
        assert message.content == "4 degrees."
        assert message.model_extra == {
            "reasoning_content": "The user wants the weather. I should call the tool."
        }
        assert s.wall.calls[0].body["reasoning_effort"] == "high"


async def test_streamed_reasoning_arrives_as_reasoning_content_deltas_before_the_answer() -> None:
    async with sidecar() as s:
        s.wall.script("up-model-a", Reasoned(then=Answer("It is 4 degrees."), pieces=4))
        events = await s.openai().chat.completions.create(
            model="m-a",
            messages=HI,  # type: ignore[arg-type]
            stream=True,
        )
        order = []
        reasoning = ""
        answer = ""
        async for chunk in events:
            for choice in chunk.choices:
                extra = choice.delta.model_extra or {}
                if extra.get("reasoning_content"):
                    reasoning += extra["reasoning_content"]
                    order.append("reasoning")
                if choice.delta.content:
                    answer += choice.delta.content
                    order.append("text")
        assert reasoning == "The user wants the weather. I should call the tool."
        assert answer == "It is 4 degrees."
        assert order.index("text") > max(i for i, o in enumerate(order) if o == "reasoning")


async def test_reasoning_before_a_tool_call_goes_back_with_it_thinking_blocks_do_not() -> None:
    """DeepSeek wants `reasoning_content` back within a tool-calling turn: it goes as sent.
    Anthropic's signed thinking blocks mean nothing to another vendor: left out."""
    async with sidecar() as s:
        client = s.openai()
        s.wall.script("up-model-a", [Reasoned(then=ToolCalls()), Answer("4 degrees.")])
        tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
        first = await client.chat.completions.create(model="m-a", messages=HI, tools=tools)  # type: ignore[arg-type]
        message = first.choices[0].message.model_dump(exclude_none=True)
        assert message["reasoning_content"].startswith("The user wants")
        message["thinking_blocks"] = [{"type": "thinking", "thinking": "x", "signature": "s"}]
        history = [
            *HI,
            message,
            {"role": "tool", "tool_call_id": "call_1", "content": "4"},
        ]
        await client.chat.completions.create(model="m-a", messages=history, tools=tools)
        sent = s.wall.calls[1].body["messages"][1]
        assert sent["reasoning_content"] == message["reasoning_content"]
        assert "thinking_blocks" not in sent


async def test_n_choices_come_back_whole_and_a_streamed_n_is_a_400() -> None:
    async with sidecar() as s:
        client = s.openai()
        s.wall.script("up-model-a", Detailed(texts=("One.", "Two.", "Three."), logprobs=False))
        completion = await client.chat.completions.create(
            model="m-a",
            messages=HI,  # type: ignore[arg-type]
            n=3,
        )
        assert [c.message.content for c in completion.choices] == ["One.", "Two.", "Three."]
        assert [c.index for c in completion.choices] == [0, 1, 2]
        assert s.wall.calls[0].body["n"] == 3
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(
                model="m-a",
                messages=HI,  # type: ignore[arg-type]
                n=2,
                stream=True,
            )
        assert refused.value.body["param"] == "n"  # type: ignore[index]
        assert len(s.wall.calls) == 1


async def test_log_probabilities_and_the_service_tier_come_back_whole_and_streamed() -> None:
    async with sidecar() as s:
        client = s.openai()
        s.wall.script("up-model-a", Detailed(texts=("It is cold.",), service_tier="flex"))
        options: dict[str, Any] = {"logprobs": True, "top_logprobs": 2, "service_tier": "flex"}
        whole = await client.chat.completions.create(
            model="m-a",
            messages=HI,  # type: ignore[arg-type]
            **options,
        )
        assert whole.service_tier == "flex"
        assert whole.system_fingerprint == "fp_fake"
        assert whole.choices[0].logprobs is not None
        tokens = [t.token for t in whole.choices[0].logprobs.content or []]
        assert tokens == ["It", " is", " cold."]
        async with client.chat.completions.stream(
            model="m-a",
            messages=HI,  # type: ignore[arg-type]
            **options,
        ) as events:
            async for _ in events:
                pass
            streamed = await events.get_final_completion()
        assert streamed.choices[0].message.content == "It is cold."
        assert streamed.choices[0].logprobs is not None
        assert [t.token for t in streamed.choices[0].logprobs.content or []] == tokens
        for call in s.wall.calls:
            assert {k: call.body[k] for k in options} == options


async def test_predicted_output_and_text_modalities_go_as_sent() -> None:
    async with sidecar() as s:
        prediction = {"type": "content", "content": "def add(a, b): return a + b"}
        await s.openai().chat.completions.create(
            model="m-a",
            messages=HI,  # type: ignore[arg-type]
            prediction=prediction,  # type: ignore[arg-type]
            modalities=["text"],
        )
        sent = s.wall.calls[0].body
        assert (sent["prediction"], sent["modalities"]) == (prediction, ["text"])


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"n": 0}, "n"),
        ({"logprobs": "yes"}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"service_tier": "gold"}, "service_tier"),
        ({"prediction": {"type": "content"}}, "prediction"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"reasoning_effort": ["high"]}, "reasoning_effort"),
        ({"service_tier": ["flex"]}, "service_tier"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {}}},
            "response_format.json_schema",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}},
            "response_format.json_schema",
        ),
    ],
)
async def test_bad_answer_options_are_a_400_naming_them(extra: dict[str, Any], param: str) -> None:
    async with sidecar() as s:
        status, body, _ = await _post(s.url, {"model": "m-a", "messages": HI, **extra})
        assert status == 400, body
        assert body["error"]["param"] == param
        assert s.wall.calls == []


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (
            [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}],
            "messages[0].content[0].image_url.url",
        ),
        (
            [{"type": "image_url", "image_url": {"url": "data:text/plain;base64,aGk="}}],
            "messages[0].content[0].image_url.url",
        ),
        (
            [{"type": "image_url", "image_url": {"url": PIXEL, "detail": "max"}}],
            "messages[0].content[0].image_url.detail",
        ),
        (
            [{"type": "image_url", "image_url": "https://example.com/a.jpg"}],
            "messages[0].content[0].image_url",
        ),
        (
            [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}],
            "messages[0].content[0]",
        ),
    ],
)
async def test_bad_images_are_a_400_naming_them(content: list[Any], param: str) -> None:
    async with sidecar() as s:
        messages = [{"role": "user", "content": content}]
        status, body, _ = await _post(s.url, {"model": "m-a", "messages": messages})
        assert status == 400, body
        assert body["error"]["param"] == param
        assert s.wall.calls == []


async def test_an_image_in_an_assistant_message_is_a_400() -> None:
    async with sidecar() as s:
        messages = [
            *HI,
            {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": PIXEL}}]},
        ]
        status, body, _ = await _post(s.url, {"model": "m-a", "messages": messages})
        assert status == 400, body
        assert body["error"]["param"] == "messages[1].content[0]"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"n": 2}, "n"),
        ({"service_tier": "flex"}, "service_tier"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ],
)
async def test_answer_options_only_openai_carries_skip_other_targets(
    extra: dict[str, Any], field: str
) -> None:
    async with _two_protocols() as (url, wall):
        status, body, _ = await _post(url, {"model": "claude-first", "messages": HI, **extra})
        assert status == 200, body
        assert [c.model for c in wall.calls] == ["up-gpt"]
        codes = [(a["model"], a["code"]) for a in body["router"]["attempts"]]
        assert codes == [("claude", "unsupported_parameter"), ("gpt", "ok")]
        status, body, _ = await _post(url, {"model": "claude-only", "messages": HI, **extra})
        assert status == 400, body
        assert (body["error"]["code"], body["error"]["param"]) == ("unsupported_parameter", field)


@pytest.mark.parametrize(
    "extra", [{"logprobs": False}, {"modalities": ["text"]}, {"n": 1}], ids=str
)
async def test_options_that_ask_nothing_are_no_ops_elsewhere(extra: dict[str, Any]) -> None:
    async with _two_protocols() as (url, wall):
        status, body, _ = await _post(url, {"model": "claude-only", "messages": HI, **extra})
        assert status == 200, body
        assert [c.model for c in wall.calls] == ["up-claude"]
        assert not set(extra) & set(wall.calls[0].body)


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")  # (the SDK's own)
async def test_a_parsed_answer_goes_back_as_history() -> None:
    """`parse()`'s message carries `parsed` (its content read into an object): sent back as
    the next turn's history, it is taken (the content holds the same JSON)."""
    async with sidecar() as s:
        client = s.openai()
        s.wall.script("up-model-a", [Answer('{"city": "Oslo", "degrees": 4}'), Answer("Cold.")])
        first = await client.chat.completions.parse(
            model="m-a",
            messages=HI,  # type: ignore[arg-type]
            response_format=Weather,
        )
        message = first.choices[0].message
        assert message.parsed == Weather(city="Oslo", degrees=4)
        history = [*HI, message, {"role": "user", "content": "Is that cold?"}]
        final = await client.chat.completions.create(model="m-a", messages=history)  # type: ignore[arg-type]
        assert final.choices[0].message.content == "Cold."
        sent = s.wall.calls[1].body["messages"][1]
        assert sent["content"] == '{"city": "Oslo", "degrees": 4}'
        assert "parsed" not in sent
