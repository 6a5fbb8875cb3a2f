"""aiohttp views: chat completions (whole and streamed), the model list, health and readiness."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from router import semconv
from router.catalog import FUSION_PREFIX, CatalogModel
from router.errors import (
    DeadlineExceeded,
    InvalidRequest,
    PayloadTooLarge,
    PolicyDenied,
    ProviderError,
    RouterError,
    UnknownModel,
    UnsupportedMediaType,
    attempted_headers,
)
from router.explain import explain
from router.fusion.panel import FusionDeps
from router.fusion.pipeline import FusionReport
from router.fusion.plan import plan_panel
from router.fusion_http import (
    RouterCaller,
    availability_for,
    new_budget,
    resolve_panel,
    serve_fusion,
)
from router.inbound import read_chat
from router.logs import get_logger
from router.metrics import BREAKER_STATE_VALUE, CONTENT_TYPE_LATEST, Metrics
from router.policy_view import PolicyView
from router.request_scope import RequestScope, ScopedHandler, no_route, not_allowed, scoped
from router.routing import AttemptLog, Router, check_max_tokens
from router.sse_response import event_stream
from router.state import Services, Settings
from router.stream_deadline import StreamDeadline
from router.types import ChatRequest, Completion, StreamEnd, TextDelta, Usage
from router.wire_out import (
    DONE,
    TextChunks,
    completion_body,
    error_event,
    json_bytes,
    role_prefix,
    sse,
    stream_chunk,
    usage_chunk,
)

DEADLINE_HEADER = "X-Router-Deadline-Ms"


def _deadline(request: web.Request, default_s: float) -> float:
    raw = request.headers.get(DEADLINE_HEADER)
    budget = default_s
    if raw is not None:
        if not raw.isdigit() or not 1 <= int(raw) <= 3_600_000:
            raise InvalidRequest(
                f"{DEADLINE_HEADER} must be an integer from 1 to 3600000", param=DEADLINE_HEADER
            )
        budget = min(default_s, int(raw) / 1000)
    return time.monotonic() + budget


async def _read_request(request: web.Request, settings: Settings) -> tuple[ChatRequest, Any]:
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
        raw = content.read_nowait()  # all of it came with the head: no read loop, no copy
    else:  # chunked, compressed or still arriving: aiohttp reads it and enforces the size cap
        raw = await request.read()
    return read_chat(raw, settings.limits)


def _served_headers(
    model: CatalogModel, attempted: tuple[str, ...], request_id: str, view: PolicyView
) -> dict[str, str]:
    """Who served, after which upstream calls, under which policy (the request scope then
    adds nothing)."""
    return {
        "X-Request-Id": request_id,
        "X-Router-Model": model.id,
        "X-Router-Provider": model.provider,
        **attempted_headers(attempted),
        **view.headers(),
    }


def _sse_response(
    model: CatalogModel, attempted: tuple[str, ...], request_id: str, view: PolicyView
) -> web.StreamResponse:
    """The stream's response, its headers saying who served after which calls."""
    return event_stream(_served_headers(model, attempted, request_id, view))


def _log_served(
    scope: RequestScope, model: CatalogModel, attempts: AttemptLog, usage: Usage | None
) -> None:
    fields = scope.fields
    fields.update(
        served_model=model.id,
        provider=model.provider,
        attempts=len(attempts.calls),
        attempted=attempts.providers,
    )
    if usage is not None:
        fields.update(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=round(model.cost(usage), 8),
        )
        # counted on the loop's next turn, after the response is on the wire
        metrics = scope.services.metrics
        asyncio.get_running_loop().call_soon(record_usage, metrics, model, usage)


def record_usage(metrics: Metrics, model: CatalogModel, usage: Usage) -> None:
    """Tokens and cost counters for one served call."""
    metrics.tokens_of(model.provider, model.id, "input").inc(usage.input_tokens)
    metrics.tokens_of(model.provider, model.id, "output").inc(usage.output_tokens)
    metrics.cost_of(model.provider, model.id).inc(model.cost(usage))


async def chat_completions(request: web.Request, scope: RequestScope) -> web.StreamResponse:
    """`POST /v1/chat/completions`: a catalog model or a route alias, whole or streamed."""
    services = scope.services
    catalog = services.catalog
    runtime = services.runtime
    settings = services.settings
    chat, fusion_options = await _read_request(request, settings)
    fields = scope.fields
    fields.update(requested_model=chat.model, stream=chat.stream, kind="unknown", target="unknown")
    deadline = _deadline(request, settings.default_deadline_s)
    view = _view(services, request.headers.get("X-Router-Jurisdiction"))
    scope.view = view
    router = runtime.router
    if router is None:  # pragma: no cover - only between startup and shutdown
        raise RouterError("the sidecar is shutting down")
    if chat.model == "fusion" or chat.model.startswith(FUSION_PREFIX):
        fields.update(
            kind="fusion", target=chat.model if catalog.panel_for(chat.model) else "custom"
        )
        return await _fusion(request, scope, chat, fusion_options, router, deadline, view)
    if fusion_options is not None:
        raise InvalidRequest("'fusion' options need a fusion model", param="fusion")
    chain_ids = catalog.chain_for(chat.model)
    if chain_ids is None:
        raise UnknownModel(chat.model)
    fields.update(kind="model" if chat.model in catalog.models else "route", target=chat.model)
    chain = view.allowed_chain(chat.model, [catalog.models[i] for i in chain_ids])
    check_max_tokens(chat, chain)
    request_id = scope.request_id
    if not chat.stream:
        ahead: list[dict[str, str]] = []
        if chain:  # the first target's headers, built while the upstream answers
            first = chain[0]
            asyncio.get_running_loop().call_soon(
                lambda: ahead.append(_served_headers(first, (first.provider,), request_id, view))
            )
        routed = await router.complete(chat, chain, deadline, gate=view.gate)
        _log_served(scope, routed.model, routed.attempts, routed.completion.usage)
        if runtime.capture_content:
            fields.update(
                prompt=[{"role": m.role, "content": m.content} for m in chat.messages],
                completion=routed.completion.text,
            )
        body = completion_body(
            request_id, routed.model.id, routed.completion, routed.cost, routed.attempts
        )
        if ahead and routed.model is chain[0] and len(routed.attempts.records) == 1:
            headers = ahead[0]  # served at the first try, as foreseen
        else:
            attempted = tuple(routed.attempts.providers)
            headers = _served_headers(routed.model, attempted, request_id, view)
        return web.Response(body=json_bytes(body), content_type="application/json", headers=headers)
    return await _stream(request, scope, chat, router, chain, deadline, view)


async def _stream(
    request: web.Request,
    scope: RequestScope,
    chat: ChatRequest,
    router: Router,
    chain: list[CatalogModel],
    deadline: float,
    view: PolicyView,
) -> web.StreamResponse:
    request_id = scope.request_id
    loop = asyncio.get_running_loop()
    clock = StreamDeadline(loop, deadline)
    created = int(time.time())
    ahead: list[tuple[web.StreamResponse, TextChunks]] = []

    def while_the_upstream_answers() -> None:
        # runs at the handler's first wait, once the request is on its way: the deadline's
        # timer and the response the first target will most likely need, off the first-token path
        clock.arm()
        if chain:
            first = chain[0]
            foreseen = _sse_response(first, (first.provider,), request_id, view)
            ahead.append((foreseen, TextChunks(request_id, first.id, created)))

    loop.call_soon(while_the_upstream_answers)
    try:
        opened = await router.open_stream(chat, chain, deadline, gate=view.gate)
    except BaseException:
        clock.disarm()
        raise
    model: CatalogModel = opened.model
    if ahead and model is chain[0] and len(opened.attempts.records) == 1:
        response, text_chunks = ahead[0]  # served at the first try, as foreseen
    else:
        attempted = tuple(opened.attempts.providers)
        response = _sse_response(model, attempted, request_id, view)
        text_chunks = TextChunks(request_id, model.id, created)
    fields = scope.fields
    end: StreamEnd | None = None
    try:
        await response.prepare(request)
        # the role rides in the first token's delta; a stream that ends or fails before any
        # text still owes a role chunk
        role_owed = True
        try:
            if clock.open():
                raise TimeoutError  # the deadline passed while the stream was being opened
            event = opened.first
            while True:
                if isinstance(event, TextDelta):
                    await response.write(text_chunks.event(event.text, role=role_owed))
                    role_owed = False
                else:
                    end = event
                    break
                event = await anext(opened.events)
        except (ProviderError, StopAsyncIteration, TimeoutError, asyncio.CancelledError) as exc:
            clock.disarm()
            if isinstance(exc, asyncio.CancelledError) and not clock.ours():
                raise
            error: RouterError = (
                exc
                if isinstance(exc, ProviderError)
                else DeadlineExceeded("the stream passed its deadline")
            )
            if isinstance(exc, StopAsyncIteration):
                error = RouterError("the upstream stream ended without its terminal marker")
                error.code = "stream_truncated"  # type: ignore[misc]
            fields.update(error_code=error.code, stream_truncated=True)
            scope.services.metrics.stream_truncated.labels(model.provider, model.id).inc()
            _log_served(scope, model, opened.attempts, None)
            head = role_prefix(request_id, model.id, created, owed=role_owed)
            await response.write(head + sse(error_event(error)))
            await response.write_eof()
            return response
        clock.disarm()
        head = role_prefix(request_id, model.id, created, owed=role_owed)
        await response.write(
            head + sse(stream_chunk(request_id, model.id, created, finish=end.finish_reason))
        )
        if chat.include_usage:
            await response.write(
                sse(
                    usage_chunk(
                        request_id,
                        model.id,
                        created,
                        end.usage,
                        model.cost(end.usage),
                        opened.attempts,
                    )
                )
            )
        await response.write(DONE)
        await response.write_eof()
        _log_served(scope, model, opened.attempts, end.usage)
        return response
    except (ConnectionResetError, asyncio.CancelledError):
        fields.update(client_cancelled=True)
        raise
    finally:
        clock.disarm()
        await opened.aclose()


async def _fusion(
    request: web.Request,
    scope: RequestScope,
    chat: ChatRequest,
    options: Any,
    router: Router,
    deadline: float,
    view: PolicyView,
) -> web.StreamResponse:
    catalog = scope.services.catalog
    panel = resolve_panel(chat.model, options, catalog)
    gate = view.gate
    availability = availability_for(catalog, gate, lambda m: router.unavailable(m) is not None)
    plan = plan_panel(panel, catalog.models, availability)
    if not plan.seated:
        # nothing could be seated: if policy is why, say so (403), never "panel exhausted"
        decision = view.decision(catalog.models[panel.panelists[0]])
        if not decision.allowed:
            raise PolicyDenied(
                f"no panelist of {chat.model!r} (or substitute) is allowed in jurisdiction "
                f"{decision.jurisdiction!r} (rule {decision.rule_id}: {decision.reason})",
                rule_id=decision.rule_id,
            )
    caller = RouterCaller(router, catalog.models, new_budget(), gate)
    tracer = scope.services.telemetry.tracer
    deps = FusionDeps(caller, catalog.models, availability, log=get_logger(), tracer=tracer)
    report = FusionReport(
        plan,
        jurisdictions=view.jurisdictions,
        policy_version=view.pinned.version,
        providers={m.id: m.provider for m in catalog.models.values()},
    )
    fields = scope.fields
    attributes: dict[str, str | int] = {
        semconv.GEN_AI_OPERATION_NAME: semconv.OPERATION_INVOKE_WORKFLOW,
        semconv.ROUTER_FUSION_PANEL: panel.name,
        "router.fusion.planned_substitutions": sum(1 for s in plan.seats if s.substituted),
    }
    with tracer.start_as_current_span(semconv.SPAN_FUSION, attributes=attributes):
        return await serve_fusion(
            request, chat, panel, plan, deps, caller, report, deadline, scope.request_id, fields
        )


async def list_models(request: web.Request, scope: RequestScope) -> web.Response:
    """`GET /v1/models`: what this sidecar's jurisdiction (narrowed by the header) allows.

    Models policy denies are left out; a route is listed with its allowed targets
    only; a panel is listed with the plan its seats would get now.
    """
    catalog = scope.services.catalog
    view = _view(scope.services, request.headers.get("X-Router-Jurisdiction"))
    allowed = {m.id for m in catalog.models.values() if view.decision(m).allowed}
    data: list[dict[str, Any]] = [
        {
            "id": m.id,
            "object": "model",
            "created": 0,
            "owned_by": m.vendor,
            "router": {"kind": "model", "provider": m.provider, "tier": m.tier, "region": m.region},
        }
        for m in catalog.models.values()
        if m.id in allowed
    ]
    for alias, chain in catalog.routes.items():
        targets = [t for t in chain if t in allowed]
        if targets:
            data.append(
                {
                    "id": alias,
                    "object": "model",
                    "created": 0,
                    "owned_by": "fusion-router",
                    "router": {"kind": "route", "targets": targets},
                }
            )
    for name, panel in catalog.panels.items():
        data.append(
            {
                "id": f"fusion/{name}",
                "object": "model",
                "created": 0,
                "owned_by": "fusion-router",
                "router": {
                    "kind": "panel",
                    "panelists": list(panel.panelists),
                    "denied_panelists": [p for p in panel.panelists if p not in allowed],
                },
            }
        )
    headers = {
        "X-Router-Jurisdiction": ",".join(view.jurisdictions),
        "X-Router-Policy-Version": view.pinned.version,
    }
    return web.json_response({"object": "list", "data": data}, headers=headers)


async def metrics_view(_request: web.Request, scope: RequestScope) -> web.Response:
    """`GET /metrics`: Prometheus exposition (breaker states refreshed at scrape time)."""
    metrics = scope.services.metrics
    board = scope.services.runtime.breakers
    if board is not None:
        for entry in board.snapshot():
            metrics.breaker_state.labels(entry["key"], entry["provider"], entry["model"] or "").set(
                BREAKER_STATE_VALUE.get(entry["state"], 0)
            )
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def admin_breakers(_request: web.Request, scope: RequestScope) -> web.Response:
    """`GET /admin/breakers`: every breaker's state, counters and remaining open time."""
    board = scope.services.runtime.breakers
    return web.json_response({"breakers": board.snapshot() if board is not None else []})


def _view(services: Services, jurisdiction: str | None) -> PolicyView:
    return PolicyView.for_request(
        services.policy, services.config.config.jurisdiction, jurisdiction, services.catalog.models
    )


async def admin_explain(request: web.Request, scope: RequestScope) -> web.Response:
    """`GET /admin/explain?model=…&jurisdiction=…`: the plan and every decision, no outbound call."""
    model = request.query.get("model", "").strip()
    if not model:
        raise InvalidRequest("query parameter 'model' is required", param="model")
    view = _view(scope.services, request.query.get("jurisdiction"))
    router = scope.services.runtime.router
    unavailable = router.unavailable if router is not None else (lambda _m: None)
    return web.json_response(explain(model, scope.services.catalog, view, unavailable))


async def admin_reload(_request: web.Request, scope: RequestScope) -> web.Response:
    """`POST /admin/reload`: re-read the policy folder now; an invalid folder keeps the last good set."""
    store = scope.services.policy
    result = await asyncio.to_thread(store.load_candidate)
    outcome = store.apply(result)
    body: dict[str, Any] = {
        "ok": outcome.ok,
        "changed": outcome.changed,
        "version": outcome.current.version,
        "sha256": outcome.current.sha256,
    }
    if outcome.error is not None:
        body["problems"] = [str(p) for p in outcome.error.problems]
    return web.json_response(body, status=200 if outcome.ok else 422)


async def healthz(_request: web.Request, _scope: RequestScope) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def readyz(_request: web.Request, scope: RequestScope) -> web.Response:
    """Readiness: config loaded and the upstream session open."""
    runtime = scope.services.runtime
    loaded = scope.services.config
    store = scope.services.policy
    ready = runtime.router is not None
    body = {
        "status": "ready" if ready else "not_ready",
        "config": loaded.source,
        "embedded_default": loaded.embedded,
        "jurisdiction": loaded.config.jurisdiction,
        "policy": {
            "version": store.current.version,
            "sha256": store.current.sha256,
            "stale": store.stale,
            "last_error": [str(p) for p in store.last_error.problems][:20]
            if store.last_error
            else None,
            "loaded_at": store.loaded_at.isoformat(),
        },
    }
    return web.json_response(body, status=200 if ready else 503)


# (method, path, handler, guarded, shed): the open routes are the probes and the scrape
_ROUTES: tuple[tuple[str, str, ScopedHandler, bool, bool], ...] = (
    ("POST", "/v1/chat/completions", chat_completions, True, True),
    ("GET", "/v1/models", list_models, True, False),
    ("GET", "/healthz", healthz, False, False),
    ("GET", "/readyz", readyz, False, False),
    ("GET", "/metrics", metrics_view, False, False),
    ("GET", "/admin/breakers", admin_breakers, True, False),
    ("GET", "/admin/explain", admin_explain, True, False),
    ("POST", "/admin/reload", admin_reload, True, False),
)


def add_routes(app: web.Application, services: Services) -> None:
    """Register every endpoint, each wrapped in its request scope. A served path answers its
    other methods with a JSON 405 under its own guard (an open path stays open); a catch-all
    answers any other path with a JSON 404."""
    resources: dict[str, tuple[web.Resource, set[str], bool]] = {}
    for method, path, handler, guarded, shed in _ROUTES:
        resource, methods, _ = resources.get(path) or (app.router.add_resource(path), set(), False)
        wrapped = scoped(services, handler, path, guarded=guarded, shed=shed)
        if method == "GET":
            resource.add_route("HEAD", wrapped)
            methods.add("HEAD")
        resource.add_route(method, wrapped)
        methods.add(method)
        resources[path] = (resource, methods, guarded)
    for path, (resource, methods, guarded) in resources.items():  # after the served methods
        resource.add_route(
            "*", scoped(services, not_allowed(methods), path, guarded=guarded, shed=False)
        )
    fallback = scoped(services, no_route, "unmatched", guarded=True, shed=False)
    app.router.add_route("*", "/{tail:.*}", fallback)


__all__ = ["Completion", "add_routes"]
