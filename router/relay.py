"""The one stream relay: a served stream's events to the client as SSE chunks, under the
request's deadline.

Routed streams and fusion's synthesis stream both go through `relay`. Before the response
started, the request's deadline is enforced by the attempts' clocks (each cut to it, down to
the socket); once it has started, `relay` bounds the rest, upstream reads and client writes
alike, by the same instant. A stream that fails, passes its deadline or is cut by a shutdown
ends with the dialect's in-band error event (the OpenAI SDK raises it as `APIError`), never a
truncated "success".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from aiohttp import web

from router.dialect import StreamWriter
from router.errors import DeadlineExceeded, ProviderError, RouterError, ShuttingDown
from router.types import StreamEnd, StreamEvent, TextDelta, Usage


async def relay(
    response: web.StreamResponse,
    first: StreamEvent,
    rest: AsyncIterator[StreamEvent],
    chunks: StreamWriter,
    deadline: float,
) -> StreamEnd | RouterError:
    """Write `first` and the `rest` of a stream as chunks until its end, then the finish chunk.

    `rest` raises a `ProviderError` when the stream fails (a cut, a stall, no terminal event).
    On a failure, or at `deadline` (a `time.monotonic()` instant), the in-band error event and
    the end of the body are written instead. Returns how the stream ended.
    """
    role_owed = True  # the role rides in the first text's delta; a stream with no text owes it
    loop = asyncio.get_running_loop()
    try:
        if time.monotonic() >= deadline:
            raise TimeoutError  # it passed while the stream was being opened
        async with asyncio.timeout(None) as clock:
            event = first
            while not isinstance(event, StreamEnd):
                await response.write(
                    chunks.event(event.text, role=role_owed)
                    if isinstance(event, TextDelta)
                    else chunks.piece(event, role=role_owed)
                )
                if role_owed:  # the first token is out: the clock is set now, off its path
                    role_owed = False
                    clock.reschedule(loop.time() + deadline - time.monotonic())
                event = await anext(rest)
    except ProviderError as exc:
        error: RouterError = exc
    except TimeoutError:
        error = DeadlineExceeded("the stream passed its deadline")
    except asyncio.CancelledError as exc:
        if not ShuttingDown.cut(exc):
            raise  # the client went away: nothing to tell it
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        error = ShuttingDown("the sidecar shut down before the stream ended")
    else:
        await response.write(
            (chunks.role() if role_owed else b"") + chunks.finish(event.finish_reason)
        )
        return event
    await response.write((chunks.role() if role_owed else b"") + chunks.failure(error))
    await response.write_eof()
    return error


async def finish(response: web.StreamResponse, last: bytes) -> None:
    """End a relayed stream that completed with its `last` bytes (`StreamWriter.done`)."""
    await response.write(last)
    await response.write_eof()


def known_text(text: str) -> tuple[StreamEvent, AsyncIterator[StreamEvent]]:
    """A stream of a text known whole (fusion's single or fallback answer): `first`, `rest`."""

    async def end() -> AsyncIterator[StreamEvent]:
        yield StreamEnd("stop", Usage(), "")

    return TextDelta(text), end()
