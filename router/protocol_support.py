"""Which OpenAI request fields each upstream protocol carries: sent as they came, translated,
a documented no-op, or not at all (then routing skips the target; with none left, a 400 names
the field and the protocol). Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from router.types import ChatRequest

# OpenAI parameters passed through unchanged to OpenAI-protocol upstreams (and checked here)
PASSTHROUGH = (
    "store",
    "metadata",
    "frequency_penalty",
    "presence_penalty",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "n",
    "logprobs",
    "top_logprobs",
    "service_tier",
    "prediction",
    "modalities",
)
# values of passthrough parameters that ask nothing of an upstream: carried anywhere as no-ops
_NO_OP: Mapping[str, Any] = {"logprobs": False, "modalities": ["text"], "parallel_tool_calls": True}

NAME_FIELD = "messages[].name"
TOOL_CALLS_FIELD = "messages[].tool_calls"
TOOL_ROLE_FIELD = "messages[].role: tool"
IMAGE_FIELD = "messages[].content[].image_url"
IMAGE_URL_FIELD = "messages[].content[].image_url (an http URL)"
REASONING_FIELD = "messages[].reasoning_content"
THINKING_FIELD = "messages[].thinking_blocks"
JSON_SCHEMA_FIELD = "response_format.json_schema"
EFFORT_FIELD = "reasoning_effort"
BLANK_STOP_FIELD = "stop (a sequence without a visible character)"
# a tool call sent back whose `arguments` are not a JSON object: only OpenAI's protocol takes
# the text as it is; the others take the arguments as an object
RAW_ARGUMENTS_FIELD = "messages[].tool_calls[].function.arguments (not a JSON object)"

# What a catalog model may declare it can do (`capabilities:`); a request needs some of them.
CAPABILITIES = ("tools", "vision", "json_schema", "reasoning", "web_search")

_TOOLS = frozenset(
    {"tools", "tool_choice", "parallel_tool_calls", TOOL_CALLS_FIELD, TOOL_ROLE_FIELD}
)
# What each protocol other than OpenAI's carries; the rest it cannot. A field listed here is
# translated into the protocol's own, or a documented no-op: OpenAI stores completions for its
# own evals, others do not; reasoning text without a signature cannot go back to Anthropic or
# Gemini (Anthropic's signed thinking blocks can, to Anthropic); the simulated provider ignores
# what it cannot simulate. Gemini needs an image's bytes (a data URL): it never gets a URL to
# fetch, and the sidecar never fetches one itself.
CARRIED: Mapping[str, frozenset[str]] = {
    "anthropic": _TOOLS
    | {
        "store",
        "metadata",
        IMAGE_FIELD,
        IMAGE_URL_FIELD,
        JSON_SCHEMA_FIELD,
        EFFORT_FIELD,
        REASONING_FIELD,
        THINKING_FIELD,
    },
    "gemini": _TOOLS
    | {
        BLANK_STOP_FIELD,
        "store",
        "metadata",
        "frequency_penalty",
        "presence_penalty",
        IMAGE_FIELD,
        JSON_SCHEMA_FIELD,
        EFFORT_FIELD,
        REASONING_FIELD,
        THINKING_FIELD,
    },
    "sim": _TOOLS
    | {
        BLANK_STOP_FIELD,
        "store",
        "metadata",
        "frequency_penalty",
        "presence_penalty",
        NAME_FIELD,
        RAW_ARGUMENTS_FIELD,
        IMAGE_FIELD,
        IMAGE_URL_FIELD,
        JSON_SCHEMA_FIELD,
        EFFORT_FIELD,
        REASONING_FIELD,
        THINKING_FIELD,
    },
}


def missing_field(request: ChatRequest, protocol: str) -> str | None:
    """The first field of `request` that `protocol` cannot carry, or None."""
    carried = CARRIED.get(protocol)
    if carried is None:  # openai: everything
        return None
    for key, given in request.passthrough:
        if key not in carried and _NO_OP.get(key, ...) != given:
            return key
    if BLANK_STOP_FIELD not in carried and any(not stop.strip() for stop in request.stop):
        return BLANK_STOP_FIELD
    if request.json_schema is not None and JSON_SCHEMA_FIELD not in carried:
        return JSON_SCHEMA_FIELD
    if request.reasoning_effort is not None and EFFORT_FIELD not in carried:
        return EFFORT_FIELD
    for message in request.messages:
        if message.name is not None and NAME_FIELD not in carried:
            return NAME_FIELD
        if message.tool_calls and TOOL_CALLS_FIELD not in carried:
            return TOOL_CALLS_FIELD
        if (
            message.tool_calls
            and RAW_ARGUMENTS_FIELD not in carried
            and not all(arguments_object(call) is not None for call in message.tool_calls)
        ):
            return RAW_ARGUMENTS_FIELD
        if message.role == "tool" and TOOL_ROLE_FIELD not in carried:
            return TOOL_ROLE_FIELD
        if message.reasoning is not None and REASONING_FIELD not in carried:
            return REASONING_FIELD
        if message.thinking_blocks and THINKING_FIELD not in carried:
            return THINKING_FIELD
        for image in message.images:
            if IMAGE_FIELD not in carried:
                return IMAGE_FIELD
            if image.inline is None and IMAGE_URL_FIELD not in carried:
                return IMAGE_URL_FIELD
    return None


def arguments_object(call: Mapping[str, Any]) -> dict[str, Any] | None:
    """A tool call's `arguments` (OpenAI's JSON text) as an object, or None if they are not
    one. An empty text is an empty object (some models send that for a call with no
    parameters)."""
    text = call["function"]["arguments"]
    if not text.strip():
        return {}
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def required_capabilities(request: ChatRequest) -> frozenset[str]:
    """The catalog capabilities (`CAPABILITIES`) a model needs to serve `request`."""
    needed = set()
    if request.tools or any(m.tool_calls or m.role == "tool" for m in request.messages):
        needed.add("tools")
    if any(m.images for m in request.messages):
        needed.add("vision")
    if request.json_schema is not None:
        needed.add("json_schema")
    if request.reasoning_effort not in (None, "none"):
        needed.add("reasoning")
    if request.web_search is not None:
        needed.add("web_search")
    return frozenset(needed)
