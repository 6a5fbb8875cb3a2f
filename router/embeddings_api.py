"""`POST /v1/embeddings` over the catalog's embedding models.

The same core as chat: the request's policy view gates every target, a route of embedding
models fails over as a chat route does (breakers, cooldowns, retries, the retry budget, the
deadline: `Router.embed`), and the answer carries the same `router` extension object, the same
X-Router-* headers and the same `request.completed` line (its `stream` false, its tokens input
only, its cost at the model's input price). A chat model, route or fusion panel named here is a
400 `wrong_model_kind`, as an embedding model named on a chat API is.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from router.deadline import request_deadline
from router.embeddings_in import read_embeddings
from router.embeddings_out import embeddings_body
from router.errors import ShuttingDown
from router.handlers import record_usage, served_headers
from router.policy_view import PolicyView
from router.request_scope import RequestScope, RouteFlags, ScopedHandler
from router.routing import check_dimensions
from router.wire_out import json_bytes, router_body


async def create_embeddings(request: web.Request, scope: RequestScope) -> web.StreamResponse:
    """`POST /v1/embeddings`: an embedding model or a route of them; whole answers only."""
    wanted = read_embeddings(scope.body)
    services = scope.services
    catalog = services.catalog
    completed = scope.completed
    completed.requested_model, completed.stream = wanted.model, False
    deadline = request_deadline(request.headers, services.settings.default_deadline_s)
    view = scope.view = PolicyView.for_request(
        services.policy,
        services.config.config.jurisdiction,
        request.headers.get("X-Router-Jurisdiction"),
        catalog.models,
    )
    router = services.runtime.router
    if router is None:  # only once the upstream client closed, at the end of a shutdown
        raise ShuttingDown("the sidecar is shutting down; retry elsewhere or shortly")
    chain_ids = catalog.embedding_chains.get(wanted.model)
    if chain_ids is None:
        raise catalog.not_served(wanted.model, "embedding")
    completed.kind = "model" if wanted.model in catalog.models else "route"
    completed.target = wanted.model
    chain = view.allowed_chain(wanted.model, [catalog.models[i] for i in chain_ids])
    check_dimensions(wanted, chain)
    routed = await router.embed(wanted, chain, deadline, gate=view.gate)
    model, usage = routed.model, routed.embeddings.usage
    completed.served(model, routed.attempts, usage)
    # counted on the loop's next turn, after the response is on the wire
    asyncio.get_running_loop().call_soon(record_usage, services.metrics, model, usage)
    body = embeddings_body(
        model.id,
        routed.embeddings.vectors,
        usage,
        wanted.encoding_format,
        {"router": router_body(model.provider, routed.cost, routed.attempts)},
    )
    headers = served_headers(model, routed.attempts.providers, scope.request_id, view)
    return web.Response(body=json_bytes(body), content_type="application/json", headers=headers)


EMBEDDINGS = RouteFlags(guard=True, shed=True, log=True, count=True, json_body=True)

ROUTES: tuple[tuple[str, str, ScopedHandler, RouteFlags], ...] = (
    ("POST", "/v1/embeddings", create_embeddings, EMBEDDINGS),
)
