"""Which OpenAI request fields each upstream protocol carries: sent as they came, translated,
a documented no-op, or not at all (then routing skips the target; with none left, a 400 names
the field and the protocol). Pure."""

from __future__ import annotations

from collections.abc import Mapping

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
)

NAME_FIELD = "messages[].name"
TOOL_CALLS_FIELD = "messages[].tool_calls"
TOOL_ROLE_FIELD = "messages[].role: tool"
IMAGE_FIELD = "messages[].content[].image_url"
IMAGE_URL_FIELD = "messages[].content[].image_url (an http URL)"
REASONING_FIELD = "messages[].reasoning_content"
THINKING_FIELD = "messages[].thinking_blocks"
JSON_SCHEMA_FIELD = "response_format.json_schema"
EFFORT_FIELD = "reasoning_effort"

# What each protocol other than OpenAI's carries; the rest it cannot (tools and tool turns: not
# translated yet). A field listed here is translated into the protocol's own (penalties on
# Gemini), or a documented no-op: OpenAI stores completions for its own evals, others do not;
# the simulated provider ignores what it cannot simulate.
CARRIED: Mapping[str, frozenset[str]] = {
    "anthropic": frozenset({"store", "metadata"}),
    "gemini": frozenset({"store", "metadata", "frequency_penalty", "presence_penalty"}),
    "sim": frozenset({"store", "metadata", "frequency_penalty", "presence_penalty", NAME_FIELD}),
}


def missing_field(request: ChatRequest, protocol: str) -> str | None:
    """The first field of `request` that `protocol` cannot carry, or None."""
    carried = CARRIED.get(protocol)
    if carried is None:  # openai: everything
        return None
    for key, _ in request.passthrough:
        if key not in carried:
            return key
    if request.json_schema is not None and JSON_SCHEMA_FIELD not in carried:
        return JSON_SCHEMA_FIELD
    if request.reasoning_effort is not None and EFFORT_FIELD not in carried:
        return EFFORT_FIELD
    for message in request.messages:
        if message.name is not None and NAME_FIELD not in carried:
            return NAME_FIELD
        if message.tool_calls and TOOL_CALLS_FIELD not in carried:
            return TOOL_CALLS_FIELD
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
