"""The body of an Anthropic Messages API call (`POST /v1/messages`), by pure translation.

`to_wire()` makes it from a `ChatRequest`. How OpenAI's features are carried (the README's
compatibility table):

- `tools` (functions) become Anthropic tools: `name`, `description`, and `input_schema`
  (the function's `parameters`, or an empty object schema). A function's `strict` goes
  along where the model has native structured output, and is a no-op elsewhere.
- `tool_choice`: `auto` → `{"type": "auto"}`, `none` → `{"type": "none"}`, `required` →
  `{"type": "any"}`, a named function → `{"type": "tool", "name": ...}`.
  `parallel_tool_calls: false` → `disable_parallel_tool_use: true` on it (on `auto` when no
  choice was given; `none` has no such field).
- An assistant's `tool_calls` become `tool_use` blocks (`input`: the arguments as an object);
  `tool` messages become `tool_result` blocks in a user turn. Consecutive results share one
  turn, and results come before any text in it, as Anthropic requires.
- `image_url` parts: a data URL becomes a `base64` image source, an http(s) URL a `url`
  source (Anthropic fetches it, the sidecar never does). `detail` is a no-op: Anthropic has
  no such setting.
- `reasoning_effort`, on a model thinking by budget (the catalog's `thinking: budget`):
  extended thinking, `{"type": "enabled", "budget_tokens": N}` (`THINKING_BUDGET`).
- `reasoning_effort`, on a model with adaptive thinking (`thinking: adaptive`; Claude Opus
  4.7 and later refuse budgets): `thinking: {"type": "adaptive", "display": "summarized"}`
  and `output_config.effort` (`ADAPTIVE_EFFORT`), beside any `output_config.format`:

  | reasoning_effort | thinking   | output_config.effort |
  | ---------------- | ---------- | -------------------- |
  | none             | (none)     | (none)               |
  | minimal          | adaptive   | low                  |
  | low              | adaptive   | low                  |
  | medium           | adaptive   | medium               |
  | high             | adaptive   | high                 |
  | xhigh            | adaptive   | xhigh                |

  `display: summarized` asks for the thinking text, which newer models omit by default
  (their blocks then carry only a signature), so that `reasoning_content` has it.
- Either way, thinking counts against `max_tokens`: with no cap asked, `max_tokens` is
  `THINKING_BUDGET[effort]` plus `DEFAULT_MAX_TOKENS` for the answer; a cap asked stays the
  cap. While thinking, `temperature` and `top_p` are left out (Anthropic refuses changes to
  them with thinking on).
- Forced tool use (`any` or `tool`) is incompatible with thinking: a request that forces a
  tool (`required`, a named tool, or json_schema in tool mode) gets no thinking (and no
  effort).
- An assistant's `thinking_blocks` go back first in its turn, as they came. Its plain
  `reasoning_content` (no signature) is a no-op: Anthropic takes only signed thinking.
- `response_format: json_schema`, on a model with native structured output ("native"):
  `output_config.format = {"type": "json_schema", "schema": ...}`. The schema's `name`,
  `description` and `strict` have no place there (no-ops: the format is always enforced).
- json_schema elsewhere ("tool" mode): a tool named after the schema, whose `input_schema`
  is the schema, is forced; its input comes back as the message's text (JSON), finish
  reason `stop`. With the caller's tools as well, the answer tool joins them and the choice
  becomes `any` (call one of the caller's tools, or answer); with `tool_choice: none` only
  the answer tool is forced; with `required` or a named tool this turn is a tool call, and
  the answer tool is not offered.
- `response_format: json_object`: an instruction appended to the system prompt.
- Web search (`ChatRequest.web_search`, set by fusion, never by a client): Anthropic's server
  tool `{"type": "web_search_20250305", "name": "web_search", "max_uses": N}`, with
  `blocked_domains` when there are any (`web_search_tool()`), after the function tools. A
  forced tool choice (`required`, a named tool, json_schema in tool mode) leaves the model no
  turn to search in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from router.protocol_support import arguments_object
from router.providers.anthropic_response import thinking_block
from router.types import ChatRequest, ImagePart, Message, WebSearch

DEFAULT_MAX_TOKENS = 4096
MAX_TEMPERATURE = 1.0  # Anthropic's range is 0..1, OpenAI's 0..2
JSON_INSTRUCTION = (
    "Answer with a single JSON object only: no prose, no Markdown code fences, "
    "nothing before or after the object."
)
# `reasoning_effort` → extended thinking's `budget_tokens`; "none" sends no `thinking` at all.
# With no cap asked, `max_tokens` is the budget plus DEFAULT_MAX_TOKENS for the answer (also
# the room left for adaptive thinking). A cap asked stays the cap (as OpenAI's reasoning
# tokens count against `max_completion_tokens`): a budget gets at most half of it, and none
# when that half is below Anthropic's minimum budget.
THINKING_BUDGET: dict[str, int] = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 32768,
}
MIN_THINKING_BUDGET = 1024  # Anthropic's floor for `budget_tokens`
# `reasoning_effort` → adaptive thinking's `output_config.effort` (Anthropic's levels are low,
# medium, high, xhigh and max; it has no "minimal", and "max" is beyond anything OpenAI asks).
ADAPTIVE_EFFORT: dict[str, str] = {
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "xhigh",
}
ADAPTIVE_THINKING: dict[str, Any] = {"type": "adaptive", "display": "summarized"}
ANSWER_TOOL_DESCRIPTION = "Give your answer: call this tool with the answer as its input."

WEB_SEARCH_TOOL = "web_search_20250305"  # the server tool's version (`type`)

StructuredOutput = Literal["native", "tool"]
ThinkingMode = Literal["budget", "adaptive"]


def any_object() -> dict[str, Any]:
    """The JSON schema of any object: a tool's `input_schema` when none was given."""
    return {"type": "object", "properties": {}}


def system_prompt(request: ChatRequest) -> str:
    """The top-level `system` text: the system messages, plus the JSON-only instruction for
    `json_object` (a json_schema is enforced by the format or the answer tool instead)."""
    parts = [request.system_text] if request.system_text else []
    if request.json_output and request.json_schema is None:
        parts.append(JSON_INSTRUCTION)
    return "\n\n".join(parts)


def image_block(image: ImagePart) -> dict[str, Any]:
    """An image block: a data URL's bytes as a `base64` source, any other URL as a `url`
    source. OpenAI's `detail` has no Anthropic counterpart (a no-op)."""
    inline = image.inline
    if inline is None:
        return {"type": "image", "source": {"type": "url", "url": image.url}}
    media_type, data = inline
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def content_blocks(message: Message) -> list[dict[str, Any]]:
    """A message's parts as text and image blocks, in order; texts without a visible
    character are dropped (Anthropic rejects them: an OpenAI-compatible model's `"\n\n"`
    beside its tool calls says nothing)."""
    return [
        {"type": "text", "text": part} if isinstance(part, str) else image_block(part)
        for part in message.parts or (message.content,)
        if not isinstance(part, str) or part.strip()
    ]


def tool_use_block(call: Mapping[str, Any]) -> dict[str, Any]:
    """An assistant's tool call (OpenAI's shape) as a `tool_use` block. Its arguments are a
    JSON object: `protocol_support` lets no other call reach this protocol."""
    function = call["function"]
    return {
        "type": "tool_use",
        "id": call["id"],
        "name": function["name"],
        "input": arguments_object(call) or {},
    }


def tool_result_block(message: Message) -> dict[str, Any]:
    """A `tool` message as a `tool_result` block; text parts stay separate blocks."""
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
    if message.parts:
        texts = [{"type": "text", "text": t} for t in message.texts if t]
        if texts:
            block["content"] = texts
    elif message.content:
        block["content"] = message.content
    return block


def message_blocks(message: Message) -> list[dict[str, Any]]:
    """One message as content blocks: a tool result; or an assistant's thinking blocks (in
    their order, with their own fields only: a client's stream assembly may add an `index`),
    its text, then its tool calls; or a user's text and images."""
    if message.role == "tool":
        return [tool_result_block(message)]
    blocks = [*map(thinking_block, message.thinking_blocks), *content_blocks(message)]
    blocks.extend(tool_use_block(call) for call in message.tool_calls)
    return blocks


def _results_first(block: Mapping[str, Any]) -> bool:
    return bool(block["type"] != "tool_result")


def turns(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Non-system messages as alternating user/assistant turns of content blocks.

    Consecutive messages of one role are merged into one turn (Anthropic requires
    alternation; `tool` results are the user's), and a user turn's tool results come first.
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        blocks = message_blocks(message)
        if not blocks:
            continue
        role = "assistant" if message.role == "assistant" else "user"
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
            if role == "user":
                out[-1]["content"].sort(key=_results_first)  # (stable)
        else:
            out.append({"role": role, "content": blocks})
    if out and out[-1]["role"] == "assistant" and out[-1]["content"][-1]["type"] == "text":
        # a trailing assistant turn is a prefill; Anthropic rejects trailing whitespace there
        last = out[-1]["content"][-1]
        last["text"] = last["text"].rstrip()
        if not last["text"]:
            out[-1]["content"].pop()
            if not out[-1]["content"]:
                out.pop()
    return out


def tool_definition(tool: Mapping[str, Any], *, strict: bool) -> dict[str, Any]:
    """An OpenAI function tool as an Anthropic tool; its `strict` only where `strict` (the
    model has native structured output)."""
    function = tool["function"]
    out: dict[str, Any] = {"name": function["name"]}
    if function.get("description"):
        out["description"] = function["description"]
    out["input_schema"] = function.get("parameters") or any_object()
    if strict and function.get("strict"):
        out["strict"] = True
    return out


def tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    """OpenAI's `tool_choice` and `parallel_tool_calls` as Anthropic's `tool_choice`, or None
    when neither was given."""
    if choice is None and parallel is not False:
        return None
    if choice == "none":
        return {"type": "none"}
    out: dict[str, Any]
    if choice in (None, "auto"):
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    else:
        out = {"type": "tool", "name": choice["function"]["name"]}
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def answer_tool(request: ChatRequest, structured_output: StructuredOutput) -> str | None:
    """The name of the tool whose input is a json_schema answer, in "tool" mode; None when
    there is none, or when the caller's `tool_choice` asks for a call of its own this turn."""
    if request.json_schema is None or structured_output != "tool":
        return None
    if request.option("tool_choice") not in (None, "auto", "none"):
        return None
    name: str = request.json_schema["name"]
    return name


def tool_fields(request: ChatRequest, structured_output: StructuredOutput) -> dict[str, Any]:
    """`tools` and `tool_choice`, with json_schema's forced answer tool in "tool" mode."""
    tools = [tool_definition(t, strict=structured_output == "native") for t in request.tools]
    choice = tool_choice(request.option("tool_choice"), request.option("parallel_tool_calls"))
    answer = answer_tool(request, structured_output)
    if answer is not None:
        spec = request.json_schema
        tools.append(
            {
                "name": answer,
                "description": spec.get("description") or ANSWER_TOOL_DESCRIPTION,
                "input_schema": spec.get("schema") or any_object(),
            }
        )
        if request.tools and request.option("tool_choice") != "none":
            choice = {**(choice or {}), "type": "any"}  # one of the caller's tools, or answer
        else:
            choice = {"type": "tool", "name": answer, "disable_parallel_tool_use": True}
    fields: dict[str, Any] = {}
    if tools:
        fields["tools"] = tools
    if choice is not None:
        fields["tool_choice"] = choice
    return fields


def web_search_tool(search: WebSearch) -> dict[str, Any]:
    """Anthropic's web search server tool for `search`: its limit, and its blocked domains
    when there are any."""
    tool: dict[str, Any] = {
        "type": WEB_SEARCH_TOOL,
        "name": "web_search",
        "max_uses": search.max_uses,
    }
    if search.blocked_domains:
        tool["blocked_domains"] = list(search.blocked_domains)
    return tool


def thinking_budget(request: ChatRequest) -> int | None:
    """The `budget_tokens` for the request's `reasoning_effort` (`THINKING_BUDGET`), or None
    when the cap asked is too small for the minimum."""
    effort = request.reasoning_effort
    if effort is None or effort == "none":
        return None
    budget = THINKING_BUDGET[effort]
    if request.max_tokens is not None:
        budget = min(budget, request.max_tokens // 2)
    return budget if budget >= MIN_THINKING_BUDGET else None


def thinking_config(
    request: ChatRequest, mode: ThinkingMode, *, forced: bool
) -> dict[str, Any] | None:
    """The `thinking` object for the request's `reasoning_effort` in the model's `mode`, or
    None for no thinking: none asked, tool use forced, or (a budget) too small a cap."""
    if request.reasoning_effort in (None, "none") or forced:
        return None
    if mode == "adaptive":
        return dict(ADAPTIVE_THINKING)
    budget = thinking_budget(request)
    return None if budget is None else {"type": "enabled", "budget_tokens": budget}


def to_wire(
    request: ChatRequest,
    upstream_model: str,
    *,
    stream: bool,
    structured_output: StructuredOutput = "tool",
    thinking: ThinkingMode = "budget",
) -> dict[str, Any]:
    """The JSON body of a Messages API call; `structured_output` says how a json_schema is
    asked of the model, `thinking` how it is asked to reason (its catalog entry's keys)."""
    body: dict[str, Any] = {
        "model": upstream_model,
        "messages": turns(request.dialogue),
        "max_tokens": request.max_tokens if request.max_tokens is not None else DEFAULT_MAX_TOKENS,
        "stream": stream,
    }
    system = system_prompt(request)
    if system:
        body["system"] = system
    output_config: dict[str, Any] = {}
    if request.tools or request.json_schema is not None:
        body.update(tool_fields(request, structured_output))
        if request.json_schema is not None and structured_output == "native":
            schema = request.json_schema.get("schema") or any_object()
            output_config["format"] = {"type": "json_schema", "schema": schema}
    if request.web_search is not None:
        body["tools"] = [*body.get("tools", ()), web_search_tool(request.web_search)]
    choice = body.get("tool_choice")
    forced = choice is not None and choice["type"] in ("any", "tool")
    config = thinking_config(request, thinking, forced=forced)
    effort = request.reasoning_effort
    if config is not None and effort is not None:
        body["thinking"] = config
        if config["type"] == "adaptive":
            output_config["effort"] = ADAPTIVE_EFFORT[effort]
        if request.max_tokens is None:
            body["max_tokens"] = THINKING_BUDGET[effort] + DEFAULT_MAX_TOKENS
    else:
        if request.temperature is not None:
            body["temperature"] = min(request.temperature, MAX_TEMPERATURE)
        if request.top_p is not None:
            body["top_p"] = request.top_p
    if output_config:
        body["output_config"] = output_config
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.user is not None:
        body["metadata"] = {"user_id": request.user}
    return body
