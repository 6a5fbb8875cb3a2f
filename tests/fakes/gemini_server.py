"""A fake Gemini API server; responses are built from the official `google-genai` types.

Serves `POST /v1beta/models/{model}:generateContent` and
`:streamGenerateContent` (SSE with CRLF framing, as the real API sends), and
`:batchEmbedContents` (at most 100 requests, each naming the URL's model; each text's vector is
`openai_server.fake_vector`, `outputDimensionality` long), and acts out the scripted behaviours
of `tests.fakes.script`. A request body goes through the
`google-genai` types too (unknown fields, bad base64, roles, function responses that do not
answer the calls before them): what the real API refuses, the fake refuses with a 400.

How Gemini shows the scripted answers: `ToolCalls` are `functionCall` parts (with the
script's id as the call's `id`, none for an empty id, as Gemini 2.5 sends none), each whole
in one chunk; streamed, the answer's parts (the text word by word, then the calls) go out in
`pieces` chunks. `Reasoned` is thought parts (`thought: true`; streamed, the thinking in
`pieces` chunks) before its `then`, its `signature` as the `thoughtSignature` of the first
function call (or of the last part, for an answer without calls), and the thinking's word
count as `thoughtsTokenCount`. `Researched` is its text grounded in Google Search: the last
(or only) chunk's candidate carries `groundingMetadata` with a `webSearchQueries` entry per
search and a `groundingChunks[].web` per source (`uri`, `title`, `domain`), as
`google-genai`'s `GroundingMetadata`; a `googleSearch` tool with `excludeDomains` is refused,
as the Gemini API refuses it (Vertex AI only).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from typing import Any, TypeVar

import pydantic
from aiohttp import web
from google.genai import types

from tests.fakes.openai_server import FAKE_DIMENSIONS, fake_vector
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

T = TypeVar("T")

_FINISH = {
    "stop": types.FinishReason.STOP,
    "length": types.FinishReason.MAX_TOKENS,
    "content_filter": types.FinishReason.SAFETY,
}

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


RESPONSE_ID = "fake-response-id"


def response_dict(
    model: str,
    *,
    text: str | None = None,
    finish: str | None = None,
    usage: tuple[int, int | None] | None = None,
    parts: list[types.Part] | None = None,
    thoughts: int | None = None,
    grounding: types.GroundingMetadata | None = None,
) -> dict[str, Any]:
    """One `GenerateContentResponse` (a whole answer or a stream chunk) as wire JSON: `text`,
    or any `parts`; `thoughts` is the usage's `thoughtsTokenCount`."""
    if parts is None and text is not None:
        parts = [types.Part(text=text)]
    candidate = types.Candidate(
        content=types.Content(role="model", parts=parts) if parts else None,
        finish_reason=_FINISH.get(finish, types.FinishReason.STOP) if finish is not None else None,
        index=0,
        grounding_metadata=grounding,
    )
    usage_metadata = None
    if usage is not None:
        usage_metadata = types.GenerateContentResponseUsageMetadata(
            prompt_token_count=usage[0],
            candidates_token_count=usage[1],
            thoughts_token_count=thoughts,
            total_token_count=usage[0] + (usage[1] or 0) + (thoughts or 0),
        )
    response = types.GenerateContentResponse(
        candidates=[candidate],
        usage_metadata=usage_metadata,
        model_version=model,
        response_id=RESPONSE_ID,
    )
    return response.model_dump(mode="json", by_alias=True, exclude_none=True)


def _words(text: str) -> list[str]:
    """A text in stream pieces: word by word, each but the first with its space."""
    return [word if i == 0 else " " + word for i, word in enumerate(text.split(" "))]


def _cut(items: Sequence[T], pieces: int) -> list[Sequence[T]]:
    """`items` (a text, a list of parts) in at most `pieces` non-empty runs of about equal
    length, in order."""
    n = max(1, min(pieces, len(items)))
    bounds = [len(items) * i // n for i in range(n + 1)]
    return [items[a:b] for a, b in itertools.pairwise(bounds) if b > a] or [items]


def call_part(call_id: str, name: str, arguments: str) -> types.Part:
    """A `functionCall` part; an empty `call_id` is a call without an id (as 2.5 sends), empty
    `arguments` a call without `args` (a function without parameters)."""
    args = json.loads(arguments) if arguments else None
    return types.Part(function_call=types.FunctionCall(id=call_id or None, name=name, args=args))


def answer_chunks(
    behaviour: Answer | ToolCalls, *, stream: bool, signature: str | None = None
) -> list[list[types.Part]]:
    """An answer's parts in chunks (one chunk when whole); `signature` (a thought signature)
    on its first function call, or on its last part if it has none."""
    text = behaviour.text
    texts = (_words(text) if stream else [text]) if text or isinstance(behaviour, Answer) else []
    parts = [types.Part(text=t) for t in texts]
    if isinstance(behaviour, ToolCalls):
        parts += [call_part(*call) for call in behaviour.calls]
    if signature is not None:
        signed = next((i for i, p in enumerate(parts) if p.function_call), len(parts) - 1)
        parts[signed] = parts[signed].model_copy(update={"thought_signature": signature.encode()})
    if not stream:
        return [parts]
    if isinstance(behaviour, Answer):
        return [[part] for part in parts]
    return [list(run) for run in _cut(parts, behaviour.pieces)]


def reasoned_chunks(behaviour: Reasoned, *, stream: bool) -> list[list[types.Part]]:
    """Thought parts, then the answer's parts, signed (see `answer_chunks`)."""
    thinking = _cut(behaviour.thinking, behaviour.pieces) if stream else [behaviour.thinking]
    thoughts = [[types.Part(text=str(t), thought=True)] for t in thinking]
    return thoughts + answer_chunks(behaviour.then, stream=stream, signature=behaviour.signature)


def grounding_metadata(behaviour: Researched) -> types.GroundingMetadata:
    """The Google Search grounding of a researched answer: a query per search, a web chunk per
    source (repeats included)."""
    return types.GroundingMetadata(
        web_search_queries=[f"{behaviour.text[:30]} {n}" for n in range(behaviour.searches)],
        grounding_chunks=[
            types.GroundingChunk(
                web=types.GroundingChunkWeb(
                    uri=url, title=title, domain=url.split("/")[2] if "//" in url else None
                )
            )
            for url, title in behaviour.sources
        ],
        search_entry_point=types.SearchEntryPoint(rendered_content="<div>fake</div>"),
    )


def _checked(kind: type[pydantic.BaseModel], value: Any) -> Any:
    """`value` read as `kind` from its JSON, as the API reads it (base64 bytes included)."""
    return kind.model_validate_json(json.dumps(value))


_REQUEST_FIELDS = {
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "generationConfig",
    "safetySettings",
    "cachedContent",
}


def request_problem(body: Any) -> str | None:
    """What the real API would refuse in this `generateContent` body, if anything."""
    if not isinstance(body, dict):
        return "Invalid JSON payload received."
    unknown = sorted(set(body) - _REQUEST_FIELDS)
    if unknown:
        return f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.'
    try:
        contents = [_checked(types.Content, c) for c in body.get("contents") or []]
        if "systemInstruction" in body:
            _checked(types.Content, body["systemInstruction"])
        for tool in body.get("tools") or []:
            if isinstance(tool, dict) and (tool.get("googleSearch") or {}).get("excludeDomains"):
                return "excludeDomains parameter is not supported in Gemini API."
            _checked(types.Tool, tool)
        if "toolConfig" in body:
            _checked(types.ToolConfig, body["toolConfig"])
        config = _checked(types.GenerationConfig, body.get("generationConfig") or {})
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        return f"Invalid JSON payload received. {where}: {first['msg']}"
    if not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    if any(c.role not in ("user", "model") for c in contents):
        return "Please use a valid role: user, model."
    for i, content in enumerate(contents):
        answers = [p.function_response for p in content.parts or () if p.function_response]
        if answers and not all(r.name and r.response is not None for r in answers):
            return "* GenerateContentRequest.contents: function_response needs name and response"
        before = contents[i - 1] if i else None
        asked = [p for p in (before.parts or ()) if p.function_call] if before else []
        if (answers or asked) and len(asked) != len(answers):
            return (
                "Please ensure that the number of function response parts is equal to the "
                "number of function call parts of the function call turn."
            )
    if config.response_json_schema is not None and config.response_mime_type != (
        "application/json"
    ):
        return "responseJsonSchema needs responseMimeType application/json"
    thinking = config.thinking_config
    if thinking and thinking.thinking_budget is not None and thinking.thinking_level:
        return "thinking_budget and thinking_level are not supported together."
    return None


EMBED_BATCH_CAP = 100
_EMBED_REQUEST_FIELDS = {"model", "content", "taskType", "title", "outputDimensionality"}


def embed_problem(body: Any, model: str) -> str | None:
    """What the real API would refuse in this `batchEmbedContents` body, if anything."""
    if not isinstance(body, dict) or set(body) != {"requests"}:
        return "Invalid JSON payload received."
    requests = body["requests"]
    if not isinstance(requests, list) or not requests:
        return "* BatchEmbedContentsRequest.requests: requests is not specified"
    if len(requests) > EMBED_BATCH_CAP:
        return "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch"
    for i, one in enumerate(requests):
        if not isinstance(one, dict) or not set(one) <= _EMBED_REQUEST_FIELDS:
            return f"Invalid JSON payload received. Unknown name in requests[{i}]."
        if one.get("model") != f"models/{model}":
            return (
                f"* BatchEmbedContentsRequest.requests[{i}].model: the model must be the same "
                "as the one in the URL"
            )
        try:
            content = _checked(types.Content, one.get("content"))
        except pydantic.ValidationError:
            return f"Invalid JSON payload received. requests[{i}].content"
        if not content.parts or not all(p.text for p in content.parts):
            return f"* BatchEmbedContentsRequest.requests[{i}].content: text is empty"
        size = one.get("outputDimensionality")
        if size is not None and (not isinstance(size, int) or size < 1):
            return f"* requests[{i}].outputDimensionality must be positive"
    return None


def embed_dict(model: str, body: dict[str, Any], answer: Answer) -> dict[str, Any]:
    """A `batchEmbedContents` answer, as the SDK's `EmbedContentResponse`."""
    embeddings = [
        types.ContentEmbedding(
            values=fake_vector(
                model,
                "".join(p["text"] for p in one["content"]["parts"]),
                one.get("outputDimensionality") or FAKE_DIMENSIONS,
            )
        )
        for one in body["requests"]
    ]
    usage = types.UsageMetadata(
        prompt_token_count=answer.input_tokens, total_token_count=answer.input_tokens
    )
    response = types.EmbedContentResponse(embeddings=embeddings, usage_metadata=usage)
    return response.model_dump(mode="json", by_alias=True, exclude_none=True)


def error_dict(
    status: int, message: str, reason: str | None = None, retry_after: str | None = None
) -> dict[str, Any]:
    """A Google-API error body: `{"error": {"code", "message", "status", "details"}}`."""
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": _STATUS_NAMES.get(status, "UNKNOWN"),
    }
    details: list[dict[str, Any]] = []
    if reason:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
            }
        )
    if retry_after:
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after}s"}
        )
    if details:
        error["details"] = details
    return {"error": error}


def _json_response(status: int, data: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(data), content_type="application/json", headers=headers
    )


async def _sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    return response


async def _send(response: web.StreamResponse, data: dict[str, Any] | str) -> None:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    await response.write(f"data: {payload}\r\n\r\n".encode())


def make_app(wall: Wall) -> web.Application:
    """The fake's aiohttp app; every call is recorded on `wall`."""

    async def models(request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["tail"].rpartition(":")
        if method not in ("generateContent", "streamGenerateContent", "batchEmbedContents"):
            model = ""
        if not model:
            return _json_response(404, error_dict(404, f"unknown method {method!r}"))
        stream = method == "streamGenerateContent"
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return _json_response(400, error_dict(400, "Invalid JSON payload received."))
        wall.record(
            Call(
                "gemini",
                request.path,
                model,
                stream,
                dict(request.headers),
                body,
                Wall.now(),
                request.query_string,
            )
        )
        embedding = method == "batchEmbedContents"
        problem = embed_problem(body, model) if embedding else request_problem(body)
        if problem:
            return _json_response(400, error_dict(400, problem))
        behaviour = wall.next_for(model)
        if isinstance(behaviour, Delay):
            await asyncio.sleep(behaviour.seconds)
            behaviour = behaviour.then
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
            data = error_dict(
                behaviour.status, behaviour.message, behaviour.code, behaviour.retry_after
            )
            return _json_response(behaviour.status, data, headers)
        if embedding and not isinstance(behaviour, Malformed):
            assert isinstance(behaviour, Answer), behaviour
            return _json_response(200, embed_dict(model, body, behaviour))
        if isinstance(behaviour, Malformed):
            if stream:
                response = await _sse(request)
                await _send(response, "{not json")
                return response
            return web.Response(status=200, text="{not json", content_type="application/json")
        if isinstance(behaviour, Answer):
            usage = (behaviour.input_tokens, behaviour.output_tokens)
            if not stream:
                data = response_dict(
                    model, text=behaviour.text, finish=behaviour.finish_reason, usage=usage
                )
                return _json_response(200, data)
            response = await _sse(request)
            words = behaviour.text.split(" ")
            for i, word in enumerate(words):
                if i and behaviour.chunk_delay:
                    await asyncio.sleep(behaviour.chunk_delay)
                last = i == len(words) - 1
                await _send(
                    response,
                    response_dict(
                        model,
                        text=word if i == 0 else " " + word,
                        finish=behaviour.finish_reason if last else None,
                        usage=usage if last else (behaviour.input_tokens, None),
                    ),
                )
            return response
        if isinstance(behaviour, Researched):
            usage = (behaviour.input_tokens, behaviour.output_tokens)
            grounding = grounding_metadata(behaviour)
            if not stream:
                data = response_dict(
                    model, text=behaviour.text, finish="stop", usage=usage, grounding=grounding
                )
                return _json_response(200, data)
            response = await _sse(request)
            words = _words(behaviour.text)
            for i, word in enumerate(words):
                last = i == len(words) - 1
                await _send(
                    response,
                    response_dict(
                        model,
                        text=word,
                        finish="stop" if last else None,
                        usage=usage if last else (usage[0], None),
                        grounding=grounding if last else None,
                    ),
                )
            return response
        if isinstance(behaviour, ToolCalls | Reasoned):
            if isinstance(behaviour, Reasoned):
                chunks = reasoned_chunks(behaviour, stream=stream)
                thoughts = len(behaviour.thinking.split())
                then = behaviour.then
            else:
                chunks, thoughts, then = answer_chunks(behaviour, stream=stream), None, behaviour
            usage = (then.input_tokens, then.output_tokens) if isinstance(then, Answer) else (11, 7)
            finish = then.finish_reason if isinstance(then, Answer) else "stop"
            if not stream:
                parts = [part for chunk in chunks for part in chunk]
                data = response_dict(
                    model, parts=parts, finish=finish, usage=usage, thoughts=thoughts
                )
                return _json_response(200, data)
            response = await _sse(request)
            for i, parts in enumerate(chunks):
                last = i == len(chunks) - 1
                await _send(
                    response,
                    response_dict(
                        model,
                        parts=parts,
                        finish=finish if last else None,
                        usage=usage if last else (usage[0], None),
                        thoughts=thoughts if last else None,
                    ),
                )
            return response
        if isinstance(behaviour, CutStream | StallStream | InBandError):
            response = await _sse(request)
            for word in behaviour.text.split(" ")[: behaviour.after]:
                await _send(response, response_dict(model, text=word + " ", usage=(11, None)))
            if isinstance(behaviour, StallStream):
                await asyncio.sleep(behaviour.seconds)
            elif isinstance(behaviour, InBandError):
                await _send(response, error_dict(503, "overloaded"))
            assert request.transport is not None
            request.transport.close()
            return response
        raise AssertionError(behaviour)

    app = web.Application()
    app.router.add_post("/v1beta/models/{tail}", models)
    return app
