"""The simulated provider's tool calls, structured output, images and reasoning (issue 16),
through a real sidecar on the embedded default (or a small sim config where many requests
run), driven by the official `openai` SDK, whole and streamed."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import jsonschema
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.app import create_app
from router.config import load_config
from router.providers.sim_content import Words, value_for
from tests.helpers import TEST_POLICIES, config_from_yaml, serve

MODEL = "gpt-5.5"  # an embedded-default model on a simulated provider

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "detail": {
                    "type": "object",
                    "properties": {
                        "hourly": {"type": "boolean"},
                        "fields": {"type": "array", "items": {"type": "string"}, "minItems": 2},
                    },
                    "required": ["hourly", "fields"],
                    "additionalProperties": False,
                },
            },
            "required": ["city", "days", "detail"],
            "additionalProperties": False,
        },
    },
}
CLOCK: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time somewhere",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"],
        },
    },
}
TOOLS = [CLOCK, WEATHER]  # the weather tool second: a question about weather must pick it
ASK_WEATHER: list[dict[str, Any]] = [
    {"role": "system", "content": "Use the tools."},
    {"role": "user", "content": "What is the weather in Oslo for 3 days, in fahrenheit?"},
]


def _schema(function: dict[str, Any]) -> dict[str, Any]:
    return function["function"]["parameters"]  # type: ignore[no-any-return]


def _valid(instance: Any, schema: dict[str, Any]) -> bool:
    """Whether `instance` validates against `schema` (JSON Schema 2020-12)."""
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema).is_valid(instance)


@asynccontextmanager
async def embedded() -> AsyncIterator[openai.AsyncOpenAI]:
    """An SDK client for a sidecar on the embedded default (its simulated providers)."""
    async with serve(create_app(load_config(None), environ={})) as server:
        base = str(server.make_url("/v1"))
        async with openai.AsyncOpenAI(base_url=base, api_key="x", max_retries=0) as client:
            yield client


QUICK_YAML = f"""
jurisdiction: us
policies: {TEST_POLICIES}
providers:
  quick: {{protocol: sim, region: us, sim: {{latency_ms: 0, chunk_ms: 0, seed: 7}}}}
models:
  quick:
    provider: quick
    upstream_id: quick-1
    vendor: V
    origin: us
    tier: standard
    context_window: 100000
    price: {{input_per_mtok: 1.0, output_per_mtok: 1.0}}
"""


@asynccontextmanager
async def quick() -> AsyncIterator[openai.AsyncOpenAI]:
    """An SDK client for a sidecar on one simulated model, `quick`, with no latency."""
    async with serve(create_app(config_from_yaml(QUICK_YAML), environ={})) as server:
        base = str(server.make_url("/v1"))
        async with openai.AsyncOpenAI(base_url=base, api_key="x", max_retries=0) as client:
            yield client


async def ask(
    client: openai.AsyncOpenAI, *, stream: bool, model: str = MODEL, **options: Any
) -> Any:
    """One chat completion through the SDK: `create`, or the stream helper's final completion
    (its events read one by one)."""
    if not stream:
        return await client.chat.completions.create(model=model, **options)
    async with client.chat.completions.stream(model=model, **options) as events:
        async for _ in events:
            pass
        return await events.get_final_completion()


async def raw_chunks(client: openai.AsyncOpenAI, body: dict[str, Any]) -> list[dict[str, Any]]:
    """A streamed answer's chunks as sent on the wire (SSE `data:` lines, `[DONE]` left out)."""
    chunks: list[dict[str, Any]] = []
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{client.base_url}chat/completions", json={**body, "stream": True}) as r,
    ):
        assert r.status == 200
        async for line in r.content:
            text = line.decode().strip()
            if text.startswith("data: ") and text != "data: [DONE]":
                chunks.append(json.loads(text[6:]))
    return chunks


def calls_of(completion: Any) -> list[tuple[str, str, Any]]:
    """A completion's tool calls as (id, name, parsed arguments)."""
    calls = completion.choices[0].message.tool_calls or []
    return [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls]


# --- tools ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_tool_call_has_arguments_valid_for_the_tools_schema(stream: bool) -> None:
    """With tools, the sim calls the tool the question is about, its arguments valid for the
    tool's schema and taken from the question where they fit."""
    async with embedded() as client:
        completion = await ask(
            client, stream=stream, messages=ASK_WEATHER, tools=TOOLS, parallel_tool_calls=False
        )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert not choice.message.content
    [(call_id, name, arguments)] = calls_of(completion)
    assert name == "get_weather"
    assert call_id.startswith("call_")
    assert len(call_id) > len("call_")
    assert _valid(arguments, _schema(WEATHER))
    assert (arguments["city"], arguments["unit"], arguments["days"]) == ("Oslo", "fahrenheit", 3)
    assert len(arguments["detail"]["fields"]) >= 2


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_an_agent_loop_ends_in_an_answer_from_the_tool_result(stream: bool) -> None:
    """Tool call, tool result, final answer: the second turn answers text that uses the
    result, so an agent loop ends."""
    async with embedded() as client:
        first = await ask(client, stream=stream, messages=ASK_WEATHER, tools=TOOLS)
        message = first.choices[0].message
        assert message.tool_calls
        conversation = [
            *ASK_WEATHER,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [c.model_dump(exclude_none=True) for c in message.tool_calls],
            },
            *(
                {"role": "tool", "tool_call_id": c.id, "content": '{"fahrenheit": 39}'}
                for c in message.tool_calls
            ),
        ]
        final = await ask(client, stream=stream, messages=conversation, tools=TOOLS)
    choice = final.choices[0]
    assert choice.finish_reason == "stop"
    assert not choice.message.tool_calls
    assert choice.message.content.startswith('Based on get_weather: {"fahrenheit": 39}')


async def test_a_named_tool_choice_calls_that_function() -> None:
    """A named `tool_choice` wins over the tool the question matches."""
    async with embedded() as client:
        completion = await client.chat.completions.create(
            model=MODEL,
            messages=ASK_WEATHER,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
            tool_choice={"type": "function", "function": {"name": "get_time"}},
        )
    [(_, name, arguments)] = calls_of(completion)
    assert name == "get_time"
    assert _valid(arguments, _schema(CLOCK))


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_tool_choice_none_answers_text(stream: bool) -> None:
    """`tool_choice: none` gets prose, no call."""
    async with embedded() as client:
        completion = await ask(
            client, stream=stream, messages=ASK_WEATHER, tools=TOOLS, tool_choice="none"
        )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert not choice.message.tool_calls
    assert "What is the weather in Oslo" in choice.message.content


@pytest.mark.parametrize(
    ("parallel", "names"),
    [(None, ["get_weather", "get_time"]), (False, ["get_weather"])],
    ids=["parallel", "one"],
)
async def test_a_question_for_two_tools_calls_both_when_parallel_calls_are_allowed(
    parallel: bool | None, names: list[str]
) -> None:
    """Two tools named in the question: two calls (the best match first, different names
    for places), or one with `parallel_tool_calls: false`."""
    question = [{"role": "user", "content": "The weather in Oslo and the time in Tokyo?"}]
    options = {} if parallel is None else {"parallel_tool_calls": parallel}
    async with quick() as client:
        completion = await client.chat.completions.create(
            model="quick",
            messages=question,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
            **options,  # type: ignore[arg-type]
        )
    calls = calls_of(completion)
    assert [name for _, name, _ in calls] == names
    assert len({call_id for call_id, _, _ in calls}) == len(calls)
    assert calls[0][2]["city"] == "Oslo"
    if parallel is None:
        assert calls[1][2] == {"timezone": "Tokyo"}


async def test_streamed_tool_call_deltas_follow_openais_format_and_assemble_to_the_whole_call() -> (
    None
):
    """Streamed: a first delta with index, id, name and empty arguments, then argument
    fragments, which assemble to the same call as the whole answer."""
    body = {"model": MODEL, "messages": ASK_WEATHER, "tools": TOOLS}
    async with embedded() as client:
        whole = await ask(client, stream=False, messages=ASK_WEATHER, tools=TOOLS)
        chunks = await raw_chunks(client, body)
    deltas = [
        call for chunk in chunks for call in chunk["choices"][0]["delta"].get("tool_calls", [])
    ]
    first, *fragments = deltas
    [(call_id, name, arguments)] = calls_of(whole)
    assert first == {
        "index": 0,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": ""},
    }
    assert len(fragments) > 1
    assert all(set(f) == {"index", "function"} and f["index"] == 0 for f in fragments)
    assert all(set(f["function"]) == {"arguments"} for f in fragments)
    assert json.loads("".join(f["function"]["arguments"] for f in fragments)) == arguments
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_the_same_request_gets_the_same_answer_and_a_new_turn_new_ids() -> None:
    """Determinism: the same request, the same call (id included) and the same JSON answer;
    a different conversation, a different call id."""
    schema_format = {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": PERSON_SCHEMA},
    }
    other = [*ASK_WEATHER[:1], {"role": "user", "content": "Weather in Oslo tomorrow?"}]
    async with embedded() as client:
        one, two = [
            calls_of(await ask(client, stream=s, messages=ASK_WEATHER, tools=TOOLS))
            for s in (False, True)
        ]
        three = calls_of(await ask(client, stream=False, messages=other, tools=TOOLS))
        texts = [
            (
                await ask(
                    client, stream=False, messages=PERSON_QUESTION, response_format=schema_format
                )
            )
            .choices[0]
            .message.content
            for _ in range(2)
        ]
    assert one == two
    assert three[0][0] != one[0][0]
    assert texts[0] == texts[1]


# --- structured output ---------------------------------------------------------------------

PERSON_QUESTION = [{"role": "user", "content": "Extract: my name is Ann, I live in Oslo."}]
PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "city": {"type": "string"},
        "age": {"type": ["integer", "null"], "minimum": 18},
    },
    "required": ["name", "city", "age"],
    "additionalProperties": False,
}
SCHEMAS: dict[str, dict[str, Any]] = {
    "person": PERSON_SCHEMA,
    "refs": {
        "type": "object",
        "$defs": {
            "step": {
                "type": "object",
                "properties": {
                    "explanation": {"type": "string"},
                    "output": {"type": "number", "exclusiveMinimum": 0, "maximum": 0.5},
                },
                "required": ["explanation", "output"],
                "additionalProperties": False,
            }
        },
        "properties": {
            "steps": {"type": "array", "items": {"$ref": "#/$defs/step"}, "minItems": 2},
            "final_answer": {"type": "string", "minLength": 3, "maxLength": 40},
        },
        "required": ["steps", "final_answer"],
        "additionalProperties": False,
    },
    "choices": {
        "type": "object",
        "properties": {
            "kind": {"const": "review"},
            "rating": {"type": "integer", "enum": [3, 4, 5]},
            "tags": {
                "type": "array",
                "items": {"type": "string", "maxLength": 4},
                "minItems": 3,
                "uniqueItems": True,
            },
            "target": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]},
            "score": {"type": "integer", "multipleOf": 5, "minimum": 12, "maximum": 33},
        },
        "required": ["kind", "rating", "tags", "target", "score"],
        "additionalProperties": False,
    },
    "recursive": {
        "type": "object",
        "properties": {
            "label": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#"}},
        },
        "required": ["label", "children"],
        "additionalProperties": False,
    },
}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("name", list(SCHEMAS))
async def test_a_json_schema_answer_is_valid_against_the_schema(name: str, stream: bool) -> None:
    """`response_format: json_schema`: the answer is a JSON object valid against the schema."""
    schema = SCHEMAS[name]
    response_format = {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
    async with embedded() as client:
        completion = await ask(
            client, stream=stream, messages=PERSON_QUESTION, response_format=response_format
        )
    answer = json.loads(completion.choices[0].message.content)
    assert isinstance(answer, dict)
    assert _valid(answer, schema)
    if name == "person":
        assert (answer["name"], answer["city"]) == ("Ann", "Oslo")


async def test_a_json_schema_answer_is_whole_under_max_tokens() -> None:
    """`max_tokens` cuts prose, never a JSON answer: it still parses."""
    response_format = {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON_SCHEMA}}
    async with embedded() as client:
        completion = await client.chat.completions.create(
            model=MODEL,
            messages=PERSON_QUESTION,  # type: ignore[arg-type]
            response_format=response_format,  # type: ignore[arg-type]
            max_tokens=2,
        )
    assert _valid(json.loads(completion.choices[0].message.content or ""), PERSON_SCHEMA)


async def test_json_object_keeps_the_judges_findings_object() -> None:
    """`json_object` without a schema answers as before: a judge's findings object."""
    async with embedded() as client:
        completion = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Rank [A1]: yes and [A2]: no"}],
            response_format={"type": "json_object"},
        )
    findings = json.loads(completion.choices[0].message.content or "")
    assert set(findings) == {"agreements", "contradictions", "errors", "ranking"}
    assert sorted(findings["ranking"]) == ["[A1]", "[A2]"]


NAMES = st.from_regex(r"[a-z][a-z_]{0,7}", fullmatch=True)


@st.composite
def integer_schemas(draw: st.DrawFn) -> dict[str, Any]:
    """An integer schema whose bounds and `multipleOf` leave a value."""
    schema: dict[str, Any] = {"type": "integer"}
    low = draw(st.integers(-1000, 1000))
    step = draw(st.sampled_from([None, 1, 2, 5, 7]))
    if step is not None:
        schema["multipleOf"] = step
    width = draw(st.integers(2, 50)) * (step or 1)
    key_low = draw(st.sampled_from([None, "minimum", "exclusiveMinimum"]))
    key_high = draw(st.sampled_from([None, "maximum", "exclusiveMaximum"]))
    if key_low:
        schema[key_low] = low
    if key_high:
        schema[key_high] = low + width
    return schema


@st.composite
def number_schemas(draw: st.DrawFn) -> dict[str, Any]:
    """A number schema with bounds (closed or open) that leave room."""
    schema: dict[str, Any] = {"type": "number"}
    low = draw(st.integers(-1000, 1000)) / 4
    high = low + draw(st.integers(1, 400)) / 8
    key_low = draw(st.sampled_from([None, "minimum", "exclusiveMinimum"]))
    key_high = draw(st.sampled_from([None, "maximum", "exclusiveMaximum"]))
    if key_low:
        schema[key_low] = low
    if key_high:
        schema[key_high] = high
    return schema


@st.composite
def string_schemas(draw: st.DrawFn) -> dict[str, Any]:
    """A string schema, perhaps with lengths or a format."""
    schema: dict[str, Any] = {"type": "string"}
    least = draw(st.integers(0, 12))
    if draw(st.booleans()):
        schema["minLength"] = least
    if draw(st.booleans()):
        schema["maxLength"] = least + draw(st.integers(0, 12))
    if draw(st.booleans()):
        schema["format"] = draw(st.sampled_from(["date", "date-time", "email", "uuid"]))
    return schema


SCALARS = st.one_of(st.text(max_size=6), st.integers(-5, 5), st.booleans(), st.none())
LEAVES = st.one_of(
    integer_schemas(),
    number_schemas(),
    string_schemas(),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.lists(SCALARS, min_size=1, max_size=4, unique=True).map(lambda v: {"enum": v}),
    SCALARS.map(lambda v: {"const": v}),
)


@st.composite
def objects(draw: st.DrawFn, inner: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """An object schema: some properties, some required, perhaps closed."""
    properties = draw(st.dictionaries(NAMES, inner, max_size=4))
    required = (
        draw(st.lists(st.sampled_from(sorted(properties)), unique=True)) if properties else []
    )
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
    if draw(st.booleans()):
        schema["additionalProperties"] = False
    return schema


@st.composite
def arrays(draw: st.DrawFn, inner: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """An array schema with item counts (unique items only where values can differ)."""
    least = draw(st.integers(0, 3))
    schema: dict[str, Any] = {"type": "array", "items": draw(inner), "minItems": least}
    if draw(st.booleans()):
        schema["maxItems"] = least + draw(st.integers(0, 2))
    if draw(st.booleans()):
        schema["items"] = draw(st.sampled_from([{"type": "string"}, {"type": "integer"}]))
        schema["uniqueItems"] = True
    return schema


SCHEMA_TREES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        objects(inner),
        arrays(inner),
        st.lists(inner, min_size=1, max_size=3).map(lambda branches: {"anyOf": branches}),
    ),
    max_leaves=10,
)


@st.composite
def root_schemas(draw: st.DrawFn) -> dict[str, Any]:
    """A root object schema, with a property that refers to a schema under `$defs`."""
    root = draw(objects(SCHEMA_TREES))
    if draw(st.booleans()):
        root["$defs"] = {"shared": draw(SCHEMA_TREES)}
        root["properties"]["shared_ref"] = {"$ref": "#/$defs/shared"}
        root["required"] = [*root["required"], "shared_ref"]
    return root


QUESTIONS = st.sampled_from(
    [
        "",
        "Fill it in for Ann from Oslo.",
        "minimum 99999 maximum -99999 shared 3 2 items",
        "name: Bob, city: Paris, count 12, query cats",
    ]
)


@settings(max_examples=300, deadline=None)
@given(schema=root_schemas(), question=QUESTIONS)
def test_the_json_generator_is_valid_for_every_simple_schema(
    schema: dict[str, Any], question: str
) -> None:
    """Property: for generated schemas (objects, arrays, anyOf, enum, const, bounds, lengths,
    `$defs` references) and any question, the simulator's value is valid."""
    assert _valid(value_for(schema, Words(question, "Some prose.")), schema)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=root_schemas(), stream=st.booleans())
async def test_json_schema_answers_through_the_sidecar_are_valid(
    schema: dict[str, Any], stream: bool
) -> None:
    """Property: through the sidecar, whole or streamed, a json_schema answer validates."""
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    async with quick() as client:
        completion = await ask(
            client,
            stream=stream,
            model="quick",
            messages=PERSON_QUESTION,
            response_format=response_format,
        )
    assert _valid(json.loads(completion.choices[0].message.content), schema)


# --- images ----------------------------------------------------------------------------------

PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_images_are_acknowledged_never_fetched(stream: bool) -> None:
    """A data URL is described by media type and size, a URL by its host (the sidecar never
    fetches it: the host does not resolve)."""
    content = [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
        {"type": "image_url", "image_url": {"url": "https://images.invalid/cat.png"}},
    ]
    async with embedded() as client:
        completion = await ask(
            client, stream=stream, messages=[{"role": "user", "content": content}]
        )
    size = len(base64.b64decode(PIXEL))
    text = completion.choices[0].message.content
    assert text.startswith(f"I see 2 images (image/png, {size} bytes; an image at images.invalid).")
    assert "What is in these?" in text


async def test_one_image_is_one_image() -> None:
    """One data URL: "I see 1 image (<type>, <bytes> bytes)"."""
    content = [
        {"type": "text", "text": "Describe it."},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
    ]
    async with embedded() as client:
        completion = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": content}],  # type: ignore[misc,list-item]
        )
    text = completion.choices[0].message.content or ""
    assert text.startswith(f"I see 1 image (image/png, {len(base64.b64decode(PIXEL))} bytes).")


# --- reasoning --------------------------------------------------------------------------------

QUESTION = [{"role": "user", "content": "Why is the sky blue?"}]


async def test_reasoning_comes_with_the_answer_and_grows_with_the_effort() -> None:
    """`reasoning_effort`: the message carries `reasoning_content` about the question, longer
    for more effort; none without it, or with "none"."""
    async with embedded() as client:
        reasoning: dict[str, str | None] = {}
        for effort in (None, "none", "low", "high"):
            options = {} if effort is None else {"reasoning_effort": effort}
            completion = await client.chat.completions.create(
                model=MODEL,
                messages=QUESTION,  # type: ignore[arg-type]
                **options,  # type: ignore[arg-type]
            )
            message = completion.choices[0].message
            assert message.content
            reasoning[str(effort)] = (message.model_extra or {}).get("reasoning_content")
    assert reasoning["None"] is None
    assert reasoning["none"] is None
    low, high = reasoning["low"], reasoning["high"]
    assert low
    assert high
    assert "Why is the sky blue?" in low
    assert len(high) > len(low)


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tool_call"])
async def test_streamed_reasoning_comes_first_and_matches_the_whole_answer(tools: bool) -> None:
    """Streamed, `reasoning_content` deltas come before the answer's first delta and join to
    the whole answer's reasoning."""
    body: dict[str, Any] = {"model": MODEL, "messages": QUESTION, "reasoning_effort": "medium"}
    if tools:
        body.update(messages=ASK_WEATHER, tools=TOOLS)
    async with embedded() as client:
        whole = await client.chat.completions.create(**body)
        chunks = await raw_chunks(client, body)
    kinds = [
        key
        for chunk in chunks
        for key in chunk["choices"][0]["delta"]
        if key in ("reasoning_content", "content", "tool_calls")
        and chunk["choices"][0]["delta"][key] != ""
    ]
    assert kinds[0] == "reasoning_content"
    answer_starts = kinds.index("tool_calls" if tools else "content")
    assert set(kinds[answer_starts:]) == {"tool_calls" if tools else "content"}
    streamed = "".join(
        chunk["choices"][0]["delta"].get("reasoning_content", "") for chunk in chunks
    )
    assert streamed == (whole.choices[0].message.model_extra or {})["reasoning_content"]
