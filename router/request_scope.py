"""Every route's wrapper: request id and log context, host check, auth, shedding, error rendering,
and the canonical `request.completed` line.

The wrapper is bound to each route when the app is built (`scoped`), not installed as an aiohttp
middleware: what differs per route (its name in spans, its `RouteFlags`) is decided once, the
app's state is bound once, and the handler gets its `RequestScope` as an argument. What the
request did is written into `scope.completed` field by field (`Completed`), and becomes the
`request.completed` line and the request metrics once the response is out. Paths and methods
no route serves get the same JSON errors: a 405 from a route of each served path for its other
methods (with that path's guard), a 404 from a catch-all route.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN

from router import semconv
from router.catalog import CatalogModel
from router.dialect import Dialect
from router.errors import (
    InvalidRequest,
    MethodNotAllowed,
    MisdirectedRequest,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    RouterError,
    ShuttingDown,
    Unauthorized,
    UnsupportedMediaType,
    attempt_headers,
)
from router.policy_view import PolicyView
from router.routing import AttemptLog
from router.state import Services, Settings
from router.tracing import REQUEST_SPANNED, request_span
from router.types import Usage
from router.wire_out import OPENAI_CHAT

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
CLIENT_CLOSED = 499  # the status nginx made usual for "the client closed the request"
CLIENT_CANCELLED = "client_cancelled"


@dataclass(slots=True)
class Completed:
    """What a request did, for its `request.completed` line: each field set by name as the
    request goes (None: not set, left out of the line)."""

    requested_model: str | None = None
    stream: bool | None = None
    kind: str | None = None  # model | route | fusion (also a metrics label)
    target: str | None = None  # the model, route or panel asked for (also a metrics label)
    served_model: str | None = None
    provider: str | None = None
    attempts: int | None = None
    attempted: list[str] | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    error_code: str | None = None
    stream_truncated: bool | None = None
    client_cancelled: bool | None = None
    mapped_from: str | None = None  # the requested name a `model_map` entry served
    mapped_reason: str | None = None  # not_in_catalog | policy_denied | unavailable
    fusion_panel: str | None = None
    fusion_seats: list[str | None] | None = None
    substitutions: list[dict[str, object]] | None = None
    degraded: list[str] | None = None
    upstream_calls: int | None = None
    prompt: list[dict[str, str]] | None = None  # opt-in content capture only
    completion: str | None = None  # opt-in content capture only

    def served(self, model: CatalogModel, attempts: AttemptLog, usage: Usage | None) -> None:
        """Who served, after which calls, for how many tokens at what cost."""
        self.served_model, self.provider = model.id, model.provider
        self.attempts, self.attempted = len(attempts.calls), attempts.providers
        if usage is not None:
            self.input_tokens, self.output_tokens = usage.input_tokens, usage.output_tokens
            self.cost_usd = round(model.cost(usage), 8)

    def failed(self, error: RouterError) -> None:
        """The request's error (the first one set stays: an in-band stream error's), and what
        was tried before it, if the router said."""
        if self.error_code is None:
            self.error_code = error.code
        if error.tried is not None and self.attempts is None:
            calls = [r.provider for r in error.tried if r.outcome != "skipped"]
            self.attempts, self.attempted = len(calls), calls

    def cancelled(self) -> None:
        """The client hung up: its own outcome (499), never a server error."""
        self.client_cancelled = True
        if self.error_code is None:
            self.error_code = CLIENT_CANCELLED

    def fields(self) -> dict[str, Any]:
        """The fields that were set, in declaration order."""
        return {
            name: value for name in self.__slots__ if (value := getattr(self, name)) is not None
        }


@dataclass(frozen=True, slots=True)
class RouteFlags:
    """What the wrapper does for a route beyond ids and error rendering."""

    guard: bool  # the Host check and the bearer token (the probes and the scrape are open)
    shed: bool  # counts against the in-flight cap (503 `overloaded` past it), once its body came
    log: bool  # writes a `request.completed` line
    count: bool  # counted in `router_requests_total` and its duration histogram
    json_body: bool = False  # reads a JSON body (type, size, clock) before the handler runs
    dialect: Dialect = OPENAI_CHAT  # the inbound API the route speaks (its errors' shape)


@dataclass(slots=True)
class RequestScope:
    """One request as its handler sees it: the app's state, the request id, what it did so far,
    and the policy view once the handler has pinned one."""

    services: Services
    request_id: str
    completed: Completed = field(default_factory=Completed)
    view: PolicyView | None = None
    body: bytes = b""  # the request body, for routes that read one (`RouteFlags.json_body`)
    response: web.StreamResponse | None = None  # a stream's response, once the handler made it
    dialect: Dialect = OPENAI_CHAT  # the inbound API's: how its errors are written
    mapped_headers: dict[str, str] = field(default_factory=dict)  # a `model_map` entry served

    def started(self) -> web.StreamResponse | None:
        """The response whose head is on the wire already (a stream), if any."""
        response = self.response
        return response if response is not None and response.prepared else None


ScopedHandler = Callable[[web.Request, RequestScope], Awaitable[web.StreamResponse]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(
    exc: RouterError,
    request_id: str,
    dialect: Dialect = OPENAI_CHAT,
    extra: Mapping[str, str] | None = None,
) -> web.Response:
    """The JSON error for `exc`, in the inbound API's shape (OpenAI's unless said), with
    `extra` headers (a `model_map` entry that served the request)."""
    headers = {"X-Request-Id": request_id, **exc.headers(), **(extra or {})}
    if exc.tried is not None:
        headers.update(attempt_headers(exc.tried))
    return web.json_response(dialect.error_body(exc), status=exc.http_status, headers=headers)


def _http_error(exc: web.HTTPException) -> RouterError:
    """Our error for one aiohttp raised while reading the request (its body's size cap)."""
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge("the request body is larger than the configured limit")
    return InvalidRequest(exc.reason or "bad request")


def scoped(services: Services, handler: ScopedHandler, route: str, flags: RouteFlags) -> Handler:
    """`handler` wrapped for the route `route` (its name in spans): request id, error
    rendering and the span always; the rest as `flags` say."""
    telemetry = services.telemetry
    # request ids need to be unique, not secret: 128 bits from a generator seeded by the OS
    # (a system call per request, on the hot path, would buy nothing more)
    new_id = random.Random(os.urandom(32)).getrandbits

    async def serve(request: web.Request) -> web.StreamResponse:
        incoming = request.headers.get("X-Request-Id")
        request_id = (
            incoming if incoming and _REQUEST_ID_RE.match(incoming) else format(new_id(128), "032x")
        )
        scope = RequestScope(services, request_id, dialect=flags.dialect)
        # aiohttp runs each request in a task of its own, on a copy of the connection's
        # context (which binds nothing), so this binding needs no clearing and ends with it
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        span = None  # untraced, or not sampled and no traceparent: no span at all
        if telemetry.exporting or "traceparent" in request.headers:
            span = request_span(telemetry, request.headers, request.method, route, request_id)
        if span is None:
            return await _handle(request, handler, scope, flags, started, INVALID_SPAN)
        REQUEST_SPANNED.set(True)  # (this request's context only)
        with span as current:
            return await _handle(request, handler, scope, flags, started, current)

    return serve


async def _handle(
    request: web.Request,
    handler: ScopedHandler,
    scope: RequestScope,
    flags: RouteFlags,
    started: float,
    span: trace.Span,
) -> web.StreamResponse:
    status = 500
    services, request_id, completed = scope.services, scope.request_id, scope.completed
    runtime = services.runtime
    task: asyncio.Task[Any] | None = None
    try:
        try:
            if flags.guard:
                _guard(request, services.settings)
            if flags.json_body:  # its clock runs before the request counts as in flight
                try:
                    scope.body = await read_json_body(request, services.settings)
                except RequestTimeout:
                    services.metrics.inbound_timeouts.labels("body").inc()
                    raise
            if flags.shed:
                _admit(services)
                task = asyncio.current_task()
                if task is not None:
                    runtime.requests.add(task)
            response = await handler(request, scope)
        except RouterError as exc:
            completed.failed(exc)
            response = error_response(exc, request_id, scope.dialect, scope.mapped_headers)
        except web.HTTPException as exc:
            error = _http_error(exc)
            completed.failed(error)
            response = error_response(error, request_id, scope.dialect, scope.mapped_headers)
        except asyncio.CancelledError as exc:
            if not ShuttingDown.cut(exc):
                status = CLIENT_CLOSED
                completed.cancelled()
                raise
            # the grace ran out with this request still running: it is answered all the same
            if task is not None:
                task.uncancel()
            error = ShuttingDown("the sidecar is shutting down; retry elsewhere or shortly")
            completed.failed(error)
            response = await _answer(scope, error)
        except ConnectionError:  # the client hung up while a whole answer was being written
            status = CLIENT_CLOSED
            completed.cancelled()
            raise
        except Exception:
            services.logger.exception("request.unhandled_error", path=request.path)
            error = RouterError("internal error; see the sidecar's logs")
            completed.failed(error)
            response = await _answer(scope, error)
        status = CLIENT_CLOSED if completed.client_cancelled else response.status
        if not response.prepared and "X-Router-Jurisdiction" not in response.headers:
            # (a served answer carries them already: `handlers._served_headers`)
            response.headers["X-Request-Id"] = request_id
            if scope.view is not None:
                response.headers.update(scope.view.headers())
        return response
    finally:
        if task is not None:
            runtime.inflight -= 1
            runtime.requests.discard(task)
        elapsed = time.perf_counter() - started
        if span.is_recording():  # the span ends when this returns: its attributes go on now
            _trace(span, status, completed.error_code, scope.view)
        # Metrics and the log line wait for the loop's next turn: by then the response (whole,
        # or the end of a stream) is on the wire, so the caller does not wait for them.
        asyncio.get_running_loop().call_soon(_account, request, scope, flags, status, elapsed)


async def _answer(scope: RequestScope, error: RouterError) -> web.StreamResponse:
    """`error` as the answer: a JSON error, or, when a stream's head is out already, an in-band
    error event ending it (a second HTTP response cannot follow the first)."""
    started = scope.started()
    if started is None:
        return error_response(error, scope.request_id, scope.dialect, scope.mapped_headers)
    with contextlib.suppress(ConnectionError, RuntimeError):  # (gone, or ended already)
        await started.write(scope.dialect.stream_error(error))
        await started.write_eof()
    return started


def not_allowed(methods: Iterable[str]) -> ScopedHandler:
    """The handler for any other method on a served path: 405, naming `methods`."""
    allowed = frozenset(methods)

    async def wrong_method(request: web.Request, _scope: RequestScope) -> web.StreamResponse:
        raise MethodNotAllowed(request.method, allowed)

    return wrong_method


async def no_route(_request: web.Request, _scope: RequestScope) -> web.StreamResponse:
    """The catch-all route's handler: no route serves this path (404)."""
    raise NotFound("no such endpoint")


def _guard(request: web.Request, settings: Settings) -> None:
    """Host check and bearer token (constant-time), or the token as `x-api-key`; raises the
    error to render."""
    host = (request.host or "").lower()
    hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    if hostname not in settings.allowed_hosts:
        raise MisdirectedRequest("the Host header does not name this sidecar")
    if settings.auth_token is not None:
        if any(k.lower() in ("token", "api_key", "key", "access_token") for k in request.query):
            raise Unauthorized("tokens are accepted only in the Authorization header")
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if not header and "x-api-key" in request.headers:  # as Anthropic's clients send it
            scheme, presented = "bearer", request.headers["x-api-key"]
        expected = settings.auth_token.reveal().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), expected
        ):
            raise Unauthorized("missing or wrong bearer token (or x-api-key)")


async def read_json_body(request: web.Request, settings: Settings) -> bytes:
    """The request's JSON body: declared as JSON, within the size cap, arrived within the body
    clock (`server.body_timeout_s`), else the error to render."""
    if (
        request.headers.get("Content-Type") != "application/json"  # as SDKs send it: no parsing
        and request.content_type != "application/json"
    ):
        raise UnsupportedMediaType("Content-Type must be application/json")
    length = request.content_length
    if length is not None and length > settings.max_body_bytes:
        raise PayloadTooLarge(f"the request body is larger than {settings.max_body_bytes} bytes")
    content = request.content
    if length is not None and content.is_eof() and "Content-Encoding" not in request.headers:
        return content.read_nowait()  # all of it came with the head: no read loop, no copy
    try:  # chunked, compressed or still arriving: aiohttp reads it and enforces the size cap
        async with asyncio.timeout(settings.body_timeout_s):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {settings.body_timeout_s:g} s"
        ) from None
    except (
        web.RequestPayloadError,
        HttpProcessingError,
    ):  # e.g. a body that is not the gzip it says
        raise InvalidRequest("the request body could not be read as sent") from None


def _admit(services: Services) -> None:
    """The inbound in-flight cap: one more request, or `Overloaded` (`ShuttingDown` once the
    sidecar is draining)."""
    runtime = services.runtime
    if runtime.draining:
        raise ShuttingDown("the sidecar is shutting down; retry elsewhere or shortly")
    if runtime.inflight >= services.settings.max_inflight:
        services.metrics.shed.inc()
        raise Overloaded("too many requests in flight; retry shortly", retry_after=1.0)
    runtime.inflight += 1  # router_inflight_requests reads it at scrape time


def _trace(span: trace.Span, status: int, error_code: str | None, view: PolicyView | None) -> None:
    """The server span's outcome and every policy decision as span events."""
    span.set_attribute(semconv.HTTP_RESPONSE_STATUS_CODE, status)
    if error_code is not None:
        span.set_attribute(semconv.ERROR_TYPE, error_code)
    if status >= 500:
        span.set_status(trace.Status(trace.StatusCode.ERROR, error_code or ""))
    if view is None:
        return
    span.set_attribute(semconv.ROUTER_JURISDICTION, ",".join(view.jurisdictions))
    span.set_attribute(semconv.ROUTER_POLICY_VERSION, view.pinned.version)
    for decision in view.consulted.values():
        span.add_event(
            semconv.EVENT_POLICY_DECISION,
            {
                semconv.ROUTER_MODEL: decision.model_id,
                semconv.ROUTER_POLICY_DECISION: decision.label,
                semconv.ROUTER_POLICY_RULE: decision.rule_id,
                semconv.ROUTER_JURISDICTION: decision.jurisdiction,
            },
        )


def _account(
    request: web.Request, scope: RequestScope, flags: RouteFlags, status: int, elapsed: float
) -> None:
    """A finished request in the metrics (with its policy denials) and its `request.completed`
    line, as its route's flags say."""
    metrics = scope.services.metrics
    log = scope.services.logger
    view, completed = scope.view, scope.completed
    if flags.count:
        outcome = completed.error_code or ("ok" if status < 400 else f"http_{status}")
        labels = (completed.kind or "unknown", completed.target or "unknown", outcome)
        metrics.requests_of(*labels).inc()
        metrics.request_duration_of(*labels).observe(elapsed)
    if view is not None:
        for decision in view.consulted.values():
            if not decision.allowed:
                metrics.policy_denials.labels(decision.jurisdiction, decision.rule_id).inc()
    if flags.log and log.is_enabled_for(logging.INFO):
        log.info(
            "request.completed",
            method=request.method,
            path=request.path,
            status=status,
            duration_ms=round(elapsed * 1000, 2),
            **completed.fields(),
            **(view.log_fields() if view is not None else {}),
        )
