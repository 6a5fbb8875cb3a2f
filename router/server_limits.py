"""The listener's own limits, below aiohttp: who may bind where, how many connections stay
open, how long a request head may take, and how long a shutdown may take.

aiohttp's `web.Server` is the protocol factory `loop.create_server` is given (what `TCPSite`
does); `InboundLimits` stands in front of it. Each accepted connection gets a thin delegating
protocol (`_Connection`) around aiohttp's own `RequestHandler`, which

- counts the connection, and past `server.max_connections` answers 503 `overloaded` and closes
  it at once (no `RequestHandler` is made for it);
- times the request head: from the connection's start for its first request, from the first
  byte of each later one, the head must arrive whole (its blank line) within
  `server.head_timeout_s`, else 408 and close (a client that sent nothing is closed silently);
  an idle keep-alive connection is aiohttp's `keepalive_timeout`'s;
- bounds the head's size at `MAX_HEAD_BYTES`, else 431 and close (aiohttp alone bounds each
  line at 8190 bytes and a head at 128 fields: a 1 MiB head, about 2 MiB of memory held per
  connection for as long as it trickles in).

Between the blank line that ends a head and the end of that request (its handler returned and
its body was read to the end), bytes are body or pipelined requests: they are passed on
untouched, at the cost of one attribute test per `data_received`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from router.errors import Overloaded, PayloadTooLarge, RequestTimeout, RouterError
from router.metrics import Metrics

__all__ = [
    "BIND_FIX",
    "KEEPALIVE_TIMEOUT_S",
    "MAX_HEAD_BYTES",
    "InboundLimits",
    "bind_refusal",
    "is_loopback",
    "shutdown_budget",
]

MAX_HEAD_BYTES = 64 * 1024  # a request line and its header fields, before the blank line
KEEPALIVE_TIMEOUT_S = 75.0  # an idle keep-alive connection is closed after this (aiohttp: 3630)
_HEAD_END = b"\r\n\r\n"
_LEADING = (b"\r", b"\n")  # empty lines before a request line are no head (RFC 9112 2.2)

RawHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


# --- who may bind where -----------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """Whether `host` binds loopback only: 127.0.0.0/8, ::1 (or its IPv4-mapped form), or
    the name localhost. Anything else, the empty host (every interface) included, is public."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def bind_refusal(host: str, *, token: bool, trusted: bool) -> str | None:
    """Why `serve` must not bind `host` (None: it may): beyond loopback, a caller needs the
    bearer token, unless the operator said the network is trusted."""
    if is_loopback(host) or token or trusted:
        return None
    return (
        f"refusing to serve on {host or 'every interface'!r} without a token: anything that "
        "can reach the port could call the providers with our keys"
    )


BIND_FIX = (
    "set server.auth_token_env to the name of a variable holding a bearer token; or, if every "
    "host that can reach this address is trusted, set server.trusted_network: true or pass "
    "--trusted-network; or bind 127.0.0.1"
)


# --- how long a shutdown may take ---------------------------------------------------------------


def shutdown_budget(grace_s: float) -> tuple[float, float, float]:
    """(drain, answer, close) for a total of `grace_s` from SIGTERM to exit: in-flight
    requests may finish for `drain` seconds; those still running are then cut and have
    `answer` seconds to write their 503; closing the connections and the app gets the rest
    (`close`). The margin after the drain is min(1 s, 10 % of the grace)."""
    margin = min(1.0, 0.1 * grace_s)
    return grace_s - margin, margin / 2, margin / 2


# --- connections and request heads -------------------------------------------------------------


def _raw_response(status: int, reason: str, error: RouterError) -> bytes:
    """A whole HTTP/1.1 response carrying `error`'s JSON body, closing the connection."""
    body = json.dumps(error.body(), separators=(",", ":")).encode()
    lines = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in error.headers().items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class InboundLimits:
    """The protocol factory for `loop.create_server`, in front of aiohttp's `web.Server`.

    Made once the runner is set up and before the listener opens: it wraps `server`'s request
    handler (each `RequestHandler` takes it when made) to learn when a request ends.
    """

    def __init__(
        self,
        server: web.Server,
        *,
        head_timeout_s: float,
        max_connections: int,
        metrics: Metrics,
        max_head_bytes: int = MAX_HEAD_BYTES,
    ) -> None:
        self.server = server
        self.head_timeout_s = head_timeout_s
        self.max_connections = max_connections
        self.max_head_bytes = max_head_bytes
        self.open = 0
        self.connections: dict[RequestHandler, _Connection] = {}
        self.loop = asyncio.get_running_loop()
        metrics.inbound_connections.set_function(lambda: self.open)
        self.refused_full = metrics.inbound_refused.labels("max_connections")
        self.refused_head = metrics.inbound_refused.labels("head_too_large")
        self.head_timeouts = metrics.inbound_timeouts.labels("head")
        metrics.inbound_timeouts.labels("body")  # at zero from the start (request_scope's)
        self.full_response = _raw_response(
            503, "Service Unavailable", Overloaded("too many open connections; retry shortly")
        )
        self.timeout_response = _raw_response(
            408,
            "Request Timeout",
            RequestTimeout(f"the request head did not arrive within {head_timeout_s:g} s"),
        )
        self.head_response = _raw_response(
            431,
            "Request Header Fields Too Large",
            PayloadTooLarge(f"the request head is larger than {max_head_bytes} bytes"),
        )
        self._inner: RawHandler = server.request_handler
        server.request_handler = self._handle

    def __call__(self) -> asyncio.Protocol:
        return _Connection(self)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """aiohttp's request handler, told when a request starts and when it has ended."""
        connection = self.connections.get(request.protocol)
        if connection is None:  # (every connection comes through `__call__`)
            return await self._inner(request)
        connection.busy()
        try:
            return await self._inner(request)
        finally:
            content = request.content
            if content.is_eof():
                connection.idle()
            else:  # the body is still arriving (aiohttp reads the rest, or closes)
                content.on_eof(connection.idle)


class _Connection(asyncio.Protocol):
    """One accepted connection: counted, its heads timed and bounded, the rest delegated."""

    __slots__ = ("_head", "_head_bytes", "_inner", "_limits", "_tail", "_timer", "_transport")

    def __init__(self, limits: InboundLimits) -> None:
        self._limits = limits
        self._inner: RequestHandler | None = None
        self._transport: asyncio.Transport | None = None
        self._head = True  # reading a request head (or waiting for one)
        self._head_bytes = 0
        self._tail = b""  # the head's last 3 bytes, for a blank line split across reads
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        limits = self._limits
        transport = cast(asyncio.Transport, transport)  # (a stream server's: `create_server`)
        if limits.open >= limits.max_connections:
            limits.refused_full.inc()
            self._head_bytes = limits.max_head_bytes + 1  # whatever it sends is dropped
            transport.write(limits.full_response)
            transport.close()
            return
        limits.open += 1
        self._transport = transport
        self._inner = inner = limits.server()
        limits.connections[inner] = self
        # the first head's clock runs from the connection's start: a silent client is cut too
        self._timer = limits.loop.call_later(limits.head_timeout_s, self._expire)
        inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._head and not self._read_head(data):
            return
        inner = self._inner
        if inner is not None:
            inner.data_received(data)

    def eof_received(self) -> None:
        if self._inner is not None:
            self._inner.eof_received()  # (returns nothing: the transport closes itself)

    def connection_lost(self, exc: Exception | None) -> None:
        inner = self._inner
        if inner is None:  # refused, or already lost
            return
        limits = self._limits
        limits.open -= 1
        limits.connections.pop(inner, None)
        self._inner = self._transport = None
        self._cancel_timer()
        inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # --- the head ---

    def _read_head(self, data: bytes) -> bool:
        """Account for `data`, read while a head is pending; False if it is not to be passed
        on (the connection was closed for its head)."""
        limits = self._limits
        if self._head_bytes > limits.max_head_bytes:  # closed for it: drop what still comes
            return False
        if not self._head_bytes and data[:1] in _LEADING:
            data = data.lstrip(b"\r\n")
            if not data:
                return True
        if _HEAD_END in data or (self._tail and _HEAD_END in self._tail + data[:3]):
            self.busy()  # the head is whole: what follows is its body, the handler's to time
            return True
        self._head_bytes += len(data)
        if self._head_bytes > limits.max_head_bytes:
            if self._close(limits.head_response):
                limits.refused_head.inc()
            return False
        self._tail = (self._tail + data[-3:])[-3:]
        if self._timer is None:  # a later request: its clock starts at its first byte
            self._timer = limits.loop.call_later(limits.head_timeout_s, self._expire)
        return True

    def busy(self) -> None:
        """A request's head is whole (its handler runs): no head clock until it has ended."""
        self._head = False
        self._head_bytes = 0
        self._tail = b""
        self._cancel_timer()

    def idle(self) -> None:
        """The request has ended: the next byte starts the next head."""
        if self._inner is not None:
            self._head = True

    def _expire(self) -> None:
        self._timer = None
        if not self._head or self._transport is None:
            return
        # a client that sent nothing gets no answer (it may be a pool's spare connection)
        if self._close(self._limits.timeout_response if self._head_bytes else None):
            self._limits.head_timeouts.inc()

    def _close(self, response: bytes | None) -> bool:
        """Answer `response` (if any) and close; False if the connection was closing already.
        Bytes still arriving are dropped (`_head` stays set, `_head_bytes` over the limit)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return False
        self._head_bytes = self._limits.max_head_bytes + 1
        self._cancel_timer()
        if response is not None:
            transport.write(response)
        transport.close()  # connection_lost follows and tells aiohttp's handler
        return True

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
