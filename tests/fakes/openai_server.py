"""A fake OpenAI chat-completions server; responses are built from the official `openai` types.

It serves `POST /v1/embeddings` too: each input's vector is `fake_vector` of the model and the
text (float32 values, `dimensions` long, else `FAKE_DIMENSIONS`), written as numbers or, for
`encoding_format: base64`, as the API writes them (little-endian float32, base64). `Answer`
answers (its `input_tokens` as the usage); `Status`, `Hang`, `Delay`, `Reset`, `Malformed`
and `OddShape` (its `body`) act as for chat.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import time

from aiohttp import web
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.fakes.script import (
    Answer,
    Call,
    CutStream,
    Delay,
    Detailed,
    Endless,
    Flaky,
    Hang,
    Huge,
    InBandError,
    Malformed,
    MalformedEvent,
    OddShape,
    Reasoned,
    Redirect,
    Researched,
    Reset,
    StallStream,
    Status,
    ToolCalls,
    Wall,
)

FAKE_DIMENSIONS = 8


def fake_vector(model: str, text: str, dimensions: int = FAKE_DIMENSIONS) -> list[float]:
    """The fake's vector for `text`: float32 values in [-1, 1) from a hash of model and text."""
    raw = hashlib.shake_256(f"{model}\x1f{text}".encode()).digest(4 * dimensions)
    ints = struct.unpack(f"<{dimensions}i", raw)
    return list(
        struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *(i / 2**31 for i in ints)))
    )


def embeddings_json(model: str, body: dict[str, object], answer: Answer) -> str:
    """A whole embeddings answer, as the SDK's `CreateEmbeddingResponse` (vectors in base64
    when the request asked for it, as the API writes them)."""
    texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
    size = body.get("dimensions") or FAKE_DIMENSIONS
    data = CreateEmbeddingResponse.model_validate(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": fake_vector(model, t, size)}
                for i, t in enumerate(texts)
            ],
            "model": model,
            "usage": {"prompt_tokens": answer.input_tokens, "total_tokens": answer.input_tokens},
        }
    ).model_dump(mode="json")
    if body.get("encoding_format") == "base64":
        for item in data["data"]:
            vector = item["embedding"]
            packed = struct.pack(f"<{len(vector)}f", *vector)
            item["embedding"] = base64.b64encode(packed).decode()
    return json.dumps(data)


def _completion(model: str, message: dict[str, object], finish: str, usage: tuple[int, int]) -> str:
    """A whole answer, as the SDK's `ChatCompletion`."""
    return ChatCompletion.model_validate(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": usage[0],
                "completion_tokens": usage[1],
                "total_tokens": sum(usage),
            },
        }
    ).model_dump_json(exclude_unset=True)


def completion_json(model: str, answer: Answer) -> str:
    return _completion(
        model,
        {"role": "assistant", "content": answer.text},
        answer.finish_reason,
        (answer.input_tokens, answer.output_tokens),
    )


def tool_calls_json(model: str, behaviour: ToolCalls, reasoning: str | None = None) -> str:
    """A whole answer calling tools."""
    calls = [
        {"id": i, "type": "function", "function": {"name": n, "arguments": a}}
        for i, n, a in behaviour.calls
    ]
    message = {"role": "assistant", "content": behaviour.text or None, "tool_calls": calls}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return _completion(model, message, "tool_calls", (20, 9))


def reasoned_json(model: str, behaviour: Reasoned) -> str:
    """A whole answer with the model's reasoning in `reasoning_content` (DeepSeek's field)."""
    then = behaviour.then
    if isinstance(then, ToolCalls):
        return tool_calls_json(model, then, behaviour.thinking)
    message = {"role": "assistant", "content": then.text, "reasoning_content": behaviour.thinking}
    return _completion(model, message, then.finish_reason, (then.input_tokens, then.output_tokens))


def researched_json(model: str, behaviour: Researched) -> str:
    """A whole answer of a search model: the text, and a `url_citation` annotation per source
    (repeats included), each spanning the text."""
    annotations = [
        {
            "type": "url_citation",
            "url_citation": {
                "url": url,
                "title": title,
                "start_index": 0,
                "end_index": len(behaviour.text),
            },
        }
        for url, title in behaviour.sources
    ]
    message = {"role": "assistant", "content": behaviour.text, "annotations": annotations}
    usage = (behaviour.input_tokens, behaviour.output_tokens)
    return _completion(model, message, "stop", usage)


def chunk_data(model: str, choices: list[dict[str, object]]) -> dict[str, object]:
    """A `chat.completion.chunk` object holding `choices`."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
    }


def delta_chunk(
    model: str, delta: dict[str, object], finish: str | None = None, logprobs: object = None
) -> str:
    """One chunk of the first choice, as the SDK's `ChatCompletionChunk`."""
    choice: dict[str, object] = {"index": 0, "delta": delta, "finish_reason": finish}
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return ChatCompletionChunk.model_validate(chunk_data(model, [choice])).model_dump_json(
        exclude_unset=True
    )


def reasoning_chunks(model: str, behaviour: Reasoned) -> list[str]:
    """The reasoning of a streamed answer: `reasoning_content` deltas in `pieces` fragments."""
    text = behaviour.thinking
    size = max(1, -(-len(text) // behaviour.pieces))
    return [
        delta_chunk(model, {"reasoning_content": text[start : start + size]})
        for start in range(0, len(text), size)
    ]


def token_logprobs(text: str) -> dict[str, object]:
    """A choice's `logprobs` for `text`, one entry per word (a fixed, made-up probability)."""
    words = [w if i == 0 else " " + w for i, w in enumerate(text.split(" "))]
    return {
        "content": [
            {"token": w, "logprob": -0.5, "bytes": list(w.encode()), "top_logprobs": []}
            for w in words
        ],
        "refusal": None,
    }


def detailed_json(model: str, behaviour: Detailed) -> str:
    """A whole answer with `n` choices, their log probabilities and a service tier."""
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
            **({"logprobs": token_logprobs(text)} if behaviour.logprobs else {}),
        }
        for i, text in enumerate(behaviour.texts)
    ]
    data: dict[str, object] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "system_fingerprint": "fp_fake",
        "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
    }
    if behaviour.service_tier is not None:
        data["service_tier"] = behaviour.service_tier
    return ChatCompletion.model_validate(data).model_dump_json(exclude_unset=True)


def detailed_chunks(model: str, behaviour: Detailed) -> list[str]:
    """The first text streamed word by word, each chunk with its token's log probability."""
    out = []
    for entry in token_logprobs(behaviour.texts[0])["content"]:  # type: ignore[union-attr]
        logprobs = {"content": [entry], "refusal": None} if behaviour.logprobs else None
        out.append(delta_chunk(model, {"content": entry["token"]}, logprobs=logprobs))  # type: ignore[index]
    out.append(chunk_json(model, text="", finish="stop"))
    out.append(chunk_json(model, usage=(5, 4)))
    return out


def tool_call_chunks(model: str, behaviour: ToolCalls) -> list[str]:
    """A streamed answer calling tools, as the SDK's `ChatCompletionChunk`s: per call, a first
    delta with its id and name, then its arguments in `pieces` fragments; then the finish."""

    def chunk(delta: dict[str, object], finish: str | None = None) -> str:
        if behaviour.indexed:
            return delta_chunk(model, delta, finish)
        for call in delta.get("tool_calls") or []:  # type: ignore[attr-defined]
            call.pop("index")  # (the SDK's types require `index`: sent raw)
        return json.dumps(
            chunk_data(model, [{"index": 0, "delta": delta, "finish_reason": finish}])
        )

    out = [chunk({"role": "assistant", "content": behaviour.text})] if behaviour.text else []
    for index, (call_id, name, arguments) in enumerate(behaviour.calls):
        first = {"index": index, "id": call_id, "type": "function"}
        out.append(chunk({"tool_calls": [{**first, "function": {"name": name, "arguments": ""}}]}))
        size = max(1, -(-len(arguments) // behaviour.pieces))
        for start in range(0, len(arguments), size):
            piece = arguments[start : start + size]
            out.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    out.append(chunk({}, finish="tool_calls"))
    return out


def chunk_json(
    model: str,
    *,
    text: str | None = None,
    finish: str | None = None,
    usage: tuple[int, int] | None = None,
) -> str:
    choices: list[dict[str, object]] = []
    if text is not None or finish is not None:
        delta = {"content": text} if text is not None else {}
        choices.append({"index": 0, "delta": delta, "finish_reason": finish})
    data = chunk_data(model, choices)
    if usage is not None:
        data["usage"] = {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": sum(usage),
        }
    return ChatCompletionChunk.model_validate(data).model_dump_json(exclude_unset=True)


def error_json(status: Status) -> str:
    return json.dumps(
        {
            "error": {
                "message": status.message,
                "type": "invalid_request_error" if status.status < 500 else "server_error",
                "code": status.code,
                "param": None,
            }
        }
    )


async def _sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    return response


async def _send(response: web.StreamResponse, data: str) -> None:
    await response.write(f"data: {data}\n\n".encode())


def make_app(wall: Wall) -> web.Application:
    """The fake's aiohttp app; every call is recorded on `wall`."""

    async def chat(request: web.Request) -> web.StreamResponse:
        wall.active += 1
        try:
            return await _chat(request)
        except asyncio.CancelledError:
            wall.cancelled += 1
            raise
        finally:
            wall.active -= 1

    async def _chat(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return web.Response(
                status=400,
                text=error_json(Status(400, "bad json")),
                content_type="application/json",
            )
        model = str(body.get("model"))
        stream = bool(body.get("stream"))
        embedding = request.path.endswith("/embeddings")
        wall.record(
            Call(
                "openai",
                request.path,
                model,
                stream,
                dict(request.headers),
                body,
                Wall.now(),
                request.query_string,
            )
        )
        options = body.get("web_search_options") if isinstance(body, dict) else None
        if options is not None and not isinstance(options, dict):
            bad = Status(400, "Invalid type for 'web_search_options': expected an object")
            return web.Response(status=400, text=error_json(bad), content_type="application/json")
        behaviour = wall.next_for(model)
        response = web.StreamResponse()  # (prepared by a stream that goes on in another shape)
        if isinstance(behaviour, Flaky):
            behaviour = behaviour.pick()
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
            return web.Response(
                status=behaviour.status,
                text=error_json(behaviour),
                content_type="application/json",
                headers=headers,
            )
        if embedding:
            if isinstance(behaviour, Malformed):
                return web.Response(status=200, text="{not json", content_type="application/json")
            if isinstance(behaviour, OddShape):
                return web.Response(
                    status=200, text=behaviour.body, content_type="application/json"
                )
            assert isinstance(behaviour, Answer), behaviour
            return web.Response(
                status=200,
                text=embeddings_json(model, body, behaviour),
                content_type="application/json",
            )
        if isinstance(behaviour, Redirect):
            return web.Response(
                status=behaviour.status,
                headers={"Location": behaviour.location},
                text="moved",
            )
        if isinstance(behaviour, Endless):
            response = await _sse(request)
            sent = 0
            try:
                while sent < behaviour.limit:
                    if behaviour.events:
                        line = f"data: {chunk_json(model, text='x' * behaviour.chunk_bytes)}\n\n"
                    else:
                        line = f": {'x' * behaviour.chunk_bytes}\n"
                    await response.write(line.encode())
                    sent += len(line)
            except ConnectionResetError:
                pass  # the reader gave up, as it should
            return response
        if isinstance(behaviour, Detailed):
            if not stream:
                return web.Response(
                    status=200,
                    text=detailed_json(model, behaviour),
                    content_type="application/json",
                )
            response = await _sse(request)
            for data in detailed_chunks(model, behaviour):
                await _send(response, data)
            await _send(response, "[DONE]")
            return response
        if isinstance(behaviour, Reasoned):
            if not stream:
                return web.Response(
                    status=200,
                    text=reasoned_json(model, behaviour),
                    content_type="application/json",
                )
            response = await _sse(request)
            for data in reasoning_chunks(model, behaviour):
                await _send(response, data)
            behaviour = behaviour.then  # then the answer, streamed as below
        if isinstance(behaviour, ToolCalls):
            if not stream:
                return web.Response(
                    status=200,
                    text=tool_calls_json(model, behaviour),
                    content_type="application/json",
                )
            if not response.prepared:
                response = await _sse(request)
            for data in tool_call_chunks(model, behaviour):
                await _send(response, data)
            await _send(response, "[DONE]")
            return response
        if isinstance(behaviour, Researched):
            if not stream:
                return web.Response(
                    status=200,
                    text=researched_json(model, behaviour),
                    content_type="application/json",
                )
            behaviour = Answer(  # (streamed: the text, without annotations)
                behaviour.text, behaviour.input_tokens, behaviour.output_tokens
            )
        if isinstance(behaviour, OddShape):
            if not stream:
                return web.Response(
                    status=200, text=behaviour.body, content_type="application/json"
                )
            response = await _sse(request)
            await _send(response, chunk_json(model, text=behaviour.text))
            for data in behaviour.events:
                await _send(response, data)
            await _send(response, "[DONE]")
            return response
        if isinstance(behaviour, MalformedEvent):
            response = await _sse(request)
            answer = behaviour.answer
            for i, word in enumerate(answer.text.split(" ")):
                if i == behaviour.at:
                    for _ in range(behaviour.repeat):
                        await _send(response, "{not json")
                await _send(response, chunk_json(model, text=word if i == 0 else " " + word))
            await _send(response, chunk_json(model, text="", finish=answer.finish_reason))
            await _send(
                response, chunk_json(model, usage=(answer.input_tokens, answer.output_tokens))
            )
            await _send(response, "[DONE]")
            return response
        if isinstance(behaviour, Huge):
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            try:
                await response.write(b'{"pad": "')
                block = b"x" * 65536
                for _ in range(behaviour.size // len(block)):
                    await response.write(block)
                await response.write(b'"}')
            except ConnectionResetError:
                pass  # the reader stopped at its cap and hung up, as it should
            return response
        if isinstance(behaviour, Malformed):
            if stream:
                response = await _sse(request)
                await _send(response, "{not json")
                return response
            return web.Response(status=200, text="{not json", content_type="application/json")
        if isinstance(behaviour, Answer):
            if not stream:
                return web.Response(
                    status=200,
                    text=completion_json(model, behaviour),
                    content_type="application/json",
                )
            if not response.prepared:
                response = await _sse(request)
            words = behaviour.text.split(" ")
            for i, word in enumerate(words):
                if i and behaviour.chunk_delay:
                    await asyncio.sleep(behaviour.chunk_delay)
                await _send(response, chunk_json(model, text=word if i == 0 else " " + word))
            await _send(response, chunk_json(model, text="", finish=behaviour.finish_reason))
            await _send(
                response, chunk_json(model, usage=(behaviour.input_tokens, behaviour.output_tokens))
            )
            if behaviour.done_marker:
                await _send(response, "[DONE]")
            return response
        if isinstance(behaviour, CutStream | StallStream | InBandError):
            response = await _sse(request)
            for word in behaviour.text.split(" ")[: behaviour.after]:
                await _send(response, chunk_json(model, text=word + " "))
            if isinstance(behaviour, StallStream):
                await asyncio.sleep(behaviour.seconds)
            elif isinstance(behaviour, InBandError):
                await _send(response, json.dumps({"error": {"message": "overloaded", "code": 502}}))
            assert request.transport is not None
            if isinstance(behaviour, CutStream) and behaviour.abort:
                await asyncio.sleep(0.1)  # let the chunks reach the reader before the reset
                request.transport.abort()
            else:
                request.transport.close()
            return response
        raise AssertionError(behaviour)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/embeddings", chat)
    return app
