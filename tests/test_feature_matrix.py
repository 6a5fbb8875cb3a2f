"""The contract suite of issue 16, as one table: every feature x {openai, anthropic, gemini} x
{whole, stream}. Each row is one call through the official `openai` SDK (an agent loop's rows:
the call, the SDK's message and tool results sent back, the final answer), made the same way
against a sidecar in front of one fake upstream of each protocol (a one-model catalog). A row
says what the SDK parses back, the same on every protocol, and the exact fragment of the body
each protocol's upstream receives (`docs/compatibility.md` is the same table in words).

The per-protocol files (`test_openai_features.py`, `test_tools_openai.py`,
`test_anthropic_features.py`, `test_gemini_features.py`) hold the corner cases; this one holds
the matrix, and its last test that no row leaves a protocol or a mode out."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
from aiohttp import web
from pydantic import BaseModel

from router.app import create_app
from router.protocol_support import IMAGE_URL_FIELD
from tests.fakes import anthropic_server, gemini_server, openai_server
from tests.fakes.script import Answer, Behaviour, Reasoned, ToolCalls, Wall
from tests.helpers import TEST_POLICIES, Sidecar, config_from_yaml, serve

PROTOCOLS = ("openai", "anthropic", "gemini")
MODES = ("whole", "stream")
# The features of issue 16's matrix; every row is one of them, and each has rows.
FEATURES = (
    "text parts",
    "tools and tool_choice",
    "tool-call answer",
    "agent loop",
    "image as a data URL",
    "image as an https URL",
    "json_schema",
    "reasoning",
    "output cap",
    "stop",
    "system and developer messages",
)
MODEL = "m"  # the catalog's one model
UPSTREAM = "up-m"  # its id upstream

# --- the sidecar: one fake upstream of a protocol behind a one-model catalog ----------------

# protocol → (the fake's app, the provider's base_url path on it)
FAKES: Mapping[str, tuple[Callable[[Wall], web.Application], str]] = {
    "openai": (openai_server.make_app, "/v1"),
    "anthropic": (anthropic_server.make_app, ""),
    "gemini": (gemini_server.make_app, "/v1beta"),
}


def _catalog(protocol: str, base_url: str, model_extra: str) -> str:
    return f"""
jurisdiction: us
policies: {TEST_POLICIES}
providers:
  up:
    protocol: {protocol}
    base_url: {base_url}
    allow_http: true
    region: us
models:
  {MODEL}:
    provider: up
    upstream_id: {UPSTREAM}
    vendor: Vendor
    origin: us
    tier: strong
    context_window: 200000
    max_output_tokens: 64000
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
    {model_extra}
"""


@asynccontextmanager
async def _sidecar(protocol: str, model_extra: str = "") -> AsyncIterator[Sidecar]:
    """A sidecar whose one model, `m`, is served by a fake upstream of `protocol`."""
    make_app, path = FAKES[protocol]
    wall = Wall()
    async with serve(make_app(wall)) as upstream:
        base_url = str(upstream.make_url("")).rstrip("/") + path
        app = create_app(config_from_yaml(_catalog(protocol, base_url, model_extra)), environ={})
        async with serve(app) as server:
            s = Sidecar(str(server.make_url("")).rstrip("/"), wall, app)
            try:
                yield s
            finally:
                for client in s.clients:
                    await client.close()


# --- what a row says ----------------------------------------------------------------------

Script = Behaviour | tuple[Behaviour, ...]
Fragment = dict[str, Any]  # top-level keys of the upstream body and their exact values


@dataclass(frozen=True)
class Want:
    """What the SDK parses back: the message's content (a dict: its JSON, parsed), its tool
    calls as (id, name, arguments parsed), the finish reason, `reasoning_content`, and
    `parsed` (the pydantic object of a `response_format` given as a model)."""

    content: str | dict[str, Any] | None = None
    calls: tuple[tuple[str, str, Any], ...] = ()
    finish: str = "stop"
    reasoning: str | None = None
    parsed: BaseModel | None = None


@dataclass(frozen=True)
class Refused:
    """The request is refused at the door with a 400 (no upstream call): its error's code and
    param, and a word its message names."""

    code: str
    param: str
    names: str


@dataclass(frozen=True)
class Results:
    """An agent loop's next turn: the SDK's message goes back as it was parsed, then these
    tool results (tool_call_id, content) and `after` (more messages), and the final answer
    is `want`."""

    results: tuple[tuple[str, str], ...]
    want: Want
    after: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class ByMode:
    """A protocol's body fragment that differs whole and streamed."""

    whole: Fragment
    stream: Fragment


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()  # in a body fragment: the key is not in the body


@dataclass(frozen=True)
class Row:
    """One feature's row: the SDK call's arguments (`ask`), the fake's script (one for every
    protocol, or per protocol), what the SDK parses back, and per protocol the fragment of the
    (last) upstream body, or the refusal. `catalog`: extra catalog keys of the model, per
    protocol."""

    name: str
    feature: str
    ask: dict[str, Any]
    script: Script | Mapping[str, Script]
    want: Want
    sent: Mapping[str, Fragment | ByMode | Refused]
    then: Results | None = None
    catalog: Mapping[str, str] = field(default_factory=dict)
    xfail: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (protocol, mode)

    def script_for(self, protocol: str) -> Script:
        if isinstance(self.script, Mapping):
            return self.script[protocol]
        return self.script


# --- the shared inputs --------------------------------------------------------------------

WEATHER: dict[str, Any] = {
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
            "parameters": WEATHER,
        },
    },
    {"type": "function", "function": {"name": "now"}},  # no description, no parameters
]
ANTHROPIC_TOOLS: list[dict[str, Any]] = [
    {"name": "get_weather", "description": "The weather in a city", "input_schema": WEATHER},
    {"name": "now", "input_schema": {"type": "object", "properties": {}}},
]
GEMINI_TOOLS: list[dict[str, Any]] = [
    {
        "functionDeclarations": [
            {
                "name": "get_weather",
                "description": "The weather in a city",
                "parametersJsonSchema": WEATHER,
            },
            {"name": "now"},
        ]
    }
]
NAMED = {"type": "function", "function": {"name": "get_weather"}}

QUESTION: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Oslo?"}]
ANTHROPIC_QUESTION = {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]}
GEMINI_QUESTION = {"role": "user", "parts": [{"text": "Weather in Oslo?"}]}

OSLO = ("call_1", "get_weather", '{"city": "Oslo"}')
BERGEN = ("call_2", "get_weather", '{"city": "Bergen"}')
CALLED_OSLO = ("call_1", "get_weather", {"city": "Oslo"})
CALLED_BERGEN = ("call_2", "get_weather", {"city": "Bergen"})
THINKING = "The user wants the weather. I should call the tool."
SIGNATURE = "sig-fake-1"  # the fakes' thinking signature (`Reasoned`'s default)
GEMINI_SIGNATURE = base64.b64encode(SIGNATURE.encode()).decode()  # as a thought signature

PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5Er"
    "kJggg=="
)
PHOTO = "https://example.com/cat.jpg"


class Report(BaseModel):
    city: str
    celsius: int


REPORT = '{"city": "Oslo", "celsius": 4}'
# the description of Anthropic's answer tool (json_schema in tool mode), when the schema has none
ANSWER_TOOL_DESCRIPTION = "Give your answer: call this tool with the answer as its input."
# the SDK's strict schema for `Report` (what `response_format=Report` sends)
REPORT_SCHEMA: dict[str, Any] = {
    "properties": {
        "city": {"title": "City", "type": "string"},
        "celsius": {"title": "Celsius", "type": "integer"},
    },
    "required": ["city", "celsius"],
    "title": "Report",
    "type": "object",
    "additionalProperties": False,
}


def _user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(parts)}]


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _image(url: str, detail: str | None = None) -> dict[str, Any]:
    image = {"url": url} if detail is None else {"url": url, "detail": detail}
    return {"type": "image_url", "image_url": image}


def _tools_sent(
    openai_choice: Any = ABSENT,
    anthropic_choice: Any = ABSENT,
    gemini_config: Any = ABSENT,
    *,
    parallel: Any = ABSENT,
) -> dict[str, Fragment]:
    """The tools and choice fragments for the three protocols."""
    return {
        "openai": {"tools": TOOLS, "tool_choice": openai_choice, "parallel_tool_calls": parallel},
        "anthropic": {"tools": ANTHROPIC_TOOLS, "tool_choice": anthropic_choice},
        "gemini": {
            "tools": GEMINI_TOOLS,
            "toolConfig": (
                ABSENT if gemini_config is ABSENT else {"functionCallingConfig": gemini_config}
            ),
        },
    }


def _openai_calls(*calls: tuple[str, str, str], streamed: bool) -> list[dict[str, Any]]:
    """Tool calls as the SDK's message sends them back, and an OpenAI upstream gets them: the
    stream helper's calls carry their `index` and `function.parsed_arguments` (None) too."""
    out = []
    for index, (call_id, name, arguments) in enumerate(calls):
        function: dict[str, Any] = {"arguments": arguments, "name": name}
        call: dict[str, Any] = {"id": call_id, "function": function, "type": "function"}
        if streamed:
            function["parsed_arguments"] = None
            call["index"] = index
        out.append(call)
    return out


def _openai_loop(
    *calls: tuple[str, str, str],
    results: tuple[tuple[str, str], ...],
    content: str | None = None,
    after: tuple[dict[str, Any], ...] = (),
    reasoning: str | None = None,
    **fields: Any,
) -> ByMode:
    """What an OpenAI upstream gets on an agent loop's second call, whole and streamed:
    QUESTION, the SDK's message with `content`, `calls` (and `reasoning`), the tool
    `results`, `after`; and `fields` beside the messages."""

    def fragment(streamed: bool) -> Fragment:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": content,
            "tool_calls": _openai_calls(*calls, streamed=streamed),
        }
        if reasoning is not None:
            message["reasoning_content"] = reasoning
        answers = [{"role": "tool", "content": c, "tool_call_id": i} for i, c in results]
        return {**fields, "messages": [*QUESTION, message, *answers, *after]}

    return ByMode(fragment(False), fragment(True))


def _tool_use(call: tuple[str, str, Any]) -> dict[str, Any]:
    call_id, name, arguments = call
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def _function_call(call: tuple[str, str, Any]) -> dict[str, Any]:
    call_id, name, arguments = call
    return {"functionCall": {"id": call_id, "name": name, "args": arguments}}


ANSWER = "It is 4 degrees in Oslo."
SUNNY = Answer("It is sunny.")
# a history whose assistant and tool messages are lists of parts
PARTS_HISTORY: list[dict[str, Any]] = [
    *QUESTION,
    {
        "role": "assistant",
        "content": [_text("Checking.")],
        "tool_calls": _openai_calls(OSLO, streamed=False),
    },
    {"role": "tool", "tool_call_id": "call_1", "content": [_text('{"celsius": 4}')]},
]

# --- the matrix ---------------------------------------------------------------------------

ROWS: tuple[Row, ...] = (
    Row(
        "text parts in a user message",
        "text parts",
        ask={"messages": _user(_text("Weather in"), _text("Oslo?"))},
        script=SUNNY,
        want=Want("It is sunny."),
        sent={
            "openai": {"messages": _user(_text("Weather in"), _text("Oslo?"))},
            "anthropic": {
                "messages": _user(_text("Weather in"), _text("Oslo?")),
                "max_tokens": 4096,
            },
            "gemini": {
                "contents": [{"role": "user", "parts": [{"text": "Weather in"}, {"text": "Oslo?"}]}]
            },
        },
    ),
    Row(
        "text parts in assistant and tool messages",
        "text parts",
        ask={"messages": PARTS_HISTORY, "tools": TOOLS},
        script=Answer(ANSWER),
        want=Want(ANSWER),
        sent={
            "openai": {"messages": PARTS_HISTORY},
            "anthropic": {
                "messages": [
                    ANTHROPIC_QUESTION,
                    {"role": "assistant", "content": [_text("Checking."), _tool_use(CALLED_OSLO)]},
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "call_1",
                                "content": [_text('{"celsius": 4}')],
                            }
                        ],
                    },
                ]
            },
            "gemini": {
                "contents": [
                    GEMINI_QUESTION,
                    {
                        "role": "model",
                        "parts": [{"text": "Checking."}, _function_call(CALLED_OSLO)],
                    },
                    {
                        "role": "user",
                        "parts": [
                            {
                                "functionResponse": {
                                    "id": "call_1",
                                    "name": "get_weather",
                                    "response": {"celsius": 4},
                                }
                            }
                        ],
                    },
                ]
            },
        },
    ),
    Row(
        "tools",
        "tools and tool_choice",
        ask={"messages": QUESTION, "tools": TOOLS},
        script=SUNNY,
        want=Want("It is sunny."),
        sent=_tools_sent(),
    ),
    Row(
        "tool_choice auto",
        "tools and tool_choice",
        ask={"messages": QUESTION, "tools": TOOLS, "tool_choice": "auto"},
        script=SUNNY,
        want=Want("It is sunny."),
        sent=_tools_sent("auto", {"type": "auto"}, {"mode": "AUTO"}),
    ),
    Row(
        "tool_choice none",
        "tools and tool_choice",
        ask={"messages": QUESTION, "tools": TOOLS, "tool_choice": "none"},
        script=SUNNY,
        want=Want("It is sunny."),
        sent=_tools_sent("none", {"type": "none"}, {"mode": "NONE"}),
    ),
    Row(
        "tool_choice required",
        "tools and tool_choice",
        ask={"messages": QUESTION, "tools": TOOLS, "tool_choice": "required"},
        script=ToolCalls(calls=(OSLO,)),
        want=Want(calls=(CALLED_OSLO,), finish="tool_calls"),
        sent=_tools_sent("required", {"type": "any"}, {"mode": "ANY"}),
    ),
    Row(
        "tool_choice named",
        "tools and tool_choice",
        ask={"messages": QUESTION, "tools": TOOLS, "tool_choice": NAMED},
        script=ToolCalls(calls=(OSLO,)),
        want=Want(calls=(CALLED_OSLO,), finish="tool_calls"),
        sent=_tools_sent(
            NAMED,
            {"type": "tool", "name": "get_weather"},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ),
    Row(
        "parallel_tool_calls false",
        "tools and tool_choice",
        ask={"messages": QUESTION, "tools": TOOLS, "parallel_tool_calls": False},
        script=ToolCalls(calls=(OSLO,)),
        want=Want(calls=(CALLED_OSLO,), finish="tool_calls"),
        # Gemini has no such switch: nothing is sent (only the first call would come back)
        sent=_tools_sent(
            anthropic_choice={"type": "auto", "disable_parallel_tool_use": True}, parallel=False
        ),
    ),
    Row(
        "tool_choice required, parallel_tool_calls false",
        "tools and tool_choice",
        ask={
            "messages": QUESTION,
            "tools": TOOLS,
            "tool_choice": "required",
            "parallel_tool_calls": False,
        },
        script=ToolCalls(calls=(OSLO,)),
        want=Want(calls=(CALLED_OSLO,), finish="tool_calls"),
        sent=_tools_sent(
            "required",
            {"type": "any", "disable_parallel_tool_use": True},
            {"mode": "ANY"},
            parallel=False,
        ),
    ),
    Row(
        "tool calls beside text",
        "tool-call answer",
        ask={"messages": QUESTION, "tools": TOOLS},
        script=ToolCalls(calls=(OSLO, BERGEN), text="Let me check both."),
        want=Want("Let me check both.", (CALLED_OSLO, CALLED_BERGEN), "tool_calls"),
        sent=_tools_sent(),
    ),
    Row(
        "agent loop: a call, its result, the answer",
        "agent loop",
        ask={"messages": QUESTION, "tools": TOOLS},
        script=(ToolCalls(calls=(OSLO,)), Answer(ANSWER)),
        want=Want(calls=(CALLED_OSLO,), finish="tool_calls"),
        then=Results((("call_1", '{"celsius": 4}'),), Want(ANSWER)),
        sent={
            "openai": _openai_loop(OSLO, results=(("call_1", '{"celsius": 4}'),), tools=TOOLS),
            "anthropic": {
                "tools": ANTHROPIC_TOOLS,
                "messages": [
                    ANTHROPIC_QUESTION,
                    {"role": "assistant", "content": [_tool_use(CALLED_OSLO)]},
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "call_1",
                                "content": '{"celsius": 4}',
                            }
                        ],
                    },
                ],
            },
            "gemini": {
                "tools": GEMINI_TOOLS,
                "contents": [
                    GEMINI_QUESTION,
                    {"role": "model", "parts": [_function_call(CALLED_OSLO)]},
                    {
                        "role": "user",
                        "parts": [
                            {
                                "functionResponse": {
                                    "id": "call_1",
                                    "name": "get_weather",
                                    "response": {"celsius": 4},
                                }
                            }
                        ],
                    },
                ],
            },
        },
    ),
    Row(
        "agent loop: two consecutive tool results",
        "agent loop",
        ask={"messages": QUESTION, "tools": TOOLS},
        script=(
            ToolCalls(calls=(OSLO, BERGEN), text="Let me check both."),
            Answer("Oslo 4, Bergen 6."),
        ),
        want=Want("Let me check both.", (CALLED_OSLO, CALLED_BERGEN), "tool_calls"),
        then=Results(
            (("call_1", '{"celsius": 4}'), ("call_2", "6 degrees")),
            Want("Oslo 4, Bergen 6."),
            after=({"role": "user", "content": "Compare them."},),
        ),
        sent={
            "openai": _openai_loop(
                OSLO,
                BERGEN,
                content="Let me check both.",
                results=(("call_1", '{"celsius": 4}'), ("call_2", "6 degrees")),
                after=({"role": "user", "content": "Compare them."},),
            ),
            # consecutive results share one user turn, results first
            "anthropic": {
                "messages": [
                    ANTHROPIC_QUESTION,
                    {
                        "role": "assistant",
                        "content": [
                            _text("Let me check both."),
                            _tool_use(CALLED_OSLO),
                            _tool_use(CALLED_BERGEN),
                        ],
                    },
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "call_1",
                                "content": '{"celsius": 4}',
                            },
                            {
                                "type": "tool_result",
                                "tool_use_id": "call_2",
                                "content": "6 degrees",
                            },
                            _text("Compare them."),
                        ],
                    },
                ],
            },
            # one user turn of function responses, named after their calls
            "gemini": {
                "contents": [
                    GEMINI_QUESTION,
                    {
                        "role": "model",
                        "parts": [
                            {"text": "Let me check both."},
                            _function_call(CALLED_OSLO),
                            _function_call(CALLED_BERGEN),
                        ],
                    },
                    {
                        "role": "user",
                        "parts": [
                            {
                                "functionResponse": {
                                    "id": "call_1",
                                    "name": "get_weather",
                                    "response": {"celsius": 4},
                                }
                            },
                            {
                                "functionResponse": {
                                    "id": "call_2",
                                    "name": "get_weather",
                                    "response": {"result": "6 degrees"},
                                }
                            },
                            {"text": "Compare them."},
                        ],
                    },
                ],
            },
        },
    ),
    Row(
        "agent loop with reasoning",
        "agent loop",
        ask={"messages": QUESTION, "tools": TOOLS, "reasoning_effort": "medium"},
        script=(Reasoned(then=ToolCalls(calls=(OSLO,))), Answer(ANSWER)),
        want=Want(calls=(CALLED_OSLO,), finish="tool_calls", reasoning=THINKING),
        then=Results((("call_1", '{"celsius": 4}'),), Want(ANSWER)),
        # what each protocol needs of the reasoning turn back: its reasoning text (OpenAI's
        # compatible servers), its signed thinking block first (Anthropic), the call's
        # thought signature (Gemini)
        sent={
            "openai": _openai_loop(
                OSLO,
                results=(("call_1", '{"celsius": 4}'),),
                reasoning=THINKING,
                reasoning_effort="medium",
            ),
            "anthropic": {
                "thinking": {"type": "enabled", "budget_tokens": 8192},
                "messages": [
                    ANTHROPIC_QUESTION,
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "thinking", "thinking": THINKING, "signature": SIGNATURE},
                            _tool_use(CALLED_OSLO),
                        ],
                    },
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "call_1",
                                "content": '{"celsius": 4}',
                            }
                        ],
                    },
                ],
            },
            "gemini": {
                "generationConfig": {
                    "thinkingConfig": {"thinkingBudget": 8192, "includeThoughts": True}
                },
                "contents": [
                    GEMINI_QUESTION,
                    {
                        "role": "model",
                        "parts": [
                            {**_function_call(CALLED_OSLO), "thoughtSignature": GEMINI_SIGNATURE}
                        ],
                    },
                    {
                        "role": "user",
                        "parts": [
                            {
                                "functionResponse": {
                                    "id": "call_1",
                                    "name": "get_weather",
                                    "response": {"celsius": 4},
                                }
                            }
                        ],
                    },
                ],
            },
        },
    ),
    Row(
        "image as a data URL",
        "image as a data URL",
        ask={
            "messages": _user(_text("What is this?"), _image(f"data:image/png;base64,{PNG}", "low"))
        },
        script=Answer("A dot."),
        want=Want("A dot."),
        sent={
            "openai": {
                "messages": _user(
                    _text("What is this?"), _image(f"data:image/png;base64,{PNG}", "low")
                )
            },
            "anthropic": {  # (`detail`: a no-op)
                "messages": _user(
                    _text("What is this?"),
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                )
            },
            "gemini": {
                "contents": [
                    {
                        "role": "user",
                        "parts": [
                            {"text": "What is this?"},
                            {"inlineData": {"mimeType": "image/png", "data": PNG}},
                        ],
                    }
                ]
            },
        },
    ),
    Row(
        "image as an https URL",
        "image as an https URL",
        ask={"messages": _user(_text("What is this?"), _image(PHOTO))},
        script=Answer("A cat."),
        want=Want("A cat."),
        sent={
            "openai": {"messages": _user(_text("What is this?"), _image(PHOTO))},
            "anthropic": {
                "messages": _user(
                    _text("What is this?"),
                    {"type": "image", "source": {"type": "url", "url": PHOTO}},
                )
            },
            # Gemini needs the bytes, and the sidecar never fetches a URL
            "gemini": Refused("unsupported_parameter", IMAGE_URL_FIELD, "gemini"),
        },
    ),
    Row(
        "json_schema (Anthropic: the answer tool)",
        "json_schema",
        ask={"messages": QUESTION, "response_format": Report},
        script={
            "openai": Answer(REPORT),
            "anthropic": ToolCalls(calls=(("toolu_1", "Report", REPORT),)),
            "gemini": Answer(REPORT),
        },
        want=Want({"city": "Oslo", "celsius": 4}, parsed=Report(city="Oslo", celsius=4)),
        sent={
            "openai": {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"schema": REPORT_SCHEMA, "name": "Report", "strict": True},
                }
            },
            "anthropic": {
                "tools": [
                    {
                        "name": "Report",
                        "description": ANSWER_TOOL_DESCRIPTION,
                        "input_schema": REPORT_SCHEMA,
                    }
                ],
                "tool_choice": {
                    "type": "tool",
                    "name": "Report",
                    "disable_parallel_tool_use": True,
                },
                "output_config": ABSENT,
            },
            "gemini": {
                "generationConfig": {
                    "responseMimeType": "application/json",
                    "responseJsonSchema": REPORT_SCHEMA,
                }
            },
        },
    ),
    Row(
        "json_schema (Anthropic: native)",
        "json_schema",
        catalog={"anthropic": "structured_output: native"},
        ask={"messages": QUESTION, "response_format": Report},
        script=Answer(REPORT),
        want=Want({"city": "Oslo", "celsius": 4}, parsed=Report(city="Oslo", celsius=4)),
        sent={
            "openai": {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"schema": REPORT_SCHEMA, "name": "Report", "strict": True},
                }
            },
            "anthropic": {
                "output_config": {"format": {"type": "json_schema", "schema": REPORT_SCHEMA}},
                "tools": ABSENT,
                "tool_choice": ABSENT,
            },
            "gemini": {
                "generationConfig": {
                    "responseMimeType": "application/json",
                    "responseJsonSchema": REPORT_SCHEMA,
                }
            },
        },
    ),
    Row(
        "reasoning_effort",
        "reasoning",
        ask={"messages": QUESTION, "reasoning_effort": "medium"},
        script=Reasoned(then=Answer(ANSWER)),
        want=Want(ANSWER, reasoning=THINKING),
        sent={
            "openai": {"reasoning_effort": "medium"},
            "anthropic": {
                "thinking": {"type": "enabled", "budget_tokens": 8192},
                "max_tokens": 8192 + 4096,
            },
            "gemini": {
                "generationConfig": {
                    "thinkingConfig": {"thinkingBudget": 8192, "includeThoughts": True}
                }
            },
        },
    ),
    Row(
        "reasoning_effort none",
        "reasoning",
        ask={"messages": QUESTION, "reasoning_effort": "none"},
        script=SUNNY,
        want=Want("It is sunny."),
        sent={
            "openai": {"reasoning_effort": "none"},
            "anthropic": {"thinking": ABSENT, "max_tokens": 4096},
            "gemini": {"generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}},
        },
    ),
    Row(
        "max_completion_tokens",
        "output cap",
        ask={"messages": QUESTION, "max_completion_tokens": 300},
        script=Answer("It is", finish_reason="length"),
        want=Want("It is", finish="length"),
        sent={
            "openai": {"max_completion_tokens": 300, "max_tokens": ABSENT},
            "anthropic": {"max_tokens": 300},
            "gemini": {"generationConfig": {"maxOutputTokens": 300}},
        },
    ),
    Row(
        "max_tokens",
        "output cap",
        ask={"messages": QUESTION, "max_tokens": 300},
        script=Answer("It is", finish_reason="length"),
        want=Want("It is", finish="length"),
        sent={
            "openai": {"max_tokens": 300, "max_completion_tokens": ABSENT},
            "anthropic": {"max_tokens": 300},
            "gemini": {"generationConfig": {"maxOutputTokens": 300}},
        },
    ),
    Row(
        "stop",
        "stop",
        ask={"messages": QUESTION, "stop": ["\n\nUser:", "END"]},
        script=SUNNY,
        want=Want("It is sunny."),
        sent={
            "openai": {"stop": ["\n\nUser:", "END"]},
            "anthropic": {"stop_sequences": ["\n\nUser:", "END"]},
            "gemini": {"generationConfig": {"stopSequences": ["\n\nUser:", "END"]}},
        },
    ),
    Row(
        "stop as one string",
        "stop",
        ask={"messages": QUESTION, "stop": "END"},
        script=SUNNY,
        want=Want("It is sunny."),
        sent={
            "openai": {"stop": ["END"]},
            "anthropic": {"stop_sequences": ["END"]},
            "gemini": {"generationConfig": {"stopSequences": ["END"]}},
        },
    ),
    Row(
        "system and developer messages",
        "system and developer messages",
        ask={
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": "Use Celsius."},
                *QUESTION,
            ]
        },
        script=SUNNY,
        want=Want("It is sunny."),
        sent={
            "openai": {  # (developer as system: what every OpenAI-compatible server takes)
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "system", "content": "Use Celsius."},
                    *QUESTION,
                ]
            },
            "anthropic": {"system": "Be brief.\n\nUse Celsius.", "messages": [ANTHROPIC_QUESTION]},
            "gemini": {
                "systemInstruction": {"parts": [{"text": "Be brief.\n\nUse Celsius."}]},
                "contents": [GEMINI_QUESTION],
            },
        },
    ),
)


# --- running a row ------------------------------------------------------------------------


async def _ask(client: openai.AsyncOpenAI, *, stream: bool, **options: Any) -> Any:
    """One answer through the SDK: `create` (`parse` for a pydantic `response_format`), or
    the stream helper's final completion (the events read one by one, as an agent's UI
    would; a cut answer, `finish_reason: "length"`, the helper raises with)."""
    if not stream:
        if isinstance(options.get("response_format"), type):
            return await client.chat.completions.parse(model=MODEL, **options)
        return await client.chat.completions.create(model=MODEL, **options)
    try:
        async with client.chat.completions.stream(model=MODEL, **options) as events:
            async for _ in events:
                pass
            return await events.get_final_completion()
    except openai.LengthFinishReasonError as cut:
        return cut.completion  # (the helper raises on a cut answer, the answer so far on it)


def _seen(completion: Any, like: Want) -> Want:
    """What the SDK parsed, in a `Want`'s terms (content as JSON where `like`'s is)."""
    [choice] = completion.choices
    message = choice.message
    content = message.content
    if isinstance(like.content, dict) and content is not None:
        content = json.loads(content)
    return Want(
        content=content,
        calls=tuple(
            (c.id, c.function.name, json.loads(c.function.arguments))
            for c in message.tool_calls or ()
        ),
        finish=choice.finish_reason,
        reasoning=(message.model_extra or {}).get("reasoning_content"),
        parsed=getattr(message, "parsed", None),
    )


def _fragment(body: Mapping[str, Any], like: Fragment) -> Fragment:
    """`body`'s values of `like`'s keys (ABSENT where it has none)."""
    return {key: body.get(key, ABSENT) for key in like}


async def _run(s: Sidecar, row: Row, protocol: str, stream: bool) -> None:
    """Run `row` through `s`, a sidecar in front of a fake `protocol` upstream; check it."""
    client = s.openai()
    s.wall.script(UPSTREAM, row.script_for(protocol))
    sent = row.sent[protocol]
    if isinstance(sent, ByMode):
        sent = sent.stream if stream else sent.whole
    if isinstance(sent, Refused):
        with pytest.raises(openai.BadRequestError) as refused:
            await _ask(client, stream=stream, **row.ask)
        error = refused.value
        assert (error.code, error.param) == (sent.code, sent.param)
        assert sent.names in error.message
        assert s.wall.calls == []
        return
    completion = await _ask(client, stream=stream, **row.ask)
    assert _seen(completion, row.want) == row.want
    if row.then is not None:
        history = [
            *row.ask["messages"],
            completion.choices[0].message.model_dump(),  # as an agent keeps it
            *(
                {"role": "tool", "tool_call_id": call_id, "content": result}
                for call_id, result in row.then.results
            ),
            *row.then.after,
        ]
        final = await _ask(client, stream=stream, **{**row.ask, "messages": history})
        assert _seen(final, row.then.want) == row.then.want
    assert [(c.model, c.stream) for c in s.wall.calls] == [(UPSTREAM, stream)] * (
        1 if row.then is None else 2
    )
    assert _fragment(s.wall.calls[-1].body, sent) == sent


def _cases() -> list[Any]:
    cases = []
    for row, protocol, mode in itertools.product(ROWS, PROTOCOLS, MODES):
        reason = row.xfail.get((protocol, mode))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        cases.append(
            pytest.param(row, protocol, mode, marks=marks, id=f"{row.name}-{protocol}-{mode}")
        )
    return cases


@pytest.fixture
async def sidecar(row: Row, protocol: str) -> AsyncIterator[Sidecar]:
    """The sidecar of a (row, protocol) case: a fake upstream of the protocol behind the
    one-model catalog (with the row's catalog keys for that protocol)."""
    async with _sidecar(protocol, row.catalog.get(protocol, "")) as s:
        yield s


@pytest.mark.parametrize(("row", "protocol", "mode"), _cases())
async def test_row(sidecar: Sidecar, row: Row, protocol: str, mode: str) -> None:
    await _run(sidecar, row, protocol, stream=mode == "stream")


# --- known bugs: what the real Anthropic API refuses and the fake does not check yet ---------


def _whitespace_only_texts(body: Mapping[str, Any]) -> list[str]:
    """The text blocks of an Anthropic body that are whitespace only (the API refuses them:
    "messages: text content blocks must contain non-whitespace text")."""
    return [
        block["text"]
        for message in body["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block["type"] == "text" and not block["text"].strip()
    ]


async def _refused_or_sent(stream: bool, **ask: Any) -> dict[str, Any] | None:
    """Ask the Anthropic sidecar; None when the request was refused by name (a 400 with a
    `param`) without a call, else the body the fake Anthropic API got."""
    async with _sidecar("anthropic") as s:
        s.wall.script(UPSTREAM, SUNNY)
        refused: openai.BadRequestError | None = None
        try:
            await _ask(s.openai(), stream=stream, **ask)
        except openai.BadRequestError as error:
            refused = error
        if refused is not None:
            assert refused.param is not None
            assert s.wall.calls == []
            return None
        [call] = s.wall.calls
        return dict(call.body)


STREAMS = pytest.mark.parametrize("mode", MODES)


@STREAMS
async def test_anthropic_gets_no_whitespace_only_stop_sequence(mode: str) -> None:
    """`stop: ["\\n\\n"]` is common with OpenAI; Anthropic refuses a stop sequence without
    a visible character. However it is fixed (left out, or a 400 naming the field), Anthropic
    must not be sent one."""
    body = await _refused_or_sent(mode == "stream", messages=QUESTION, stop=["\n\n", "END"])
    assert body is None or all(stop.strip() for stop in body.get("stop_sequences", ()))


@STREAMS
async def test_anthropic_gets_no_whitespace_only_text_block(mode: str) -> None:
    """A history from another model, whose tool-calling turn has `content: "\\n\\n"`,
    continued on Anthropic: that text has no place there (or the request is refused by name)."""
    history = [
        *QUESTION,
        {"role": "assistant", "content": "\n\n", "tool_calls": _openai_calls(OSLO, streamed=False)},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"celsius": 4}'},
    ]
    body = await _refused_or_sent(mode == "stream", messages=history, tools=TOOLS)
    assert body is None or _whitespace_only_texts(body) == []


# --- the matrix is whole ------------------------------------------------------------------


def test_the_matrix_covers_every_feature_protocol_and_mode() -> None:
    """Every row says what each protocol receives (or that it refuses), with a script for
    each; every feature has rows; and `test_row` runs every (row, protocol, mode) triple, so a
    row can't leave a protocol or a mode out."""
    names = [row.name for row in ROWS]
    assert len(set(names)) == len(names), "row names are test ids: unique"
    for row in ROWS:
        assert set(row.sent) == set(PROTOCOLS), row.name
        assert row.feature in FEATURES, row.name
        if isinstance(row.script, Mapping):
            assert set(row.script) == set(PROTOCOLS), row.name
        assert set(row.catalog) <= set(PROTOCOLS), row.name
        assert set(row.xfail) <= set(itertools.product(PROTOCOLS, MODES)), row.name
    assert {row.feature for row in ROWS} == set(FEATURES)
    [parametrize] = [m for m in test_row.pytestmark if m.name == "parametrize"]  # type: ignore[attr-defined]
    triples = {(p.values[0].name, p.values[1], p.values[2]) for p in parametrize.args[1]}
    assert triples == set(itertools.product(names, PROTOCOLS, MODES))
