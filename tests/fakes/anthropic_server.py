"""A fake Anthropic Messages API server; bodies and events are built from `anthropic` types.

It refuses what the real API refuses in the features the router translates (tool use and
results, images, thinking, structured output, the web search server tool), so a test passing
here sent a valid request. `Researched` answers as the web search tool does: `server_tool_use`
and `web_search_tool_result` blocks, then text citing the pages, and the searches counted in
`usage.server_tool_use`.
Models of Claude 4.7 and later (`ADAPTIVE_ONLY`, by upstream id) hold their own rules: adaptive
thinking only, no sampling parameters, no prefill, and thinking text omitted unless
`display: summarized` asks for it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import re
from typing import Any

from aiohttp import web
from anthropic.types import (
    ErrorResponse,
    Message,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
)

from tests.fakes.script import (
    Answer,
    Call,
    CutStream,
    Delay,
    Hang,
    InBandError,
    Malformed,
    Reasoned,
    Researched,
    Reset,
    StallStream,
    Status,
    ToolCalls,
    Wall,
)

MESSAGE_ID = "msg_fake01"

# The router's (OpenAI-style) finish reasons in a script, as Anthropic stop reasons.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "content_filter": "refusal",
    "tool_calls": "tool_use",
}

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    """The Anthropic error type that comes with an HTTP status."""
    return ERROR_TYPES.get(status, "invalid_request_error" if 400 <= status < 500 else "api_error")


def error_message(status: Status) -> str:
    """The error message, worded like Anthropic's, with the script's code visible in it."""
    message = status.message
    if status.code == "context_length_exceeded":
        message = f"prompt is too long: 9000 tokens > 8192 maximum ({message})"
    return f"{message} [{status.code}]" if status.code else message


def error_json(kind: str, message: str) -> str:
    return ErrorResponse.model_validate(
        {"type": "error", "error": {"type": kind, "message": message}}
    ).model_dump_json(exclude_unset=True)


def usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "service_tier": "standard",
    }


def tool_use(call: tuple[str, str, str]) -> dict[str, Any]:
    """A script's call (id, name, arguments JSON) as a `tool_use` block."""
    call_id, name, arguments = call
    return {
        "type": "tool_use",
        "id": call_id,
        "name": name,
        "input": json.loads(arguments) if arguments.strip() else {},
    }


Acted = Answer | ToolCalls | Reasoned | Researched  # what the fake answers with content


def search_blocks(behaviour: Researched, search: int) -> list[dict[str, Any]]:
    """One search's `server_tool_use` block and its `web_search_tool_result` (the pages on the
    first search, none on later ones; or the script's error object)."""
    tool_id = f"srvtoolu_fake{search:02d}"
    results: Any = [
        {
            "type": "web_search_result",
            "url": url,
            "title": title,
            "encrypted_content": f"enc-fake-{i}",
            "page_age": "2 days ago",
        }
        for i, (url, title) in enumerate(behaviour.sources if search == 0 else ())
    ]
    if behaviour.error is not None:
        results = {"type": "web_search_tool_result_error", "error_code": behaviour.error}
    return [
        {
            "type": "server_tool_use",
            "id": tool_id,
            "name": "web_search",
            "input": {"query": behaviour.text[:40]},
        },
        {"type": "web_search_tool_result", "tool_use_id": tool_id, "content": results},
    ]


def citations(behaviour: Researched) -> list[dict[str, Any]]:
    """The text's `web_search_result_location` citations, one per source (none uncited)."""
    if not behaviour.cited or behaviour.error is not None:
        return []
    return [
        {
            "type": "web_search_result_location",
            "url": url,
            "title": title,
            "cited_text": behaviour.text[:20],
            "encrypted_index": f"idx-fake-{i}",
        }
        for i, (url, title) in enumerate(behaviour.sources)
    ]


def content(behaviour: Acted) -> list[dict[str, Any]]:
    """The content blocks of a whole answer."""
    if isinstance(behaviour, Researched):
        blocks = [b for n in range(behaviour.searches) for b in search_blocks(behaviour, n)]
        text: dict[str, Any] = {"type": "text", "text": behaviour.text}
        if citations(behaviour):
            text["citations"] = citations(behaviour)
        return [*blocks, text]
    if isinstance(behaviour, Reasoned):
        thinking = {
            "type": "thinking",
            "thinking": behaviour.thinking,
            "signature": behaviour.signature,
        }
        return [thinking, *content(behaviour.then)]
    if isinstance(behaviour, ToolCalls):
        text = [{"type": "text", "text": behaviour.text}] if behaviour.text else []
        return text + [tool_use(call) for call in behaviour.calls]
    return [{"type": "text", "text": behaviour.text}]


def outcome(behaviour: Acted) -> tuple[str, int, int]:
    """(stop reason, input tokens, output tokens) of an answer."""
    if isinstance(behaviour, Reasoned):
        return outcome(behaviour.then)
    if isinstance(behaviour, Researched):
        stop = "pause_turn" if behaviour.paused else "end_turn"
        return stop, behaviour.input_tokens, behaviour.output_tokens
    if isinstance(behaviour, ToolCalls):
        return "tool_use", 20, 9
    stop = STOP_REASONS.get(behaviour.finish_reason, behaviour.finish_reason)
    return stop, behaviour.input_tokens, behaviour.output_tokens


def server_tool_use(behaviour: Acted) -> dict[str, Any]:
    """`usage.server_tool_use` of a researched answer (empty when the script sends none)."""
    if not isinstance(behaviour, Researched) or not behaviour.usage_count:
        return {}
    count = {"web_search_requests": behaviour.searches, "web_fetch_requests": 0}
    return {"server_tool_use": count}


def message_json(model: str, behaviour: Acted) -> str:
    stop_reason, input_tokens, output_tokens = outcome(behaviour)
    return Message.model_validate(
        {
            "id": MESSAGE_ID,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content(behaviour),
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage(input_tokens, output_tokens) | server_tool_use(behaviour),
        }
    ).model_dump_json(exclude_unset=True)


def message_start(model: str, input_tokens: int) -> str:
    return RawMessageStartEvent.model_validate(
        {
            "type": "message_start",
            "message": {
                "id": MESSAGE_ID,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage(input_tokens, 1),
            },
        }
    ).model_dump_json(exclude_unset=True)


def block_start(index: int = 0, block: dict[str, Any] | None = None) -> str:
    return RawContentBlockStartEvent.model_validate(
        {
            "type": "content_block_start",
            "index": index,
            "content_block": block or {"type": "text", "text": ""},
        }
    ).model_dump_json(exclude_unset=True)


def block_delta(index: int, delta: dict[str, Any]) -> str:
    """A `content_block_delta`: text, `input_json_delta`, thinking or signature."""
    return RawContentBlockDeltaEvent.model_validate(
        {"type": "content_block_delta", "index": index, "delta": delta}
    ).model_dump_json(exclude_unset=True)


def text_delta(text: str, index: int = 0) -> str:
    return block_delta(index, {"type": "text_delta", "text": text})


def block_stop(index: int = 0) -> str:
    return RawContentBlockStopEvent.model_validate(
        {"type": "content_block_stop", "index": index}
    ).model_dump_json(exclude_unset=True)


def cut(text: str, pieces: int) -> list[str]:
    """`text` in `pieces` fragments of about equal size (none for an empty text)."""
    size = max(1, -(-len(text) // max(1, pieces)))
    return [text[start : start + size] for start in range(0, len(text), size)]


def block_events(behaviour: Acted, first: int = 0) -> list[tuple[str, str]]:
    """The content block events of a streamed answer, its blocks numbered from `first`:
    thinking in fragments then its signature; text word by word; each tool call's start
    (id, name, an empty input), an empty `input_json_delta` as the API sends first, then its
    arguments in fragments."""
    out: list[tuple[str, str]] = []
    if isinstance(behaviour, Researched):
        return researched_events(behaviour, first)
    if isinstance(behaviour, Reasoned):
        start = {"type": "thinking", "thinking": "", "signature": ""}
        out.append(("content_block_start", block_start(first, start)))
        for piece in cut(behaviour.thinking, behaviour.pieces):
            out.append(
                (
                    "content_block_delta",
                    block_delta(first, {"type": "thinking_delta", "thinking": piece}),
                )
            )
        signature = {"type": "signature_delta", "signature": behaviour.signature}
        out.append(("content_block_delta", block_delta(first, signature)))
        out.append(("content_block_stop", block_stop(first)))
        return out + block_events(behaviour.then, first + 1)
    texts = [behaviour.text] if behaviour.text else []
    if isinstance(behaviour, Answer):
        words = behaviour.text.split(" ")
        texts = [words[0], *(" " + w for w in words[1:])]
    if texts:
        out.append(("content_block_start", block_start(first)))
        out.extend(("content_block_delta", text_delta(t, first)) for t in texts)
        out.append(("content_block_stop", block_stop(first)))
        first += 1
    for index, (call_id, name, arguments) in enumerate(
        behaviour.calls if isinstance(behaviour, ToolCalls) else (), first
    ):
        start = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
        out.append(("content_block_start", block_start(index, start)))
        for piece in ["", *cut(arguments, behaviour.pieces)]:
            delta = {"type": "input_json_delta", "partial_json": piece}
            out.append(("content_block_delta", block_delta(index, delta)))
        out.append(("content_block_stop", block_stop(index)))
    return out


def researched_events(behaviour: Researched, first: int) -> list[tuple[str, str]]:
    """A researched answer streamed: per search, a `server_tool_use` block (its input as one
    `input_json_delta`) and its whole `web_search_tool_result` block; then the text block,
    word by word, with a `citations_delta` per citation."""
    out: list[tuple[str, str]] = []
    index = first
    for n in range(behaviour.searches):
        use, result = search_blocks(behaviour, n)
        out.append(("content_block_start", block_start(index, {**use, "input": {}})))
        delta = {"type": "input_json_delta", "partial_json": json.dumps(use["input"])}
        out.append(("content_block_delta", block_delta(index, delta)))
        out.append(("content_block_stop", block_stop(index)))
        out.append(("content_block_start", block_start(index + 1, result)))
        out.append(("content_block_stop", block_stop(index + 1)))
        index += 2
    out.append(("content_block_start", block_start(index, {"type": "text", "text": ""})))
    words = behaviour.text.split(" ")
    for i, word in enumerate(words):
        out.append(("content_block_delta", text_delta(word if i == 0 else " " + word, index)))
    for citation in citations(behaviour):
        delta = {"type": "citations_delta", "citation": citation}
        out.append(("content_block_delta", block_delta(index, delta)))
    out.append(("content_block_stop", block_stop(index)))
    return out


def message_delta(stop_reason: str, output_tokens: int, behaviour: Acted | None = None) -> str:
    counts = server_tool_use(behaviour) if behaviour is not None else {}
    return RawMessageDeltaEvent.model_validate(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": output_tokens, **counts},
        }
    ).model_dump_json(exclude_unset=True)


def message_stop() -> str:
    return RawMessageStopEvent.model_validate({"type": "message_stop"}).model_dump_json(
        exclude_unset=True
    )


# Claude 4.7 and later (not Mythos Preview, which takes both kinds of thinking).
ADAPTIVE_ONLY = re.compile(r"claude-(opus-4-[7-9]|(opus|sonnet|haiku|mythos)-[5-9]|fable)\b")
SAMPLING = ("temperature", "top_p", "top_k")


def adaptive_only(body: dict[str, Any]) -> bool:
    """Whether the model is one of Claude 4.7 and later (adaptive thinking only)."""
    return bool(ADAPTIVE_ONLY.search(str(body.get("model"))))


def request_problem(headers: Any, body: Any) -> str | None:
    """What the real API would reject in this request, if anything."""
    if not headers.get("anthropic-version"):
        return "anthropic-version: header is required"
    if not isinstance(body, dict):
        return "body must be a JSON object"
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    if any(r not in ("user", "assistant") for r in roles):
        return "messages: roles must be 'user' or 'assistant'"
    if any(a == b for a, b in itertools.pairwise(roles)):
        return "messages: roles must alternate between 'user' and 'assistant'"
    return (
        newer_model_problem(body, roles)
        or tools_problem(body)
        or thinking_problem(body)
        or output_config_problem(body)
        or content_problem(messages, thinking=isinstance(body.get("thinking"), dict))
    )


def newer_model_problem(body: dict[str, Any], roles: list[Any]) -> str | None:
    """What Claude 4.7 and later refuse that earlier models take: sampling parameters, and
    a prefilled assistant turn at the end."""
    if not adaptive_only(body):
        return None
    for name in SAMPLING:
        if name in body:
            return f"`{name}` is deprecated for this model."
    if roles[-1] == "assistant":
        return (
            "Prefilling assistant messages is not supported for this model. The conversation "
            "must end with a user message."
        )
    return None


TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")
MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def tools_problem(body: dict[str, Any]) -> str | None:
    """`tools` and `tool_choice` as the API checks them."""
    tools = body.get("tools")
    names = []
    for i, tool in enumerate(tools or []):
        if isinstance(tool, dict) and tool.get("type", "custom") != "custom":
            problem = server_tool_problem(i, tool)
            if problem:
                return problem
            names.append(tool["name"])
            continue
        schema = tool.get("input_schema") if isinstance(tool, dict) else None
        if not isinstance(schema, dict) or schema.get("type") != "object":
            return f"tools.{i}.input_schema: must be a JSON schema of type object"
        if not TOOL_NAME.fullmatch(str(tool.get("name"))):
            return f"tools.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
        names.append(tool["name"])
    if len(set(names)) != len(names):
        return "tools: Tool names must be unique."
    choice = body.get("tool_choice")
    if choice is None:
        return None
    if not tools:
        return "tool_choice: may only be specified while providing tools"
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in ("auto", "any", "tool", "none"):
        return "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'"
    if kind == "tool" and choice.get("name") not in names:
        return "tool_choice.name: no tool of that name"
    if kind == "none" and "disable_parallel_tool_use" in choice:
        return "tool_choice.disable_parallel_tool_use: Extra inputs are not permitted"
    return None


WEB_SEARCH_FIELDS = {
    "type",
    "name",
    "max_uses",
    "allowed_domains",
    "blocked_domains",
    "user_location",
    "cache_control",
    "allowed_callers",
    "defer_loading",
    "strict",
}


def server_tool_problem(i: int, tool: dict[str, Any]) -> str | None:
    """A server tool (a `tools` entry with a `type`): only the web search tool here, checked
    as the API checks `web_search_20250305`."""
    kind = tool["type"]
    if kind != "web_search_20250305":
        return f"tools.{i}: Input tag '{kind}' found using 'type' does not match any of the expected tags"
    if tool.get("name") != "web_search":
        return f"tools.{i}.web_search_20250305.name: Input should be 'web_search'"
    extra = sorted(set(tool) - WEB_SEARCH_FIELDS)
    if extra:
        return f"tools.{i}.web_search_20250305.{extra[0]}: Extra inputs are not permitted"
    uses = tool.get("max_uses")
    if uses is not None and (not isinstance(uses, int) or isinstance(uses, bool) or uses < 1):
        return f"tools.{i}.web_search_20250305.max_uses: Input should be greater than 0"
    for key in ("allowed_domains", "blocked_domains"):
        domains = tool.get(key)
        if domains is not None and not (
            isinstance(domains, list) and all(isinstance(d, str) and d for d in domains)
        ):
            return f"tools.{i}.web_search_20250305.{key}: Input should be a list of domains"
    if tool.get("allowed_domains") is not None and tool.get("blocked_domains") is not None:
        return "Cannot specify both allowed_domains and blocked_domains in the web search tool."
    return None


EFFORTS = ("low", "medium", "high", "xhigh", "max")
THINKING_FIELDS = {"enabled": {"type", "budget_tokens", "display"}, "adaptive": {"type", "display"}}


def thinking_problem(body: dict[str, Any]) -> str | None:
    """Thinking's constraints: its type (Claude 4.7 and later take only adaptive, with no
    budget), a budget's size, `display`, sampling, and no forced tool use."""
    thinking = body.get("thinking")
    if thinking is None:
        return None
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "disabled" and not adaptive_only(body):
        return None
    if kind not in ("enabled", "adaptive") or (kind == "enabled" and adaptive_only(body)):
        return (
            f'"thinking.type.{kind}" is not supported for this model. Use '
            '"thinking.type.adaptive" and "output_config.effort" to control thinking behavior.'
        )
    extra = sorted(set(thinking) - THINKING_FIELDS[kind])
    if extra:
        return f"thinking.{kind}.{extra[0]}: Extra inputs are not permitted"
    if thinking.get("display") not in (None, "summarized", "omitted"):
        return f"thinking.{kind}.display: Input should be 'summarized' or 'omitted'"
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024:
            return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        if budget >= body["max_tokens"]:
            return "`max_tokens` must be greater than `thinking.budget_tokens`"
    if body.get("temperature", 1) != 1 or "top_k" in body:
        return "`temperature` may only be set to 1 when thinking is enabled"
    if not 0.95 <= body.get("top_p", 1) <= 1:
        return "`top_p` must be between 0.95 and 1 when thinking is enabled"
    if (body.get("tool_choice") or {}).get("type") in ("any", "tool"):
        return "Thinking may not be enabled when tool_choice forces tool use."
    return None


def thinking_shown(body: dict[str, Any]) -> bool:
    """Whether thinking blocks carry their text: `display: omitted` (the default on Claude
    4.7 and later) sends them empty, with only their signature."""
    thinking = body.get("thinking")
    display = thinking.get("display") if isinstance(thinking, dict) else None
    if display is None:
        display = "omitted" if adaptive_only(body) else "summarized"
    return bool(display == "summarized")


def output_config_problem(body: dict[str, Any]) -> str | None:
    """`output_config`: native structured output (`format`) and `effort`, either or both."""
    config = body.get("output_config")
    if config is None:
        return None
    if not isinstance(config, dict) or not config or set(config) - {"format", "effort"}:
        return "output_config: takes 'format' and 'effort' only"
    if "effort" in config and config["effort"] not in EFFORTS:
        return "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'"
    if "format" not in config:
        return None
    fmt = config["format"]
    if not isinstance(fmt, dict) or set(fmt) != {"type", "schema"}:
        return "output_config.format: needs exactly 'type' and 'schema'"
    if fmt["type"] != "json_schema" or not isinstance(fmt["schema"], dict):
        return "output_config.format: type must be 'json_schema' with a schema object"
    return None


def block_problem(role: str, block: Any) -> str | None:
    """One content block of a message."""
    kind = block.get("type") if isinstance(block, dict) else None
    allowed = {
        "user": ("text", "image", "tool_result"),
        "assistant": ("text", "tool_use", "thinking", "redacted_thinking"),
    }[role]
    if kind not in allowed:
        return f"content: a {role} message cannot have a block of type {kind}"
    if kind == "text" and not (isinstance(block.get("text"), str) and block["text"]):
        return "text content blocks must be non-empty"
    if kind == "image":
        source = block.get("source") or {}
        if not (
            (source.get("type") == "url" and isinstance(source.get("url"), str))
            or (
                source.get("type") == "base64"
                and source.get("media_type") in MEDIA_TYPES
                and isinstance(source.get("data"), str)
            )
        ):
            return "image.source: a url, or base64 data of a jpeg, png, gif or webp image"
    if kind == "tool_use" and not isinstance(block.get("input"), dict):
        return "tool_use.input: Input should be a valid dictionary"
    if kind == "thinking" and not isinstance(block.get("signature"), str):
        return "thinking.signature: Field required"
    return None


def content_problem(messages: list[Any], *, thinking: bool) -> str | None:
    """Content blocks; each `tool_use` answered by a `tool_result` first in the next turn,
    and (with thinking on) the assistant turn being continued opening with its thinking."""
    for i, message in enumerate(messages):
        blocks = message.get("content")
        if isinstance(blocks, str):
            continue
        if not isinstance(blocks, list) or not blocks:
            return f"messages.{i}.content: a non-empty string or list of blocks"
        for block in blocks:
            problem = block_problem(message["role"], block)
            if problem:
                return f"messages.{i}.{problem}"
        kinds = [b["type"] for b in blocks]
        if message["role"] == "assistant":
            thought = [k in ("thinking", "redacted_thinking") for k in kinds]
            if thought != sorted(thought, reverse=True):
                return f"messages.{i}: thinking blocks must come first in an assistant turn"
            continue
        results = [b["tool_use_id"] for b in blocks if b["type"] == "tool_result"]
        if kinds[: len(results)] != ["tool_result"] * len(results):
            return f"messages.{i}: tool_result blocks must come first in the user turn"
        previous = messages[i - 1]["content"] if i else []
        uses = [b["id"] for b in previous if isinstance(b, dict) and b["type"] == "tool_use"]
        if sorted(results) != sorted(uses):
            return (
                f"messages.{i}: each tool_use in the previous turn needs its tool_result "
                "here, and each tool_result a tool_use there"
            )
    last = messages[-2] if len(messages) > 1 else None
    if thinking and last is not None and isinstance(last["content"], list):
        kinds = [b["type"] for b in last["content"]]
        if "tool_use" in kinds and kinds[0] not in ("thinking", "redacted_thinking"):
            return (
                f"messages.{len(messages) - 2}.content.0.type: Expected `thinking` or "
                "`redacted_thinking`, but found `tool_use`. When `thinking` is enabled, a "
                "final `assistant` message must start with a thinking block."
            )
    return None


async def _sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    return response


async def _send(response: web.StreamResponse, event: str, data: str) -> None:
    await response.write(f"event: {event}\ndata: {data}\n\n".encode())


async def _open_message(response: web.StreamResponse, model: str, input_tokens: int) -> None:
    await _send(response, "message_start", message_start(model, input_tokens))
    await _send(response, "content_block_start", block_start())
    await _send(response, "ping", json.dumps({"type": "ping"}))


def make_app(wall: Wall) -> web.Application:
    """The fake's aiohttp app; every call is recorded on `wall`."""

    async def messages(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return web.Response(
                status=400,
                text=error_json("invalid_request_error", "bad json"),
                content_type="application/json",
            )
        model = str(body.get("model")) if isinstance(body, dict) else "None"
        stream = bool(body.get("stream")) if isinstance(body, dict) else False
        wall.record(
            Call(
                "anthropic",
                request.path,
                model,
                stream,
                dict(request.headers),
                body,
                Wall.now(),
                request.query_string,
            )
        )
        problem = request_problem(request.headers, body)
        if problem:
            return web.Response(
                status=400,
                text=error_json("invalid_request_error", problem),
                content_type="application/json",
            )
        behaviour = wall.next_for(model)
        if isinstance(behaviour, Delay):
            await asyncio.sleep(behaviour.seconds)
            behaviour = behaviour.then
        if isinstance(behaviour, Reasoned) and not thinking_shown(body):
            behaviour = dataclasses.replace(behaviour, thinking="")
        if isinstance(behaviour, Hang):
            await asyncio.sleep(behaviour.seconds)
            return web.Response(status=504)
        if isinstance(behaviour, Reset):
            assert request.transport is not None
            request.transport.abort()
            await asyncio.sleep(0.05)
            return web.Response(status=500)
        if isinstance(behaviour, Status):
            headers = {"Retry-After": behaviour.retry_after} if behaviour.retry_after else {}
            text = error_json(error_type(behaviour.status), error_message(behaviour))
            return web.Response(
                status=behaviour.status, text=text, content_type="application/json", headers=headers
            )
        if isinstance(behaviour, Malformed):
            if stream:
                response = await _sse(request)
                await _send(response, "message_start", "{not json")
                return response
            return web.Response(status=200, text="{not json", content_type="application/json")
        if isinstance(behaviour, ToolCalls | Reasoned | Researched):
            if not stream:
                return web.Response(
                    status=200, text=message_json(model, behaviour), content_type="application/json"
                )
            response = await _sse(request)
            stop_reason, input_tokens, output_tokens = outcome(behaviour)
            await _send(response, "message_start", message_start(model, input_tokens))
            for event, data in block_events(behaviour):
                await _send(response, event, data)
            await _send(
                response, "message_delta", message_delta(stop_reason, output_tokens, behaviour)
            )
            await _send(response, "message_stop", message_stop())
            return response
        if isinstance(behaviour, Answer):
            if not stream:
                return web.Response(
                    status=200, text=message_json(model, behaviour), content_type="application/json"
                )
            response = await _sse(request)
            await _open_message(response, model, behaviour.input_tokens)
            for i, word in enumerate(behaviour.text.split(" ")):
                if i and behaviour.chunk_delay:
                    await asyncio.sleep(behaviour.chunk_delay)
                await _send(
                    response, "content_block_delta", text_delta(word if i == 0 else " " + word)
                )
            await _send(response, "content_block_stop", block_stop())
            stop_reason = STOP_REASONS.get(behaviour.finish_reason, behaviour.finish_reason)
            await _send(
                response, "message_delta", message_delta(stop_reason, behaviour.output_tokens)
            )
            await _send(response, "message_stop", message_stop())
            return response
        if isinstance(behaviour, CutStream | StallStream | InBandError):
            response = await _sse(request)
            await _open_message(response, model, 11)
            for word in behaviour.text.split(" ")[: behaviour.after]:
                await _send(response, "content_block_delta", text_delta(word + " "))
            if isinstance(behaviour, StallStream):
                await asyncio.sleep(behaviour.seconds)
            elif isinstance(behaviour, InBandError):
                await _send(response, "error", error_json("overloaded_error", "Overloaded"))
            assert request.transport is not None
            request.transport.close()
            return response
        raise AssertionError(behaviour)

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    return app
