"""aiohttp views: chat completions (whole and streamed), the model list, health and readiness."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from router import semconv
from router.catalog import FUSION_PREFIX, Catalog, CatalogModel
from router.deadline import request_deadline
from router.dialect import Dialect, StreamWriter
from router.errors import (
    InvalidRequest,
    RouterError,
    ShuttingDown,
    attempted_headers,
)
from router.explain import explain, needs_of
from router.fusion_http import serve_fusion
from router.inbound import read_chat
from router.metrics import BREAKER_STATE_VALUE, CONTENT_TYPE_LATEST, Metrics
from router.policy_view import PolicyView
from router.protocol_support import CAPABILITIES
from router.relay import finish, relay
from router.request_scope import (
    RequestScope,
    RouteFlags,
    ScopedHandler,
)
from router.routing import AttemptLog, Router, check_max_tokens
from router.sse_response import event_stream
from router.state import Services
from router.tracing import current_attributes
from router.types import ChatRequest, Usage
from router.wire_out import OPENAI_CHAT, json_bytes, router_body


def served_headers(
    model: CatalogModel, attempted: list[str], request_id: str, view: PolicyView
) -> dict[str, str]:
    """Who served, after which upstream calls, under which policy."""
    return {
        "X-Request-Id": request_id,
        "X-Router-Model": model.id,
        "X-Router-Provider": model.provider,
        **attempted_headers(attempted),
        **view.headers(),
    }


def _answer_stream(
    scope: RequestScope, dialect: Dialect, model: CatalogModel, attempted: list[str], created: int
) -> tuple[web.StreamResponse, StreamWriter]:
    """The SSE response for `model` served after the calls `attempted`, and its writer."""
    assert scope.view is not None  # noqa: S101  # pinned by the handler
    headers = served_headers(model, attempted, scope.request_id, scope.view)
    headers.update(scope.mapped_headers)
    return event_stream(headers), dialect.writer(scope.request_id, model.id, created)


def record_usage(metrics: Metrics, model: CatalogModel, usage: Usage) -> None:
    """Tokens and cost counters for one served call."""
    metrics.tokens_of(model.provider, model.id, "input").inc(usage.input_tokens)
    metrics.tokens_of(model.provider, model.id, "output").inc(usage.output_tokens)
    metrics.cost_of(model.provider, model.id).inc(model.cost(usage))


def _served(
    scope: RequestScope, model: CatalogModel, attempts: AttemptLog, usage: Usage | None
) -> None:
    scope.completed.served(model, attempts, usage)
    if usage is not None:  # counted on the loop's next turn, after the response is on the wire
        asyncio.get_running_loop().call_soon(record_usage, scope.services.metrics, model, usage)


async def chat_completions(request: web.Request, scope: RequestScope) -> web.StreamResponse:
    """`POST /v1/chat/completions`: a catalog model, a route alias or a fusion panel, whole or
    streamed."""
    chat, fusion_options = read_chat(scope.body, scope.services.settings.limits)
    return await serve_chat(request, scope, chat, fusion_options, OPENAI_CHAT)


async def serve_chat(
    request: web.Request,
    scope: RequestScope,
    chat: ChatRequest,
    fusion_options: Mapping[str, Any] | None,
    dialect: Dialect,
) -> web.StreamResponse:
    """Serve `chat` (parsed from any inbound API) through the one core: policy, the route's
    chain or a fusion panel, whole or streamed; rendered in the inbound API's `dialect`."""
    services = scope.services
    catalog = services.catalog
    completed = scope.completed
    completed.requested_model, completed.stream = chat.model, chat.stream
    deadline = request_deadline(request.headers, services.settings.default_deadline_s)
    view = scope.view = _view(services, request.headers.get("X-Router-Jurisdiction"))
    router = services.runtime.router
    if router is None:  # only once the upstream client closed, at the end of a shutdown
        raise ShuttingDown("the sidecar is shutting down; retry elsewhere or shortly")
    if catalog.model_map:
        chat = _mapped(scope, chat, router)
    if chat.model == "fusion" or chat.model.startswith(FUSION_PREFIX):
        completed.kind = "fusion"
        completed.target = chat.model if catalog.panel_for(chat.model) else "custom"
        return await serve_fusion(request, scope, chat, fusion_options, router, deadline, dialect)
    if fusion_options is not None:
        raise InvalidRequest("'fusion' options need a fusion model", param="fusion")
    chain_ids = catalog.chat_chains.get(chat.model)
    if chain_ids is None:  # unknown (404), or an embedding model or route (400)
        raise catalog.not_served(chat.model, "chat")
    completed.kind = "model" if chat.model in catalog.models else "route"
    completed.target = chat.model
    chain = view.allowed_chain(chat.model, [catalog.models[i] for i in chain_ids])
    check_max_tokens(chat, chain)
    if chat.stream:
        return await _stream(request, scope, chat, router, chain, deadline, dialect)
    foreseen: list[dict[str, str]] = []
    if chain:  # the first target's headers are built while it answers (the loop is idle)
        first = chain[0]
        asyncio.get_running_loop().call_soon(
            lambda: foreseen.append(served_headers(first, [first.provider], scope.request_id, view))
        )
    routed = await router.complete(chat, chain, deadline, gate=view.gate)
    _served(scope, routed.model, routed.attempts, routed.completion.usage)
    if services.runtime.capture_content:
        completed.prompt = [{"role": m.role, "content": m.content} for m in chat.messages]
        completed.completion = routed.completion.text
    served_by = router_body(routed.model.provider, routed.cost, routed.attempts)
    body = dialect.whole(
        scope.request_id,
        routed.model.id,
        routed.completion,
        routed.completion.usage,
        {"router": served_by},
    )
    if foreseen and routed.model is chain[0] and len(routed.attempts.records) == 1:
        headers = foreseen[0]  # served at the first try, as foreseen
    else:
        headers = served_headers(routed.model, routed.attempts.providers, scope.request_id, view)
    if scope.mapped_headers:
        headers = {**headers, **scope.mapped_headers}
    return web.Response(body=json_bytes(body), content_type="application/json", headers=headers)


def _mapped(scope: RequestScope, chat: ChatRequest, router: Router) -> ChatRequest:
    """`chat` for the target its requested name maps to (`model_map`) when that name is not in
    the catalog, denied here, or has no target up; said in the headers and the log line."""
    catalog, view = scope.services.catalog, scope.view
    target = catalog.model_map.get(chat.model)
    if target is None or view is None:
        return chat
    reason = map_reason(chat.model, catalog, view, router)
    if reason is None:
        return chat
    scope.completed.mapped_from, scope.completed.mapped_reason = chat.model, reason
    scope.mapped_headers = {"X-Router-Mapped-From": chat.model, "X-Router-Mapped-Why": reason}
    current_attributes(
        {semconv.ROUTER_MAPPED_FROM: chat.model, semconv.ROUTER_MAPPED_REASON: reason}
    )
    return dataclasses.replace(chat, model=target)


def map_reason(name: str, catalog: Catalog, view: PolicyView, router: Router) -> str | None:
    """Why a requested name goes to its mapped target: `not_in_catalog`, `policy_denied`
    (every target denied here) or `unavailable` (every allowed target's breaker open or
    cooling down); None when the name is served as it is."""
    chain_ids = catalog.chat_chains.get(name)
    if chain_ids is None:
        return None if catalog.panel_for(name) else "not_in_catalog"
    allowed = [m for m in (catalog.models[i] for i in chain_ids) if view.decision(m).allowed]
    if not allowed:
        return "policy_denied"
    if all(router.unavailable(m) is not None for m in allowed):
        return "unavailable"
    return None


async def _stream(
    request: web.Request,
    scope: RequestScope,
    chat: ChatRequest,
    router: Router,
    chain: list[CatalogModel],
    deadline: float,
    dialect: Dialect,
) -> web.StreamResponse:
    assert scope.view is not None  # noqa: S101  # pinned by the handler
    created = int(time.time())
    foreseen: list[tuple[web.StreamResponse, StreamWriter]] = []
    if chain:  # what the first target will need is built while it answers (the loop is idle)
        first = chain[0]
        asyncio.get_running_loop().call_soon(
            lambda: foreseen.append(
                _answer_stream(scope, dialect, first, [first.provider], created)
            )
        )
    opened = await router.open_stream(chat, chain, deadline, gate=scope.view.gate)
    model, attempts = opened.model, opened.attempts
    if foreseen and model is chain[0] and len(attempts.records) == 1:
        response, chunks = foreseen[0]  # served at the first try, as foreseen
    else:
        response, chunks = _answer_stream(scope, dialect, model, attempts.providers, created)
    scope.response = response
    try:
        await response.prepare(request)
        end = await relay(response, opened.first, opened.events, chunks, deadline)
        if isinstance(end, RouterError):
            scope.completed.failed(end)
            scope.completed.stream_truncated = True
            scope.services.metrics.stream_truncated.labels(model.provider, model.id).inc()
            _served(scope, model, attempts, None)
            return response
        extensions = (
            {"router": router_body(model.provider, model.cost(end.usage), attempts)}
            if chat.include_usage
            else None
        )
        await finish(response, chunks.done(end.usage, extensions))
        _served(scope, model, attempts, end.usage)
        return response
    except ConnectionError:  # the client hung up mid-stream: nothing more to say to it
        scope.completed.cancelled()
        return response
    except asyncio.CancelledError as exc:
        if not ShuttingDown.cut(exc):
            scope.completed.cancelled()
        raise
    finally:
        await opened.aclose()


async def list_models(request: web.Request, scope: RequestScope) -> web.Response:
    """`GET /v1/models`: what this sidecar's jurisdiction (narrowed by the header) allows.

    Models policy denies are left out; a route is listed with its allowed targets
    only; a panel is listed with the plan its seats would get now. Models and routes say
    their `model_kind`: chat, or embedding (served on `/v1/embeddings` only, with the
    model's vector size as `dimensions` where configured).
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
            "router": {
                "kind": "model",
                "model_kind": m.kind,
                "provider": m.provider,
                "tier": m.tier,
                "region": m.region,
                "capabilities": m.capability_list,
                **({"dimensions": m.dimensions} if m.dimensions is not None else {}),
            },
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
                    "router": {
                        "kind": "route",
                        "model_kind": catalog.models[targets[0]].kind,
                        "targets": targets,
                        "capabilities": route_capabilities(catalog.models, targets),
                    },
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
                    "model_kind": "chat",
                    "panelists": list(panel.panelists),
                    "denied_panelists": [p for p in panel.panelists if p not in allowed],
                },
            }
        )
    listed = {entry["id"] for entry in data}
    for name, target in catalog.model_map.items():
        if name not in listed:  # (an allowed catalog model is listed as itself)
            data.append(
                {
                    "id": name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "fusion-router",
                    "router": {"kind": "mapped", "model_kind": "chat", "served_by": target},
                }
            )
    headers = {
        "X-Router-Jurisdiction": ",".join(view.jurisdictions),
        "X-Router-Policy-Version": view.pinned.version,
    }
    return web.json_response({"object": "list", "data": data}, headers=headers)


def route_capabilities(models: Mapping[str, CatalogModel], targets: Sequence[str]) -> list[str]:
    """What a route can serve: every capability at least one of its `targets` has."""
    union = frozenset().union(*(models[t].capabilities for t in targets))
    return [c for c in CAPABILITIES if c in union]


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
    """`GET /admin/explain?model=…&jurisdiction=…&needs=…`: the plan and every decision, no
    outbound call; `needs` (e.g. `tools,vision`) explains a request that needs those
    capabilities."""
    model = request.query.get("model", "").strip()
    if not model:
        raise InvalidRequest("query parameter 'model' is required", param="model")
    needs = needs_of(request.query.get("needs", ""))
    view = _view(scope.services, request.query.get("jurisdiction"))
    router = scope.services.runtime.router
    unavailable = router.unavailable if router is not None else (lambda _m: None)
    return web.json_response(explain(model, scope.services.catalog, view, unavailable, needs))


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


CHAT = RouteFlags(guard=True, shed=True, log=True, count=True, json_body=True)
API = RouteFlags(guard=True, shed=False, log=True, count=False)
OPEN = RouteFlags(guard=False, shed=False, log=False, count=False)  # probes and the scrape

ROUTES: tuple[tuple[str, str, ScopedHandler, RouteFlags], ...] = (
    ("POST", "/v1/chat/completions", chat_completions, CHAT),
    ("GET", "/v1/models", list_models, API),
    ("GET", "/healthz", healthz, OPEN),
    ("GET", "/readyz", readyz, OPEN),
    ("GET", "/metrics", metrics_view, OPEN),
    ("GET", "/admin/breakers", admin_breakers, API),
    ("GET", "/admin/explain", admin_explain, API),
    ("POST", "/admin/reload", admin_reload, API),
)


__all__ = ["ROUTES", "serve_chat", "served_headers"]
