"""An Anthropic Messages request's `system` prompt and `messages` (strings or content blocks)
as the core's `Message`s. Pure; `router.messages_in` owns the request as a whole (its table
says what each block becomes).

A user turn's `tool_result` blocks become `tool` messages ahead of its text and images; an
assistant turn's `tool_use` blocks become its tool calls, its signed thinking blocks its
`thinking_blocks`, and thinking with an empty signature (another vendor's reasoning, as
`router.messages_out` renders it) its `reasoning`; a `tool_use` block's `extra_content` (our
extension: Gemini's thought signature, as `router.messages_out` renders it) goes back on its
call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from router.errors import InvalidRequest, UnsupportedContent, UnsupportedParameter
from router.inbound import MAX_CONTENT_CHARS, image_part
from router.types import ImagePart, Message, Part, Role

MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
ERROR_PREFIX = "Error: "  # a `tool_result` with `is_error: true`: OpenAI has no such flag
ERROR_ALONE = "Error"  # ... and no content

_TEXT = frozenset({"type", "text", "cache_control", "citations"})
_IMAGE = frozenset({"type", "source", "cache_control"})
_TOOL_USE = frozenset({"type", "id", "name", "input", "cache_control", "caller", "extra_content"})
_TOOL_RESULT = frozenset({"type", "tool_use_id", "content", "is_error", "cache_control"})
_THINKING = frozenset({"type", "thinking", "signature"})
_REDACTED = frozenset({"type", "data"})


def check_keys(block: Mapping[str, Any], allowed: frozenset[str], param: str) -> None:
    """A block's fields: unknown ones with a value are refused (null ones carry nothing)."""
    unknown = sorted(k for k, v in block.items() if k not in allowed and v is not None)
    if unknown:
        raise UnsupportedParameter(
            f"unsupported field(s) in a {block.get('type')} block: {', '.join(unknown)}",
            param=f"{param}.{unknown[0]}",
        )


def check_cache_control(value: Any, param: str) -> None:
    """A `cache_control` marker: checked, then a no-op (prompt caching is not carried)."""
    if value is not None and not (isinstance(value, dict) and value.get("type") == "ephemeral"):
        raise InvalidRequest("'cache_control' must be {'type': 'ephemeral'}", param=param)


def system_messages(value: Any, param: str) -> tuple[Message, ...]:
    """A system prompt (a string or text blocks) as a system message; none when empty."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return (Message("system", value),)
    if not isinstance(value, list) or not value:
        raise InvalidRequest("must be a string or a list of text blocks", param=param)
    texts: list[Part] = []
    for j, block in enumerate(value):
        if not (isinstance(block, dict) and block.get("type") == "text"):
            raise UnsupportedContent(
                "a system prompt holds text blocks only", param=f"{param}[{j}]"
            )
        texts.append(_text(block, f"{param}[{j}]"))
    return (_message("system", texts),)


def conversation(value: Any, max_messages: int) -> tuple[Message, ...]:
    """`messages` in order; a tool result must answer an earlier `tool_use` block."""
    if not isinstance(value, list) or not value:
        raise InvalidRequest("'messages' must be a non-empty list", param="messages")
    if len(value) > max_messages:
        raise InvalidRequest(f"'messages' has more than {max_messages} entries", param="messages")
    out: list[Message] = []
    called: set[str] = set()  # the ids of the assistant's tool_use blocks so far
    for i, item in enumerate(value):
        param = f"messages[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest("each message must be an object", param=param)
        check_keys(item, frozenset({"role", "content"}), param)
        role, content = item.get("role"), item.get("content")
        if role == "system":
            out.extend(system_messages(content, f"{param}.content"))
            continue
        if role not in ("user", "assistant"):
            raise InvalidRequest("role must be user, assistant or system", param=f"{param}.role")
        if isinstance(content, str):
            out.append(Message(role, content))
            continue
        if not isinstance(content, list) or not content:
            raise InvalidRequest(
                "content must be a string or a non-empty list of blocks", param=f"{param}.content"
            )
        if role == "user":
            out.extend(_user(content, f"{param}.content", called))
        else:
            message = _assistant(content, f"{param}.content")
            called.update(call["id"] for call in message.tool_calls)
            out.append(message)
    if sum(len(m.content) for m in out) > MAX_CONTENT_CHARS:
        raise InvalidRequest(
            f"messages hold more than {MAX_CONTENT_CHARS} characters", param="messages"
        )
    if all(m.role == "system" for m in out):
        raise InvalidRequest("'messages' needs a user or assistant message", param="messages")
    return tuple(out)


def _message(role: Role, parts: list[Part]) -> Message:
    """A message of `parts`; one text is a plain string (Anthropic's own shorthand)."""
    if len(parts) == 1 and isinstance(parts[0], str):
        return Message(role, parts[0])
    return Message(role, "\n".join(p for p in parts if isinstance(p, str)), tuple(parts))


def _kind(block: Any, param: str) -> str:
    kind = block.get("type") if isinstance(block, dict) else None
    if not isinstance(kind, str):
        raise InvalidRequest("a content block must be an object with a 'type'", param=param)
    return kind


def _user(content: list[Any], param: str, called: set[str]) -> list[Message]:
    """A user turn: its tool results as `tool` messages, then its text and images."""
    results: list[Message] = []
    parts: list[Part] = []
    for j, block in enumerate(content):
        p = f"{param}[{j}]"
        kind = _kind(block, p)
        if kind == "text":
            parts.append(_text(block, p))
        elif kind == "image":
            parts.append(_image_block(block, p))
        elif kind == "tool_result":
            results.append(_tool_result(block, p, called))
        else:
            raise UnsupportedContent(
                f"{kind!r} blocks are not carried; a user turn holds text, image and "
                "tool_result blocks",
                param=p,
            )
    return [*results, _message("user", parts)] if parts else results


def _assistant(content: list[Any], param: str) -> Message:
    """An assistant turn: its text, tool calls and thinking (signed blocks, or another
    vendor's unsigned reasoning)."""
    texts: list[Part] = []
    calls: list[dict[str, Any]] = []
    blocks: list[dict[str, Any]] = []
    reasoning: list[str] = []
    for j, block in enumerate(content):
        p = f"{param}[{j}]"
        kind = _kind(block, p)
        if kind == "text":
            texts.append(_text(block, p))
        elif kind == "tool_use":
            calls.append(_tool_use(block, p))
        elif kind == "thinking":
            check_keys(block, _THINKING, p)
            thinking, signature = block.get("thinking"), block.get("signature")
            if not (isinstance(thinking, str) and isinstance(signature, str)):
                raise InvalidRequest("a thinking block needs 'thinking' and 'signature'", param=p)
            if signature:
                blocks.append({"type": "thinking", "thinking": thinking, "signature": signature})
            else:
                reasoning.append(thinking)
        elif kind == "redacted_thinking":
            check_keys(block, _REDACTED, p)
            if not isinstance(block.get("data"), str):
                raise InvalidRequest("a redacted_thinking block needs 'data'", param=p)
            blocks.append({"type": "redacted_thinking", "data": block["data"]})
        else:
            raise UnsupportedContent(
                f"{kind!r} blocks are not carried; an assistant turn holds text, tool_use, "
                "thinking and redacted_thinking blocks",
                param=p,
            )
    base = _message("assistant", texts) if texts else Message("assistant", "")
    return Message(
        "assistant",
        base.content,
        base.parts,
        tool_calls=tuple(calls),
        reasoning="".join(reasoning) if reasoning else None,
        thinking_blocks=tuple(blocks),
    )


def _text(block: Mapping[str, Any], param: str) -> str:
    check_keys(block, _TEXT, param)
    check_cache_control(block.get("cache_control"), f"{param}.cache_control")
    text = block.get("text")
    if not isinstance(text, str):
        raise InvalidRequest("a text block needs 'text' (a string)", param=f"{param}.text")
    return text


def _image_block(block: Mapping[str, Any], param: str) -> ImagePart:
    """An image block's source: base64 bytes as a data URL, a URL as it is (never fetched)."""
    check_keys(block, _IMAGE, param)
    check_cache_control(block.get("cache_control"), f"{param}.cache_control")
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "url" and isinstance(source, dict) and set(source) == {"type", "url"}:
        return image_part({"url": source["url"]}, f"{param}.source")
    if (
        kind == "base64"
        and isinstance(source, dict)
        and set(source) == {"type", "media_type", "data"}
    ):
        media_type, data = source["media_type"], source["data"]
        if media_type in MEDIA_TYPES and isinstance(data, str) and data:
            return ImagePart(f"data:{media_type};base64,{data}")
    raise UnsupportedContent(
        "an image source must be {'type': 'base64', 'media_type': image/jpeg, png, gif or webp, "
        "'data'} or {'type': 'url', 'url'} (files are not served here)",
        param=f"{param}.source",
    )


def _tool_use(block: Mapping[str, Any], param: str) -> dict[str, Any]:
    """A `tool_use` block as an OpenAI tool call; its input becomes the arguments' JSON text."""
    check_keys(block, _TOOL_USE, param)
    call_id, name, arguments = block.get("id"), block.get("name"), block.get("input")
    caller = block.get("caller")
    if not (
        isinstance(call_id, str)
        and 0 < len(call_id) <= 256
        and isinstance(name, str)
        and name
        and isinstance(arguments, dict)
        and (caller is None or caller == {"type": "direct"})
    ):
        raise InvalidRequest(
            "a tool_use block needs 'id', 'name' and 'input' (an object); a 'caller' other "
            "than direct is not served",
            param=param,
        )
    extra = block.get("extra_content")
    if not isinstance(extra, dict | None):
        raise InvalidRequest("'extra_content' must be an object", param=f"{param}.extra_content")
    text = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
    call: dict[str, Any] = {"id": call_id, "type": "function"}
    if extra is not None:  # (ours: what another vendor needs back with the call, as it came)
        call["extra_content"] = extra
    call["function"] = {"name": name, "arguments": text}
    return call


def _tool_result(block: Mapping[str, Any], param: str, called: set[str]) -> Message:
    """A `tool_result` block as a `tool` message (text only: no other protocol takes an image
    there)."""
    check_keys(block, _TOOL_RESULT, param)
    call_id, content, error = block.get("tool_use_id"), block.get("content"), block.get("is_error")
    if not isinstance(call_id, str) or call_id not in called:
        raise InvalidRequest(
            f"tool result {call_id!r} answers no earlier tool_use block",
            param=f"{param}.tool_use_id",
        )
    if not isinstance(error, bool | None):
        raise InvalidRequest("'is_error' must be a boolean", param=f"{param}.is_error")
    texts: list[Part] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for j, item in enumerate(content):
            if _kind(item, f"{param}.content[{j}]") != "text":
                raise UnsupportedContent(
                    "a tool result holds text only (no other protocol takes images there)",
                    param=f"{param}.content[{j}]",
                )
            texts.append(_text(item, f"{param}.content[{j}]"))
    elif content is not None:
        raise InvalidRequest(
            "a tool result's content is a string or text blocks", param=f"{param}.content"
        )
    if error:
        texts = [ERROR_PREFIX + str(texts[0]), *texts[1:]] if texts else [ERROR_ALONE]
    message = _message("tool", texts) if texts else Message("tool", "")
    return Message("tool", message.content, message.parts, tool_call_id=call_id)
