"""Adapter for the OpenAI chat-completions wire format (OpenAI, OpenRouter, DeepSeek, vLLM, Ollama…),
and its embeddings endpoint (`POST {base_url}/embeddings`).

Web search (`ChatRequest.web_search`, set by fusion): the body gets `web_search_options: {}`,
Chat Completions' switch for it. Real OpenAI answers it only with a search model upstream
(`gpt-5-search-api`, `gpt-4o-search-preview`: the catalog's `upstream_id`); other models refuse
the field. `blocked_domains` cannot be applied (Chat Completions has no domain filter) and
`max_uses` has no counterpart either. Sources come back as the message's `annotations` of type
`url_citation` (deduplicated by URL, in order), on whole answers only (a streamed answer's
annotations are not read). OpenAI bills per search call and reports no count: a call with web
search on counts 1 search, unless its usage says `server_tool_use.web_search_requests`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from router.errors import ProviderMalformed, ProviderUnavailable, StreamTruncated
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
    LogprobsDelta,
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
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "eos": "stop",
}


def _part(part: Part) -> dict[str, Any]:
    if isinstance(part, str):
        return {"type": "text", "text": part}
    image: dict[str, Any] = {"url": part.url}
    if part.detail is not None:
        image["detail"] = part.detail
    return {"type": "image_url", "image_url": image}


def _message(message: Message) -> dict[str, Any]:
    """One message; parts stay parts (their boundaries are the caller's). Anthropic's thinking
    blocks are left out: their signatures mean nothing to another vendor."""
    out: dict[str, Any] = {
        "role": message.role,
        "content": [_part(part) for part in message.parts] if message.parts else message.content,
    }
    if message.name is not None:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = list(message.tool_calls)
        if not message.parts:
            out["content"] = message.content or None
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.reasoning is not None:  # (DeepSeek wants it back within a tool-calling turn)
        out["reasoning_content"] = message.reasoning
    return out


def to_wire(request: ChatRequest, upstream_model: str, *, stream: bool) -> dict[str, Any]:
    """The JSON body of a chat-completions call."""
    body: dict[str, Any] = {
        "model": upstream_model,
        "messages": [_message(m) for m in request.messages],
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    if request.max_tokens is not None:  # under the caller's name: reasoning models take only
        body[request.max_tokens_field] = request.max_tokens  # max_completion_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop"] = list(request.stop)
    if request.seed is not None:
        body["seed"] = request.seed
    if request.user is not None:
        body["user"] = request.user
    if request.json_schema is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": request.json_schema}
    elif request.json_output:
        body["response_format"] = {"type": "json_object"}
    if request.reasoning_effort is not None:
        body["reasoning_effort"] = request.reasoning_effort
    if request.web_search is not None:  # (no domain filter, no limit: Chat Completions has none)
        body["web_search_options"] = {}
    body.update(request.passthrough)  # as the caller sent them
    return body


def _usage(data: Any, fallback_in: int, fallback_out: int, request: ChatRequest) -> Usage:
    searches = _web_searches(data, request)
    if isinstance(data, dict):
        pt, ct = data.get("prompt_tokens"), data.get("completion_tokens")
        if isinstance(pt, int) and isinstance(ct, int) and pt >= 0 and ct >= 0:
            return Usage(pt, ct, searches)
    return Usage(fallback_in, fallback_out, searches)


def _web_searches(usage: Any, request: ChatRequest) -> int:
    """The searches a call ran: the usage's `server_tool_use.web_search_requests` where it
    says, else 1 with web search on (OpenAI bills per search call), else none."""
    tool_use = usage.get("server_tool_use") if isinstance(usage, dict) else None
    count = tool_use.get("web_search_requests") if isinstance(tool_use, dict) else None
    if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
        return count
    return 1 if request.web_search is not None else 0


def _sources(message: Mapping[str, Any]) -> tuple[Source, ...]:
    """The pages a message cites: its `url_citation` annotations, by URL, in order (entries
    of other types, or off-shape, are left out)."""
    annotations = message.get("annotations")
    if not isinstance(annotations, list):
        return ()
    return dedupe_sources(
        source(citation.get("url"), citation.get("title"))
        for entry in annotations
        if isinstance(entry, dict) and entry.get("type") == "url_citation"
        for citation in (entry.get("url_citation"),)
        if isinstance(citation, dict)
    )


def _prompt_estimate(request: ChatRequest) -> int:
    return sum(estimate_tokens(m.content) for m in request.messages)


def from_wire(data: Any, request: ChatRequest, provider: str) -> Completion:
    """A `Completion` from a chat-completion JSON body; anything off-shape is malformed."""
    try:
        if "error" in data and "choices" not in data:
            raise ProviderUnavailable(f"{provider}: error in a 200 response", provider=provider)
        choice = data["choices"][0]
        message = choice["message"]
        text = message.get("content") or ""
        if not isinstance(text, str):
            raise TypeError
        calls = tuple(
            ToolCall(c["id"], c["function"]["name"], c["function"]["arguments"], _extra(c))
            for c in message.get("tool_calls") or ()
        )
        if not all(isinstance(v, str) for c in calls for v in (c.id, c.name, c.arguments)):
            raise TypeError
        reasoning = _reasoning(message)
        more = data["choices"][1:]
        if not all(isinstance(c, dict) for c in more):
            raise TypeError
        finish = _FINISH.get(choice.get("finish_reason") or "stop", "stop")
        model = data.get("model")
        response_id = data.get("id")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise ProviderMalformed(
            f"{provider}: response is not a chat completion", provider=provider
        ) from None
    return Completion(
        text=text,
        finish_reason=finish,
        usage=_usage(data.get("usage"), _prompt_estimate(request), estimate_tokens(text), request),
        response_model=model if isinstance(model, str) else "",
        response_id=response_id if isinstance(response_id, str) else None,
        tool_calls=calls,
        reasoning=reasoning,
        logprobs=choice.get("logprobs"),
        more_choices=tuple(more),
        echo=_echo(data),
        sources=_sources(message),
    )


_ECHOED = ("service_tier", "system_fingerprint")


def _echo(data: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The response's `service_tier` and `system_fingerprint`, passed on to the client."""
    return tuple((k, data[k]) for k in _ECHOED if isinstance(data.get(k), str))


def _reasoning(message: Mapping[str, Any]) -> str:
    """The reasoning text of a message or delta: `reasoning_content` (DeepSeek, vLLM) or
    `reasoning` (OpenRouter, Ollama)."""
    text = message.get("reasoning_content")
    if text is None:
        text = message.get("reasoning")
    if text is not None and not isinstance(text, str):
        raise TypeError("reasoning is not a string")
    return text or ""


def _tool_deltas(
    delta: Mapping[str, Any], provider: str, last: ToolCallDelta | None
) -> list[ToolCallDelta]:
    """The tool-call pieces of a stream chunk's delta (OpenAI's shape, checked). Some
    OpenAI-compatible servers leave `index` out: a piece with an `id` then starts the next
    call, one without continues the call before it (`last`)."""
    out: list[ToolCallDelta] = []
    for piece in delta.get("tool_calls") or ():
        function = piece.get("function") if isinstance(piece, dict) else None
        if not isinstance(function, dict):
            function = {} if isinstance(piece, dict) and "function" not in piece else None
        if function is None:
            raise ProviderMalformed(
                f"{provider}: malformed tool call in a stream", provider=provider
            )
        index, call_id, name = piece.get("index"), piece.get("id"), function.get("name")
        arguments = function.get("arguments") or ""
        if index is None:
            previous = out[-1] if out else last
            if previous is None:
                index = 0
            else:
                index = previous.index + 1 if call_id is not None else previous.index
        if not (
            isinstance(index, int)
            and (call_id is None or isinstance(call_id, str))
            and (name is None or isinstance(name, str))
            and isinstance(arguments, str)
        ):
            raise ProviderMalformed(
                f"{provider}: malformed tool call in a stream", provider=provider
            )
        out.append(ToolCallDelta(index, call_id, name, arguments, _extra(piece)))
    return out


_CALL_FIELDS = frozenset({"index", "id", "type", "function"})


def _extra(call: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A tool call's fields beyond OpenAI's own (Gemini's `extra_content` carries a thought
    signature the next turn must send back): passed on as they came."""
    return tuple((k, v) for k, v in call.items() if k not in _CALL_FIELDS)


def embeddings_to_wire(request: EmbeddingRequest, upstream_model: str) -> dict[str, Any]:
    """The JSON body of an embeddings call: the inputs always as a list; `dimensions` and
    `user` as sent; `encoding_format: base64` passed on (the float default is not sent)."""
    body: dict[str, Any] = {"model": upstream_model, "input": list(request.inputs)}
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    if request.encoding_format == "base64":
        body["encoding_format"] = "base64"
    if request.user is not None:
        body["user"] = request.user
    return body


def embeddings_from_wire(data: Any, request: EmbeddingRequest, provider: str) -> Embeddings:
    """`Embeddings` from a `CreateEmbeddingResponse` body (vectors as numbers or base64, put in
    `index` order); anything off-shape is malformed."""
    try:
        if "error" in data and "data" not in data:
            raise ProviderUnavailable(f"{provider}: error in a 200 response", provider=provider)
        items = data["data"]
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise TypeError
        indexes = [item.get("index") for item in items]
        if all(isinstance(i, int) and not isinstance(i, bool) for i in indexes):
            if sorted(indexes) != list(range(len(items))):
                raise TypeError
            items = sorted(items, key=lambda item: item["index"])
        raw = [item["embedding"] for item in items]
        model = data.get("model")
    except (KeyError, TypeError, AttributeError):
        raise ProviderMalformed(
            f"{provider}: response is not a list of embeddings", provider=provider
        ) from None
    vectors = checked_vectors(raw, len(request.inputs), request.dimensions, provider)
    return Embeddings(
        vectors=vectors,
        usage=Usage(_prompt_tokens(data.get("usage"), request), 0),
        response_model=model if isinstance(model, str) else "",
    )


def _prompt_tokens(usage: Any, request: EmbeddingRequest) -> int:
    """`usage.prompt_tokens`, or an estimate when the upstream reports none."""
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0:
        return tokens
    return sum(estimate_tokens(text) for text in request.inputs)


class OpenAIProvider:
    """Speaks `POST {base_url}/chat/completions` (and `/embeddings`) with a bearer key."""

    protocol = "openai"

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
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key.reveal()}"
        self._target = HttpTarget(f"{base_url}/chat/completions", headers)
        stream_headers = dict(headers, Accept="text/event-stream")
        self._stream_target = HttpTarget(self._target.url, stream_headers)
        self._embed_target = HttpTarget(f"{base_url}/embeddings", headers)

    def __repr__(self) -> str:
        return f"OpenAIProvider(name={self.name!r})"

    async def complete(self, call: ProviderCall, /) -> Completion:
        payload = to_wire(call.request, call.upstream_model, stream=False)
        async with send(self._session, self.name, self._target, payload, call) as response:
            data = await read_json(response, self.name, call)
        return from_wire(data, call.request, self.name)

    async def embed(self, call: EmbeddingCall, /) -> Embeddings:
        payload = embeddings_to_wire(call.request, call.upstream_model)
        async with send(self._session, self.name, self._embed_target, payload, call) as response:
            data = await read_json(response, self.name, call)
        return embeddings_from_wire(data, call.request, self.name)

    async def stream(self, call: ProviderCall, /) -> AsyncIterator[StreamEvent]:
        payload = to_wire(call.request, call.upstream_model, stream=True)
        async with send(self._session, self.name, self._stream_target, payload, call) as response:
            finish: FinishReason | None = None
            usage_data: Any = None
            model, response_id = "", None
            out_chars = 0
            last_call: ToolCallDelta | None = None  # (for servers that number no call)
            reader = EventReader(self.name, self._malformed)
            async for event in iter_sse(response, self.name, call):
                if event.data.strip() == "[DONE]":
                    response.expect_end()
                    break
                chunk = reader.object(event)
                if chunk is None:
                    continue
                if "error" in chunk:
                    err = chunk["error"] if isinstance(chunk["error"], dict) else {}
                    code = err.get("code")
                    status = code if isinstance(code, int) and code >= 400 else 502
                    raise error_for_status(self.name, status, {}, event.data.encode())
                model = chunk.get("model") or model
                response_id = chunk.get("id") or response_id
                if chunk.get("usage"):
                    usage_data = chunk["usage"]
                choices = chunk.get("choices") or []
                if not isinstance(choices, list):
                    raise ProviderMalformed(
                        f"{self.name}: malformed stream chunk", provider=self.name
                    )
                for choice in choices[:1]:
                    delta = choice.get("delta") or {}
                    if "reasoning_content" in delta or "reasoning" in delta:
                        try:
                            thought = _reasoning(delta)
                        except TypeError:
                            raise ProviderMalformed(
                                f"{self.name}: malformed reasoning in a stream",
                                provider=self.name,
                            ) from None
                        if thought:
                            out_chars += len(thought)
                            yield ReasoningDelta(thought)
                    text = delta.get("content")
                    if isinstance(text, str) and text:
                        out_chars += len(text)
                        yield TextDelta(text)
                    if "tool_calls" in delta:
                        for piece in _tool_deltas(delta, self.name, last_call):
                            out_chars += len(piece.arguments)
                            last_call = piece
                            yield piece
                    if choice.get("logprobs"):
                        yield LogprobsDelta(choice["logprobs"])
                    if choice.get("finish_reason"):
                        finish = _FINISH.get(choice["finish_reason"], "stop")
            else:
                if finish is None:
                    raise StreamTruncated(
                        f"{self.name}: stream ended without [DONE] or finish_reason",
                        provider=self.name,
                    )
            yield StreamEnd(
                finish_reason=finish or "stop",
                usage=_usage(
                    usage_data,
                    _prompt_estimate(call.request),
                    (out_chars + 3) // 4,
                    call.request,
                ),
                response_model=str(model or ""),
                response_id=response_id if isinstance(response_id, str) else None,
            )
