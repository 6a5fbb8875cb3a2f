"""The OpenAI Responses API's objects, built from router values (pure): the `response` object,
its output items (`reasoning`, `message`, `function_call`), its `usage`, a typed SSE event, the
`error` event, and the seal that carries Anthropic's signed thinking blocks in a reasoning item's
`encrypted_content`.

Reasoning is the upstream's own text (`reasoning_content`, thinking, thought parts), so it is a
`reasoning_text` part, never a `summary` (no summary is made). The thinking blocks are sealed
here and opened by `responses_items` when the client sends the item back, so a tool loop with
thinking keeps its signatures. The seal is an encoding, not encryption: the blocks are the
client's own conversation.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from router.errors import RouterError
from router.types import Completion, Usage
from router.wire_out import error_event

# What a response echoes of a request that set nothing (`responses_in` builds a request's own)
DEFAULT_ECHO: Mapping[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None},
    "store": False,
    "temperature": None,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_p": None,
    "truncation": "disabled",
    "user": None,
}
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
_SEAL = "fusion-router.thinking.v1:"


def seal_thinking(blocks: Iterable[Any]) -> str:
    """Anthropic's thinking blocks as a reasoning item's `encrypted_content`."""
    return _SEAL + base64.urlsafe_b64encode(orjson.dumps(list(blocks))).decode()


def open_thinking(text: str) -> list[Any] | None:
    """The thinking blocks `seal_thinking` sealed into `text`; None for another's content
    (OpenAI's own encrypted reasoning means nothing to another upstream). A seal of ours that
    does not open raises `ValueError`."""
    if not text.startswith(_SEAL):
        return None
    try:
        blocks = orjson.loads(base64.urlsafe_b64decode(text[len(_SEAL) :]))
    except (binascii.Error, orjson.JSONDecodeError):
        raise ValueError("a sealed thinking content that does not open") from None
    if isinstance(blocks, list):
        return blocks
    raise ValueError("a sealed thinking content that holds no list of blocks")


def usage_object(usage: Usage) -> dict[str, Any]:
    """The Responses `usage` (the upstreams' counts; cached and reasoning tokens unknown: 0)."""
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    """An assistant `message` item (no content yet while `text` is None)."""
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [] if text is None else [output_text(text)],
    }


def reasoning_item(item_id: str, text: str, blocks: Iterable[Any], status: str) -> dict[str, Any]:
    """A `reasoning` item: the upstream's reasoning text; its thinking blocks, sealed."""
    item: dict[str, Any] = {
        "id": item_id,
        "type": "reasoning",
        "status": status,
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}] if text else [],
    }
    blocks = list(blocks)
    if blocks:
        item["encrypted_content"] = seal_thinking(blocks)
    return item


def call_item(
    item_id: str,
    call_id: str,
    name: str,
    arguments: str,
    extra: Iterable[tuple[str, Any]],
    status: str,
) -> dict[str, Any]:
    """A `function_call` item, with the call's other upstream fields (a Gemini thought
    signature's `extra_content`), which the next turn sends back."""
    return {
        **dict(extra),
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


def output_of(request_id: str, completion: Completion, status: str) -> list[dict[str, Any]]:
    """A whole answer's output items: reasoning, the message, the function calls (ids as a
    stream gives them: kind, request, output index)."""
    items = []
    if completion.reasoning or completion.thinking_blocks:
        items.append(
            reasoning_item(
                f"rs_{request_id}_0", completion.reasoning, completion.thinking_blocks, status
            )
        )
    if completion.text or not completion.tool_calls:
        items.append(message_item(f"msg_{request_id}_{len(items)}", completion.text, status))
    for call in completion.tool_calls:
        item_id = f"fc_{request_id}_{len(items)}"
        items.append(call_item(item_id, call.id, call.name, call.arguments, call.extra, status))
    return items


def response_object(
    request_id: str,
    model: str,
    created: int,
    echo: Mapping[str, Any],
    *,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None = None,
    incomplete: str | None = None,
    error: RouterError | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A `response` object."""
    body: dict[str, Any] = {
        "id": f"resp_{request_id}",
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "error": None if error is None else {"code": error.code, "message": error.message},
        "incomplete_details": None if incomplete is None else {"reason": incomplete},
        **echo,
        "model": model,
        "output": output,
        "usage": None if usage is None else usage_object(usage),
    }
    if status == "completed":
        body["completed_at"] = int(time.time())
    body.update(extensions or {})
    return body


def sse_event(data: dict[str, Any]) -> bytes:
    """One typed SSE event: its `event:` line names its `type`."""
    kind: str = data["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def error_data(error: RouterError, sequence_number: int) -> dict[str, Any]:
    """The `error` event: flat, as documented, and nested, as the API sends it."""
    return {
        "type": "error",
        "sequence_number": sequence_number,
        "code": error.code,
        "message": error.message,
        "param": error.param,
        **error_event(error),
    }
