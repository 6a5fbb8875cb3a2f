"""Strict parsing and validation of an inbound chat-completions request into a `ChatRequest`.

Pure functions: bytes in, a frozen `ChatRequest` (or an `InvalidRequest` with a
stable code and the offending `param`) out. The parser rejects what Python's
`json` would silently accept and an upstream might read differently: duplicate
keys, NaN and Infinity, lone surrogates, absurd nesting. Caller-controlled
egress fields (`api_base`, `base_url`, `api_key`, …) are refused at any depth.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from router.errors import (
    DuplicateKey,
    ForbiddenField,
    InvalidJson,
    InvalidRequest,
    UnsupportedContent,
    UnsupportedParameter,
)
from router.protocol_support import PASSTHROUGH
from router.types import ChatRequest, ImagePart, Message, Part, ReasoningEffort, Role

MAX_DEPTH = 32
MAX_STOP = 4
MAX_CONTENT_CHARS = 4_000_000

FORBIDDEN_FIELDS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "azure_endpoint",
        "organization",
        "extra_headers",
        "headers",
        "proxy",
        "proxies",
        "callback_url",
        "webhook_url",
        "custom_llm_provider",
        "aws_access_key_id",
        "aws_secret_access_key",
        "vertex_credentials",
    }
)

# Accepted and used, or accepted because clients send them with harmless values.
_KNOWN = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "n",
        "user",
        "seed",
        "response_format",
        "metadata",
        "store",
        "frequency_penalty",
        "presence_penalty",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "reasoning_effort",
        "logprobs",
        "top_logprobs",
        "service_tier",
        "prediction",
        "modalities",
        "fusion",
    }
)
_MESSAGE_FIELDS = frozenset(
    {
        "role",
        "content",
        "name",
        "tool_calls",
        "tool_call_id",
        "reasoning_content",
        "thinking_blocks",
    }
)
# (tuples: a caller's list or object is compared, never hashed)
_EFFORTS: tuple[str, ...] = get_args(ReasoningEffort)
_IMAGE_DETAIL = ("auto", "low", "high")
MAX_SCHEMA_NAME = 64
MAX_CHOICES = 128  # OpenAI's own limit on `n`
MAX_TOP_LOGPROBS = 20
_SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority")
MAX_METADATA = 16  # OpenAI's own limit on `metadata` pairs
MAX_TOOLS = 128  # OpenAI's own limit on `tools`
_ROLES: Mapping[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}


class _Duplicate(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Duplicate(key)
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("number out of range")
    return value


_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs, parse_constant=_no_constants, parse_float=_finite_float
)  # stateless: one for the process, not one per request


def parse_json(raw: bytes) -> Any:
    """Decode strict JSON from request bytes, or raise `InvalidRequest`."""
    return _decode(raw, _DECODER)


def read_chat(raw: bytes, limits: Limits) -> tuple[ChatRequest, Mapping[str, Any] | None]:
    """A `ChatRequest` (and the raw `fusion` options, if any) from the request's bytes."""
    return validate_chat(parse_json(raw), limits)


def _decode(raw: bytes, decoder: json.JSONDecoder) -> Any:
    if not raw.strip():
        raise InvalidJson("the request body is empty; send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJson(f"the request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        value = decoder.decode(text)
        if b"\\u" in raw:  # only an escape can make a lone surrogate out of valid UTF-8
            check_tree(value, surrogates=True)
        return value
    except _Duplicate as exc:
        raise DuplicateKey(f"duplicate key {exc.key!r} in the JSON body", param=exc.key) from None
    except RecursionError:
        raise InvalidJson("the JSON body is nested too deeply") from None
    except ValueError as exc:
        raise InvalidJson(f"the request body is not valid JSON: {str(exc)[:120]}") from None


def check_tree(value: Any, depth: int = 0, *, surrogates: bool = False) -> None:
    """Refuse forbidden fields at any depth and deep nesting (and lone surrogates), naming the
    path. One walk; the path is spelled out only for the value refused."""
    found = _problem(value, depth, surrogates)
    if found is None:
        return
    kind, parts = found
    path = ""
    for part in reversed(parts):
        path = f"{path}[{part}]" if isinstance(part, int) else f"{path}.{part}" if path else part
    if kind == "forbidden":
        raise forbidden(path)
    if kind == "deep":
        raise InvalidJson(f"the JSON body is nested deeper than {MAX_DEPTH} levels", param=path)
    raise InvalidJson("a string holds an unpaired surrogate", param=path)


# Objects whose keys are names the caller chose, not request fields: a JSON schema's
# properties (a tool's parameters, a response format), a tool call's input. A tool may well
# take a parameter called `headers` or `api_key`; no upstream reads those as its own.
_NAME_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "input"})


def forbidden(path: str) -> ForbiddenField:
    """The error for a caller-set egress field (`FORBIDDEN_FIELDS`) at `path`, on any API."""
    return ForbiddenField(
        f"field {path!r} is not accepted: upstream endpoints and credentials come only from "
        "the sidecar's config",
        param=path,
    )


def _problem(
    value: Any, depth: int, surrogates: bool, names: bool = False
) -> tuple[str, list[str | int]] | None:
    """The first refused value: its kind (forbidden, deep, surrogate) and its path, innermost
    part first; None when there is none. `names`: `value`'s keys are names (`_NAME_MAPS`)."""
    if depth > MAX_DEPTH:
        return "deep", []
    if isinstance(value, str):
        return ("surrogate", []) if surrogates and not _encodes(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if not names and key.lower() in FORBIDDEN_FIELDS:
                return "forbidden", [key]
            if surrogates and not _encodes(key):
                return "surrogate", [key]
            found = _problem(item, depth + 1, surrogates, not names and key in _NAME_MAPS)
            if found is not None:
                found[1].append(key)
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _problem(item, depth + 1, surrogates)
            if found is not None:
                found[1].append(i)
                return found
    return None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parts(value: Any, param: str, role: Role) -> tuple[Part, ...]:
    """The parts of a content list, each kept whole (their boundaries matter): text, and
    images in a user message."""
    if not isinstance(value, list):
        raise InvalidRequest("content must be a string or a list of content parts", param=param)
    parts: list[Part] = []
    for i, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(part["text"])
        elif kind == "image_url" and role == "user":
            parts.append(image_part(part.get("image_url"), f"{param}[{i}].image_url"))
        else:
            raise UnsupportedContent(
                "content parts must be text (and, in a user message, image_url)",
                param=f"{param}[{i}]",
            )
    return tuple(parts)


def image_part(value: Any, param: str) -> ImagePart:
    """An `image_url` part: an http(s) URL or a base64 `data:image/...` URL, never fetched here."""
    url = value.get("url") if isinstance(value, dict) else None
    detail = value.get("detail") if isinstance(value, dict) else None
    if not isinstance(value, dict) or set(value) - {"url", "detail"} or not isinstance(url, str):
        raise InvalidRequest("'image_url' must be an object with a 'url'", param=param)
    if detail is not None and detail not in _IMAGE_DETAIL:
        raise InvalidRequest("'detail' must be 'auto', 'low' or 'high'", param=f"{param}.detail")
    image = ImagePart(url, detail)
    inline = image.inline
    if url.startswith("data:"):
        if inline is None or not inline[0].startswith("image/") or not inline[1]:
            raise InvalidRequest(
                "a data URL must be 'data:image/<type>;base64,<data>'", param=f"{param}.url"
            )
    elif not url.startswith(("https://", "http://")) or len(url) > 8192:
        raise UnsupportedContent(
            "an image URL must be an http(s) URL or a base64 data URL", param=f"{param}.url"
        )
    return image


def _thinking_blocks(item: Mapping[str, Any], role: Role, param: str) -> tuple[Any, ...]:
    """An assistant's Anthropic thinking blocks, sent back with their signatures."""
    blocks = item.get("thinking_blocks")
    if blocks is None:
        return ()
    ok = role == "assistant" and isinstance(blocks, list)
    for block in blocks if ok else ():
        kind = block.get("type") if isinstance(block, dict) else None
        ok = ok and (
            (
                kind == "thinking"
                and isinstance(block.get("thinking"), str)
                and isinstance(block.get("signature"), str)
            )
            or (kind == "redacted_thinking" and isinstance(block.get("data"), str))
        )
    if not ok:
        raise InvalidRequest(
            "'thinking_blocks' (an assistant's) must be a list of {'type': 'thinking', "
            "'thinking', 'signature'} or {'type': 'redacted_thinking', 'data'} objects",
            param=f"{param}.thinking_blocks",
        )
    return tuple(blocks)


def _tool_calls(item: Mapping[str, Any], role: str, param: str) -> tuple[Any, ...]:
    """An assistant message's `tool_calls`, checked for OpenAI's shape (kept as they came)."""
    calls = item.get("tool_calls")
    if calls is None:
        return ()
    if role != "assistant":
        raise InvalidRequest(
            "only an assistant message has 'tool_calls'", param=f"{param}.tool_calls"
        )
    if not isinstance(calls, list) or not calls or len(calls) > MAX_TOOLS:
        raise InvalidRequest(
            f"'tool_calls' must be a list of 1 to {MAX_TOOLS} calls", param=f"{param}.tool_calls"
        )
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not (
            isinstance(call, dict)
            and isinstance(call.get("id"), str)
            and call.get("type", "function") == "function"
            and isinstance(function, dict)
            and isinstance(function.get("name"), str)
            and isinstance(function.get("arguments"), str)
        ):
            raise InvalidRequest(
                "a tool call needs 'id', 'type': 'function' and 'function' with 'name' and "
                "'arguments' (a JSON string)",
                param=f"{param}.tool_calls[{j}]",
            )
    return tuple(calls)


def _tools(value: Any) -> None:
    """`tools`: function tools in OpenAI's shape."""
    if not isinstance(value, list) or not value or len(value) > MAX_TOOLS:
        raise InvalidRequest(f"'tools' must be a list of 1 to {MAX_TOOLS} tools", param="tools")
    for i, tool in enumerate(value):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not (
            isinstance(tool, dict)
            and tool.get("type") == "function"
            and isinstance(function, dict)
            and isinstance(function.get("name"), str)
            and isinstance(function.get("parameters", {}), dict)
        ):
            raise UnsupportedParameter(
                "only function tools ({'type': 'function', 'function': {'name', "
                "'parameters'...}}) are supported",
                param=f"tools[{i}]",
            )


def _tool_choice(value: Any) -> None:
    if value in ("auto", "none", "required"):
        return
    function = value.get("function") if isinstance(value, dict) else None
    if not (
        isinstance(value, dict)
        and value.get("type") == "function"
        and isinstance(function, dict)
        and isinstance(function.get("name"), str)
    ):
        raise InvalidRequest(
            "'tool_choice' must be 'auto', 'none', 'required' or a named function",
            param="tool_choice",
        )


def _messages(value: Any, max_messages: int) -> tuple[Message, ...]:
    if not isinstance(value, list):
        raise InvalidRequest("'messages' must be a list", param="messages")
    if not value:
        raise InvalidRequest("'messages' must not be empty", param="messages")
    if len(value) > max_messages:
        raise InvalidRequest(f"'messages' has more than {max_messages} entries", param="messages")
    out = []
    total = 0
    only_system = True
    called: set[str] = set()  # the ids of the assistant tool calls so far
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidRequest("each message must be an object", param=f"messages[{i}]")
        if not item.keys() <= _MESSAGE_FIELDS:
            # (a message the SDK parsed and the caller sends back carries `refusal`, `audio`,
            # `annotations`... as null, and `parsed`, its content's JSON read into an object,
            # after `parse()`: nothing is dropped by ignoring those)
            unknown = sorted(
                k
                for k, v in item.items()
                if k not in _MESSAGE_FIELDS and v is not None and k != "parsed"
            )
            if unknown:
                raise UnsupportedParameter(
                    f"unsupported message field(s): {', '.join(unknown)}",
                    param=f"messages[{i}]",
                )
        raw_role = item.get("role")
        role = _ROLES.get(raw_role) if isinstance(raw_role, str) else None
        if role is None:
            raise InvalidRequest(
                "role must be one of system, developer, user, assistant, tool",
                param=f"messages[{i}].role",
            )
        calls = _tool_calls(item, role, f"messages[{i}]")
        called.update(call["id"] for call in calls)
        call_id = item.get("tool_call_id")
        if (role == "tool") != (call_id is not None) or not (
            call_id is None or (isinstance(call_id, str) and 0 < len(call_id) <= 256)
        ):
            raise InvalidRequest(
                "a 'tool' message needs its 'tool_call_id' (a string), and only it has one",
                param=f"messages[{i}].tool_call_id",
            )
        if call_id is not None and call_id not in called:
            raise InvalidRequest(
                f"tool result {call_id!r} answers no earlier assistant tool call",
                param=f"messages[{i}].tool_call_id",
            )
        reasoning = item.get("reasoning_content")
        if reasoning is not None and not (role == "assistant" and isinstance(reasoning, str)):
            raise InvalidRequest(
                "'reasoning_content' is an assistant's, a string",
                param=f"messages[{i}].reasoning_content",
            )
        thinking = _thinking_blocks(item, role, f"messages[{i}]")
        content = item.get("content")
        parts: tuple[Part, ...] = ()
        if isinstance(content, str):
            text = content
        elif content is None and calls:  # an assistant turn that only calls tools
            text = ""
        elif "content" not in item:
            raise InvalidRequest("message has no content", param=f"messages[{i}].content")
        else:
            parts = _parts(content, f"messages[{i}].content", role)
            text = "\n".join(p for p in parts if isinstance(p, str))
        name = item.get("name")
        if name is not None and not (
            isinstance(name, str) and 0 < len(name) <= 64 and name.isprintable()
        ):
            raise InvalidRequest(
                "a message's 'name' must be a printable string of 1 to 64 characters",
                param=f"messages[{i}].name",
            )
        total += len(text)
        only_system = only_system and role == "system"
        out.append(Message(role, text, parts, name, calls, call_id, reasoning, thinking))
    if total > MAX_CONTENT_CHARS:
        raise InvalidRequest(
            f"messages hold more than {MAX_CONTENT_CHARS} characters", param="messages"
        )
    if only_system:
        raise InvalidRequest(
            "'messages' needs at least one user or assistant message", param="messages"
        )
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Limits:
    """Request-surface limits from the server config."""

    max_messages: int = 2000


def validate_chat(data: Any, limits: Limits) -> tuple[ChatRequest, Mapping[str, Any] | None]:
    """A `ChatRequest` (and the raw `fusion` options, if any) from decoded JSON."""
    if not isinstance(data, dict):
        raise InvalidJson("the request body must be a JSON object")
    check_tree(data)  # forbidden fields at any depth, deep nesting: refused by path
    if not data.keys() <= _KNOWN:
        unknown = sorted(set(data) - _KNOWN)
        raise UnsupportedParameter(
            f"unsupported parameter(s): {', '.join(unknown)}",
            param=unknown[0],
        )
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("'model' must be a non-empty string", param="model")
    if len(model) > 256:
        raise InvalidRequest("'model' is too long", param="model")
    stream = data.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    include_usage = False
    options = data.get("stream_options")
    if options is not None:
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise InvalidRequest(
                "'stream_options' supports only include_usage", param="stream_options"
            )
        include_usage = options.get("include_usage", False)
        if not isinstance(include_usage, bool):
            raise InvalidRequest(
                "'stream_options.include_usage' must be a boolean",
                param="stream_options.include_usage",
            )
    field: Literal["max_tokens", "max_completion_tokens"] = (
        "max_completion_tokens" if "max_completion_tokens" in data else "max_tokens"
    )
    if field == "max_completion_tokens" and data.get("max_tokens") is not None:
        raise InvalidRequest(
            "give 'max_completion_tokens' or 'max_tokens', not both", param="max_tokens"
        )
    max_tokens = data.get(field)
    if max_tokens is not None and (not is_int(max_tokens) or max_tokens <= 0):
        raise InvalidRequest(f"'{field}' must be a positive integer", param=field)
    temperature = data.get("temperature")
    if temperature is not None and (not is_number(temperature) or not 0 <= temperature <= 2):
        raise InvalidRequest("'temperature' must be a number from 0 to 2", param="temperature")
    top_p = data.get("top_p")
    if top_p is not None and (not is_number(top_p) or not 0 <= top_p <= 1):
        raise InvalidRequest("'top_p' must be a number from 0 to 1", param="top_p")
    stop = data.get("stop")
    stops: tuple[str, ...] = ()
    if isinstance(stop, str):
        stops = (stop,)
    elif (
        isinstance(stop, list)
        and len(stop) <= MAX_STOP
        and all(isinstance(s, str) and s for s in stop)
    ):
        stops = tuple(stop)
    elif stop is not None:
        raise InvalidRequest(
            f"'stop' must be a string or a list of up to {MAX_STOP} strings", param="stop"
        )
    n = data.get("n")
    if n is not None and (not is_int(n) or not 1 <= n <= MAX_CHOICES):
        raise InvalidRequest(f"'n' must be an integer from 1 to {MAX_CHOICES}", param="n")
    if stream and n is not None and n > 1:
        raise UnsupportedParameter("'n' > 1 is answered whole only, not streamed", param="n")
    seed = data.get("seed")
    if seed is not None and not is_int(seed):
        raise InvalidRequest("'seed' must be an integer", param="seed")
    user = data.get("user")
    if user is not None and (
        not isinstance(user, str) or len(user) > 256 or not user.isprintable()
    ):
        raise InvalidRequest(
            "'user' must be a printable string of at most 256 characters", param="user"
        )
    json_output, json_schema = _response_format(data.get("response_format"))
    effort = data.get("reasoning_effort")
    if effort is not None and effort not in _EFFORTS:
        raise InvalidRequest(
            f"'reasoning_effort' must be one of {', '.join(sorted(_EFFORTS))}",
            param="reasoning_effort",
        )
    passthrough = _passthrough(data)
    fusion = data.get("fusion")
    if fusion is not None and not isinstance(fusion, dict):
        raise InvalidRequest("'fusion' must be an object", param="fusion")
    request = ChatRequest(
        model=model.strip(),
        messages=_messages(data.get("messages"), limits.max_messages),
        stream=stream,
        max_tokens=max_tokens,
        temperature=float(temperature) if temperature is not None else None,
        top_p=float(top_p) if top_p is not None else None,
        stop=stops,
        seed=seed,
        user=user,
        include_usage=include_usage,
        json_output=json_output,
        max_tokens_field=field,
        passthrough=passthrough,
        json_schema=json_schema,
        reasoning_effort=effort,
    )
    return request, fusion


def _response_format(fmt: Any) -> tuple[bool, Any]:
    """`response_format`: (JSON output wanted, the `json_schema` object as sent or None)."""
    if fmt is None:
        return False, None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return False, None
    if kind == "json_object":
        return True, None
    if kind != "json_schema":
        raise UnsupportedParameter(
            "'response_format.type' must be 'text', 'json_object' or 'json_schema'",
            param="response_format",
        )
    spec = fmt.get("json_schema")
    name = spec.get("name") if isinstance(spec, dict) else None
    if not (
        isinstance(spec, dict)
        and set(spec) <= {"name", "schema", "strict", "description"}
        and isinstance(name, str)
        and 0 < len(name) <= MAX_SCHEMA_NAME
        and all(c.isalnum() or c in "_-" for c in name)
        and isinstance(spec.get("schema", {}), dict)
        and isinstance(spec.get("strict", False), bool | None)
        and isinstance(spec.get("description", ""), str)
    ):
        raise InvalidRequest(
            "'response_format.json_schema' needs a 'name' (letters, digits, _ and -, at most "
            f"{MAX_SCHEMA_NAME}), and may have 'schema' (an object), 'strict' and 'description'",
            param="response_format.json_schema",
        )
    return True, spec


def _passthrough(data: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The OpenAI parameters sent on as they came (`protocol_support.PASSTHROUGH`), checked."""
    out: list[tuple[str, Any]] = []
    for key in PASSTHROUGH:
        value = data.get(key)
        if value is None:
            continue
        if key == "store" and not isinstance(value, bool):
            raise InvalidRequest("'store' must be a boolean", param=key)
        if key == "metadata" and not (
            isinstance(value, dict)
            and len(value) <= MAX_METADATA
            and all(isinstance(v, str) and len(v) <= 512 for v in value.values())
            and all(len(k) <= 64 for k in value)
        ):
            raise InvalidRequest(
                f"'metadata' must be an object of at most {MAX_METADATA} string values",
                param=key,
            )
        if key.endswith("_penalty") and not (is_number(value) and -2 <= value <= 2):
            raise InvalidRequest(f"'{key}' must be a number from -2 to 2", param=key)
        if key == "tools":
            _tools(value)
        if key == "tool_choice":
            _tool_choice(value)
        if key == "parallel_tool_calls" and not isinstance(value, bool):
            raise InvalidRequest("'parallel_tool_calls' must be a boolean", param=key)
        if key == "n" and value == 1:
            continue  # one choice is what every protocol answers
        _check_answer_option(key, value)
        out.append((key, value))
    given = {key for key, _ in out}
    for key in ("tool_choice", "parallel_tool_calls"):
        if key in given and "tools" not in given:
            raise InvalidRequest(f"'{key}' needs 'tools'", param=key)
    if "top_logprobs" in given and data.get("logprobs") is not True:
        raise InvalidRequest("'top_logprobs' needs 'logprobs': true", param="top_logprobs")
    return tuple(out)


def _check_answer_option(key: str, value: Any) -> None:
    """`logprobs`, `top_logprobs`, `service_tier`, `prediction`, `modalities`: checked."""
    if key == "logprobs" and not isinstance(value, bool):
        raise InvalidRequest("'logprobs' must be a boolean", param=key)
    if key == "top_logprobs" and not (is_int(value) and 0 <= value <= MAX_TOP_LOGPROBS):
        raise InvalidRequest(
            f"'top_logprobs' must be an integer from 0 to {MAX_TOP_LOGPROBS}", param=key
        )
    if key == "service_tier" and value not in _SERVICE_TIERS:
        raise InvalidRequest(
            f"'service_tier' must be one of {', '.join(sorted(_SERVICE_TIERS))}", param=key
        )
    if key == "prediction":
        content = value.get("content") if isinstance(value, dict) else None
        if not (
            isinstance(value, dict)
            and value.get("type") == "content"
            and (
                isinstance(content, str)
                or (
                    isinstance(content, list)
                    and all(
                        isinstance(p, dict)
                        and p.get("type") == "text"
                        and isinstance(p.get("text"), str)
                        for p in content
                    )
                )
            )
        ):
            raise InvalidRequest(
                "'prediction' must be {'type': 'content', 'content': a string or text parts}",
                param=key,
            )
    if key == "modalities":
        if not (isinstance(value, list) and value and all(isinstance(m, str) for m in value)):
            raise InvalidRequest("'modalities' must be a list of strings", param=key)
        if set(value) != {"text"}:
            raise UnsupportedParameter(
                "only text output is supported ('modalities': ['text'])", param=key
            )
