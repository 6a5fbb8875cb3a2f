"""Pure rendering of router results into OpenAI chat-completion JSON and SSE chunks."""

from __future__ import annotations

import time
from typing import Any

import orjson

from router.errors import RouterError
from router.routing import AttemptLog
from router.types import Completion, Usage

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
    request_id: str, model: str, completion: Completion, cost: float, attempts: AttemptLog
) -> dict[str, Any]:
    """A `chat.completion` object."""
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.text},
                "finish_reason": completion.finish_reason,
            }
        ],
        "usage": usage_body(completion.usage),
        "router": router_body(
            attempts.records[-1].provider if attempts.records else "", cost, attempts
        ),
    }


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
    """A stream's text chunks as SSE events, byte for byte `sse(stream_chunk(..., text=...))`,
    with everything but the text rendered once per stream instead of once per chunk."""

    __slots__ = ("_head",)

    def __init__(self, request_id: str, model: str, created: int) -> None:
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


def role_prefix(request_id: str, model: str, created: int, *, owed: bool) -> bytes:
    """The role chunk a stream still owes when it ends before any text (else nothing)."""
    return sse(stream_chunk(request_id, model, created, role=True)) if owed else b""


def usage_chunk(
    request_id: str, model: str, created: int, usage: Usage, cost: float, attempts: AttemptLog
) -> dict[str, Any]:
    """The last chunk before `[DONE]` when usage was asked for: no choices, the usage, our extension."""
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage_body(usage),
        "router": router_body(
            attempts.records[-1].provider if attempts.records else "", cost, attempts
        ),
    }


def error_event(error: RouterError) -> dict[str, Any]:
    """An in-band stream error (the OpenAI SDK raises it as `APIError`)."""
    body = error.body()
    body["error"]["type"] = "server_error"
    return body
