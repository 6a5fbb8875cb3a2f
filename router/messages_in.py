"""Strict parsing of an Anthropic Messages API request (`POST /v1/messages` and its
`count_tokens`) into the core's `ChatRequest`. Pure: decoded JSON in, a frozen `ChatRequest`
(and our `fusion` options, if any) or an `InvalidRequest` naming the field out.

The JSON rules are the chat surface's (`router.inbound`): duplicate keys, NaN, lone surrogates,
deep nesting and egress fields (`base_url`, `api_key`...) are refused at any depth. What each
field becomes (for the README's Messages table):

| Anthropic                                   | ChatRequest                                        |
| ------------------------------------------- | -------------------------------------------------- |
| `model`, `stream`                           | `model`, `stream`                                  |
| `max_tokens` (required; includes thinking)  | `max_tokens`, sent as `max_completion_tokens`      |
| `temperature` (0..1), `top_p`               | `temperature`, `top_p`                             |
| `stop_sequences` (at most 4)                | `stop`                                             |
| `metadata.user_id`                          | `user`                                             |
| `system` (string or text blocks), `role: system` messages | a system message (blocks as its parts) |
| `text` / `image` blocks (base64, url)       | text parts / `ImagePart` (a data URL, the URL)     |
| assistant `tool_use`                        | the message's `tool_calls` (arguments: input as JSON text) |
| a `tool_use` block's `extra_content` (ours) | the call's `extra_content` (Gemini's thought signature) |
| user `tool_result` (string or text blocks)  | a `tool` message before the turn's other blocks; `is_error` prefixes `Error: ` |
| assistant `thinking` (signed), `redacted_thinking` | the message's `thinking_blocks`             |
| assistant `thinking` with an empty signature | the message's `reasoning` (another vendor's)      |
| `tools` (custom: name, description, input_schema, strict) | function tools                       |
| `tool_choice` auto / any / tool / none      | `auto` / `required` / the named function / `none`  |
| `disable_parallel_tool_use: true`           | `parallel_tool_calls: false`                       |
| `thinking` / `output_config.effort`         | `reasoning_effort` (`THINKING_EFFORT`, `EFFORTS`)  |
| `thinking: disabled`                        | none (an `output_config.effort` beside it: no-op)  |
| `output_config.format` (json_schema)        | `json_schema` named `output`                       |
| `service_tier`, `cache_control`, a block's `citations`, `thinking.display` | accepted, no-ops |
| `fusion` (ours)                             | fusion options, as on the chat surface             |

Refused with a 400 naming them: `top_k` (no counterpart in OpenAI's protocol), server tools and
Anthropic-side features (`container`, `mcp_servers`, `context_management`...), `document`,
`search_result` and `file` sources, images in a tool result or an assistant turn, and any field
not listed here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from router.errors import InvalidJson, InvalidRequest, UnsupportedParameter
from router.inbound import MAX_STOP, MAX_TOOLS, Limits, check_tree, is_int, is_number, parse_json
from router.messages_turns import check_cache_control, check_keys, conversation, system_messages
from router.providers.anthropic_request import MIN_THINKING_BUDGET, THINKING_BUDGET
from router.types import ChatRequest, ReasoningEffort

_COMMON = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking"})
CREATE_FIELDS = _COMMON | {
    "max_tokens",
    "stream",
    "temperature",
    "top_p",
    "stop_sequences",
    "metadata",
    "output_config",
    "service_tier",
    "cache_control",
    "fusion",
}
COUNT_FIELDS = _COMMON | {"output_config", "cache_control"}
# Known Anthropic fields this sidecar refuses, and why.
REFUSED = {
    "top_k": "'top_k' has no counterpart in OpenAI's protocol, which any target may speak",
    "container": "code execution containers run on Anthropic's side",
    "mcp_servers": "the MCP connector runs on Anthropic's side",
    "context_management": "context management runs on Anthropic's side",
}
# `thinking.budget_tokens` → `reasoning_effort`: the largest effort whose budget (the Anthropic
# adapter's `THINKING_BUDGET`, read backwards) is at most the one asked, so no target thinks
# more than asked.
THINKING_EFFORT: tuple[tuple[int, ReasoningEffort], ...] = tuple(
    sorted(
        ((budget, cast(ReasoningEffort, effort)) for effort, budget in THINKING_BUDGET.items()),
        reverse=True,
    )
)
# `output_config.effort` → `reasoning_effort` (OpenAI has no "max": its highest is "xhigh");
# adaptive thinking without an effort is Anthropic's default effort, "high".
EFFORTS: Mapping[str, ReasoningEffort] = {
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "xhigh",
    "max": "xhigh",
}
SCHEMA_NAME = "output"  # `output_config.format` has no name; OpenAI's json_schema needs one
SERVICE_TIERS = frozenset({"auto", "standard_only"})

_TOOL = frozenset({"type", "name", "description", "input_schema", "strict", "cache_control"})


def read_messages(
    raw: bytes, limits: Limits, *, counting: bool = False
) -> tuple[ChatRequest, Mapping[str, Any] | None]:
    """A `ChatRequest` (and the `fusion` options, if any) from a Messages request's bytes;
    `counting`: a `count_tokens` request (no `max_tokens`, fewer fields)."""
    return validate_messages(parse_json(raw), limits, counting=counting)


def validate_messages(
    data: Any, limits: Limits, *, counting: bool = False
) -> tuple[ChatRequest, Mapping[str, Any] | None]:
    """A `ChatRequest` (and the `fusion` options, if any) from a decoded Messages request."""
    if not isinstance(data, dict):
        raise InvalidJson("the request body must be a JSON object")
    check_tree(data)
    _known(data, COUNT_FIELDS if counting else CREATE_FIELDS)
    model = data.get("model")
    if not isinstance(model, str) or not model.strip() or len(model) > 256:
        raise InvalidRequest("'model' must be a non-empty string (at most 256)", param="model")
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    max_tokens = data.get("max_tokens")
    if not counting and not (
        isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens > 0
    ):
        raise InvalidRequest("'max_tokens' is required: a positive integer", param="max_tokens")
    fusion = data.get("fusion")
    if fusion is not None and not isinstance(fusion, dict):
        raise InvalidRequest("'fusion' must be an object", param="fusion")
    _no_ops(data)
    effort, schema = _reasoning(data.get("thinking"), data.get("output_config"), max_tokens)
    system = system_messages(data.get("system"), "system")
    request = ChatRequest(
        model=model.strip(),
        messages=(*system, *conversation(data.get("messages"), limits.max_messages)),
        stream=bool(stream),
        max_tokens=max_tokens,
        temperature=_unit(data, "temperature"),
        top_p=_unit(data, "top_p"),
        stop=_stop(data.get("stop_sequences")),
        user=_user_id(data.get("metadata")),
        include_usage=True,  # an Anthropic stream always ends with its usage
        json_output=schema is not None,
        max_tokens_field="max_completion_tokens",  # as Anthropic's, it includes reasoning
        passthrough=_tools(data.get("tools"), data.get("tool_choice")),
        json_schema=schema,
        reasoning_effort=effort,
    )
    return request, fusion


def _unit(data: Mapping[str, Any], name: str) -> float | None:
    """A sampling parameter: a number from 0 to 1 (Anthropic's range), or None."""
    number = data.get(name)
    if number is None:
        return None
    if not (is_number(number) and 0 <= number <= 1):
        raise InvalidRequest(f"'{name}' must be a number from 0 to 1", param=name)
    return float(number)


def _known(data: Mapping[str, Any], fields: frozenset[str]) -> None:
    unknown = sorted(set(data) - fields)
    if not unknown:
        return
    reason = REFUSED.get(unknown[0])
    raise UnsupportedParameter(
        f"unsupported parameter(s): {', '.join(unknown)}" + (f" ({reason})" if reason else ""),
        param=unknown[0],
    )


def _no_ops(data: Mapping[str, Any]) -> None:
    """`service_tier` (the sidecar never asks for priority capacity) and top-level
    `cache_control` (prompt caching is not carried): checked, then no-ops."""
    tier = data.get("service_tier")
    if tier is not None and tier not in SERVICE_TIERS:
        raise InvalidRequest(
            "'service_tier' must be 'auto' or 'standard_only'", param="service_tier"
        )
    check_cache_control(data.get("cache_control"), "cache_control")


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not (
        isinstance(value, list)
        and len(value) <= MAX_STOP
        and all(isinstance(s, str) and s for s in value)
    ):
        raise InvalidRequest(
            f"'stop_sequences' must be a list of at most {MAX_STOP} non-empty strings (what "
            "every upstream protocol takes)",
            param="stop_sequences",
        )
    return tuple(value)


def _user_id(metadata: Any) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise InvalidRequest("'metadata' must be an object", param="metadata")
    extra = sorted(set(metadata) - {"user_id"})
    if extra:
        raise UnsupportedParameter("'metadata' takes only 'user_id'", param=f"metadata.{extra[0]}")
    user = metadata.get("user_id")
    if user is not None and not (isinstance(user, str) and len(user) <= 256 and user.isprintable()):
        raise InvalidRequest(
            "'metadata.user_id' must be a printable string of at most 256 characters",
            param="metadata.user_id",
        )
    return user


def _reasoning(
    thinking: Any, config: Any, max_tokens: Any
) -> tuple[ReasoningEffort | None, dict[str, Any] | None]:
    """`thinking` and `output_config` as (`reasoning_effort`, `json_schema`). A budget gives
    the effort (`THINKING_EFFORT`); adaptive thinking, or no `thinking` at all, takes
    `output_config.effort` (`EFFORTS`); disabled thinking asks for none."""
    effort, schema = _output_config(config)
    if thinking is None:
        return effort, schema
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    allowed = {"enabled": {"type", "budget_tokens", "display"}, "adaptive": {"type", "display"}}
    if kind == "disabled" and set(thinking) == {"type"}:
        return None, schema
    if kind not in allowed:
        raise UnsupportedParameter(
            "'thinking.type' must be 'enabled', 'adaptive' or 'disabled'", param="thinking.type"
        )
    extra = sorted(set(thinking) - allowed[kind])
    if extra:
        raise UnsupportedParameter(
            f"'thinking' ({kind}) has no '{extra[0]}'", param=f"thinking.{extra[0]}"
        )
    if thinking.get("display") not in (None, "summarized", "omitted"):
        raise InvalidRequest(
            "'thinking.display' must be 'summarized' or 'omitted'", param="thinking.display"
        )
    if kind == "adaptive":
        return effort or "high", schema
    budget = thinking.get("budget_tokens")
    if not (is_int(budget) and budget >= MIN_THINKING_BUDGET):
        raise InvalidRequest(
            f"'thinking.budget_tokens' must be an integer of at least {MIN_THINKING_BUDGET}",
            param="thinking.budget_tokens",
        )
    if is_int(max_tokens) and budget >= max_tokens:
        raise InvalidRequest(
            "'max_tokens' must be greater than 'thinking.budget_tokens'",
            param="thinking.budget_tokens",
        )
    return next(e for floor, e in THINKING_EFFORT if budget >= floor), schema


def _output_config(config: Any) -> tuple[ReasoningEffort | None, dict[str, Any] | None]:
    if config is None:
        return None, None
    if not isinstance(config, dict):
        raise InvalidRequest("'output_config' must be an object", param="output_config")
    extra = sorted(set(config) - {"effort", "format"})
    if extra:
        raise UnsupportedParameter(
            "'output_config' takes 'effort' and 'format'", param=f"output_config.{extra[0]}"
        )
    effort = config.get("effort")
    if effort is not None and effort not in EFFORTS:
        raise InvalidRequest(
            f"'output_config.effort' must be one of {', '.join(EFFORTS)}",
            param="output_config.effort",
        )
    fmt = config.get("format")
    if fmt is None:
        return (EFFORTS[effort] if effort else None), None
    if not (
        isinstance(fmt, dict)
        and fmt.get("type") == "json_schema"
        and set(fmt) == {"type", "schema"}
        and isinstance(fmt["schema"], dict)
    ):
        raise InvalidRequest(
            "'output_config.format' must be {'type': 'json_schema', 'schema': an object}",
            param="output_config.format",
        )
    return (EFFORTS[effort] if effort else None), {"name": SCHEMA_NAME, "schema": fmt["schema"]}


def _tools(tools: Any, choice: Any) -> tuple[tuple[str, Any], ...]:
    """`tools` and `tool_choice` as OpenAI's `tools`, `tool_choice` and
    `parallel_tool_calls` (passed on as the chat surface's are)."""
    if tools is None:
        if choice is not None:
            raise InvalidRequest("'tool_choice' needs 'tools'", param="tool_choice")
        return ()
    if not isinstance(tools, list) or not tools or len(tools) > MAX_TOOLS:
        raise InvalidRequest(f"'tools' must be a list of 1 to {MAX_TOOLS} tools", param="tools")
    out: list[tuple[str, Any]] = [("tools", [_tool(t, f"tools[{i}]") for i, t in enumerate(tools)])]
    if choice is None:
        return tuple(out)
    kind = choice.get("type") if isinstance(choice, dict) else None
    name = choice.get("name") if isinstance(choice, dict) else None
    fields = {"type", "disable_parallel_tool_use"} | ({"name"} if kind == "tool" else set())
    parallel = choice.get("disable_parallel_tool_use") if isinstance(choice, dict) else None
    if (
        kind not in ("auto", "any", "tool", "none")
        or not set(choice) <= fields
        or (kind == "tool" and not (isinstance(name, str) and name))
        or not isinstance(parallel, bool | None)
        or (kind == "none" and parallel is not None)
    ):
        raise InvalidRequest(
            "'tool_choice' must be {'type': 'auto' | 'any' | 'none'} or {'type': 'tool', "
            "'name'}, with 'disable_parallel_tool_use' (a boolean) but on 'none'",
            param="tool_choice",
        )
    named = {"type": "function", "function": {"name": name}}
    out.append(
        ("tool_choice", {"auto": "auto", "any": "required", "none": "none"}.get(kind, named))
    )
    if parallel:
        out.append(("parallel_tool_calls", False))
    return tuple(out)


def _tool(tool: Any, param: str) -> dict[str, Any]:
    """A custom tool as an OpenAI function tool; server tools run on Anthropic's side."""
    if not isinstance(tool, dict):
        raise InvalidRequest("a tool must be an object", param=param)
    if tool.get("type") not in (None, "custom"):
        raise UnsupportedParameter(
            f"server tool {tool.get('type')!r} runs on Anthropic's side; only custom tools "
            "(name, description, input_schema) are served",
            param=f"{param}.type",
        )
    check_keys(tool, _TOOL, param)
    check_cache_control(tool.get("cache_control"), f"{param}.cache_control")
    name, schema = tool.get("name"), tool.get("input_schema")
    description, strict = tool.get("description"), tool.get("strict")
    if not (
        isinstance(name, str)
        and name
        and isinstance(schema, dict)
        and isinstance(description, str | None)
        and isinstance(strict, bool | None)
    ):
        raise InvalidRequest(
            "a tool needs 'name' and 'input_schema' (an object); 'description' is a string, "
            "'strict' a boolean",
            param=param,
        )
    function: dict[str, Any] = {"name": name}
    if description is not None:
        function["description"] = description
    function["parameters"] = schema
    if strict is not None:
        function["strict"] = strict
    return {"type": "function", "function": function}
