"""A fake Gemini API server; responses are built from the official `google-genai` types.

Serves `POST /v1beta/models/{model}:generateContent` and
`:streamGenerateContent` (SSE with CRLF framing, as the real API sends), and
acts out the scripted behaviours of `tests.fakes.script`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from google.genai import types

from tests.fakes.script import (
    Answer,
    Call,
    CutStream,
    Delay,
    Hang,
    InBandError,
    Malformed,
    Reset,
    StallStream,
    Status,
    Wall,
)

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


def response_dict(
    model: str,
    *,
    text: str | None = None,
    finish: str | None = None,
    usage: tuple[int, int | None] | None = None,
) -> dict[str, Any]:
    """One `GenerateContentResponse` (a whole answer or a stream chunk) as wire JSON."""
    candidate = types.Candidate(
        content=types.Content(role="model", parts=[types.Part(text=text)])
        if text is not None
        else None,
        finish_reason=_FINISH.get(finish, types.FinishReason.STOP) if finish is not None else None,
        index=0,
    )
    usage_metadata = None
    if usage is not None:
        usage_metadata = types.GenerateContentResponseUsageMetadata(
            prompt_token_count=usage[0],
            candidates_token_count=usage[1],
            total_token_count=usage[0] + (usage[1] or 0),
        )
    response = types.GenerateContentResponse(
        candidates=[candidate],
        usage_metadata=usage_metadata,
        model_version=model,
        response_id="fake-response-id",
    )
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
        if method not in ("generateContent", "streamGenerateContent") or not model:
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
