"""What each fusion role sees of the client's request, and what fusion refuses. Pure.

Panelists and the judge deliberate without the client's tools (`deliberation_view`): assistant
tool calls and tool results become text, the tools and a `json_schema` are described in a
system note, and earlier assistant turns lose their reasoning (the synthesizer's own, signed for
its protocol). Images, `reasoning_effort`, `json_object` and the other parameters stay; a panel
that researches turns on its panelists' web search (`panelist_view`). Only the
synthesizer gets the client's tools and schema (`synthesize.synthesis_request`), so only it
can answer with tool calls or in the schema (`synthesizer_only`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from router.fusion.prompts import DELIBERATION_SCHEMA, DELIBERATION_TOOLS
from router.types import ChatRequest, Message, WebSearch

TOOL_OPTIONS = ("tools", "tool_choice", "parallel_tool_calls")
# passthrough parameters about the final answer alone: the synthesizer's, never a panelist's
SYNTHESIZER_ONLY = (*TOOL_OPTIONS, "prediction")


def has_tool_turns(request: ChatRequest) -> bool:
    """The conversation holds assistant tool calls or tool results."""
    return any(m.tool_calls or m.role == "tool" for m in request.messages)


def synthesizer_only(request: ChatRequest) -> bool:
    """The request asks for what only the synthesizer can give (tool calls, an answer in a
    JSON schema): a single panel answer cannot stand in for the synthesis."""
    return bool(request.tools) or request.json_schema is not None


def in_conversation(request: ChatRequest) -> bool:
    """The synthesizer must see the conversation itself, not its text: it holds tool turns or
    images, or tools are offered."""
    return bool(request.tools) or has_tool_turns(request) or any(m.images for m in request.messages)


def fusion_refusal(request: ChatRequest) -> tuple[str, str] | None:
    """A parameter no fusion can honour, and why: `(param, message)`, or None."""
    n = request.option("n")
    if n is not None and n != 1:
        return "n", "a fusion panel writes one answer: 'n' must be 1"
    if request.option("logprobs") or request.option("top_logprobs") is not None:
        param = "logprobs" if request.option("logprobs") else "top_logprobs"
        return (
            param,
            "a fused answer has no log probabilities (its tokens come from several models)",
        )
    modalities = request.option("modalities")
    if modalities is not None and list(modalities) != ["text"]:
        return "modalities", "a fusion panel answers in text only"
    return None


def deliberation_view(request: ChatRequest) -> ChatRequest:
    """The request as panelists (and, as text, the judge) see it: no tools, tool turns as text,
    the tools and a `json_schema` described in a system note. Unchanged when there is nothing
    to hide."""
    note = deliberation_note(request)
    hidden = {k for k, _ in request.passthrough if k in SYNTHESIZER_ONLY}
    rewrite = any(
        m.tool_calls or m.role == "tool" or m.reasoning is not None or m.thinking_blocks
        for m in request.messages
    )
    if note is None and not hidden and not rewrite:
        return request
    messages = tuple(_as_text(request.messages)) if rewrite else request.messages
    if note is not None:
        lead = next((i for i, m in enumerate(messages) if m.role != "system"), len(messages))
        messages = (*messages[:lead], Message("system", note), *messages[lead:])
    return replace(
        request,
        messages=messages,
        passthrough=tuple((k, v) for k, v in request.passthrough if k not in hidden),
        json_schema=None,
        json_output=request.json_output and request.json_schema is None,
    )


def panelist_view(view: ChatRequest, research: WebSearch | None) -> ChatRequest:
    """What a panelist is asked: the deliberation view, with the panel's web search on."""
    return view if research is None else replace(view, web_search=research)


def deliberation_note(request: ChatRequest) -> str | None:
    """The system note telling panelists about the client's tools and answer schema."""
    notes: list[str] = []
    if request.tools:
        notes.append(
            DELIBERATION_TOOLS.substitute(
                tools="\n".join(_tool_line(t) for t in request.tools),
                choice=_choice_text(request),
            ).rstrip()
        )
    if request.json_schema is not None:
        spec = request.json_schema
        notes.append(
            DELIBERATION_SCHEMA.substitute(
                name=spec.get("name", ""),
                schema=json.dumps(spec.get("schema", {}), ensure_ascii=False),
            )
        )
    return "\n\n".join(notes) if notes else None


def call_text(call: Any) -> str:
    """An assistant's tool call as text: `[assistant called NAME (ID) with ARGUMENTS]`."""
    function = call.get("function") or {}
    return (
        f"[assistant called {function.get('name')} ({call.get('id')}) "
        f"with {function.get('arguments')}]"
    )


def result_text(message: Message, names: dict[str, str]) -> str:
    """A tool result as text: `[result of NAME (ID): CONTENT]` (the name from its call)."""
    call_id = message.tool_call_id or ""
    label = f"{names[call_id]} ({call_id})" if call_id in names else call_id
    return f"[result of {label}: {message.content}]"


def _as_text(messages: Iterable[Message]) -> Iterable[Message]:
    names: dict[str, str] = {}
    for message in messages:
        if message.tool_calls:
            for call in message.tool_calls:
                names[str(call.get("id"))] = str((call.get("function") or {}).get("name"))
            lines = [message.content] if message.content else []
            lines.extend(call_text(call) for call in message.tool_calls)
            yield Message("assistant", "\n".join(lines), name=message.name)
        elif message.role == "tool":
            yield Message("user", result_text(message, names), name=message.name)
        elif message.reasoning is not None or message.thinking_blocks:
            yield replace(message, reasoning=None, thinking_blocks=())
        else:
            yield message


def _tool_line(tool: Any) -> str:
    function = tool.get("function") or {}
    line = f"- {function.get('name')}"
    if function.get("description"):
        line += f": {function['description']}"
    if function.get("parameters"):
        line += f" Parameters: {json.dumps(function['parameters'], ensure_ascii=False)}"
    return line


def _choice_text(request: ChatRequest) -> str:
    choice = request.option("tool_choice")
    lines = []
    if choice == "none":
        lines.append("The application asks for no tool call in this reply.")
    elif choice == "required":
        lines.append("The application requires a tool call in this reply.")
    elif isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        lines.append(f"The application requires a call to {name} in this reply.")
    if request.option("parallel_tool_calls") is False:
        lines.append("At most one tool call per reply.")
    return "\n".join(lines)
