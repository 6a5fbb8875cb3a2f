"""An OpenAI Responses request (`POST /v1/responses`) as the `ChatRequest` it means. Pure.

The request is translated into a chat-completions body and validated by the chat surface's
own rules (`inbound.validate_chat`), so both APIs accept the same conversations and limits; an
error found there names the Responses field (`input[3]`, `max_output_tokens`, `text.format`).
Stateless: nothing is stored, so whatever needs a stored response is refused, naming the field.

Translated: `input` and `instructions` (`responses_items`: messages, function calls and
their outputs, reasoning items), function `tools` (`strict` only when given: absent is chat's
default, not strict), `tool_choice`, `parallel_tool_calls`, `text.format`
(`json_schema`, `json_object`, `text`), `text.verbosity` (OpenAI-protocol upstreams only),
`reasoning.effort`, `max_output_tokens` (as `max_completion_tokens`), `temperature`, `top_p`,
`service_tier`, `user` (`safety_identifier` when no `user`), `stream`; our `fusion` options.

Documented no-ops: `store: false` or absent (the API's default is to store, but nothing is
stored here: the response says `store: false`), `metadata` (echoed in the response, not sent
upstream), `reasoning.summary` (the upstream's own reasoning text comes back, no summary is
made), `include` (`reasoning.encrypted_content` is always there when there are thinking
blocks; the hosted tools' includables name items that never occur), `truncation: disabled`,
`background: false`, `prompt_cache_key`, `stream_options.include_obfuscation`.

Refused (a 400 naming the field): `previous_response_id`, `conversation`, `prompt`,
`store: true`, `background: true`, `truncation: auto`, `include` of
`message.output_text.logprobs`, hosted tools (`web_search`, `file_search`, ...) and their
`tool_choice`, any unknown field, and the items `responses_items` refuses.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router.errors import InvalidJson, InvalidRequest, UnsupportedParameter
from router.inbound import MAX_METADATA, Limits, parse_json, validate_chat
from router.responses_items import check_keys, fold_input
from router.responses_shapes import DEFAULT_ECHO
from router.types import ChatRequest

_KNOWN = frozenset(
    {
        *("model", "input", "instructions", "stream", "stream_options", "max_output_tokens"),
        *("temperature", "top_p", "metadata", "user", "safety_identifier", "service_tier"),
        *("tools", "tool_choice", "parallel_tool_calls", "text", "reasoning", "include"),
        *("store", "background", "truncation", "prompt_cache_key", "fusion"),
        *("previous_response_id", "conversation", "prompt"),
    }
)
_STATEFUL = {
    "previous_response_id": "this sidecar is stateless and stores no response; send the whole "
    "conversation as 'input' items",
    "conversation": "this sidecar is stateless and stores no conversation; send the whole "
    "conversation as 'input' items",
    "prompt": "stored prompt templates live on OpenAI's platform; send 'instructions' and 'input'",
}
_INCLUDE_NO_OPS = frozenset(
    {
        "reasoning.encrypted_content",
        "message.input_image.image_url",
        "file_search_call.results",
        "web_search_call.results",
        "web_search_call.action.sources",
        "computer_call_output.output.image_url",
        "code_interpreter_call.outputs",
    }
)
_TOOL = frozenset({"type", "name", "description", "parameters", "strict"})
_RENAMED = {
    "max_completion_tokens": "max_output_tokens",
    "response_format": "text.format",
    "reasoning_effort": "reasoning.effort",
}
_HEAD = re.compile(r"(\w+)(?:\[(\d+)\])?")


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """A Responses request as the core serves it, and what its response echoes."""

    chat: ChatRequest
    fusion: Mapping[str, Any] | None
    echo: Mapping[str, Any]


def read_responses(raw: bytes, limits: Limits) -> ResponsesRequest:
    """The request in the body's bytes, or the `InvalidRequest` naming what is wrong."""
    return translate(parse_json(raw), limits)


def translate(data: Any, limits: Limits) -> ResponsesRequest:
    """The request in decoded JSON."""
    if not isinstance(data, dict):
        raise InvalidJson("the request body must be a JSON object")
    check_keys(data, _KNOWN, "")
    _refuse_state(data)
    _check_no_ops(data)
    instructions = data.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidRequest("'instructions' must be a string", param="instructions")
    messages, origins = fold_input(data.get("input"), instructions)
    body: dict[str, Any] = {"model": data.get("model"), "messages": messages}
    if data.get("stream") is not None:
        body["stream"] = data["stream"]
        if data["stream"] is True:  # the usage always ends a Responses stream
            body["stream_options"] = {"include_usage": True}
    limit = data.get("max_output_tokens")
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
            raise InvalidRequest(
                "'max_output_tokens' must be a positive integer", param="max_output_tokens"
            )
        body["max_completion_tokens"] = limit
    if not isinstance(data.get("service_tier", ""), str | None):
        raise InvalidRequest("'service_tier' must be a string", param="service_tier")
    for key in ("temperature", "top_p", "service_tier", "fusion"):
        if data.get(key) is not None:
            body[key] = data[key]
    user_field = "user" if data.get("user") is not None else "safety_identifier"
    if data.get(user_field) is not None:
        body["user"] = data[user_field]
    body.update(_tooling(data))
    response_format, verbosity = _text(data.get("text"))
    if response_format is not None:
        body["response_format"] = response_format
    effort = _reasoning(data.get("reasoning"))
    if effort is not None:
        body["reasoning_effort"] = effort
    try:
        chat, fusion = validate_chat(body, limits)
    except InvalidRequest as exc:
        exc.param = _param(exc.param, origins, user_field)
        raise
    if verbosity is not None:  # (a field of OpenAI's own: other protocols refuse it)
        chat = dataclasses.replace(chat, passthrough=(*chat.passthrough, ("verbosity", verbosity)))
    return ResponsesRequest(chat, fusion, _echo(data))


def _refuse_state(data: Mapping[str, Any]) -> None:
    """A 400 for what needs a stored response, or work this sidecar does not do."""
    for key, why in _STATEFUL.items():
        if data.get(key) is not None:
            raise UnsupportedParameter(f"'{key}' is not supported: {why}", param=key)
    if data.get("store") is True:
        raise UnsupportedParameter(
            "'store': true is not supported: this sidecar is stateless and stores no response; "
            "send 'store': false or leave it out",
            param="store",
        )
    if data.get("background") is True:
        raise UnsupportedParameter(
            "'background': true is not supported: responses are answered while the request "
            "waits, never stored to poll",
            param="background",
        )
    if data.get("truncation") == "auto":
        raise UnsupportedParameter(
            "'truncation': 'auto' is not supported: the input is never cut here; send what "
            "fits the model's context",
            param="truncation",
        )


def _check_no_ops(data: Mapping[str, Any]) -> None:
    """The shapes of the fields accepted and not acted on."""
    for key in ("store", "background"):
        if data.get(key) is not None and not isinstance(data[key], bool):
            raise InvalidRequest(f"'{key}' must be a boolean", param=key)
    if data.get("truncation") not in (None, "disabled"):
        raise InvalidRequest("'truncation' must be 'auto' or 'disabled'", param="truncation")
    cache_key = data.get("prompt_cache_key")
    if cache_key is not None and not (isinstance(cache_key, str) and len(cache_key) <= 1024):
        raise InvalidRequest("'prompt_cache_key' must be a string", param="prompt_cache_key")
    options = data.get("stream_options")
    if options is not None and not (
        isinstance(options, dict)
        and set(options) <= {"include_obfuscation"}
        and isinstance(options.get("include_obfuscation", False), bool)
    ):
        raise InvalidRequest(
            "'stream_options' supports only include_obfuscation (a boolean)",
            param="stream_options",
        )
    metadata = data.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, dict)
        and len(metadata) <= MAX_METADATA
        and all(len(k) <= 64 and isinstance(v, str) and len(v) <= 512 for k, v in metadata.items())
    ):
        raise InvalidRequest(
            f"'metadata' must be an object of at most {MAX_METADATA} string values",
            param="metadata",
        )
    include = data.get("include")
    if include is None:
        return
    if not isinstance(include, list) or not all(isinstance(v, str) for v in include):
        raise InvalidRequest("'include' must be a list of strings", param="include")
    for k, value in enumerate(include):
        if value == "message.output_text.logprobs":
            raise UnsupportedParameter(
                "log probabilities are not offered on /v1/responses", param=f"include[{k}]"
            )
        if value not in _INCLUDE_NO_OPS:
            raise InvalidRequest(f"unknown 'include' value {value!r}", param=f"include[{k}]")


def _tooling(data: Mapping[str, Any]) -> dict[str, Any]:
    """`tools`, `tool_choice` and `parallel_tool_calls` in chat's shape. Without tools, a
    choice that asks nothing (`auto`, `none`) and `parallel_tool_calls` are dropped."""
    tools, choice = data.get("tools"), data.get("tool_choice")
    out: dict[str, Any] = {}
    if tools is not None and tools != []:
        out["tools"] = _tools(tools)
        if data.get("parallel_tool_calls") is not None:
            out["parallel_tool_calls"] = data["parallel_tool_calls"]
    if choice is None or (choice in ("auto", "none") and "tools" not in out):
        return out
    if choice in ("auto", "none", "required"):
        out["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") == "function":
        check_keys(choice, frozenset({"type", "name"}), "tool_choice")
        if not isinstance(choice.get("name"), str):
            raise InvalidRequest("a function 'tool_choice' needs its 'name'", param="tool_choice")
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise UnsupportedParameter(
            "'tool_choice' must be 'auto', 'none', 'required' or {'type': 'function', 'name'}: "
            "hosted tools, custom tools and allowed-tool lists are not served here",
            param="tool_choice",
        )
    return out


def _tools(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise InvalidRequest("'tools' must be a list of tools", param="tools")
    hosted = [
        (i, t.get("type"))
        for i, t in enumerate(value)
        if isinstance(t, dict) and t.get("type") != "function"
    ]
    if hosted:
        kinds = ", ".join(sorted({repr(kind) for _, kind in hosted}))
        raise UnsupportedParameter(
            f"tools of type {kinds} are not supported: this sidecar serves function tools only "
            "(OpenAI's hosted tools run on OpenAI's servers)",
            param=f"tools[{hosted[0][0]}]",
        )
    out = []
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise InvalidRequest("each tool must be an object", param=where)
        check_keys(tool, _TOOL, where)
        if not (
            isinstance(tool.get("name"), str)
            and isinstance(tool.get("parameters"), dict | None)
            and isinstance(tool.get("description"), str | None)
            and isinstance(tool.get("strict"), bool | None)
        ):
            raise InvalidRequest(
                "a function tool needs a 'name', and may have 'parameters' (an object), "
                "'description' and 'strict'",
                param=where,
            )
        function = {
            k: tool[k]
            for k in ("name", "description", "parameters", "strict")
            if tool.get(k) is not None
        }
        out.append({"type": "function", "function": function})
    return out


def _text(value: Any) -> tuple[dict[str, Any] | None, str | None]:
    """`text`: chat's `response_format`, and the `verbosity`."""
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise InvalidRequest("'text' must be an object", param="text")
    check_keys(value, frozenset({"format", "verbosity"}), "text")
    verbosity = value.get("verbosity")
    if verbosity not in (None, "low", "medium", "high"):
        raise InvalidRequest(
            "'text.verbosity' must be 'low', 'medium' or 'high'", param="text.verbosity"
        )
    fmt = value.get("format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is None or kind == "text":
        return None, verbosity
    if kind == "json_object":
        return {"type": "json_object"}, verbosity
    if kind != "json_schema":
        raise UnsupportedParameter(
            "'text.format.type' must be 'text', 'json_object' or 'json_schema'",
            param="text.format",
        )
    check_keys(fmt, frozenset({"type", "name", "schema", "description", "strict"}), "text.format")
    spec = {
        k: fmt[k] for k in ("name", "schema", "description", "strict") if fmt.get(k) is not None
    }
    return {"type": "json_schema", "json_schema": spec}, verbosity


def _reasoning(value: Any) -> Any:
    """`reasoning`: its `effort` (checked as chat's `reasoning_effort`)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest("'reasoning' must be an object", param="reasoning")
    check_keys(value, frozenset({"effort", "summary", "generate_summary"}), "reasoning")
    for key in ("summary", "generate_summary"):
        if value.get(key) not in (None, "auto", "concise", "detailed", "none"):
            raise InvalidRequest(
                f"'reasoning.{key}' must be 'auto', 'concise', 'detailed' or 'none'",
                param=f"reasoning.{key}",
            )
    effort = value.get("effort")
    if effort is not None and not isinstance(effort, str):
        raise InvalidRequest("'reasoning.effort' must be a string", param="reasoning.effort")
    return effort


def _param(param: str | None, origins: list[str], user_field: str) -> str | None:
    """A chat field named by an error, as the Responses field it came from."""
    head = _HEAD.match(param or "")
    if param is None or head is None:
        return param
    name, index = head[1], head[2]
    if name == "messages":
        return origins[int(index)] if index is not None and int(index) < len(origins) else "input"
    if name == "tools":
        return f"tools[{index}]" if index is not None else "tools"
    if name == "user":
        return user_field
    return _RENAMED.get(name, param)


def _echo(data: Mapping[str, Any]) -> dict[str, Any]:
    """The request's settings as the response object repeats them."""
    echo = dict(DEFAULT_ECHO)
    for key in ("instructions", "max_output_tokens", "temperature", "top_p", "user"):
        echo[key] = data.get(key)
    echo["metadata"] = data.get("metadata") or {}
    echo["parallel_tool_calls"] = data.get("parallel_tool_calls") is not False
    echo["tool_choice"] = data.get("tool_choice") or "auto"
    echo["tools"] = data.get("tools") or []
    reasoning = data.get("reasoning") or {}
    echo["reasoning"] = {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}
    text = data.get("text") or {}
    echo["text"] = {"format": text.get("format") or {"type": "text"}}
    if text.get("verbosity") is not None:
        echo["text"]["verbosity"] = text["verbosity"]
    for key in ("safety_identifier", "prompt_cache_key", "service_tier"):
        if data.get(key) is not None:
            echo[key] = data[key]
    return echo
