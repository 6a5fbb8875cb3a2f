"""Adapter for the Google Gemini API (`generateContent` / `streamGenerateContent`).

`to_wire()` and `from_wire()` are pure translations between a `ChatRequest` and the Gemini
JSON, and `GeminiStream` reads a stream's chunks into events; `GeminiProvider` only builds the
per-model URL and drives `send()`, `read_json()` and `iter_sse()` from `router.providers.base`.

How OpenAI's fields map (the README's compatibility table says the same):

- `tools`: each function is a `tools[0].functionDeclarations[]` entry `{name, description,
  parametersJsonSchema}`, its JSON Schema as sent (Gemini's `parameters` takes only an OpenAPI
  subset). A function's `strict` is a no-op: Gemini has no such switch.
- `tool_choice` is `toolConfig.functionCallingConfig` (`TOOL_CHOICE_MODES`; a named function
  is `ANY` with `allowedFunctionNames: [name]`). `parallel_tool_calls: false`: Gemini has no
  switch, so only the answer's first function call is returned.
- An assistant's `tool_calls` are `functionCall` parts `{id, name, args}` of a `model` turn;
  a call's `extra_content.google.thought_signature` (Gemini's own OpenAI-compatible shape, in
  which calls come back) goes back as the part's `thoughtSignature`. `role: "tool"` messages
  are `functionResponse` parts `{id, name, response}` of a `user` turn (consecutive results
  share one turn): `name` is the function of the earlier call with that `tool_call_id`,
  `response` the content if it is a JSON object, else `{"result": content}`. A result whose
  `tool_call_id` names no earlier call cannot be sent (Gemini needs the name): a 400.
- Call ids: Gemini's `functionCall.id` where it sends one (Gemini 3 does), sent back on the
  call and its response. Where it sends none (2.5), the id is minted from the response id and
  the call's place in the answer (`minted_id()`), the same whole or streamed, and left out
  when sent back: Gemini matches those by name and order.
- `image_url` parts with a data URL are `inlineData {mimeType, data}`; `detail` is a no-op.
  An http(s) URL never gets here: Gemini needs the bytes and the sidecar never fetches.
- `response_format: json_schema` is `responseMimeType: "application/json"` with the schema
  as sent in `responseJsonSchema` (Gemini honours `$id`, `$defs`, `$ref`, `$anchor`, `type`,
  `format`, `title`, `description`, `enum`, `items`, `prefixItems`, `minItems`, `maxItems`,
  `minimum`, `maximum`, `anyOf`, `oneOf` (as `anyOf`), `properties`, `additionalProperties`,
  `required` and `propertyOrdering`, and ignores other keywords). `name`, `description` and
  `strict` are no-ops: Gemini always holds the answer to the schema.
- `reasoning_effort` is `generationConfig.thinkingConfig` (`THINKING_BUDGETS`).
- `reasoning_content` and `thinking_blocks` sent back are no-ops: Gemini takes no thought
  text back, and the blocks' signatures are Anthropic's.
- Back: thought parts (`thought: true`) are `reasoning_content`, `thoughtsTokenCount` counts
  as output; `functionCall` parts are `tool_calls`, and the finish reason `tool_calls` where
  Gemini says `STOP`. A thought signature on a text part is not kept (only function calling
  needs it back).
- Web search (`ChatRequest.web_search`, set by fusion, never by a client): the tool
  `{"googleSearch": {}}` (Grounding with Google Search) in `tools`, after any
  `functionDeclarations` entry (Gemini 3 takes the two together; older models may refuse
  function calling beside a built-in tool). `blocked_domains` is not sent: the Gemini API does
  not support `googleSearch.excludeDomains` (Vertex AI only); `max_uses` has no counterpart.
  Back: sources from `candidates[0].groundingMetadata.groundingChunks[].web` (`uri`, `title`;
  Gemini's `uri` is a redirect link through Google, its `title` usually the site's domain),
  deduplicated by URI, in order, on whole answers only; `Usage.web_searches` is the number of
  `groundingMetadata.webSearchQueries` (whole and streamed). Off-shape grounding metadata is
  skipped, never fails an answer.

Embeddings (`POST /v1/embeddings` to a Gemini model of `kind: embedding`) are
`batchEmbedContents`: one `requests[]` entry `{model, content: {parts: [{text}]},
outputDimensionality}` per input (`dimensions` is `outputDimensionality`; `user` is a no-op),
at most `EMBED_BATCH` per call (Gemini's cap): more inputs are sent as consecutive calls within
the one attempt. The vectors come back as `embeddings[].values`, in order; `usageMetadata`'s
`promptTokenCount` where Gemini sends it, else an estimate.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from router.errors import ProviderError, ProviderMalformed, ProviderRejected, StreamTruncated
from router.protocol_support import arguments_object
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
from router.providers.web_search import dedupe_sources, source
from router.types import (
    ChatRequest,
    Completion,
    EmbeddingCall,
    EmbeddingRequest,
    Embeddings,
    FinishReason,
    Message,
    Part,
    ProviderCall,
    ReasoningDelta,
    Source,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from router.upstream_http import UpstreamClient
from router.vectors import checked_vectors

_FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
}

# `tool_choice` → `functionCallingConfig.mode` (a named function: ANY, with its name allowed)
TOOL_CHOICE_MODES: Mapping[str, str] = {"auto": "AUTO", "none": "NONE", "required": "ANY"}

# `reasoning_effort` → `thinkingConfig.thinkingBudget` (tokens), thoughts included but for
# `none`. low, medium and high are Google's own mapping on its OpenAI-compatible endpoint;
# minimal is the smallest budget every thinking Gemini model takes; xhigh is high, the
# largest every one takes (2.5 Flash's maximum). `none` turns thinking off where a model can
# (2.5 Pro cannot, and refuses it). Gemini 3 takes budgets for backward compatibility.
THINKING_BUDGETS: Mapping[str, int] = {
    "none": 0,
    "minimal": 512,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
    "xhigh": 24576,
}

# A tool call id minted here (Gemini sent none) starts so, and is not sent back to Gemini.
MINTED_ID_PREFIX = "gemini-call-"
_MAX_RESPONSE_ID = 64

_ROLES = {"user": "user", "assistant": "model", "tool": "user"}

EMBED_BATCH = 100  # `batchEmbedContents` takes at most this many requests in one call


def to_wire(request: ChatRequest, provider: str = "gemini") -> dict[str, Any]:
    """The JSON body of a `generateContent` call (the model and streaming live in the URL).

    Raises `ProviderRejected` (a 400 to the caller) for what Gemini cannot be sent: a tool
    result for no earlier call, an image by URL, a call's arguments that are no JSON object.
    """
    body: dict[str, Any] = {"contents": _contents(request, provider)}
    if request.system_text:
        body["systemInstruction"] = {"parts": [{"text": request.system_text}]}
    tools: list[dict[str, Any]] = []
    if request.tools:
        tools.append({"functionDeclarations": [_declaration(t) for t in request.tools]})
        choice = request.option("tool_choice")
        if choice is not None:
            body["toolConfig"] = {"functionCallingConfig": _calling_config(choice)}
    if request.web_search is not None:  # (no excludeDomains: not in the Gemini API)
        tools.append({"googleSearch": {}})
    if tools:
        body["tools"] = tools
    config = _generation_config(request)
    if config:
        body["generationConfig"] = config
    return body


def _contents(request: ChatRequest, provider: str) -> list[dict[str, Any]]:
    """The dialogue as `contents`; messages of one role in a row share one turn."""
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id → function name, of the calls so far
    for message in request.dialogue:
        role = _ROLES[message.role]
        if message.role == "assistant":
            parts = _model_parts(message, provider)
            names.update((c["id"], c["function"]["name"]) for c in message.tool_calls)
        elif message.role == "tool":
            parts = [_function_response(message, names, provider)]
        else:
            parts = [_part(p, provider) for p in message.parts] or [{"text": message.content}]
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return contents


def _refused(provider: str, message: str) -> ProviderRejected:
    """What Gemini cannot be sent: the caller's fault, refused before any call."""
    return ProviderRejected(f"{provider}: {message}", provider=provider, upstream_status=400)


def _part(part: Part, provider: str) -> dict[str, Any]:
    """A user message's text or image part."""
    if isinstance(part, str):
        return {"text": part}
    inline = part.inline
    if inline is None:  # (routing skips Gemini for these: it needs the bytes)
        raise _refused(provider, "an image must be sent as a data URL")
    media_type, data = inline
    return {"inlineData": {"mimeType": media_type, "data": data}}


def _model_parts(message: Message, provider: str) -> list[dict[str, Any]]:
    """An assistant message: its text (none if empty beside calls), then its function calls."""
    parts: list[dict[str, Any]] = [
        {"text": text} for text in message.texts if text or not message.tool_calls
    ]
    parts.extend(_function_call(call, provider) for call in message.tool_calls)
    return parts


def _function_call(call: Mapping[str, Any], provider: str) -> dict[str, Any]:
    """One of an assistant's tool calls as a `functionCall` part, its thought signature back."""
    args = arguments_object(call)
    if args is None:  # (routing sends such calls only to OpenAI's protocol)
        raise _refused(provider, "a tool call's arguments must be a JSON object")
    function_call: dict[str, Any] = {"name": call["function"]["name"], "args": args}
    gemini_id = _id_for_gemini(call["id"])
    if gemini_id is not None:
        function_call["id"] = gemini_id
    part: dict[str, Any] = {"functionCall": function_call}
    signature = _thought_signature(call)
    if signature is not None:
        part["thoughtSignature"] = signature
    return part


def _thought_signature(call: Mapping[str, Any]) -> str | None:
    """A call's `extra_content.google.thought_signature`, as Gemini's OpenAI endpoint puts it."""
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    return signature if isinstance(signature, str) else None


def _function_response(message: Message, names: Mapping[str, str], provider: str) -> dict[str, Any]:
    """A tool result as a `functionResponse` part, named after the call it answers."""
    call_id = message.tool_call_id or ""
    name = names.get(call_id)
    if name is None:
        raise _refused(provider, "a tool message's tool_call_id matches no earlier tool call")
    response: dict[str, Any] = {"name": name, "response": _result(message.content)}
    gemini_id = _id_for_gemini(call_id)
    if gemini_id is not None:
        response["id"] = gemini_id
    return {"functionResponse": response}


def _result(content: str) -> dict[str, Any]:
    """A tool's result as Gemini's `response` object: the content if it is a JSON object, else
    `{"result": content}`."""
    try:
        parsed = json.loads(content)
    except (ValueError, RecursionError):
        parsed = None
    return parsed if isinstance(parsed, dict) else {"result": content}


def minted_id(response_id: str | None, index: int) -> str:
    """The id of a call Gemini sent without one: the response id (when it is a short token)
    and the call's place in the answer, so the same answer gets the same ids whole or streamed,
    and ids do not repeat across turns."""
    if (
        response_id
        and len(response_id) <= _MAX_RESPONSE_ID
        and all(c.isascii() and (c.isalnum() or c in "-_") for c in response_id)
    ):
        return f"{MINTED_ID_PREFIX}{response_id}-{index}"
    return f"{MINTED_ID_PREFIX}{index}"


def _id_for_gemini(call_id: str) -> str | None:
    """The id to send back with a call and its result: none for an id minted here."""
    return None if call_id.startswith(MINTED_ID_PREFIX) else call_id


def _declaration(tool: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI function tool as a `functionDeclaration`."""
    function = tool["function"]
    out: dict[str, Any] = {"name": function["name"]}
    description = function.get("description")
    if isinstance(description, str) and description:
        out["description"] = description
    parameters = function.get("parameters")
    if parameters:  # (none, or an empty object: a function without parameters)
        out["parametersJsonSchema"] = parameters
    return out


def _calling_config(choice: Any) -> dict[str, Any]:
    """`tool_choice` as a `functionCallingConfig`."""
    if isinstance(choice, str):
        return {"mode": TOOL_CHOICE_MODES[choice]}
    return {"mode": "ANY", "allowedFunctionNames": [choice["function"]["name"]]}


def _generation_config(request: ChatRequest) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if request.max_tokens is not None:
        config["maxOutputTokens"] = request.max_tokens
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.stop:
        config["stopSequences"] = list(request.stop)
    if request.seed is not None:
        config["seed"] = request.seed
    if request.json_schema is not None:
        config["responseMimeType"] = "application/json"
        schema = request.json_schema.get("schema")
        if schema is not None:
            config["responseJsonSchema"] = schema
    elif request.json_output:
        config["responseMimeType"] = "application/json"
    if request.reasoning_effort is not None:
        config["thinkingConfig"] = thinking_config(request.reasoning_effort)
    for key, value in request.passthrough:  # (store, metadata: no-ops here)
        if key == "frequency_penalty":
            config["frequencyPenalty"] = value
        elif key == "presence_penalty":
            config["presencePenalty"] = value
    return config


def thinking_config(effort: str) -> dict[str, Any]:
    """`reasoning_effort` as a `thinkingConfig` (`THINKING_BUDGETS`)."""
    budget = THINKING_BUDGETS[effort]
    if budget == 0:
        return {"thinkingBudget": 0}
    return {"thinkingBudget": budget, "includeThoughts": True}


def model_path(base_url: str, upstream_model: str, method: str) -> str:
    """`{base_url}/models/{model}:{method}`, the model id quoted as one path segment."""
    model = quote(upstream_model.removeprefix("models/"), safe="")
    return f"{base_url}/models/{model}:{method}"


def _prompt_estimate(request: ChatRequest) -> int:
    return sum(estimate_tokens(m.content) for m in request.messages)


def _count(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _usage(data: Any, fallback_in: int, fallback_out: int, searches: int = 0) -> Usage:
    """Usage from `usageMetadata`; thinking tokens are billed as output, so they count.
    `searches`: the grounding metadata's search queries."""
    if not isinstance(data, dict):
        return Usage(fallback_in, fallback_out, searches)
    prompt = _count(data, "promptTokenCount")
    answer, thoughts = _count(data, "candidatesTokenCount"), _count(data, "thoughtsTokenCount")
    if answer is None and thoughts is None:
        output = fallback_out
    else:
        output = (answer or 0) + (thoughts or 0)
    return Usage(fallback_in if prompt is None else prompt, output, searches)


def _grounding(candidate: Any) -> tuple[tuple[Source, ...], int | None]:
    """A candidate's Google Search grounding: the web pages of its `groundingChunks`
    (deduplicated by URI, in order) and the number of its `webSearchQueries` (None without
    grounding metadata). Off-shape entries are skipped."""
    metadata = candidate.get("groundingMetadata") if isinstance(candidate, dict) else None
    if not isinstance(metadata, dict):
        return (), None
    chunks = metadata.get("groundingChunks")
    webs = [c.get("web") for c in chunks if isinstance(c, dict)] if isinstance(chunks, list) else []
    sources = dedupe_sources(
        source(web.get("uri"), web.get("title")) for web in webs if isinstance(web, dict)
    )
    queries = metadata.get("webSearchQueries")
    return sources, len(queries) if isinstance(queries, list) else 0


@dataclass(frozen=True, slots=True)
class _FunctionCall:
    """A `functionCall` part as read: Gemini's id (if it sent one), the name, the arguments as
    JSON text, and the part's thought signature."""

    id: str | None
    name: str
    arguments: str
    signature: str | None


@dataclass(frozen=True, slots=True)
class _Chunk:
    """What one response (or one stream chunk) says, already checked for shape."""

    has_candidate: bool
    text: str
    thoughts: str
    calls: tuple[_FunctionCall, ...]
    finish: FinishReason | None
    usage: Any
    model: str
    response_id: str | None
    sources: tuple[Source, ...] = ()  # the pages Google Search grounded the answer in
    searches: int | None = None  # its search queries (None: no grounding metadata)


def _in_band_error(data: Mapping[str, Any], provider: str) -> ProviderError:
    """An `{"error": {...}}` body delivered with a 2xx status, classified by its own code."""
    err = data["error"] if isinstance(data["error"], dict) else {}
    code = err.get("code")
    status = code if isinstance(code, int) and not isinstance(code, bool) and code >= 400 else 502
    return error_for_status(provider, status, {}, _error_bytes(err))


def _error_bytes(err: Mapping[str, Any]) -> bytes:
    """The in-band error as a JSON body, for `error_for_status()` to read its identifiers."""
    return json.dumps({"error": err}, ensure_ascii=False).encode("utf-8")


def _malformed(provider: str) -> ProviderMalformed:
    return ProviderMalformed(f"{provider}: response is not a Gemini response", provider=provider)


def _parse(data: Any, provider: str) -> _Chunk:
    """Read one `GenerateContentResponse`; raises for errors, refusals and off-shape bodies."""
    if not isinstance(data, dict):
        raise _malformed(provider)
    if "error" in data and "candidates" not in data:
        raise _in_band_error(data, provider)
    candidates = data.get("candidates") or []
    if not isinstance(candidates, list):
        raise _malformed(provider)
    if not candidates:
        _check_prompt_feedback(data.get("promptFeedback"), provider)
    try:
        if candidates:
            text, thoughts, calls, finish = _candidate(candidates[0])
        else:
            text, thoughts, calls, finish = "", "", (), None
    except (KeyError, IndexError, TypeError, AttributeError):
        raise _malformed(provider) from None
    model, response_id = data.get("modelVersion"), data.get("responseId")
    sources, searches = _grounding(candidates[0]) if candidates else ((), None)
    return _Chunk(
        has_candidate=bool(candidates),
        text=text,
        thoughts=thoughts,
        calls=calls,
        finish=finish,
        usage=data.get("usageMetadata"),
        model=model if isinstance(model, str) else "",
        response_id=response_id if isinstance(response_id, str) else None,
        sources=sources,
        searches=searches,
    )


def _check_prompt_feedback(feedback: Any, provider: str) -> None:
    """A prompt blocked before any candidate is a content-policy refusal of the caller's payload."""
    if isinstance(feedback, dict) and feedback.get("blockReason"):
        raise ProviderRejected(
            f"{provider}: prompt blocked by the provider's safety filter",
            provider=provider,
            upstream_status=400,
            reason="content_policy",
        )


def _candidate(
    candidate: Any,
) -> tuple[str, str, tuple[_FunctionCall, ...], FinishReason | None]:
    """One candidate's answer text, thought text, function calls and mapped finish reason."""
    content = candidate.get("content") or {}
    parts = content.get("parts") or []
    if not isinstance(parts, list):
        raise TypeError
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[_FunctionCall] = []
    for part in parts:
        call = part.get("functionCall")
        if call is not None:
            calls.append(_read_call(call, part.get("thoughtSignature")))
            continue
        text = part.get("text")
        if text is None:
            continue
        if not isinstance(text, str):
            raise TypeError
        (thoughts if part.get("thought") is True else texts).append(text)
    reason = candidate.get("finishReason")
    if reason is not None and not isinstance(reason, str):
        raise TypeError
    finish = _FINISH.get(reason, "stop") if reason else None
    return "".join(texts), "".join(thoughts), tuple(calls), finish


def _read_call(call: Any, signature: Any) -> _FunctionCall:
    """A `functionCall` object (and its part's `thoughtSignature`), checked."""
    name, args, call_id = call.get("name"), call.get("args"), call.get("id")
    if args is None:  # (a function without parameters)
        args = {}
    if not (
        isinstance(name, str)
        and name
        and isinstance(args, dict)
        and (call_id is None or isinstance(call_id, str))
        and (signature is None or isinstance(signature, str))
    ):
        raise TypeError
    arguments = json.dumps(args, ensure_ascii=False, separators=(",", ":"))
    return _FunctionCall(call_id or None, name, arguments, signature or None)


def _tool_call(call: _FunctionCall, index: int, response_id: str | None) -> ToolCall:
    """A function call as OpenAI's tool call (`index`: its place in the answer)."""
    extra: tuple[tuple[str, Any], ...] = ()
    if call.signature is not None:
        extra = (("extra_content", {"google": {"thought_signature": call.signature}}),)
    return ToolCall(call.id or minted_id(response_id, index), call.name, call.arguments, extra)


def _kept(calls: tuple[_FunctionCall, ...], request: ChatRequest) -> tuple[_FunctionCall, ...]:
    """The calls returned: all, or with `parallel_tool_calls: false` the first."""
    return calls[:1] if request.option("parallel_tool_calls") is False else calls


def from_wire(data: Any, request: ChatRequest, provider: str) -> Completion:
    """A `Completion` from a `generateContent` JSON body; anything off-shape is malformed."""
    chunk = _parse(data, provider)
    if not chunk.has_candidate:
        raise ProviderMalformed(f"{provider}: response has no candidates", provider=provider)
    calls = tuple(
        _tool_call(call, i, chunk.response_id) for i, call in enumerate(_kept(chunk.calls, request))
    )
    finish = chunk.finish or "stop"
    if calls and finish == "stop":
        finish = "tool_calls"
    said = chunk.text + chunk.thoughts + "".join(c.arguments for c in calls)
    return Completion(
        text=chunk.text,
        finish_reason=finish,
        usage=_usage(
            chunk.usage, _prompt_estimate(request), estimate_tokens(said), chunk.searches or 0
        ),
        response_model=chunk.model,
        response_id=chunk.response_id,
        tool_calls=calls,
        reasoning=chunk.thoughts,
        sources=chunk.sources,
    )


def embeddings_to_wire(
    texts: Sequence[str], request: EmbeddingRequest, upstream_model: str
) -> dict[str, Any]:
    """The JSON body of a `batchEmbedContents` call for `texts` (at most `EMBED_BATCH`)."""
    name = "models/" + upstream_model.removeprefix("models/")
    size = {} if request.dimensions is None else {"outputDimensionality": request.dimensions}
    return {
        "requests": [
            {"model": name, "content": {"parts": [{"text": text}]}, **size} for text in texts
        ]
    }


def embeddings_from_wire(
    data: Any, texts: Sequence[str], request: EmbeddingRequest, provider: str
) -> tuple[tuple[tuple[float, ...], ...], int]:
    """The vectors for `texts` from a `batchEmbedContents` body, and its prompt tokens (Gemini's
    count, or an estimate); anything off-shape is malformed."""
    if not isinstance(data, dict):
        raise _malformed(provider)
    if "error" in data and "embeddings" not in data:
        raise _in_band_error(data, provider)
    embeddings = data.get("embeddings")
    if not isinstance(embeddings, list) or not all(isinstance(e, dict) for e in embeddings):
        raise _malformed(provider)
    raw = [e.get("values") for e in embeddings]
    vectors = checked_vectors(raw, len(texts), request.dimensions, provider)
    usage = data.get("usageMetadata")
    counted = _count(usage, "promptTokenCount") if isinstance(usage, dict) else None
    if counted is None:
        counted = sum(estimate_tokens(text) for text in texts)
    return vectors, counted


def batches(texts: Sequence[str], size: int = EMBED_BATCH) -> list[Sequence[str]]:
    """`texts` in consecutive runs of at most `size`, in order."""
    return [texts[i : i + size] for i in range(0, len(texts), size)]


class GeminiStream:
    """One stream's reading: each chunk's events (`read`), then its terminal event (`end`).

    Gemini sends each function call whole in one chunk: it becomes one `ToolCallDelta` with
    its index, id, name and all of its arguments. Thought parts are `ReasoningDelta`s.
    """

    __slots__ = (
        "_calls",
        "_finish",
        "_model",
        "_one_call",
        "_out_chars",
        "_provider",
        "_request",
        "_response_id",
        "_searches",
        "_usage",
    )

    def __init__(self, request: ChatRequest, provider: str) -> None:
        self._request = request
        self._provider = provider
        self._one_call = request.option("parallel_tool_calls") is False
        self._calls = 0
        self._finish: FinishReason | None = None
        self._usage: Any = None
        self._model = ""
        self._response_id: str | None = None
        self._out_chars = 0
        self._searches = 0  # the search queries of the latest grounding metadata

    def read(self, data: Any) -> list[StreamEvent]:
        """The events of one chunk (a `GenerateContentResponse`); raises as `from_wire` does."""
        chunk = _parse(data, self._provider)
        self._model = chunk.model or self._model
        self._response_id = chunk.response_id or self._response_id
        if chunk.usage is not None:
            self._usage = chunk.usage
        if chunk.finish is not None:
            self._finish = chunk.finish
        if chunk.searches is not None:
            self._searches = chunk.searches
        events: list[StreamEvent] = []
        if chunk.thoughts:
            self._out_chars += len(chunk.thoughts)
            events.append(ReasoningDelta(chunk.thoughts))
        if chunk.text:
            self._out_chars += len(chunk.text)
            events.append(TextDelta(chunk.text))
        for call in chunk.calls:
            if self._one_call and self._calls:
                break
            tool = _tool_call(call, self._calls, self._response_id)
            self._out_chars += len(tool.arguments)
            events.append(
                ToolCallDelta(self._calls, tool.id, tool.name, tool.arguments, tool.extra)
            )
            self._calls += 1
        return events

    def end(self) -> StreamEnd:
        """The terminal event, once the stream is over; raises if no chunk said it finished."""
        if self._finish is None:
            raise StreamTruncated(
                f"{self._provider}: stream ended without a finishReason", provider=self._provider
            )
        finish: FinishReason = self._finish
        if self._calls and finish == "stop":
            finish = "tool_calls"
        out_estimate = max(1, self._out_chars // 4) if self._out_chars else 0
        return StreamEnd(
            finish_reason=finish,
            usage=_usage(
                self._usage, _prompt_estimate(self._request), out_estimate, self._searches
            ),
            response_model=self._model,
            response_id=self._response_id,
        )


class GeminiProvider:
    """Speaks `POST {base_url}/models/{model}:generateContent` with an `x-goog-api-key`."""

    protocol = "gemini"

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
        self._base_url = base_url.rstrip("/")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            headers["x-goog-api-key"] = api_key.reveal()
        self._headers: Mapping[str, str] = headers
        self._stream_headers: Mapping[str, str] = dict(headers, Accept="text/event-stream")
        self._targets: dict[tuple[str, bool], HttpTarget] = {}  # per model: heads rendered once
        self._embed_targets: dict[str, HttpTarget] = {}

    def _target(self, model: str, stream: bool) -> HttpTarget:
        target = self._targets.get((model, stream))
        if target is None:
            if stream:
                url = model_path(self._base_url, model, "streamGenerateContent") + "?alt=sse"
                target = HttpTarget(url, self._stream_headers)
            else:
                url = model_path(self._base_url, model, "generateContent")
                target = HttpTarget(url, self._headers)
            self._targets[(model, stream)] = target
        return target

    def __repr__(self) -> str:
        return f"GeminiProvider(name={self.name!r})"

    def _embed_target(self, model: str) -> HttpTarget:
        target = self._embed_targets.get(model)
        if target is None:
            url = model_path(self._base_url, model, "batchEmbedContents")
            target = self._embed_targets[model] = HttpTarget(url, self._headers)
        return target

    async def embed(self, call: EmbeddingCall, /) -> Embeddings:
        """`batchEmbedContents`, in consecutive calls of at most `EMBED_BATCH` inputs."""
        target = self._embed_target(call.upstream_model)
        request = call.request
        vectors: list[tuple[float, ...]] = []
        tokens = 0
        for texts in batches(request.inputs):
            body = embeddings_to_wire(texts, request, call.upstream_model)
            async with send(self._session, self.name, target, body, call) as response:
                data = await read_json(response, self.name, call)
            got, counted = embeddings_from_wire(data, texts, request, self.name)
            vectors.extend(got)
            tokens += counted
        return Embeddings(tuple(vectors), Usage(tokens, 0), call.upstream_model)

    async def complete(self, call: ProviderCall, /) -> Completion:
        target = self._target(call.upstream_model, stream=False)
        body = to_wire(call.request, self.name)
        async with send(self._session, self.name, target, body, call) as response:
            data = await read_json(response, self.name, call)
        return from_wire(data, call.request, self.name)

    async def stream(self, call: ProviderCall, /) -> AsyncIterator[StreamEvent]:
        target = self._target(call.upstream_model, stream=True)
        body = to_wire(call.request, self.name)
        async with send(self._session, self.name, target, body, call) as response:
            state = GeminiStream(call.request, self.name)
            reader = EventReader(self.name, self._malformed)
            async for event in iter_sse(response, self.name, call):
                data = reader.object(event)
                if data is None:
                    continue
                for out in state.read(data):
                    yield out
            yield state.end()
