"""A fake Anthropic Messages API server; bodies and events are built from `anthropic` types."""

from __future__ import annotations

import asyncio
import itertools
import json
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
    Reset,
    StallStream,
    Status,
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


def message_json(model: str, answer: Answer) -> str:
    return Message.model_validate(
        {
            "id": MESSAGE_ID,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": answer.text}],
            "stop_reason": STOP_REASONS.get(answer.finish_reason, answer.finish_reason),
            "stop_sequence": None,
            "usage": usage(answer.input_tokens, answer.output_tokens),
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


def block_start() -> str:
    return RawContentBlockStartEvent.model_validate(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    ).model_dump_json(exclude_unset=True)


def text_delta(text: str) -> str:
    return RawContentBlockDeltaEvent.model_validate(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
    ).model_dump_json(exclude_unset=True)


def block_stop() -> str:
    return RawContentBlockStopEvent.model_validate(
        {"type": "content_block_stop", "index": 0}
    ).model_dump_json(exclude_unset=True)


def message_delta(stop_reason: str, output_tokens: int) -> str:
    return RawMessageDeltaEvent.model_validate(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        }
    ).model_dump_json(exclude_unset=True)


def message_stop() -> str:
    return RawMessageStopEvent.model_validate({"type": "message_stop"}).model_dump_json(
        exclude_unset=True
    )


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
