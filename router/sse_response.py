"""The SSE response: common headers, and the HTTP head sent with the first event, not alone."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


class EventStream(web.StreamResponse):
    """A `StreamResponse` whose status line and headers leave in the first event's write.

    aiohttp sends a StreamResponse's head at `prepare()` unless the class opts into buffering
    (as its `Response` does); one write instead of two puts the first token a syscall and a
    packet sooner. Should aiohttp drop the switch, the head simply goes out at `prepare()`.
    """

    _send_headers_immediately = False


def event_stream(headers: Mapping[str, str]) -> EventStream:
    """An SSE response with the common headers and `headers`."""
    return EventStream(headers={**SSE_HEADERS, **headers})
