"""Adapter for the Anthropic Messages API (`POST /v1/messages`), whole and streamed.

`to_wire()` and `from_wire()` are pure translations between the router's types
and Anthropic's JSON; `AnthropicProvider` only sends, reads and walks the
stream's typed events (`message_start` … `message_stop`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from router.errors import ProviderError, ProviderMalformed, StreamTruncated
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
    Message,
    ProviderCall,
    StreamEnd,
    StreamEvent,
    TextDelta,
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


def system_prompt(request: ChatRequest) -> str:
    """The top-level `system` text: the system messages, plus the JSON-only instruction."""
    parts = [request.system_text] if request.system_text else []
    if request.json_output:
        parts.append(JSON_INSTRUCTION)
    return "\n\n".join(parts)


def turns(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Non-system messages as alternating user/assistant turns of text blocks.

    Consecutive messages of one role are merged into one turn (Anthropic requires
    alternation); empty texts are dropped (Anthropic rejects empty text blocks).
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        blocks = [{"type": "text", "text": t} for t in message.texts if t]
        if message.role == "system" or not blocks:
            continue
        if out and out[-1]["role"] == message.role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": message.role, "content": blocks})
    if out and out[-1]["role"] == "assistant":
        # a trailing assistant turn is a prefill; Anthropic rejects trailing whitespace there
        last = out[-1]["content"][-1]
        last["text"] = last["text"].rstrip()
        if not last["text"]:
            out[-1]["content"].pop()
            if not out[-1]["content"]:
                out.pop()
    return out


def to_wire(request: ChatRequest, upstream_model: str, *, stream: bool) -> dict[str, Any]:
    """The JSON body of a Messages API call."""
    body: dict[str, Any] = {
        "model": upstream_model,
        "messages": turns(request.dialogue),
        "max_tokens": request.max_tokens if request.max_tokens is not None else DEFAULT_MAX_TOKENS,
        "stream": stream,
    }
    system = system_prompt(request)
    if system:
        body["system"] = system
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


def finish_reason(stop_reason: Any) -> FinishReason:
    """The router's finish reason for an Anthropic `stop_reason` (unknown ones end normally)."""
    return _FINISH.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def _text(value: Any) -> str:
    """A text field's value; anything else is off-shape."""
    if not isinstance(value, str):
        raise TypeError("text is not a string")
    return value


def message_text(content: Any) -> str:
    """The `text` blocks of a message's `content`, concatenated; other block types are skipped."""
    if not isinstance(content, list):
        raise TypeError("content is not a list")
    return "".join(_text(block["text"]) for block in content if block["type"] == "text")


def _prompt_estimate(request: ChatRequest) -> int:
    return sum(estimate_tokens(m.content) for m in request.messages)


def error_from_body(data: Any, provider: str) -> ProviderError:
    """Classify an Anthropic error object (`{"type":"error","error":{...}}`) met with a 200."""
    err = data.get("error") if isinstance(data, dict) else None
    kind = err.get("type") if isinstance(err, dict) else None
    status = _ERROR_STATUS.get(kind, 502) if isinstance(kind, str) else 502
    return error_for_status(provider, status, {}, json.dumps(data).encode())


def from_wire(data: Any, request: ChatRequest, provider: str) -> Completion:
    """A `Completion` from a Messages API JSON body; anything off-shape is malformed."""
    if isinstance(data, dict) and data.get("type") == "error":
        raise error_from_body(data, provider)
    try:
        text = message_text(data["content"])
        finish = finish_reason(data.get("stop_reason"))
        usage = data.get("usage")
        model = data.get("model")
        response_id = data.get("id")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise ProviderMalformed(f"{provider}: body is not a message", provider=provider) from None
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
    )


# --- stream -------------------------------------------------------------------


@dataclass(slots=True)
class StreamState:
    """What the stream's events have told so far, folded into the final `StreamEnd`."""

    model: str = ""
    response_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    stop_reason: Any = None
    out_chars: int = 0

    def end(self, request: ChatRequest) -> StreamEnd:
        estimate_out = max(1, self.out_chars // 4) if self.out_chars else 0
        return StreamEnd(
            finish_reason=finish_reason(self.stop_reason),
            usage=Usage(
                self.input_tokens if self.input_tokens is not None else _prompt_estimate(request),
                self.output_tokens if self.output_tokens is not None else estimate_out,
            ),
            response_model=self.model,
            response_id=self.response_id,
        )


def apply_event(state: StreamState, event: dict[str, Any], provider: str) -> str | None:
    """Fold one non-terminal stream event into `state`; the text it carries, if any.

    Raises the classified `ProviderError` for an in-band `error` event and
    `ProviderMalformed` for a known event of the wrong shape. Unknown event types
    are ignored, as Anthropic's versioning policy asks.
    """
    kind = event.get("type")
    try:
        if kind == "message_start":
            message = event["message"]
            if isinstance(message.get("model"), str):
                state.model = message["model"]
            if isinstance(message.get("id"), str):
                state.response_id = message["id"]
            usage = message.get("usage")
            state.input_tokens = input_tokens(usage)
            state.output_tokens = output_tokens(usage)
        elif kind == "content_block_start":
            block = event["content_block"]
            if block["type"] == "text":
                return _text(block.get("text", "")) or None
        elif kind == "content_block_delta":
            delta = event["delta"]
            if delta["type"] == "text_delta":
                return _text(delta["text"]) or None
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
        payload = to_wire(call.request, call.upstream_model, stream=False)
        async with send(self._session, self.name, self._target, payload, call) as response:
            data = await read_json(response, self.name, call)
        return from_wire(data, call.request, self.name)

    async def stream(self, call: ProviderCall, /) -> AsyncIterator[StreamEvent]:
        payload = to_wire(call.request, call.upstream_model, stream=True)
        async with send(self._session, self.name, self._stream_target, payload, call) as response:
            state = StreamState()
            reader = EventReader(self.name, self._malformed)
            async for sse in iter_sse(response, self.name, call):
                event = reader.object(sse)
                if event is None:
                    continue
                event.setdefault("type", sse.event)
                if event["type"] == "message_stop":
                    response.expect_end()
                    break
                text = apply_event(state, event, self.name)
                if text:
                    state.out_chars += len(text)
                    yield TextDelta(text)
            else:
                raise StreamTruncated(f"{self.name}: no message_stop", provider=self.name)
            yield state.end(call.request)
