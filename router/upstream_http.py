"""The upstream HTTP/1.1 client: pooled keep-alive connections, llhttp parsing, nothing more.

Upstream calls are the sidecar's hot path, and aiohttp's `ClientSession` spends 130-200 µs of
CPU on each one at one request in flight (request and response objects, payload wrapping,
timeout handles, cookie and redirect machinery we never use); a pooled connection that writes a
head prepared at startup and parses the answer with httptools (llhttp, as aiohttp's own parser)
spends about 26 µs. This module does only what upstream LLM APIs need: POST with a body to an
`http://` or `https://` origin, keep-alive reuse, Content-Length, chunked or until-close
bodies, and back-pressure on large answers. No redirects, cookies or compression (every request
says `Accept-Encoding: identity`).

New connections are opened by `upstream_dial` (happy eyeballs over every resolved address, TLS)
and, where HTTPS_PROXY / HTTP_PROXY say so, through a CONNECT tunnel (`upstream_proxy`), all of
it off the hot path (a pooled connection reused). A provider may have its own TLS context and
proxy (`UpstreamClient.variant`, with pools of its own so connections never cross settings);
each origin has a connection cap beyond which calls wait for a connection.

Nothing is ever sent twice: a request whose reused connection turns out closed before any byte
of the answer (the server dropped it while idle) raises `Disconnected(reused=True)`, since the
server may have seen it; the caller decides whether to try again, and counts it as an attempt.

Each wait (for the head, for the body's next bytes) takes its clock as an argument, and a
connection keeps one lazy timer for all of them: a wait only moves the deadline the timer
checks when it fires, so a stream of many reads arms a timer about once per clock, not once
per read as `asyncio.timeout` around each read would.

Failures are raised as the `UpstreamHttpError` family (`upstream_errors`, importable from
here); `providers.base.upstream_error` maps them (and socket, TLS and timeout errors) to router
errors, in one place.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import time
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from router import __version__
from router.upstream_dial import Resolve, open_connection
from router.upstream_errors import (
    BadResponse,
    ConnectFailed,
    ConnectTimedOut,
    Disconnected,
    TimedOut,
    UpstreamHttpError,
)
from router.upstream_proxy import DIRECT, ProxyRules

__all__ = [
    "MAX_CONNECTIONS_PER_ORIGIN",
    "USER_AGENT",
    "BadResponse",
    "ConnectFailed",
    "ConnectTimedOut",
    "Disconnected",
    "Endpoint",
    "Origin",
    "Resolve",
    "Response",
    "TimedOut",
    "UpstreamClient",
    "UpstreamHttpError",
    "render_request",
]

USER_AGENT = f"fusion-router/{__version__}"
_PAUSE_ABOVE = 256 * 1024  # buffered body bytes above which the socket stops being read
_KEEP_IDLE_S = 15.0  # an idle pooled connection older than this is closed, not reused
_MAX_IDLE_PER_ORIGIN = 256
MAX_CONNECTIONS_PER_ORIGIN = 256  # the default cap on open connections to one origin
_MAX_HEADER_BYTES = 64 * 1024
_CLOCK_SLACK_S = 0.001  # uvloop's clock moves in whole milliseconds: due within one is due
# After a stream's terminal event the rest of the body is framing (the chunked terminator,
# usually a packet behind): released then, the connection reads that much for that long and
# goes back to the pool, instead of being closed and reopened by the next call.
_DRAIN_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class Origin:
    """Where connections go: the pool key."""

    host: str
    port: int
    tls: bool


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One upstream URL with its request head prepared once, at startup."""

    origin: Origin
    head: bytes  # request line and fixed headers, up to (not including) Content-Length

    @classmethod
    def prepare(cls, url: str, headers: Mapping[str, str]) -> Endpoint:
        """Split `url` and render the POST head with `headers` (and Host) once."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        default_port = port == (443 if tls else 80)
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        lines = [f"POST {target} HTTP/1.1", f"Host: {host if default_port else f'{host}:{port}'}"]
        given = {name.lower() for name in headers}
        if "user-agent" not in given:
            lines.append(f"User-Agent: {USER_AGENT}")
        if "accept-encoding" not in given:  # without it a server may compress (RFC 9110 12.5.3)
            lines.append("Accept-Encoding: identity")
        for name, value in headers.items():
            _check_header(name, value)
            if name.lower() not in ("host", "content-length", "transfer-encoding", "connection"):
                lines.append(f"{name}: {value}")
        head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        return cls(Origin(parts.hostname, port, tls), head)


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


def _check_header(name: str, value: str) -> None:
    if not name or any(c in name for c in ":\r\n ") or "\r" in value or "\n" in value:
        raise ValueError(f"invalid header {name!r}")


def render_request(endpoint: Endpoint, body: bytes, extra: Mapping[str, str] | None) -> bytes:
    """The whole request: the prepared head, per-call headers, Content-Length, the body."""
    parts = [endpoint.head]
    if extra:
        for name, value in extra.items():
            _check_header(name, value)
            parts.append(f"{name}: {value}\r\n".encode("latin-1"))
    parts.append(b"Content-Length: %d\r\n\r\n" % len(body))
    parts.append(body)
    return b"".join(parts)


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
        stale = self._reused and not self._heard  # silent on reuse: dropped while idle
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


@dataclass
class _Counters:
    """What a client and its variants count, for tests and diagnostics."""

    proxy_connects: int = 0


@dataclass
class UpstreamClient:
    """Keep-alive connections per origin, opened on demand (up to `max_connections` at once)
    and reused while fresh."""

    ssl_context: ssl.SSLContext = field(default_factory=ssl.create_default_context)
    resolve: Resolve | None = None  # None: the loop's getaddrinfo
    drain_s: float = 1.0  # how long a released stream's framing tail is waited for
    proxies: ProxyRules = DIRECT  # e.g. ProxyRules.from_environ(os.environ), read at startup
    max_connections: int = MAX_CONNECTIONS_PER_ORIGIN  # open at once per origin; more wait
    _counters: _Counters = field(default_factory=_Counters)
    _pools: dict[Origin, _OriginPool] = field(default_factory=dict)
    _open: weakref.WeakSet[_Connection] = field(default_factory=weakref.WeakSet)

    @property
    def proxy_connects(self) -> int:
        """Connections opened through a proxy's CONNECT tunnel (all variants)."""
        return self._counters.proxy_connects

    def variant(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        proxies: ProxyRules | None = None,
        max_connections: int | None = None,
    ) -> UpstreamClient:
        """A client for one provider's own TLS context, proxy or connection cap (None: this
        client's). It has pools of its own, so no connection is ever shared across different
        settings, and shares this client's resolver, counters and `close()`."""
        return dataclasses.replace(
            self,
            ssl_context=self.ssl_context if ssl_context is None else ssl_context,
            proxies=self.proxies if proxies is None else proxies,
            max_connections=self.max_connections if max_connections is None else max_connections,
            _pools={},
        )

    async def post(
        self, endpoint: Endpoint, data: bytes, *, connect_timeout: float, within: float
    ) -> Response:
        """Send `data` (a rendered request) and return the answer once its headers arrived.

        `within` (seconds) bounds the whole wait, connecting and waiting at the connection cap
        included (`TimedOut`); `connect_timeout` bounds connecting alone (`ConnectTimedOut`).

        The request is sent once, whatever happens. On a reused connection (from the pool, or
        handed over at the cap) that turns out closed before any byte of the answer, it raises
        `Disconnected(reused=True)`, and the origin's other idle connections that had been idle
        at least as long are closed too: the same server timeout or restart most likely dropped
        them, so the caller's next try opens a fresh connection instead of finding them.
        """
        loop = asyncio.get_running_loop()
        until = loop.time() + within
        origin = endpoint.origin
        connection = self._take_idle(origin)
        if connection is None:
            pool = self._pools.get(origin)
            if pool is None:
                pool = self._pools[origin] = _OriginPool()
            if pool.open < self.max_connections:
                pool.open += 1
                connection = await self._connect(pool, origin, connect_timeout, within, loop)
            else:
                connection = await self._wait_turn(pool, until, loop)
                if connection is None:  # a freed slot, now ours
                    budget = until - loop.time()
                    connection = await self._connect(pool, origin, connect_timeout, budget, loop)
        try:
            return await connection.request(data, until)
        except Disconnected as exc:
            if exc.reused:
                self._drop_idle_since(connection)
            raise

    def _drop_idle_since(self, stale: _Connection) -> None:
        """Close the idle connections of `stale`'s pool that were pooled no later than it was
        (idle at least as long): the pool is in release order, so they are its oldest ones."""
        idle = stale.pool.idle
        while idle and idle[0].idle_since <= stale.idle_since:
            idle.popleft().close()

    async def _wait_turn(
        self, pool: _OriginPool, until: float, loop: asyncio.AbstractEventLoop
    ) -> _Connection | None:
        """Wait at the cap until `until` for a released connection, or for a freed slot
        (None: counted as ours, to connect); `TimedOut` past it."""
        waiter: asyncio.Future[_Connection | None] = loop.create_future()
        pool.waiters.append(waiter)
        try:
            async with asyncio.timeout_at(until):
                return await waiter
        except BaseException as exc:
            self._turn_lost(pool, waiter)
            if isinstance(exc, TimeoutError):
                raise TimedOut("no connection free within the clock") from None
            raise

    def _turn_lost(self, pool: _OriginPool, waiter: asyncio.Future[_Connection | None]) -> None:
        """A waiter gave up (clock or cancellation): what it was given goes to the next one."""
        if not waiter.done():
            waiter.cancel()
        if waiter in pool.waiters:
            pool.waiters.remove(waiter)
        if waiter.cancelled():
            return
        handed = waiter.result()
        if handed is None:
            pool.freed()
        else:
            self._put(handed)

    def _take_idle(self, origin: Origin) -> _Connection | None:
        pool = self._pools.get(origin)
        if pool is None:
            return None
        idle = pool.idle
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < connection.keep_for:
                return connection
            connection.close()
        return None

    def _put(self, connection: _Connection) -> None:
        """Hand it to a call waiting at the cap, or pool it (taken last in, first out); drop
        the oldest idle ones once stale or closed, so a burst's connections do not outlive it
        unused."""
        pool = connection.pool
        if pool.waiters and pool.hand_over(connection):
            return
        idle = pool.idle
        now = time.monotonic()
        while idle and (idle[0].closed or now - idle[0].idle_since >= idle[0].keep_for):
            idle.popleft().close()
        if len(idle) >= _MAX_IDLE_PER_ORIGIN:
            connection.close()
            return
        idle.append(connection)

    async def _connect(
        self,
        pool: _OriginPool,
        origin: Origin,
        connect_timeout: float,
        budget: float,
        loop: asyncio.AbstractEventLoop,
    ) -> _Connection:
        """A new connection to `origin` (directly or through its proxy), holding the slot
        already counted in `pool.open` (freed if connecting fails); within `budget`
        (`TimedOut`) if less than `connect_timeout` (`ConnectTimedOut`)."""
        connection = _Connection(self, pool, origin, loop)
        proxy = self.proxies.for_origin(origin.host, origin.port, tls=origin.tls)
        try:
            await open_connection(
                connection,
                origin.host,
                origin.port,
                tls=self.ssl_context if origin.tls else None,
                proxy=proxy,
                resolve=self.resolve,
                within=min(budget, connect_timeout),
                loop=loop,
            )
        except ConnectTimedOut:
            connection.close()
            if budget < connect_timeout:
                raise TimedOut("no connection within the clock") from None
            raise
        except BaseException:
            connection.close()
            raise
        if proxy is not None:
            self._counters.proxy_connects += 1
        self._open.add(connection)
        return connection

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection, idle or busy (this client's and its variants')."""
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._pools.clear()
