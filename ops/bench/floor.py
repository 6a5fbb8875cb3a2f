"""The floor: a bare aiohttp pass-through proxy, in its own process.

    python -m ops.bench.floor --upstream http://127.0.0.1:PORT

No parsing and no policy: `POST /v1/chat/completions` forwards the body bytes to the upstream on
one pooled `ClientSession` and streams the response back as it arrives. It is the least any
aiohttp-based proxy can cost, measured beside the sidecar in the same run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator, Sequence

import aiohttp
from aiohttp import web

from ops.bench.upstream import run, serve

SESSION = web.AppKey("session", aiohttp.ClientSession)


def make_app(upstream: str) -> web.Application:
    """The pass-through application."""
    target = upstream.rstrip("/") + "/v1/chat/completions"

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        app[SESSION] = aiohttp.ClientSession(connector=connector)
        yield
        await app[SESSION].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        async with request.app[SESSION].post(target, data=body, headers=headers) as upstream_r:
            response = web.StreamResponse(
                status=upstream_r.status,
                headers={"Content-Type": upstream_r.headers.get("Content-Type", "")},
            )
            if upstream_r.content_length is not None:
                response.content_length = upstream_r.content_length
            await response.prepare(request)
            async for data in upstream_r.content.iter_any():
                await response.write(data)
            await response.write_eof()
            return response

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/v1/chat/completions", forward)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A bare aiohttp pass-through proxy.")
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    args = parser.parse_args(argv)
    run(serve(make_app(args.upstream)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
