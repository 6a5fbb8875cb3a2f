"""Adapter for the Anthropic Messages API (`POST /v1/messages`), whole and streamed.

`AnthropicProvider` only sends, reads and walks the stream's typed events (`message_start`
… `message_stop`). The translations are pure and live beside it: the request body in
`anthropic_request` (`to_wire()`; its docstring is the README's compatibility table for
what is sent), the answer in `anthropic_response` (`from_wire()`, and `apply_event()` for
a stream's events; its docstring says what comes back). Their public names are importable
from here too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from router.errors import StreamTruncated
from router.providers.anthropic_request import (
    ADAPTIVE_EFFORT,
    ANSWER_TOOL_DESCRIPTION,
    JSON_INSTRUCTION,
    THINKING_BUDGET,
    answer_tool,
    to_wire,
)
from router.providers.anthropic_response import StreamState, apply_event, from_wire
from router.providers.base import (
    SKIP_ONE_MALFORMED,
    EventReader,
    HttpTarget,
    MalformedEvents,
    Secret,
    iter_sse,
    read_json,
    send,
)
from router.types import Completion, ProviderCall, StreamEvent
from router.upstream_http import UpstreamClient

__all__ = [
    "ADAPTIVE_EFFORT",
    "ANSWER_TOOL_DESCRIPTION",
    "API_VERSION",
    "JSON_INSTRUCTION",
    "THINKING_BUDGET",
    "AnthropicProvider",
    "StreamState",
    "answer_tool",
    "apply_event",
    "from_wire",
    "to_wire",
]

API_VERSION = "2023-06-01"


def _body(call: ProviderCall, *, stream: bool) -> dict[str, Any]:
    """The call's request body, as its catalog model asks for structured output and thinking."""
    return to_wire(
        call.request,
        call.upstream_model,
        stream=stream,
        structured_output=call.structured_output,
        thinking=call.thinking,
    )


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
        payload = _body(call, stream=False)
        async with send(self._session, self.name, self._target, payload, call) as response:
            data = await read_json(response, self.name, call)
        return from_wire(data, call.request, self.name, answer=answer_tool(call.request, mode))

    async def stream(self, call: ProviderCall, /) -> AsyncIterator[StreamEvent]:
        mode = call.structured_output
        payload = _body(call, stream=True)
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
