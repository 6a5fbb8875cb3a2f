"""The Provider protocol, and the one place where upstream failures become router errors.

Adapters call `send()` to make the HTTP request with the attempt's clocks,
`read_json()` / `iter_sse()` to read it, and `error_for_status()` to classify a
non-2xx answer. Every transport, socket and timeout exception is mapped in
`map_upstream_errors()` and nowhere else.
"""

from __future__ import annotations

import json
import math
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import orjson

from router.errors import (
    ProviderAuthFailed,
    ProviderError,
    ProviderMalformed,
    ProviderQuotaExhausted,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    ResponseTooLarge,
    StaleConnection,
    StreamTruncated,
)
from router.types import (
    Completion,
    EmbeddingCall,
    Embeddings,
    ProviderCall,
    StreamEvent,
    Timeouts,
)
from router.upstream_http import (
    BadResponse,
    ConnectFailed,
    ConnectTimedOut,
    Disconnected,
    Endpoint,
    Response,
    TimedOut,
    UpstreamClient,
    UpstreamHttpError,
    render_request,
)
from router.values import value

MAX_RESPONSE_BYTES = 16 * 1024 * 1024
MAX_SSE_LINE = 1024 * 1024
RETRY_AFTER_CAP_S = 86_400.0


class Provider(Protocol):
    """**Protocol**: something that can answer a chat call, whole or streamed.

    Every wait of an adapter is bounded by `clock()`: the named clock of the attempt, or what
    is left of its total clock (`ProviderCall.deadline`, itself cut to the request's deadline),
    whichever ends first. Nothing outside the adapter times it.
    """

    name: str
    protocol: str

    async def complete(self, call: ProviderCall, /) -> Completion:
        """One attempt, non-streaming."""
        ...

    def stream(self, call: ProviderCall, /) -> AsyncIterator[StreamEvent]:
        """One attempt, streaming; ends with `StreamEnd` or raises a `ProviderError`."""
        ...


@runtime_checkable
class EmbeddingProvider(Protocol):
    """**Protocol**: an adapter whose upstream has an embeddings API (optional: Anthropic's has
    none). Its waits are bounded as `Provider`'s are, by the `EmbeddingCall`'s clocks."""

    name: str
    protocol: str

    async def embed(self, call: EmbeddingCall, /) -> Embeddings:
        """One attempt: a vector per input, in input order."""
        ...


class AttemptClocks(Protocol):
    """**Protocol**: what `send()` and the readers need of an attempt (a `ProviderCall`, an
    `EmbeddingCall`): its clocks, the instant its total clock runs out, its extra headers."""

    @property
    def timeouts(self) -> Timeouts: ...

    @property
    def deadline(self) -> float: ...

    @property
    def extra_headers(self) -> tuple[tuple[str, str], ...]: ...


class Secret:
    """A credential that never prints."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The raw value, for building one outbound header."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


def clock(call: AttemptClocks, seconds: float, phase: str) -> tuple[float, str]:
    """`seconds` of the named clock, or what is left of the attempt's total clock if less."""
    left = call.deadline - time.monotonic()
    return (seconds, phase) if seconds <= left else (max(left, 0.0), "total")


def upstream_error(exc: BaseException, provider: str, phase: str) -> ProviderError | None:
    """The `ProviderError` a transport exception means, or None if it is not one of ours."""
    if isinstance(exc, ProviderError):
        return None
    if isinstance(exc, TimeoutError):
        return ProviderTimeout(
            f"{provider}: no answer within the {phase} timeout", provider=provider, phase=phase
        )
    if isinstance(exc, ConnectTimedOut):
        return ProviderTimeout(f"{provider}: connect timeout", provider=provider, phase="connect")
    if isinstance(exc, ConnectFailed):
        if exc.certificate:
            return ProviderUnavailable(
                f"{provider}: TLS certificate verification failed", provider=provider
            )
        if exc.dns:
            return ProviderUnavailable(f"{provider}: DNS resolution failed", provider=provider)
        return ProviderUnavailable(f"{provider}: connection failed", provider=provider)
    if isinstance(exc, Disconnected):
        if exc.began:
            return StreamTruncated(
                f"{provider}: the response ended before it was complete", provider=provider
            )
        if exc.reused:
            return StaleConnection(
                f"{provider}: the pooled connection was closed by the server", provider=provider
            )
        return ProviderUnavailable(f"{provider}: server disconnected", provider=provider)
    if isinstance(exc, BadResponse):
        return ProviderMalformed(f"{provider}: invalid HTTP response", provider=provider)
    if isinstance(exc, UpstreamHttpError):
        return ProviderUnavailable(f"{provider}: transport error", provider=provider)
    if isinstance(exc, ssl.SSLError):
        return ProviderUnavailable(f"{provider}: TLS error", provider=provider)
    if isinstance(exc, ConnectionError):
        return ProviderUnavailable(f"{provider}: connection reset", provider=provider)
    return None


def unexpected(exc: Exception, provider: str) -> ProviderError:
    """What an exception that escaped an adapter means: a transport failure if it is one, else
    an answer the adapter could not handle (`ProviderMalformed`). Never a 500 of ours."""
    return upstream_error(exc, provider, "total") or ProviderMalformed(
        f"{provider}: unexpected answer ({type(exc).__name__})", provider=provider
    )


class map_upstream_errors:  # lower case: used like the context-manager function it replaced
    """Translate transport exceptions raised inside the block into `ProviderError`s.

    A class, not a generator: it sits around every network read of every stream.
    """

    __slots__ = ("_phase", "_provider")

    def __init__(self, provider: str, phase: str) -> None:
        self._provider, self._phase = provider, phase

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, _tb: object) -> None:
        if exc is not None:
            mapped = upstream_error(exc, self._provider, self._phase)
            if mapped is not None:
                raise mapped from None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds only; dates are rare for LLM APIs)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if math.isnan(seconds) or seconds < 0:
        return None
    return min(seconds, RETRY_AFTER_CAP_S)


_CONTEXT_MARKERS = (
    "context_length",
    "context length",
    "maximum context",
    "exceed context limit",
    "exceeds the maximum number of tokens",
    "prompt is too long",
    "too many tokens",
)
_CONTENT_MARKERS = ("content_policy", "content_filter", "safety", "responsible_ai")
_QUOTA_MARKERS = (
    "insufficient_quota",
    "enforced_spend_limit",
    "credit balance",
    "usage limits",
    "perday",
    "per_day",
    "limit: 0",
)


def _error_text(body: bytes) -> str:
    """Lower-cased error identifiers from any of the three protocols' error bodies."""
    try:
        data = json.loads(body[:65536])
    except (ValueError, RecursionError):
        return body[:2048].decode("utf-8", "replace").lower()
    return json.dumps(data)[:8192].lower()


_RETRY_DELAY = re.compile(r'"retrydelay":\s*"(\d+(?:\.\d+)?)s"')


def _retry_delay(text: str) -> float | None:
    """Gemini's `RetryInfo.retryDelay` ("41s") when no Retry-After header came."""
    match = _RETRY_DELAY.search(text)
    return min(float(match.group(1)), RETRY_AFTER_CAP_S) if match else None


def error_for_status(
    provider: str, status: int, headers: Mapping[str, str], body: bytes
) -> ProviderError:
    """Classify a non-2xx upstream answer. The body is read for identifiers, never passed on."""
    text = _error_text(body)
    if 300 <= status < 400:
        return ProviderUnavailable(
            f"{provider}: unexpected redirect ({status}), not followed",
            provider=provider,
            upstream_status=status,
        )
    if status == 429:
        kind = (
            ProviderQuotaExhausted
            if any(m in text for m in _QUOTA_MARKERS)
            else ProviderRateLimited
        )
        return kind(
            f"{provider}: {'quota exhausted' if kind.quota_exhausted else 'rate limited'}",
            provider=provider,
            retry_after=parse_retry_after(headers.get("Retry-After")) or _retry_delay(text),
        )
    if status in (401, 403):
        return ProviderAuthFailed(
            f"{provider}: credential rejected ({status})", provider=provider, upstream_status=status
        )
    if status in (400, 402) and any(m in text for m in _QUOTA_MARKERS):
        # Anthropic reports an exhausted account as a 400: it is the account's fault, not the caller's
        return ProviderQuotaExhausted(f"{provider}: quota exhausted", provider=provider)
    if status in (400, 404, 413, 422):
        if any(m in text for m in _CONTEXT_MARKERS):
            reason = "context_length_exceeded"
        elif any(m in text for m in _CONTENT_MARKERS):
            reason = "content_policy"
        else:
            reason = "invalid_request"
        return ProviderRejected(
            f"{provider}: request rejected ({status})",
            provider=provider,
            upstream_status=status,
            reason=reason,
        )
    if status == 408:
        return ProviderTimeout(
            f"{provider}: upstream timeout (408)", provider=provider, phase="upstream"
        )
    return ProviderUnavailable(
        f"{provider}: upstream error ({status})", provider=provider, upstream_status=status
    )


class HttpTarget:
    """Where and how an adapter sends: the URL, and the request head rendered once."""

    __slots__ = ("endpoint", "url")

    def __init__(self, url: str, headers: Mapping[str, str]) -> None:
        self.url = url
        self.endpoint = Endpoint.prepare(url, headers)


_ERROR_BODY_BYTES = 65536  # what is read of a non-2xx body to classify it


class _Sending:
    """`send()`'s context: the POST on the way in, the connection released on the way out."""

    __slots__ = ("_call", "_client", "_payload", "_provider", "_response", "_target")

    def __init__(
        self,
        client: UpstreamClient,
        provider: str,
        target: HttpTarget,
        payload: Mapping[str, Any],
        call: AttemptClocks,
    ) -> None:
        self._client, self._provider, self._target = client, provider, target
        self._payload, self._call = payload, call
        self._response: Response | None = None

    async def __aenter__(self) -> Response:
        call, provider, endpoint = self._call, self._provider, self._target.endpoint
        extra = dict(call.extra_headers) if call.extra_headers else None
        data = render_request(endpoint, orjson.dumps(self._payload), extra)
        budget, phase = clock(call, call.timeouts.first_byte, "first_byte")
        with map_upstream_errors(provider, "connect"):
            try:
                response = await self._client.post(
                    endpoint, data, connect_timeout=call.timeouts.connect, within=budget
                )
            except TimedOut:
                raise ProviderTimeout(
                    f"{provider}: no response headers within the {phase} timeout",
                    provider=provider,
                    phase=phase,
                ) from None
        self._response = response
        if response.status >= 300:
            try:
                body = await _read_up_to(response, provider, call, _ERROR_BODY_BYTES)
                raise error_for_status(provider, response.status, response.headers, bytes(body))
            finally:
                response.release()
        return response

    async def __aexit__(self, *exc: object) -> None:
        if self._response is not None:
            self._response.release()


def send(
    client: UpstreamClient,
    provider: str,
    target: HttpTarget,
    payload: Mapping[str, Any],
    call: AttemptClocks,
) -> _Sending:
    """POST `payload` and yield the 2xx response; headers must arrive within the first-byte clock.

    Use as ``async with send(...) as response:``; a non-2xx answer raises its classified
    `ProviderError` on entry, and the connection is released on exit.
    """
    return _Sending(client, provider, target, payload, call)


async def _next_bytes(
    response: Response, provider: str, call: AttemptClocks, seconds: float, phase: str
) -> bytes:
    """The body's next bytes (b"" at its end): what the network already delivered at once,
    with no clock (the first event often comes with the headers; under load several wait in
    the buffer), else a wait bounded by the named clock."""
    with map_upstream_errors(provider, "idle"):  # a buffered transport error raises here
        data = response.take()
    if data or response.at_end:
        return data
    budget, phase = clock(call, seconds, phase)
    with map_upstream_errors(provider, phase):
        return await response.read_some(within=budget)


async def _read_up_to(
    response: Response, provider: str, call: AttemptClocks, cap: int
) -> bytearray:
    """The body, or its first `cap` bytes and a little more, with the idle clock on each wait.

    The body grows in place in one buffer and reading stops past the cap, so an oversized
    answer costs about the cap in memory.
    """
    body = bytearray()
    while len(body) <= cap:
        piece = await _next_bytes(response, provider, call, call.timeouts.idle, "idle")
        if not piece:
            break
        body += piece
    return body


async def read_json(response: Response, provider: str, call: AttemptClocks) -> Any:
    """Read a whole JSON body with the idle clock on every read and the size cap."""
    body = await _read_up_to(response, provider, call, MAX_RESPONSE_BYTES)
    if len(body) > MAX_RESPONSE_BYTES:
        raise ResponseTooLarge(
            f"{provider}: response larger than {MAX_RESPONSE_BYTES} bytes", provider=provider
        )
    try:
        return orjson.loads(body)
    except (ValueError, RecursionError):
        raise ProviderMalformed(
            f"{provider}: response body is not valid JSON", provider=provider
        ) from None


@value
class SseEvent:
    """One server-sent event."""

    event: str
    data: str


async def iter_sse(
    response: Response, provider: str, call: AttemptClocks
) -> AsyncIterator[SseEvent]:
    """Server-sent events with the first-byte clock on the first one and the idle clock after.

    Reads whatever the network delivered (one clock per read, not per line) and splits it
    into lines here; a line longer than `MAX_SSE_LINE` or a stream past the response cap
    is an error.
    """
    pending = bytearray()
    total = 0
    first = True
    started = time.monotonic()
    event, data_lines = "", list[str]()
    while True:
        if first:
            left = max(0.001, call.timeouts.first_byte - (time.monotonic() - started))
            chunk = await _next_bytes(response, provider, call, left, "first_byte")
        else:
            chunk = await _next_bytes(response, provider, call, call.timeouts.idle, "idle")
        if not chunk:
            return
        total += len(chunk)
        if total > MAX_RESPONSE_BYTES:
            raise ResponseTooLarge(
                f"{provider}: stream larger than {MAX_RESPONSE_BYTES} bytes", provider=provider
            )
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", start)) >= 0:
            if (
                not data_lines
                and not event
                and pending.startswith(b"data: ", start)
                and pending.startswith(b"\n", end + 1)
                and pending[end - 1] != 13  # b"\r"
            ):  # the usual event, one `data:` line then a blank one: taken whole
                first = False
                data = pending[start + 6 : end].decode("utf-8", "replace")
                start = end + 2
                yield SseEvent("message", data)
                continue
            line = pending[start:end].decode("utf-8", "replace").rstrip("\r")
            start = end + 1
            if not line:
                if data_lines:
                    first = False
                    yield SseEvent(event or "message", "\n".join(data_lines))
                event, data_lines = "", []
            elif not line.startswith(":"):
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    event = value
                elif field == "data":
                    data_lines.append(value)
        del pending[:start]
        if len(pending) > MAX_SSE_LINE:
            raise ProviderMalformed(f"{provider}: stream line too long", provider=provider)


@dataclass(frozen=True, slots=True)
class MalformedEvents:
    """How a stream treats events that are not JSON objects: skip up to `skip`, then fail."""

    skip: int = 1
    on_skip: Callable[[str], None] | None = None  # called with the provider's name


SKIP_ONE_MALFORMED = MalformedEvents()


class EventReader:
    """The JSON objects of one stream's events, skipping (and counting) a few malformed ones."""

    __slots__ = ("_left", "_on_skip", "_provider")

    def __init__(self, provider: str, rules: MalformedEvents) -> None:
        self._provider = provider
        self._left = rules.skip
        self._on_skip = rules.on_skip

    def object(self, event: SseEvent) -> dict[str, Any] | None:
        """The event's JSON object, or None when it was malformed and skipped."""
        try:
            value = orjson.loads(event.data)
        except (ValueError, RecursionError):
            value = None
        if isinstance(value, dict):
            return value
        if self._left <= 0:
            raise ProviderMalformed(
                f"{self._provider}: malformed stream event", provider=self._provider
            )
        self._left -= 1
        if self._on_skip is not None:
            self._on_skip(self._provider)
        return None


def estimate_tokens(text: str) -> int:
    """A rough token count (4 characters a token) for providers that report no usage."""
    return max(1, len(text) // 4) if text else 0
