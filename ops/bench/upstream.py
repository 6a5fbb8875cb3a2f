"""A fake OpenAI-compatible upstream for the benchmark, in its own process.

    python -m ops.bench.upstream --latency-ms 50 --chunks 16 --chunk-ms 0

Binds 127.0.0.1 port 0 and prints one JSON line `{"event": "bench.listening", "port": N}`.
`POST /v1/chat/completions` answers a whole `chat.completion`, or, with `"stream": true`, an
SSE stream of N content chunks, a finish chunk, a usage chunk and `data: [DONE]`. A request that
asks for `response_format` (a fusion judge) gets JSON findings as its content. `POST /v1/traces`
is an OTLP/HTTP sink (200, empty body) for the "telemetry on" phase. Responses are prepared
once, and the body is never JSON-parsed (a byte search finds `stream` and `response_format`),
so the fake stays cheap next to what it serves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
from collections.abc import Sequence

from aiohttp import web

_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
_ERROR = json.dumps(
    {"error": {"message": "injected fault", "type": "server_error", "code": None, "param": None}}
).encode()


def completion(content: str) -> bytes:
    """A whole chat completion carrying `content`."""
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 0,
            "model": "bench-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20},
        },
        separators=(",", ":"),
    ).encode()


def sse_chunk(
    text: str | None, finish: str | None = None, usage: tuple[int, int] | None = None
) -> bytes:
    """One `data:` event of a chat-completion stream."""
    choices: list[dict[str, object]] = []
    if text is not None or finish is not None:
        delta = {"content": text} if text else {}
        choices.append({"index": 0, "delta": delta, "finish_reason": finish})
    data: dict[str, object] = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "bench-model",
        "choices": choices,
    }
    if usage is not None:
        data["usage"] = {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": sum(usage),
        }
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


ANSWER = completion("Hello from the benchmark upstream. " * 2)
FINDINGS = completion(
    json.dumps(
        {
            "agreements": ["all answers greet"],
            "contradictions": [],
            "errors": {},
            "ranking": ["A1", "A2", "A3"],
        }
    )
)


def make_app(latency_s: float, chunks: int, chunk_s: float, error_rate: float) -> web.Application:
    """The fake's application."""
    stream_chunks = [sse_chunk(f"w{i} ") for i in range(chunks)]
    tail = (
        sse_chunk(None, finish="stop") + sse_chunk(None, usage=(12, chunks)) + b"data: [DONE]\n\n"
    )

    async def chat(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        if latency_s:
            await asyncio.sleep(latency_s)
        if error_rate and random.random() < error_rate:
            return web.Response(status=500, body=_ERROR, content_type="application/json")
        if _STREAM_TRUE.search(raw) is None:
            body = FINDINGS if b'"response_format"' in raw else ANSWER
            return web.Response(body=body, content_type="application/json")
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        for i, chunk in enumerate(stream_chunks):
            if i and chunk_s:
                await asyncio.sleep(chunk_s)
            await response.write(chunk)
        await response.write(tail)
        await response.write_eof()
        return response

    async def traces(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> None:
    """Listen, print the bound port as one JSON line, and run until killed."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    print(json.dumps({"event": "bench.listening", "port": runner.addresses[0][1]}), flush=True)
    await asyncio.Event().wait()


def run(coroutine: object) -> None:
    """Run on uvloop where available (as `serve` does), else asyncio."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)  # type: ignore[arg-type]
    else:
        uvloop.run(coroutine)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible upstream.")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before answering")
    parser.add_argument("--chunks", type=int, default=16, help="content chunks per stream")
    parser.add_argument("--chunk-ms", type=float, default=0.0, help="delay between chunks")
    parser.add_argument("--error-rate", type=float, default=0.0, help="fraction of 500 answers")
    args = parser.parse_args(argv)
    app = make_app(args.latency_ms / 1000, args.chunks, args.chunk_ms / 1000, args.error_rate)
    run(serve(app))
    return 0


if __name__ == "__main__":
    sys.exit(main())
