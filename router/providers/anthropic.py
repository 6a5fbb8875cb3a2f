"""Adapter for the Anthropic Messages API (`POST /v1/messages`), whole and streamed.

`to_wire()` and `from_wire()` are pure translations between the router's types and
Anthropic's JSON, and `apply_event()` folds one stream event; `AnthropicProvider` only
sends, reads and walks the stream's typed events (`message_start` … `message_stop`).

How OpenAI's features are carried (the README's compatibility table):

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
- `reasoning_effort` becomes extended thinking, `{"type": "enabled", "budget_tokens": N}`
  (`THINKING_BUDGET`). While thinking, `temperature` and `top_p` are left out (Anthropic
  refuses changes to them with thinking on).
- Forced tool use (`any` or `tool`) is incompatible with thinking: a request that forces a
  tool (`required`, a named tool, or json_schema in tool mode) gets no thinking.
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
- Back: `tool_use` blocks → `tool_calls` (whole: the input as compact JSON text; streamed:
  the model's own `input_json_delta` text), stop reason `tool_use` → `tool_calls`. Thinking
  blocks → `reasoning_content`, and `thinking_blocks` with their signatures
  (`redacted_thinking` blocks kept), whole and streamed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from router.errors import ProviderError, ProviderMalformed, StreamTruncated
from router.protocol_support import arguments_object
from router.providers.base import (
    SKIP_ONE_MALFORMED,
    EventReader,
    HttpTarget,
    MalformedEvents,
    Secret,
    error_for_status,
    estimate_tokens,
    iter_sse,
    read_json,
    send,
)
from router.types import (
    ChatRequest,
    Completion,
    FinishReason,
    ImagePart,
    Message,
    ProviderCall,
    ReasoningDelta,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from router.upstream_http import UpstreamClient

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
MAX_TEMPERATURE = 1.0  # Anthropic's range is 0..1, OpenAI's 0..2
JSON_INSTRUCTION = (
    "Answer with a single JSON object only: no prose, no Markdown code fences, "
    "nothing before or after the object."
)
# `reasoning_effort` → extended thinking's `budget_tokens`; "none" sends no `thinking` at all.
# Thinking counts against `max_tokens`. With no cap asked, `max_tokens` is the budget plus
# DEFAULT_MAX_TOKENS for the answer. A cap asked stays the cap (as OpenAI's reasoning tokens
# count against `max_completion_tokens`): thinking gets at most half of it, and none when
# that half is below Anthropic's minimum budget.
THINKING_BUDGET: dict[str, int] = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 32768,
}
MIN_THINKING_BUDGET = 1024  # Anthropic's floor for `budget_tokens`
ANSWER_TOOL_DESCRIPTION = "Give your answer: call this tool with the answer as its input."

StructuredOutput = Literal["native", "tool"]

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
    "tool_use": "tool_calls",
}

# Anthropic error types and the HTTP status each one comes with, for in-band errors.
_ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


# --- request ------------------------------------------------------------------


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
    """A message's parts as text and image blocks, in order; empty texts are dropped
    (Anthropic rejects empty text blocks)."""
    return [
        {"type": "text", "text": part} if isinstance(part, str) else image_block(part)
        for part in message.parts or (message.content,)
        if part
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


def thinking_budget(request: ChatRequest, *, forced: bool) -> int | None:
    """The `budget_tokens` for the request's `reasoning_effort` (`THINKING_BUDGET`), or None
    for no thinking: none asked, tool use forced, or too small a cap for the minimum."""
    effort = request.reasoning_effort
    if effort is None or effort == "none" or forced:
        return None
    budget = THINKING_BUDGET[effort]
    if request.max_tokens is not None:
        budget = min(budget, request.max_tokens // 2)
    return budget if budget >= MIN_THINKING_BUDGET else None


def to_wire(
    request: ChatRequest,
    upstream_model: str,
    *,
    stream: bool,
    structured_output: StructuredOutput = "tool",
) -> dict[str, Any]:
    """The JSON body of a Messages API call; `structured_output` says how a json_schema is
    asked of the model (its catalog entry's `structured_output`)."""
    body: dict[str, Any] = {
        "model": upstream_model,
        "messages": turns(request.dialogue),
        "max_tokens": request.max_tokens if request.max_tokens is not None else DEFAULT_MAX_TOKENS,
        "stream": stream,
    }
    system = system_prompt(request)
    if system:
        body["system"] = system
    budget = None
    if request.tools or request.json_schema is not None:
        body.update(tool_fields(request, structured_output))
        if request.json_schema is not None and structured_output == "native":
            schema = request.json_schema.get("schema") or any_object()
            body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    if request.reasoning_effort is not None:
        choice = body.get("tool_choice")
        forced = choice is not None and choice["type"] in ("any", "tool")
        budget = thinking_budget(request, forced=forced)
    if budget is not None:
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
        if request.max_tokens is None:
            body["max_tokens"] = budget + DEFAULT_MAX_TOKENS
    else:
        if request.temperature is not None:
            body["temperature"] = min(request.temperature, MAX_TEMPERATURE)
        if request.top_p is not None:
            body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.user is not None:
        body["metadata"] = {"user_id": request.user}
    return body


# --- response -----------------------------------------------------------------


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def input_tokens(usage: Any) -> int | None:
    """All prompt tokens of a `usage` object: uncached plus cache writes and reads."""
    if not isinstance(usage, dict):
        return None
    base = _count(usage.get("input_tokens"))
    if base is None:
        return None
    cached = ("cache_creation_input_tokens", "cache_read_input_tokens")
    return base + sum(_count(usage.get(k)) or 0 for k in cached)


def output_tokens(usage: Any) -> int | None:
    """The output token count of a `usage` object, if it has a sane one."""
    return _count(usage.get("output_tokens")) if isinstance(usage, dict) else None


def finish_reason(stop_reason: Any, *, calls: int = 0) -> FinishReason:
    """The router's finish reason for an Anthropic `stop_reason` (unknown ones end normally);
    `tool_use` with no call for the caller (json_schema's answer tool) is a normal end."""
    finish = _FINISH.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"
    return "stop" if finish == "tool_calls" and not calls else finish


def _text(value: Any) -> str:
    """A text field's value; anything else is off-shape."""
    if not isinstance(value, str):
        raise TypeError("text is not a string")
    return value


def input_json(value: Any) -> str:
    """A `tool_use` block's `input` as compact JSON text."""
    if not isinstance(value, dict):
        raise TypeError("tool input is not an object")
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def thinking_block(block: Mapping[str, Any]) -> dict[str, Any]:
    """A `thinking` or `redacted_thinking` block as the caller gets it and sends it back
    (LiteLLM's `thinking_blocks` shape): type, thinking and signature, or type and data."""
    if block["type"] == "redacted_thinking":
        return {"type": "redacted_thinking", "data": _text(block["data"])}
    thinking, signature = _text(block["thinking"]), _text(block["signature"])
    return {"type": "thinking", "thinking": thinking, "signature": signature}


@dataclass(slots=True)
class Content:
    """What a message's `content` blocks say; other block types (server tools) are skipped."""

    text: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    blocks: list[dict[str, Any]] = field(default_factory=list)


def read_content(content: Any, answer: str | None) -> Content:
    """A message's `content`: text (with the `answer` tool's input as JSON text), tool calls,
    reasoning and thinking blocks, in order."""
    if not isinstance(content, list):
        raise TypeError("content is not a list")
    out = Content()
    for block in content:
        kind = block["type"]
        if kind == "text":
            out.text.append(_text(block["text"]))
        elif kind == "tool_use":
            arguments = input_json(block.get("input", {}))
            if block["name"] == answer:
                out.text.append(arguments)
            else:
                out.calls.append(ToolCall(_text(block["id"]), _text(block["name"]), arguments))
        elif kind in ("thinking", "redacted_thinking"):
            out.blocks.append(thinking_block(block))
            if kind == "thinking":
                out.reasoning.append(block["thinking"])
    return out


def _prompt_estimate(request: ChatRequest) -> int:
    return sum(estimate_tokens(m.content) for m in request.messages)


def error_from_body(data: Any, provider: str) -> ProviderError:
    """Classify an Anthropic error object (`{"type":"error","error":{...}}`) met with a 200."""
    err = data.get("error") if isinstance(data, dict) else None
    kind = err.get("type") if isinstance(err, dict) else None
    status = _ERROR_STATUS.get(kind, 502) if isinstance(kind, str) else 502
    return error_for_status(provider, status, {}, json.dumps(data).encode())


def from_wire(
    data: Any, request: ChatRequest, provider: str, *, answer: str | None = None
) -> Completion:
    """A `Completion` from a Messages API JSON body; anything off-shape is malformed.
    `answer` names json_schema's answer tool, whose input is the answer's text."""
    if isinstance(data, dict) and data.get("type") == "error":
        raise error_from_body(data, provider)
    try:
        content = read_content(data["content"], answer)
        finish = finish_reason(data.get("stop_reason"), calls=len(content.calls))
        usage = data.get("usage")
        model = data.get("model")
        response_id = data.get("id")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise ProviderMalformed(f"{provider}: body is not a message", provider=provider) from None
    text = "".join(content.text)
    in_tokens, out_tokens = input_tokens(usage), output_tokens(usage)
    return Completion(
        text=text,
        finish_reason=finish,
        usage=Usage(
            in_tokens if in_tokens is not None else _prompt_estimate(request),
            out_tokens if out_tokens is not None else estimate_tokens(text),
        ),
        response_model=model if isinstance(model, str) else "",
        response_id=response_id if isinstance(response_id, str) else None,
        tool_calls=tuple(content.calls),
        reasoning="".join(content.reasoning),
        thinking_blocks=tuple(content.blocks),
    )


# --- stream -------------------------------------------------------------------


@dataclass(slots=True)
class ToolBlock:
    """A streamed `tool_use` block: its call's index among the answer's calls (None for the
    json_schema answer tool), and its start event's `input`, sent when no delta follows."""

    call: int | None
    start_input: str
    streamed: bool = False


@dataclass(slots=True)
class ThinkingBlock:
    """A streamed `thinking` block, assembled to be sent whole once it closes."""

    thinking: list[str]
    signature: str


@dataclass(slots=True)
class StreamState:
    """What the stream's events have told so far, folded into the final `StreamEnd`."""

    model: str = ""
    response_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    stop_reason: Any = None
    out_chars: int = 0
    answer: str | None = None  # json_schema's answer tool, whose input is streamed as text
    calls: int = 0  # tool calls for the caller so far
    blocks: dict[int, ToolBlock | ThinkingBlock] = field(default_factory=dict)  # open ones

    def end(self, request: ChatRequest) -> StreamEnd:
        estimate_out = max(1, self.out_chars // 4) if self.out_chars else 0
        return StreamEnd(
            finish_reason=finish_reason(self.stop_reason, calls=self.calls),
            usage=Usage(
                self.input_tokens if self.input_tokens is not None else _prompt_estimate(request),
                self.output_tokens if self.output_tokens is not None else estimate_out,
            ),
            response_model=self.model,
            response_id=self.response_id,
        )


def _text_delta(state: StreamState, text: Any) -> TextDelta | None:
    if not _text(text):
        return None
    state.out_chars += len(text)
    return TextDelta(text)


def _tool_start(state: StreamState, index: int, block: Mapping[str, Any]) -> ToolCallDelta | None:
    """A `tool_use` block opens: the call's first delta (id and name), or nothing for the
    answer tool."""
    call_id, name = _text(block["id"]), _text(block["name"])
    start = input_json(block.get("input", {}))
    if name == state.answer:
        state.blocks[index] = ToolBlock(None, start)
        return None
    state.blocks[index] = ToolBlock(state.calls, start)
    state.calls += 1
    return ToolCallDelta(state.calls - 1, call_id, name, "")


def _tool_piece(state: StreamState, block: ToolBlock, text: str) -> StreamEvent | None:
    """A piece of a tool call's arguments (or of the answer tool's input, as text)."""
    if not text:
        return None
    block.streamed = True
    state.out_chars += len(text)
    return TextDelta(text) if block.call is None else ToolCallDelta(block.call, None, None, text)


def _block_stop(state: StreamState, block: ToolBlock | ThinkingBlock | None) -> StreamEvent | None:
    """A block closes: a thinking block goes out whole with its signature; a tool call that
    streamed no arguments gets its start's `input`."""
    if isinstance(block, ThinkingBlock):
        whole = {
            "type": "thinking",
            "thinking": "".join(block.thinking),
            "signature": block.signature,
        }
        return ReasoningDelta("", block=whole)
    if isinstance(block, ToolBlock) and not block.streamed:
        return _tool_piece(state, block, block.start_input)
    return None


def apply_event(state: StreamState, event: dict[str, Any], provider: str) -> StreamEvent | None:
    """Fold one non-terminal stream event into `state`; the router event it makes, if any:
    text, a piece of a tool call, or reasoning.

    Raises the classified `ProviderError` for an in-band `error` event and
    `ProviderMalformed` for a known event of the wrong shape. Unknown event and block types
    are ignored, as Anthropic's versioning policy asks.
    """
    kind = event.get("type")
    try:
        if kind == "content_block_delta":
            delta = event["delta"]
            dtype = delta["type"]
            if dtype == "text_delta":
                return _text_delta(state, delta["text"])
            block = state.blocks.get(event["index"])
            if dtype == "input_json_delta":
                text = _text(delta.get("partial_json", ""))
                return _tool_piece(state, block, text) if isinstance(block, ToolBlock) else None
            if dtype == "thinking_delta":
                text = _text(delta["thinking"])
                if isinstance(block, ThinkingBlock):
                    block.thinking.append(text)
                state.out_chars += len(text)
                return ReasoningDelta(text) if text else None
            if dtype == "signature_delta" and isinstance(block, ThinkingBlock):
                block.signature = _text(delta["signature"])
        elif kind == "content_block_start":
            block_data = event["content_block"]
            btype = block_data["type"]
            if btype == "text":
                return _text_delta(state, block_data.get("text", ""))
            if btype == "tool_use":
                return _tool_start(state, event["index"], block_data)
            if btype == "thinking":
                text = _text(block_data.get("thinking", ""))
                signature = _text(block_data.get("signature", ""))
                state.blocks[event["index"]] = ThinkingBlock([text], signature)
                state.out_chars += len(text)
                return ReasoningDelta(text) if text else None
            if btype == "redacted_thinking":
                return ReasoningDelta("", block=thinking_block(block_data))
        elif kind == "content_block_stop":
            return _block_stop(state, state.blocks.pop(event["index"], None))
        elif kind == "message_start":
            message = event["message"]
            if isinstance(message.get("model"), str):
                state.model = message["model"]
            if isinstance(message.get("id"), str):
                state.response_id = message["id"]
            usage = message.get("usage")
            state.input_tokens = input_tokens(usage)
            state.output_tokens = output_tokens(usage)
        elif kind == "message_delta":
            delta = event.get("delta") or {}
            if delta.get("stop_reason") is not None:
                state.stop_reason = delta["stop_reason"]
            usage = event.get("usage")
            if input_tokens(usage) is not None:
                state.input_tokens = input_tokens(usage)
            if output_tokens(usage) is not None:
                state.output_tokens = output_tokens(usage)
        elif kind == "error":
            raise error_from_body(event, provider)
    except (KeyError, IndexError, TypeError, AttributeError):
        raise ProviderMalformed(f"{provider}: malformed {kind} event", provider=provider) from None
    return None


class AnthropicProvider:
    """Speaks `POST {base_url}/v1/messages` with an `x-api-key`."""

    protocol = "anthropic"

    def __init__(
        self,
        name: str,
        session: UpstreamClient,
        base_url: str,
        api_key: Secret | None,
        *,
        malformed: MalformedEvents = SKIP_ONE_MALFORMED,
    ) -> None:
        self.name = name
        self._session = session
        self._malformed = malformed
        headers = {
            "content-type": "application/json",
            "accept": "application/json",
            "anthropic-version": API_VERSION,
        }
        if api_key:
            headers["x-api-key"] = api_key.reveal()
        url = f"{base_url.rstrip('/')}/v1/messages"
        self._target = HttpTarget(url, headers)
        self._stream_target = HttpTarget(url, dict(headers, accept="text/event-stream"))

    def __repr__(self) -> str:
        return f"AnthropicProvider(name={self.name!r})"

    async def complete(self, call: ProviderCall, /) -> Completion:
        mode = call.structured_output
        payload = to_wire(call.request, call.upstream_model, stream=False, structured_output=mode)
        async with send(self._session, self.name, self._target, payload, call) as response:
            data = await read_json(response, self.name, call)
        return from_wire(data, call.request, self.name, answer=answer_tool(call.request, mode))

    async def stream(self, call: ProviderCall, /) -> AsyncIterator[StreamEvent]:
        mode = call.structured_output
        payload = to_wire(call.request, call.upstream_model, stream=True, structured_output=mode)
        async with send(self._session, self.name, self._stream_target, payload, call) as response:
            state = StreamState(answer=answer_tool(call.request, mode))
            reader = EventReader(self.name, self._malformed)
            async for sse in iter_sse(response, self.name, call):
                event = reader.object(sse)
                if event is None:
                    continue
                event.setdefault("type", sse.event)
                if event["type"] == "message_stop":
                    response.expect_end()
                    break
                out = apply_event(state, event, self.name)
                if out is not None:
                    yield out
            else:
                raise StreamTruncated(f"{self.name}: no message_stop", provider=self.name)
            yield state.end(call.request)
