"""The Anthropic Messages dialect: router results as an Anthropic `Message`, its stream events
and its error shape. Pure rendering.

A whole answer is a `Message`: `id` `msg_<request id>`, the served model, its content blocks
(thinking, then text, then `tool_use`), `stop_reason`, `stop_sequence` (always null: no
upstream protocol but Anthropic's says which sequence matched, and the core keeps only the
finish reason) and `usage`, with our extension objects (`router`, `fusion`) as further
top-level keys, and a tool call's `extra_content` (Gemini's thought signature, which must come
back with the call) on its `tool_use` block. Thinking blocks are the upstream's own (Anthropic's, signed); another
vendor's reasoning text is one thinking block with an empty signature.

A stream is Anthropic's event sequence, each as `event: <type>` and `data: <json>`:

    message_start (content empty, usage 0: the count is known only at the end), ping,
    then per content block: content_block_start, content_block_delta..., content_block_stop
      (text_delta; thinking_delta then signature_delta; input_json_delta),
    message_delta (stop_reason, usage with input and output tokens, our extension objects),
    message_stop

with blocks numbered from 0 in order. A new block begins when the kind of content changes,
when a new tool call begins, and after a signed thinking block closed. A stream that cannot
finish ends with Anthropic's in-band `error` event. Errors are Anthropic's
`{"type": "error", "error": {"type", "message"}}`, its type by HTTP status (`ERROR_TYPES`),
with our stable `code` (and `param`, a policy denial's `rule_id`...) beside them.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from router.errors import RouterError
from router.types import (
    Completion,
    LogprobsDelta,
    ReasoningDelta,
    StreamEvent,
    ToolCallDelta,
    Usage,
)

# The router's finish reasons as Anthropic stop reasons.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
# Anthropic's error type for each HTTP status; other 4xx are `invalid_request_error`, other
# 5xx `api_error`.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status."""
    return ERROR_TYPES.get(status) or ("invalid_request_error" if status < 500 else "api_error")


def error_body(error: RouterError) -> dict[str, Any]:
    """Anthropic's error object for `error`, with our code and details beside its type and
    message (a null `param` left out)."""
    ours = error.body()["error"]
    inner: dict[str, Any] = {"type": error_type(error.http_status), "message": error.message}
    inner.update((k, v) for k, v in ours.items() if k not in ("type", "message") and v is not None)
    return {"type": "error", "error": inner}


def sse(kind: str, data: dict[str, Any]) -> bytes:
    """One event as Anthropic sends it: its `event:` line, then its `data:` line."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def tool_input(arguments: str) -> Any:
    """A tool call's arguments (JSON text) as a `tool_use` block's `input`: the object they
    encode (empty text: no arguments); a model's text that is not a JSON object stays text."""
    if not arguments.strip():
        return {}
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return arguments
    return parsed if isinstance(parsed, dict) else arguments


def carried(extra: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    """What a tool call carries for its next turn beyond Anthropic's fields: Gemini's
    `extra_content` (its thought signature), as our extension on the `tool_use` block."""
    return {k: v for k, v in extra if k == "extra_content"}


def content_blocks(completion: Completion) -> list[dict[str, Any]]:
    """A whole answer's content: its thinking, its text, then its tool calls."""
    blocks: list[dict[str, Any]] = [dict(block) for block in completion.thinking_blocks]
    if not blocks and completion.reasoning:
        blocks.append({"type": "thinking", "thinking": completion.reasoning, "signature": ""})
    if completion.text:
        blocks.append({"type": "text", "text": completion.text})
    blocks.extend(
        {
            "type": "tool_use",
            "id": call.id,
            "name": call.name,
            "input": tool_input(call.arguments),
            **carried(call.extra),
        }
        for call in completion.tool_calls
    )
    return blocks


def stop_reason(finish_reason: str, *, calls: bool = True) -> str:
    """Anthropic's stop reason for the router's finish reason (`tool_use` only with calls)."""
    if finish_reason == "tool_calls" and not calls:
        return "end_turn"
    return STOP_REASONS.get(finish_reason, "end_turn")


def usage_body(usage: Usage) -> dict[str, int]:
    return {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}


def message_body(
    request_id: str,
    model: str,
    completion: Completion,
    usage: Usage,
    extensions: dict[str, Any],
) -> dict[str, Any]:
    """An Anthropic `Message`, with our extension objects (`router`, `fusion`)."""
    return {
        "id": f"msg_{request_id}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content_blocks(completion),
        "stop_reason": stop_reason(completion.finish_reason, calls=bool(completion.tool_calls)),
        "stop_sequence": None,
        "usage": usage_body(usage),
        **extensions,
    }


PING = sse("ping", {"type": "ping"})
MESSAGE_STOP = sse("message_stop", {"type": "message_stop"})
EMPTY_THINKING = {"type": "thinking", "thinking": "", "signature": ""}


class MessageEvents:
    """One stream's events in Anthropic's sequence (the module's docstring). The writer keeps
    which block is open: text, thinking or a tool call's, and the block of each tool call."""

    __slots__ = ("_calls", "_index", "_next", "_open", "_started", "_stop", "model", "request_id")

    def __init__(self, request_id: str, model: str, created: int) -> None:
        self.request_id, self.model = request_id, model
        self._started = False
        self._open: str | None = None  # the kind of the open block: text, thinking, tool
        self._index = -1  # the open block's index
        self._next = 0  # the next block's index
        self._calls: dict[int, int] = {}  # a tool call's index → its block's
        self._stop = "end_turn"

    def _begin(self) -> bytes:
        """`message_start` and a `ping`, once, before anything else."""
        if self._started:
            return b""
        self._started = True
        message: dict[str, Any] = {
            "id": f"msg_{self.request_id}",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return sse("message_start", {"type": "message_start", "message": message}) + PING

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return sse("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _start(self, kind: str, block: dict[str, Any]) -> bytes:
        """Close the open block and open a new one of `kind`."""
        closed = self._close()
        self._open, self._index = kind, self._next
        self._next += 1
        start = {"type": "content_block_start", "index": self._index, "content_block": block}
        return closed + sse("content_block_start", start)

    @staticmethod
    def _delta(index: int, delta: dict[str, Any]) -> bytes:
        body = {"type": "content_block_delta", "index": index, "delta": delta}
        return sse("content_block_delta", body)

    def event(self, text: str, *, role: bool = False) -> bytes:
        """A piece of answer text: a `text_delta`, in a text block."""
        out = self._begin()
        if not text:
            return out
        if self._open != "text":
            out += self._start("text", {"type": "text", "text": ""})
        return out + self._delta(self._index, {"type": "text_delta", "text": text})

    def piece(self, event: StreamEvent, *, role: bool = False) -> bytes:
        """A tool call's piece or reasoning; log probabilities have no place in Anthropic's
        stream."""
        out = self._begin()
        if isinstance(event, ToolCallDelta):
            return out + self._tool_call(event)
        if isinstance(event, ReasoningDelta):
            return out + self._thinking(event)
        if isinstance(event, LogprobsDelta):
            return out
        raise TypeError(f"not a piece of a stream: {event!r}")

    def _tool_call(self, delta: ToolCallDelta) -> bytes:
        """A call's first piece opens its `tool_use` block; its arguments go as
        `input_json_delta`s (to its own block, should calls interleave)."""
        out = b""
        index = self._calls.get(delta.index)
        if index is None:
            call_id = delta.id or f"toolu_{self.request_id}_{delta.index}"
            block = {
                "type": "tool_use",
                "id": call_id,
                "name": delta.name or "",
                "input": {},
                **carried(delta.extra),
            }
            out = self._start("tool", block)
            index = self._calls[delta.index] = self._index
        if delta.arguments:
            out += self._delta(index, {"type": "input_json_delta", "partial_json": delta.arguments})
        return out

    def _thinking(self, delta: ReasoningDelta) -> bytes:
        """Reasoning text as `thinking_delta`s in a thinking block; a whole block (Anthropic's,
        once closed upstream) ends it with its `signature_delta`, or is a `redacted_thinking`
        block of its own."""
        out = b""
        if delta.text:
            if self._open != "thinking":
                out += self._start("thinking", dict(EMPTY_THINKING))
            out += self._delta(self._index, {"type": "thinking_delta", "thinking": delta.text})
        block = delta.block
        if block is None:
            return out
        if block.get("type") == "redacted_thinking":
            redacted = {"type": "redacted_thinking", "data": block.get("data", "")}
            return out + self._start("redacted", redacted) + self._close()
        if self._open != "thinking":  # its text did not come in pieces
            out += self._start("thinking", dict(EMPTY_THINKING))
            if block.get("thinking"):
                thinking = {"type": "thinking_delta", "thinking": block["thinking"]}
                out += self._delta(self._index, thinking)
        if block.get("signature"):
            signature = {"type": "signature_delta", "signature": block["signature"]}
            out += self._delta(self._index, signature)
        return out + self._close()

    def role(self) -> bytes:
        """The opening a stream owes when it ends before any content."""
        return self._begin()

    def finish(self, reason: str) -> bytes:
        """The end of the content: the open block closes; the stop reason waits for `done`."""
        self._stop = stop_reason(reason, calls=bool(self._calls))
        return self._begin() + self._close()

    def failure(self, error: RouterError) -> bytes:
        """Anthropic's in-band `error` event (its SDK raises it as an `APIStatusError`)."""
        return self._begin() + sse("error", error_body(error))

    def done(self, usage: Usage, extensions: dict[str, Any] | None) -> bytes:
        """`message_delta` (stop reason, usage, our extension objects), then `message_stop`.
        An Anthropic stream always carries its usage, asked or not."""
        body: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop, "stop_sequence": None},
            "usage": usage_body(usage),
            **(extensions or {}),
        }
        return self._begin() + sse("message_delta", body) + MESSAGE_STOP


class AnthropicMessages:
    """The `Dialect` of `POST /v1/messages`."""

    name = "anthropic.messages"

    def whole(
        self,
        request_id: str,
        model: str,
        completion: Completion,
        usage: Usage,
        extensions: dict[str, Any],
    ) -> dict[str, Any]:
        return message_body(request_id, model, completion, usage, extensions)

    def writer(self, request_id: str, model: str, created: int) -> MessageEvents:
        return MessageEvents(request_id, model, created)

    def error_body(self, error: RouterError) -> dict[str, Any]:
        return error_body(error)

    def stream_error(self, error: RouterError) -> bytes:
        return sse("error", error_body(error))


ANTHROPIC_MESSAGES = AnthropicMessages()
