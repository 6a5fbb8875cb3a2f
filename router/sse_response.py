"""The SSE response: common headers; the HTTP head leaves at `prepare()`, ahead of the first event.

Sending the head alone costs one more write, but the client parses it while the first event is
still being translated, and the first token reaches it sooner (measured: `ops.bench.ab --stream`,
about 25 µs at the median against holding the head back for the first event's write).
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def event_stream(headers: Mapping[str, str]) -> web.StreamResponse:
    """An SSE response with the common headers and `headers`."""
    return web.StreamResponse(headers={**SSE_HEADERS, **headers})
