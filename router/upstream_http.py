"""The upstream HTTP/1.1 client: endpoints prepared once, pooled keep-alive connections per origin.

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

One connection and the answer it carries (llhttp parsing, the one lazy clock each connection
keeps for all its waits, back-pressure) are `upstream_connection`'s; `Response` is importable
from here.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from router import __version__
from router.upstream_connection import Response, _Connection, _OriginPool
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
_MAX_IDLE_PER_ORIGIN = 256
MAX_CONNECTIONS_PER_ORIGIN = 256  # the default cap on open connections to one origin


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
