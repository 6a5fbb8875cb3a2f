"""The OpenAI chat-completions dialect: router results as `chat.completion` JSON and SSE chunks.
Pure rendering."""

from __future__ import annotations

import time
from typing import Any

import orjson

from router.errors import RouterError
from router.routing import AttemptLog
from router.types import (
    Completion,
    LogprobsDelta,
    ReasoningDelta,
    StreamEvent,
    ToolCallDelta,
    Usage,
)

DONE = b"data: [DONE]\n\n"


def sse(data: dict[str, Any]) -> bytes:
    """One SSE `data:` event."""
    return b"data: " + orjson.dumps(data) + b"\n\n"


def json_bytes(data: Any) -> bytes:
    """A compact UTF-8 JSON document."""
    return orjson.dumps(data)


def usage_body(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


def router_body(provider: str, cost: float, attempts: AttemptLog) -> dict[str, Any]:
    """Our extension object: who served, what it cost, every attempt."""
    return {
        "provider": provider,
        "cost_usd": round(cost, 8),
        "attempts": [r.as_dict() for r in attempts.records],
    }


def completion_body(
    request_id: str,
    model: str,
    completion: Completion,
    usage: Usage,
    extensions: dict[str, Any],
) -> dict[str, Any]:
    """A `chat.completion` object, with our extension objects (`router`, `fusion`)."""
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": _message(completion),
                "finish_reason": completion.finish_reason,
                **({"logprobs": completion.logprobs} if completion.logprobs is not None else {}),
            },
            *completion.more_choices,
        ],
        **dict(completion.echo),
        "usage": usage_body(usage),
        **extensions,
    }


def _message(completion: Completion) -> dict[str, Any]:
    """The answer's message: its text, and its tool calls (then no text is `null`); its
    reasoning as `reasoning_content`, and Anthropic's thinking blocks as `thinking_blocks`."""
    message: dict[str, Any] = {"role": "assistant", "content": completion.text}
    if completion.tool_calls:
        message["content"] = completion.text or None
        message["tool_calls"] = [call.as_dict() for call in completion.tool_calls]
    if completion.reasoning:
        message["reasoning_content"] = completion.reasoning
    if completion.thinking_blocks:
        message["thinking_blocks"] = list(completion.thinking_blocks)
    return message


def stream_chunk(
    request_id: str,
    model: str,
    created: int,
    *,
    text: str | None = None,
    role: bool = False,
    finish: str | None = None,
) -> dict[str, Any]:
    """A `chat.completion.chunk` with one delta."""
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = "assistant"
        delta["content"] = ""
    if text is not None:
        delta["content"] = text
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


class TextChunks:
    """One stream's chunks as SSE events. Text chunks are byte for byte
    `sse(stream_chunk(..., text=...))`, with everything but the text rendered once per stream."""

    __slots__ = ("_blocks", "_head", "created", "model", "request_id")

    def __init__(self, request_id: str, model: str, created: int) -> None:
        self.request_id, self.model, self.created = request_id, model, created
        self._blocks = 0  # thinking blocks sent so far (each delta entry has its `index`)
        self._head = b"".join(
            (
                b'data: {"id":',
                orjson.dumps(f"chatcmpl-{request_id}"),
                b',"object":"chat.completion.chunk","created":',
                orjson.dumps(created),
                b',"model":',
                orjson.dumps(model),
                b',"choices":[{"index":0,"delta":{',
            )
        )

    def event(self, text: str, *, role: bool = False) -> bytes:
        """One text delta (with the assistant role, for a stream's first)."""
        return b"".join(
            (
                self._head,
                b'"role":"assistant","content":' if role else b'"content":',
                orjson.dumps(text),
                b'},"finish_reason":null}]}\n\n',
            )
        )

    def piece(self, event: StreamEvent, *, role: bool = False) -> bytes:
        """A stream event other than text: a tool call's piece, reasoning, log probabilities."""
        if isinstance(event, ToolCallDelta):
            return self.tool_call(event, role=role)
        if isinstance(event, ReasoningDelta):
            return self.reasoning(event, role=role)
        if isinstance(event, LogprobsDelta):
            return self._delta({"role": "assistant"} if role else {}, event.logprobs)
        raise TypeError(f"not a piece of a stream: {event!r}")

    def tool_call(self, delta: ToolCallDelta, *, role: bool = False) -> bytes:
        """One piece of a tool call, in OpenAI's delta shape."""
        call: dict[str, Any] = {"index": delta.index}
        if delta.id is not None:
            call["id"] = delta.id
            call["type"] = "function"
        call.update(delta.extra)
        function: dict[str, str] = {}
        if delta.name is not None:
            function["name"] = delta.name
        function["arguments"] = delta.arguments
        call["function"] = function
        choice_delta: dict[str, Any] = {"role": "assistant"} if role else {}
        choice_delta["tool_calls"] = [call]
        return self._delta(choice_delta)

    def reasoning(self, delta: ReasoningDelta, *, role: bool = False) -> bytes:
        """A piece of reasoning (`reasoning_content`), or a closed thinking block."""
        choice_delta: dict[str, Any] = {"role": "assistant"} if role else {}
        if delta.text:
            choice_delta["reasoning_content"] = delta.text
        if delta.block is not None:  # (the SDK's stream helper merges list entries by index)
            choice_delta["thinking_blocks"] = [{"index": self._blocks, **delta.block}]
            self._blocks += 1
        return self._delta(choice_delta)

    def _delta(self, choice_delta: dict[str, Any], logprobs: Any = None) -> bytes:
        choice: dict[str, Any] = {"index": 0, "delta": choice_delta, "finish_reason": None}
        if logprobs is not None:
            choice["logprobs"] = logprobs
        return sse(
            {
                "id": f"chatcmpl-{self.request_id}",
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [choice],
            }
        )

    def role(self) -> bytes:
        """The role chunk a stream owes when it ends before any text."""
        return sse(stream_chunk(self.request_id, self.model, self.created, role=True))

    def finish(self, reason: str) -> bytes:
        """The chunk that ends the choice, with its finish reason."""
        return sse(stream_chunk(self.request_id, self.model, self.created, finish=reason))

    def failure(self, error: RouterError) -> bytes:
        return sse(error_event(error))

    def done(self, usage: Usage, extensions: dict[str, Any] | None) -> bytes:
        """The usage chunk (when asked for) with our extension objects, then `[DONE]`."""
        if extensions is None:
            return DONE
        return self.last({"usage": usage_body(usage), **extensions}) + DONE

    def last(self, body: dict[str, Any]) -> bytes:
        """The chunk after the finish: no choices, then `body` (usage, our extension objects)."""
        return sse(
            {
                "id": f"chatcmpl-{self.request_id}",
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                **body,
            }
        )


def error_event(error: RouterError) -> dict[str, Any]:
    """An in-band stream error (the OpenAI SDK raises it as `APIError`)."""
    body = error.body()
    body["error"]["type"] = "server_error"
    return body


class OpenAIChat:
    """The `Dialect` of `POST /v1/chat/completions`."""

    name = "openai.chat"

    def whole(
        self,
        request_id: str,
        model: str,
        completion: Completion,
        usage: Usage,
        extensions: dict[str, Any],
    ) -> dict[str, Any]:
        return completion_body(request_id, model, completion, usage, extensions)

    def writer(self, request_id: str, model: str, created: int) -> TextChunks:
        return TextChunks(request_id, model, created)

    def error_body(self, error: RouterError) -> dict[str, Any]:
        return error.body()

    def stream_error(self, error: RouterError) -> bytes:
        return sse(error_event(error))


OPENAI_CHAT = OpenAIChat()
