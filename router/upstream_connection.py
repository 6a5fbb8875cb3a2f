"""One pooled upstream HTTP/1.1 connection and the answer it carries: llhttp parsing, one lazy clock, back-pressure.

`_Connection` is the asyncio protocol `upstream_http.UpstreamClient` opens (through
`upstream_dial`) and pools per origin (`_OriginPool`, under the origin's connection cap); it
carries one request at a time and parses the answer with httptools (llhttp, as aiohttp's own
parser) into a `Response`, whose body is read as it arrives and stops the socket being read
while too much of it sits unread.

Each wait (for the head, for the body's next bytes) takes its clock as an argument, and a
connection keeps one lazy timer for all of them: a wait only moves the deadline the timer
checks when it fires, so a stream of many reads arms a timer about once per clock, not once
per read as `asyncio.timeout` around each read would.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from router.upstream_errors import BadResponse, Disconnected, TimedOut, UpstreamHttpError

if TYPE_CHECKING:  # the client imports this module; these are for annotations only
    from router.upstream_http import Origin, UpstreamClient

__all__ = ["Response"]

_PAUSE_ABOVE = 256 * 1024  # buffered body bytes above which the socket stops being read
_KEEP_IDLE_S = 15.0  # an idle pooled connection older than this is closed, not reused
_MAX_HEADER_BYTES = 64 * 1024
_STALE_WITHIN_S = 1.0  # a dropped keep-alive connection fails at once; later, it is a fault
_CLOCK_SLACK_S = 0.001  # uvloop's clock moves in whole milliseconds: due within one is due
# After a stream's terminal event the rest of the body is framing (the chunked terminator,
# usually a packet behind): released then, the connection reads that much for that long and
# goes back to the pool, instead of being closed and reopened by the next call.
_DRAIN_BYTES = 16 * 1024


def _keep_for(keep_alive: str) -> float:
    """How long an idle connection may be reused, from `Keep-Alive: timeout=N, max=M`: a
    second less than the server keeps it, so we never write into its closing (at most ours)."""
    for part in keep_alive.split(","):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "timeout":
            try:
                return max(0.0, min(_KEEP_IDLE_S, float(value) - 1.0))
            except ValueError:
                break
    return _KEEP_IDLE_S


class Response:
    """One answer: status and headers, then the body as it arrives."""

    __slots__ = (
        "_buffer",
        "_buffered",
        "_complete",
        "_connection",
        "_draining",
        "_end_expected",
        "_error",
        "_headers",
        "_raw_headers",
        "_waiter",
        "status",
    )

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.status = 0
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._headers: CIMultiDictProxy[str] | None = None
        self._buffer: deque[bytes] = deque()
        self._buffered = 0
        self._complete = False
        self._error: UpstreamHttpError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._end_expected = False
        self._draining = False

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """The answer's headers, decoded on first use (a 2xx answer's rarely are)."""
        if self._headers is None:
            headers: CIMultiDict[str] = CIMultiDict()
            for name, value in self._raw_headers:
                headers.add(name.decode("latin-1"), value.decode("latin-1"))
            self._headers = CIMultiDictProxy(headers)
        return self._headers

    # -- reading the body ------------------------------------------------------------

    def take(self) -> bytes:
        """Everything the network has delivered so far (b"" if nothing); raises a failure."""
        if self._buffer:
            data = self._buffer.popleft() if len(self._buffer) == 1 else b"".join(self._buffer)
            self._buffer.clear()
            self._buffered = 0
            self._connection.resume()
            return data
        if self._error is not None:
            raise self._error
        return b""

    @property
    def at_end(self) -> bool:
        """The whole body has arrived and been taken (never true for a failed one)."""
        return self._complete and not self._buffer and self._error is None

    async def read_some(self, within: float | None = None) -> bytes:
        """The next bytes of the body, waiting up to `within` seconds for them (`TimedOut`
        after that); b"" once the body is complete."""
        data = self.take()
        if data or self._complete:
            return data
        connection = self._connection
        self._waiter = connection.loop.create_future()
        if within is not None:
            connection.clock_until(connection.loop.time() + within)
        try:
            await self._waiter
        finally:
            self._waiter = None
            connection.waiting_until = None
        return self.take()

    def expect_end(self) -> None:
        """The caller has read what it needs (a stream's terminal event): what remains of the
        body should be framing only, so `release` may wait for it instead of closing."""
        self._end_expected = True

    def release(self) -> None:
        """Give the connection back for reuse (if the answer was read whole, or its end was
        expected and arrives within a moment) or close it."""
        self._connection.finish(self)

    # -- fed by the connection ----------------------------------------------------------

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._connection.waiting_until = None  # answered: a clock due now must not fail it
            self._waiter.set_result(None)

    def _feed(self, data: bytes) -> None:
        if self._draining:  # released: counted, not kept
            self._buffered += len(data)
            if self._buffered > _DRAIN_BYTES:
                self._connection.close()
            return
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered > _PAUSE_ABOVE:
            self._connection.pause()
        self._wake()

    def _end(self) -> None:
        self._complete = True
        self._wake()

    def _fail(self, error: UpstreamHttpError) -> None:
        if not self._complete:
            self._error = error
            self._complete = True
            self._wake()


class _Connection(asyncio.Protocol):
    """One keep-alive connection, carrying one request at a time."""

    def __init__(
        self,
        client: UpstreamClient,
        pool: _OriginPool,
        origin: Origin,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._client = client
        self.pool = pool  # holds one of its slots until closed (counted before connecting)
        self._holds_slot = True
        self.origin = origin
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._response: Response | None = None
        self._head_waiter: asyncio.Future[None] | None = None
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._headers_done = False
        self.keep_for = _KEEP_IDLE_S  # lowered by the server's `Keep-Alive: timeout=N`
        self._began = False  # a byte of the current answer arrived (an interim one's do not count)
        self._heard = False  # any byte at all arrived since the current request was written
        self._written_at = 0.0  # loop time the current request was written
        self._carried = False  # a request was written before the current one
        self._reused = False  # the current request went on a connection that had carried one
        self._until_close = False
        self._reusable = False
        self._paused = False
        self._drain_timer: asyncio.TimerHandle | None = None
        self.waiting_until: float | None = None  # the current wait's deadline (loop time)
        self._clock: asyncio.TimerHandle | None = None
        self._clock_at = 0.0

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None:  # bytes nobody asked for: the connection is unusable
            self.close()
            return
        self._began = self._heard = True
        if not self._headers_done:
            self._header_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._failed(BadResponse("invalid HTTP response: the upstream switched protocols"))
            return
        except httptools.HttpParserError as exc:
            self._failed(BadResponse(f"invalid HTTP response: {exc}"))
            return
        if not self._headers_done and self._header_bytes > _MAX_HEADER_BYTES:
            # checked per read, so a header that never ends costs at most the limit
            self._failed(BadResponse("invalid HTTP response: headers too large"))
        elif response._draining and response._complete and not self.closed:
            self._pool_again()  # a released answer's end arrived (nothing after it, or the parser raised)

    def connection_lost(self, exc: Exception | None) -> None:
        closed_by_us = self.closed
        self.closed = True
        self.transport = None
        self._free_slot()
        response = self._response
        if response is None:
            return
        if self._until_close and self._headers_done and exc is None and not closed_by_us:
            response._end()  # a body delimited by the server's orderly close is complete
            return
        # silent on reuse, at once: the server had dropped it while idle (later silence, such
        # as a generation cut after a minute, is the provider's fault, and is not sent again)
        stale = (
            self._reused
            and not self._heard
            and self.loop.time() - self._written_at < _STALE_WITHIN_S
        )
        self._failed(Disconnected("server disconnected", began=self._began, reused=stale))

    # -- httptools callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        response = self._response
        if response is not None and response._complete:  # bytes past the answer's end
            raise httptools.HttpParserError("data after the end of the response")

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._headers_done:  # after them: chunked trailers, ignored
            self._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self._response
        if response is None:
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer: the real one follows, on a fresh allowance
            self._raw_headers = []
            self._header_bytes = 0
            self._began = False
            return
        self._headers_done = True
        length = False
        coding: str | None = None
        for name, value in self._raw_headers:  # only what framing and reuse need, as bytes
            lowered = name.lower()
            if lowered == b"content-length":
                length = True
            elif lowered == b"transfer-encoding":
                coding = value.decode("latin-1")
            elif lowered == b"keep-alive":
                self.keep_for = _keep_for(value.decode("latin-1"))
        response.status = status
        response._raw_headers, self._raw_headers = self._raw_headers, []
        # as llhttp frames it: chunked only when it is the last coding; any other coding, or
        # neither a coding nor a length, runs until the server closes
        chunked = coding is not None and coding.rsplit(",", 1)[-1].strip().lower() == "chunked"
        delimited = chunked or (coding is None and length)
        self._until_close = not delimited and status not in (204, 304)
        self._reusable = self._parser.should_keep_alive() and not self._until_close
        waiter, self._head_waiter = self._head_waiter, None
        if waiter is not None and not waiter.done():
            self.waiting_until = None  # answered: a clock due now must not fail it
            waiter.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response._feed(body)

    def on_message_complete(self) -> None:
        if self._response is not None and self._response.status >= 200:
            self._response._end()

    # -- the pool's side ----------------------------------------------------------

    async def request(self, data: bytes, until: float) -> Response:
        """Send one request and wait for the answer's status and headers until `until`
        (loop time), else `TimedOut`."""
        if self.transport is None or self.closed:
            raise Disconnected("connection closed", began=False, reused=self._carried)
        response = Response(self)
        self._response = response
        self._reused, self._carried = self._carried, True
        self._written_at = self.loop.time()
        self._began = self._heard = False
        self._raw_headers = []
        self._header_bytes = 0  # the header allowance is per answer
        self._headers_done = False
        self._until_close = self._reusable = False
        self._head_waiter = self.loop.create_future()
        self.transport.write(data)
        self.clock_until(until)
        try:
            await self._head_waiter
        except BaseException:
            self._head_waiter = None
            self.close()
            raise
        finally:
            self.waiting_until = None
        return response

    def clock_until(self, until: float) -> None:
        """Bound the current wait by `until` (loop time). The one timer is re-armed only if it
        would fire too late; firing early, it finds the wait's deadline moved and re-arms."""
        self.waiting_until = until
        if self._clock is None or self._clock_at > until:
            if self._clock is not None:
                self._clock.cancel()
            self._clock_at = until
            self._clock = self.loop.call_at(until, self._clock_fired)

    def _clock_fired(self) -> None:
        self._clock = None
        until = self.waiting_until
        if until is None or self.closed:
            return
        if self.loop.time() < until - _CLOCK_SLACK_S:
            self.clock_until(until)
            return
        self.waiting_until = None
        self._failed(TimedOut("no answer within the clock"))

    def _failed(self, error: UpstreamHttpError) -> None:
        response = self._response
        waiter, self._head_waiter = self._head_waiter, None
        if response is not None:
            response._fail(error)
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.close()

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def finish(self, response: Response) -> None:
        """The caller is done with `response`: pool the connection if it can carry another."""
        if response is not self._response or response._draining:
            return
        if self.closed or response._error is not None or not self._reusable:
            self._response = None
            self.close()
        elif response._complete:  # unread body bytes may be dropped: the framing is whole
            self._pool_again()
        elif response._end_expected and response._buffered <= _DRAIN_BYTES:
            response._draining = True
            response._buffer.clear()
            response._buffered = 0
            self.resume()
            self._drain_timer = self.loop.call_later(self._client.drain_s, self.close)
        else:  # the rest would be read for nothing; closing also stops an upstream still generating
            self._response = None
            self.close()

    def _pool_again(self) -> None:
        self._response = None
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        self.resume()  # paused under a large unread body: the next answer must be read
        self._parser = httptools.HttpResponseParser(self)
        self.idle_since = time.monotonic()
        self._client._put(self)

    def close(self) -> None:
        """Drop the connection now: unsent request bytes are discarded, not flushed."""
        self.closed = True
        self._free_slot()
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        if self._clock is not None:
            self._clock.cancel()
            self._clock = None
        if self.transport is not None:
            self.transport.abort()
            self.transport = None

    def _free_slot(self) -> None:
        """Give its slot under the origin's connection cap back, once."""
        if self._holds_slot:
            self._holds_slot = False
            self.pool.freed()


class _OriginPool:
    """One origin's connections under one client's settings: the idle ones, how many are open
    (or being opened) against the cap, and the calls waiting for one at the cap."""

    __slots__ = ("idle", "open", "waiters")

    def __init__(self) -> None:
        self.idle: deque[_Connection] = deque()
        self.open = 0
        # each waiter gets a released connection, or None: a slot was freed and is now theirs
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()

    def freed(self) -> None:
        """A connection closed (or failed to open): its slot goes to the first waiter, if any."""
        self.open -= 1
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                self.open += 1
                waiter.set_result(None)
                return

    def hand_over(self, connection: _Connection) -> bool:
        """Give a released connection to the first waiter, if any."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return True
        return False
