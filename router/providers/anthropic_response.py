"""Anthropic Messages API answers read back: whole (`from_wire()`) and streamed.

Pure translations: `from_wire()` makes a `Completion` from a message body, and
`apply_event()` folds one stream event into a `StreamState` and gives the router event it makes. What comes back:

- `text` blocks → the message's text. `tool_use` blocks → `tool_calls` (whole: the input as
  compact JSON text; streamed: the model's own `input_json_delta` text), stop reason
  `tool_use` → `tool_calls`; json_schema's answer tool (named by `answer`) → its input as the
  text, finish reason `stop`.
- `thinking` blocks → `reasoning_content`, and `thinking_blocks` with their signatures
  (`redacted_thinking` blocks kept), whole and streamed (a streamed thinking block goes out
  whole once it closes). Other block types and unknown events are skipped.
- Web search (the `web_search` server tool): `server_tool_use` blocks are skipped;
  `web_search_tool_result` blocks hold the results (`web_search_result`: url, title...) or an
  error object (`web_search_tool_result_error`, skipped: the model answers without). The
  answer's sources are the pages its text blocks cite (`web_search_result_location`
  citations, in order, deduplicated by URL); an answer that cites nothing gets every result
  found instead. `usage.server_tool_use.web_search_requests` is `Usage.web_searches` (where
  usage has no count, the `server_tool_use` blocks named `web_search` are counted). Sources
  are read from whole answers only: a stream's `server_tool_use` and `web_search_tool_result`
  blocks and its `citations_delta` deltas are skipped (its text is relayed, and its searches
  counted from the usage of `message_start` / `message_delta`).
- `pause_turn` (the API paused a long server-tool turn, e.g. after `max_uses` or its own
  iteration limit): finish `stop` with the text so far. The turn is not resumed (resuming
  would send the paused content, encrypted search results included, back as a prefill).
- Usage: input tokens are uncached plus cache writes and reads; an in-band `error` (a 200
  body or a stream event) is classified by its type's HTTP status; anything off-shape is
  `ProviderMalformed`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from router.errors import ProviderError, ProviderMalformed
from router.providers.base import error_for_status, estimate_tokens
from router.providers.web_search import dedupe_sources, source
from router.types import (
    ChatRequest,
    Completion,
    FinishReason,
    ReasoningDelta,
    Source,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)

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


# --- whole ----------------------------------------------------------------------------------


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


def web_searches(usage: Any) -> int | None:
    """`usage.server_tool_use.web_search_requests`, if the usage has a sane one."""
    tool_use = usage.get("server_tool_use") if isinstance(usage, dict) else None
    return _count(tool_use.get("web_search_requests")) if isinstance(tool_use, dict) else None


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
    """What a message's `content` blocks say; other block types are skipped."""

    text: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    blocks: list[dict[str, Any]] = field(default_factory=list)
    cited: list[Source | None] = field(default_factory=list)  # web search citations, in order
    found: list[Source | None] = field(default_factory=list)  # web search results, in order
    searches: int = 0  # `server_tool_use` blocks of the web search tool

    @property
    def sources(self) -> tuple[Source, ...]:
        """The pages cited, or, with no citation, every page found (deduplicated by URL)."""
        return dedupe_sources(self.cited) or dedupe_sources(self.found)


def _citations(block: Mapping[str, Any]) -> list[Source | None]:
    """A text block's web search citations (other kinds of citation are skipped)."""
    citations = block.get("citations") or []
    if not isinstance(citations, list):
        raise TypeError("citations is not a list")
    return [
        source(c.get("url"), c.get("title"))
        for c in citations
        if isinstance(c, dict) and c.get("type") == "web_search_result_location"
    ]


def _results(block: Mapping[str, Any]) -> list[Source | None]:
    """A `web_search_tool_result` block's pages; none for its error object."""
    results = block.get("content")
    if not isinstance(results, list):  # `web_search_tool_result_error`: nothing found
        return []
    return [
        source(r.get("url"), r.get("title"))
        for r in results
        if isinstance(r, dict) and r.get("type") == "web_search_result"
    ]


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
            out.cited.extend(_citations(block))
        elif kind == "web_search_tool_result":
            out.found.extend(_results(block))
        elif kind == "server_tool_use":
            out.searches += block.get("name") == "web_search"
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
    searches = web_searches(usage)
    return Completion(
        text=text,
        finish_reason=finish,
        usage=Usage(
            in_tokens if in_tokens is not None else _prompt_estimate(request),
            out_tokens if out_tokens is not None else estimate_tokens(text),
            searches if searches is not None else content.searches,
        ),
        response_model=model if isinstance(model, str) else "",
        response_id=response_id if isinstance(response_id, str) else None,
        tool_calls=tuple(content.calls),
        reasoning="".join(content.reasoning),
        thinking_blocks=tuple(content.blocks),
        sources=content.sources,
    )


# --- streamed -------------------------------------------------------------------------------


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
    web_searches: int | None = None  # the usage's count, as last reported
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
                self.web_searches or 0,
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
            state.web_searches = web_searches(usage)
        elif kind == "message_delta":
            delta = event.get("delta") or {}
            if delta.get("stop_reason") is not None:
                state.stop_reason = delta["stop_reason"]
            usage = event.get("usage")
            if input_tokens(usage) is not None:
                state.input_tokens = input_tokens(usage)
            if output_tokens(usage) is not None:
                state.output_tokens = output_tokens(usage)
            if web_searches(usage) is not None:
                state.web_searches = web_searches(usage)
        elif kind == "error":
            raise error_from_body(event, provider)
    except (KeyError, IndexError, TypeError, AttributeError):
        raise ProviderMalformed(f"{provider}: malformed {kind} event", provider=provider) from None
    return None
