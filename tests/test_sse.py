"""SSE parsing (`providers.base.iter_sse`) over a real connection, whatever the framing and however
the bytes are cut: every event comes out whole, in order, with its name and its data lines."""

from __future__ import annotations

import asyncio
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.providers.base import SseEvent, iter_sse
from router.types import ChatRequest, Message, ProviderCall
from router.upstream_http import UpstreamClient, render_request
from tests.test_upstream_http import raw_server, read_request

CALL = ProviderCall(ChatRequest("m", (Message("user", "hi"),)), "m")


async def chunked_pieces(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers each request with the pieces its JSON body lists, one chunk and one write each."""
    while request := await read_request(reader):
        pieces = json.loads(request.split(b"\r\n\r\n", 1)[1])
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in pieces:  # bytes carried as latin-1 text
            data = piece.encode("latin-1")
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await writer.drain()
            await asyncio.sleep(0)
        writer.write(b"0\r\n\r\n")
        await writer.drain()


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["", "message_start", "delta"]),  # the event name ("" = none given)
        st.lists(
            st.text(
                st.characters(exclude_characters="\r\n", exclude_categories=("Cs",)), max_size=12
            ),
            min_size=1,
            max_size=3,
        ),
        st.booleans(),  # a comment line before it
    ),
    min_size=1,
    max_size=6,
)


def render(events: list[tuple[str, list[str], bool]], newline: str) -> str:
    out = []
    for name, lines, comment in events:
        if comment:
            out.append(f": keep-alive{newline}")
        if name:
            out.append(f"event: {name}{newline}")
        out.extend(f"data: {line}{newline}" for line in lines)
        out.append(newline)
    return "".join(out)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EVENTS, st.sampled_from(["\n", "\r\n"]), st.lists(st.integers(1, 40), max_size=8))
def test_events_come_out_whole_however_the_bytes_are_cut(
    events: list[tuple[str, list[str], bool]], newline: str, cuts: list[int]
) -> None:
    raw = render(events, newline).encode()  # cut as bytes: a cut may split a character
    pieces, at = [], 0
    for size in cuts:
        if at < len(raw):
            pieces.append(raw[at : at + size].decode("latin-1"))
            at += size
    pieces.append(raw[at:].decode("latin-1"))

    async def run() -> list[SseEvent]:
        async with raw_server(chunked_pieces) as (endpoint, _), UpstreamClient() as client:
            data = render_request(endpoint, json.dumps([p for p in pieces if p]).encode(), None)
            response = await client.post(endpoint, data, connect_timeout=1, within=5)
            try:
                return [event async for event in iter_sse(response, "p", CALL)]
            finally:
                response.release()

    got = asyncio.run(run())
    assert got == [SseEvent(name or "message", "\n".join(lines)) for name, lines, _ in events]
