"""OpenAI Responses input items as chat-completions messages (pure), each message
remembering the input field it came from, for errors found later to name it.

`message` items of role `user`, `assistant`, `system` or `developer` (a system message), their
`input_text`/`output_text` parts kept as parts, an assistant's `refusal` as its text, and in a
user message `input_image` by `image_url` (https or data URL; never by `file_id`, which needs
OpenAI's file store). `function_call` items become the calls of one assistant message, joining
the assistant message right before them (a Gemini thought signature's `extra_content` kept);
`function_call_output` items become `tool` messages (text). A `reasoning` item's
`reasoning_text` goes back as the next assistant turn's reasoning, and the thinking blocks
sealed in its `encrypted_content` (`responses_shapes.seal_thinking`) as its thinking blocks;
its `summary` and another's `encrypted_content` are dropped (they mean nothing to another
vendor), as is reasoning no assistant turn follows. Item `id`, `status` and `phase` are
ignored, and so are null fields and the SDK's `parsed` ones (items it parsed, sent back).
Other item types are refused, `item_reference` as needing stored items.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.errors import InvalidRequest, UnsupportedContent, UnsupportedParameter
from router.inbound import FORBIDDEN_FIELDS, forbidden
from router.responses_shapes import open_thinking

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_MESSAGE = frozenset({"type", "role", "content", "id", "status", "phase"})
_CALL = frozenset({"type", "call_id", "name", "arguments", "id", "status", "extra_content"})
_OUTPUT = frozenset({"type", "call_id", "output", "id", "status"})
_REASONING = frozenset({"type", "id", "summary", "content", "encrypted_content", "status"})
_TEXT_PART = frozenset({"type", "text", "annotations", "logprobs"})


def check_keys(obj: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    """Refuse fields outside `allowed` (a null one means unset; `parsed` fields are the
    SDK's own, on items it parsed), and egress fields as the chat surface does."""
    for key in obj:
        if key.lower() in FORBIDDEN_FIELDS:
            raise forbidden(f"{where}.{key}" if where else key)
    unknown = sorted(
        k
        for k, v in obj.items()
        if k not in allowed and v is not None and k not in ("parsed", "parsed_arguments")
    )
    if unknown:
        names = ", ".join(unknown)
        if not where:
            raise UnsupportedParameter(f"unsupported parameter(s): {names}", param=unknown[0])
        raise UnsupportedParameter(
            f"unsupported field(s) in {where}: {names}", param=f"{where}.{unknown[0]}"
        )


def fold_input(value: Any, instructions: str | None) -> tuple[list[dict[str, Any]], list[str]]:
    """`instructions` (a system message first) and `input` (a string is one user message) as
    chat messages, and the field each came from (`instructions`, `input`, `input[3]`)."""
    turns = _Turns(instructions)
    turns.fold(value)
    return turns.messages, turns.origins


class _Turns:
    """Input items folded into chat messages, each remembering the field it came from."""

    def __init__(self, instructions: str | None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.origins: list[str] = []
        self._joinable = False  # the last message is an assistant's the next call joins
        self._reasoning: list[str] = []  # reasoning items waiting for their assistant turn
        self._blocks: list[Any] = []
        if instructions:
            self._append({"role": "system", "content": instructions}, "instructions")

    def _append(self, message: dict[str, Any], origin: str) -> None:
        self.messages.append(message)
        self.origins.append(origin)
        self._joinable = False

    def fold(self, value: Any) -> None:
        if isinstance(value, str):
            self._append({"role": "user", "content": value}, "input")
            return
        if not isinstance(value, list) or not value:
            raise InvalidRequest(
                "'input' must be a string or a non-empty list of items", param="input"
            )
        for i, item in enumerate(value):
            where = f"input[{i}]"
            if not isinstance(item, dict):
                raise InvalidRequest("each input item must be an object", param=where)
            kind = item.get("type", "message")
            if kind == "message":
                self._message(item, where)
            elif kind == "function_call":
                self._call(item, where)
            elif kind == "function_call_output":
                self._output(item, where)
            elif kind == "reasoning":
                self._reasoned(item, where)
            elif kind == "item_reference":
                raise UnsupportedParameter(
                    "'item_reference' needs stored items; this sidecar is stateless: send the "
                    "items themselves",
                    param=f"{where}.type",
                )
            else:
                raise UnsupportedContent(
                    f"input items of type {kind!r} are not supported: send messages, "
                    "function_call, function_call_output and reasoning items",
                    param=f"{where}.type",
                )

    def _message(self, item: Mapping[str, Any], where: str) -> None:
        check_keys(item, _MESSAGE, where)
        raw = item.get("role")
        role = _ROLES.get(raw) if isinstance(raw, str) else None
        if role is None:
            raise InvalidRequest(
                "role must be one of user, assistant, system, developer", param=f"{where}.role"
            )
        message = {"role": role, "content": _content(item.get("content"), role, where)}
        self._append(message, where)
        if role == "assistant":
            self._attach(message)
            self._joinable = True
        else:  # reasoning never followed by its assistant turn: nothing to carry
            self._reasoning, self._blocks = [], []

    def _call(self, item: Mapping[str, Any], where: str) -> None:
        check_keys(item, _CALL, where)
        if not all(isinstance(item.get(k), str) for k in ("call_id", "name", "arguments")):
            raise InvalidRequest(
                "a function_call item needs 'call_id', 'name' and 'arguments' (a JSON string)",
                param=where,
            )
        call: dict[str, Any] = {
            "id": item["call_id"],
            "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]},
        }
        if item.get("extra_content") is not None:  # a Gemini thought signature, sent back
            call["extra_content"] = item["extra_content"]
        if self._joinable:
            message = self.messages[-1]
            message.setdefault("tool_calls", []).append(call)
            if message["content"] == "":
                message["content"] = None
        else:
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            self._append(message, where)
        self._attach(message)
        self._joinable = True

    def _output(self, item: Mapping[str, Any], where: str) -> None:
        check_keys(item, _OUTPUT, where)
        call_id, output = item.get("call_id"), item.get("output")
        if not isinstance(call_id, str):
            raise InvalidRequest("a function_call_output needs its 'call_id'", param=where)
        if not isinstance(output, str):
            output = _content(output, "tool", where, field="output")
        self._append({"role": "tool", "tool_call_id": call_id, "content": output}, where)

    def _reasoned(self, item: Mapping[str, Any], where: str) -> None:
        check_keys(item, _REASONING, where)
        content, sealed = item.get("content"), item.get("encrypted_content")
        if not isinstance(content, list | None) or not isinstance(sealed, str | None):
            raise InvalidRequest(
                "a reasoning item's 'content' is a list of parts, its 'encrypted_content' a string",
                param=where,
            )
        for k, part in enumerate(content or ()):
            if not (
                isinstance(part, dict)
                and part.get("type") == "reasoning_text"
                and isinstance(part.get("text"), str)
            ):
                raise InvalidRequest(
                    "a reasoning item's content parts are reasoning_text",
                    param=f"{where}.content[{k}]",
                )
            self._reasoning.append(part["text"])
        if sealed is not None:
            try:
                self._blocks.extend(open_thinking(sealed) or ())
            except ValueError as exc:
                raise InvalidRequest(str(exc), param=f"{where}.encrypted_content") from None

    def _attach(self, message: dict[str, Any]) -> None:
        """The reasoning waiting for this assistant turn, as its reasoning and blocks."""
        if self._reasoning:
            earlier = message.get("reasoning_content")
            message["reasoning_content"] = "".join(([earlier] if earlier else []) + self._reasoning)
        if self._blocks:
            message["thinking_blocks"] = message.get("thinking_blocks", []) + self._blocks
        self._reasoning, self._blocks = [], []


def _content(value: Any, role: str, where: str, *, field: str = "content") -> Any:
    """A message's content in chat's shape: a string, or its parts (boundaries kept)."""
    if isinstance(value, str) and field == "content":
        return value
    if not isinstance(value, list):
        raise InvalidRequest(
            f"'{field}' must be a string or a list of content parts", param=f"{where}.{field}"
        )
    parts: list[dict[str, Any]] = []
    for k, part in enumerate(value):
        at = f"{where}.{field}[{k}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
            check_keys(part, _TEXT_PART, at)
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "refusal" and role == "assistant" and isinstance(part.get("refusal"), str):
            check_keys(part, frozenset({"type", "refusal"}), at)
            parts.append({"type": "text", "text": part["refusal"]})
        elif kind == "input_image" and role == "user":
            parts.append(_image(part, at))
        else:
            raise UnsupportedContent(
                f"a {kind!r} part is not supported here: parts are input_text or output_text "
                "(and, in a user message, input_image by image_url)",
                param=at,
            )
    return parts


def _image(part: Mapping[str, Any], at: str) -> dict[str, Any]:
    """An `input_image` part as chat's `image_url` part (the URL checked there)."""
    check_keys(part, frozenset({"type", "image_url", "file_id", "detail"}), at)
    if part.get("file_id") is not None:
        raise UnsupportedContent(
            "an image by 'file_id' needs OpenAI's file store, which this sidecar does not "
            "have: send 'image_url' (an https URL or a data URL)",
            param=f"{at}.file_id",
        )
    url = part.get("image_url")
    if not isinstance(url, str):
        raise InvalidRequest("an input_image needs its 'image_url'", param=f"{at}.image_url")
    image = {"url": url}
    detail = part.get("detail")
    if detail is not None:
        if not isinstance(detail, str):
            raise InvalidRequest("'detail' must be 'auto', 'low' or 'high'", param=f"{at}.detail")
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}
