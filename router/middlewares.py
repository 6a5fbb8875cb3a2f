"""The one middleware: request id and log context, host check, auth, shedding, error rendering,
and the canonical `request.completed` line."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import time
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN

from router import semconv
from router.errors import (
    InvalidRequest,
    Overloaded,
    PayloadTooLarge,
    RouterError,
    Unauthorized,
    attempt_headers,
)
from router.policy_view import PolicyView
from router.state import SERVICES, Services, Settings
from router.tracing import extract_context

REQUEST_ID = web.RequestKey("request_id", str)
LOG_FIELDS = web.RequestKey("log_fields", dict[str, Any])
POLICY_VIEW = web.RequestKey("policy_view", PolicyView)
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_SHED_PATHS = frozenset({"/v1/chat/completions"})


def error_response(exc: RouterError, request_id: str) -> web.Response:
    """The OpenAI-shaped JSON error for `exc`."""
    headers = {"X-Request-Id": request_id, **exc.headers()}
    if exc.tried is not None:
        headers.update(attempt_headers(exc.tried))
    return web.json_response(exc.body(), status=exc.status, headers=headers)


def _http_error(exc: web.HTTPException) -> RouterError:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge("the request body is larger than the configured limit")
    if isinstance(exc, web.HTTPNotFound):
        error = InvalidRequest("no such endpoint", code="not_found")
        error.status = 404  # type: ignore[misc]
        return error
    if isinstance(exc, web.HTTPMethodNotAllowed):
        error = InvalidRequest(
            f"method {exc.method} is not allowed here", code="method_not_allowed"
        )
        error.status = 405  # type: ignore[misc]
        return error
    error = InvalidRequest(exc.reason or "bad request", code="invalid_request")
    error.status = exc.status if 400 <= exc.status < 500 else 400  # type: ignore[misc]
    return error


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind a request id, guard the request, render every error as JSON, and write one
    `request.completed` line."""
    services = request.app[SERVICES]
    incoming = request.headers.get("X-Request-Id")
    request_id = incoming if incoming and _REQUEST_ID_RE.match(incoming) else os.urandom(16).hex()
    request[REQUEST_ID] = request_id
    fields: dict[str, Any] = {}
    request[LOG_FIELDS] = fields
    # aiohttp runs each request in a task of its own, on a copy of the connection's context
    # (which binds nothing), so this binding needs no clearing and ends with the request
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.perf_counter()
    telemetry = services.telemetry
    if not telemetry.exporting and "traceparent" not in request.headers:
        return await _handle(request, handler, services, request_id, fields, started, INVALID_SPAN)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    with telemetry.tracer.start_as_current_span(
        f"{request.method} {route}",
        context=extract_context(request.headers),
        kind=trace.SpanKind.SERVER,
        attributes={
            semconv.HTTP_REQUEST_METHOD: request.method,
            semconv.HTTP_ROUTE: route,
            semconv.ROUTER_REQUEST_ID: request_id,
        },
    ) as span:
        return await _handle(request, handler, services, request_id, fields, started, span)


async def _handle(
    request: web.Request,
    handler: Handler,
    services: Services,
    request_id: str,
    fields: dict[str, Any],
    started: float,
    span: trace.Span,
) -> web.StreamResponse:
    status = 500
    log = services.logger
    path = request.path
    shed = False
    try:
        try:
            if path not in _OPEN_PATHS:
                _guard(request, services.settings)
                if path in _SHED_PATHS:
                    _admit(services)
                    shed = True
            response = await handler(request)
        except RouterError as exc:
            fields.setdefault("error_code", exc.code)
            response = error_response(exc, request_id)
        except web.HTTPException as exc:
            error = _http_error(exc)
            fields.setdefault("error_code", error.code)
            response = error_response(error, request_id)
        except Exception:
            log.exception("request.unhandled_error", path=path)
            fields.setdefault("error_code", "internal_error")
            response = error_response(
                RouterError("internal error; see the sidecar's logs"), request_id
            )
        status = response.status
        view = request.get(POLICY_VIEW)
        if not response.prepared and "X-Router-Jurisdiction" not in response.headers:
            # (a served answer carries them already: `handlers._served_headers`)
            response.headers["X-Request-Id"] = request_id
            if view is not None:
                response.headers.update(view.headers())
        return response
    finally:
        if shed:
            services.runtime.inflight -= 1
        elapsed = time.perf_counter() - started
        view = request.get(POLICY_VIEW)
        if span.is_recording():  # the span ends when this returns: its attributes go on now
            _trace(span, status, fields, view)
        # Metrics and the log line wait for the loop's next turn: by then the response (whole,
        # or the end of a stream) is on the wire, so the caller does not wait for them.
        asyncio.get_running_loop().call_soon(
            _account, request, services, view, fields, status, elapsed
        )


def _guard(request: web.Request, settings: Settings) -> None:
    """Host check and bearer token (constant-time); raises the error to render."""
    host = (request.host or "").lower()
    hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    if hostname not in settings.allowed_hosts:
        error = InvalidRequest(
            "the Host header does not name this sidecar", code="misdirected_request"
        )
        error.status = 421  # type: ignore[misc]
        raise error
    if settings.auth_token is not None:
        if any(k.lower() in ("token", "api_key", "key", "access_token") for k in request.query):
            raise Unauthorized("tokens are accepted only in the Authorization header")
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        expected = settings.auth_token.reveal().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), expected
        ):
            raise Unauthorized("missing or wrong bearer token")


def _admit(services: Services) -> None:
    """The inbound in-flight cap: one more request, or `Overloaded`."""
    runtime = services.runtime
    if runtime.inflight >= services.settings.max_inflight:
        services.metrics.shed.inc()
        raise Overloaded("too many requests in flight; retry shortly", retry_after=1.0)
    runtime.inflight += 1  # router_inflight_requests reads it at scrape time


def _trace(span: trace.Span, status: int, fields: dict[str, Any], view: PolicyView | None) -> None:
    """The server span's outcome and every policy decision as span events."""
    span.set_attribute(semconv.HTTP_RESPONSE_STATUS_CODE, status)
    if "error_code" in fields:
        span.set_attribute(semconv.ERROR_TYPE, str(fields["error_code"]))
    if status >= 500:
        span.set_status(trace.Status(trace.StatusCode.ERROR, str(fields.get("error_code", ""))))
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
    request: web.Request,
    services: Services,
    view: PolicyView | None,
    fields: dict[str, Any],
    status: int,
    elapsed: float,
) -> None:
    """A finished request in the metrics (with its policy denials) and its `request.completed` line."""
    path = request.path
    metrics = services.metrics
    log = services.logger
    if path in _SHED_PATHS:
        outcome = fields.get("error_code") or ("ok" if status < 400 else f"http_{status}")
        labels = (fields.get("kind", "unknown"), fields.get("target", "unknown"), outcome)
        metrics.requests_of(*labels).inc()
        metrics.request_duration_of(*labels).observe(elapsed)
    logging_info = log.is_enabled_for(logging.INFO)
    if view is not None:
        for decision in view.consulted.values():
            if not decision.allowed:
                metrics.policy_denials.labels(decision.jurisdiction, decision.rule_id).inc()
        if logging_info:
            fields.update(view.log_fields())
    if logging_info and path not in _OPEN_PATHS:
        log.info(
            "request.completed",
            method=request.method,
            path=path,
            status=status,
            duration_ms=round(elapsed * 1000, 2),
            **fields,
        )
