"""The Anthropic Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`) over the
one core: the request is parsed into a `ChatRequest` (`router.messages_in`) and served by
`serve_chat` (policy, routes, fusion panels, whole or streamed), rendered in the Anthropic
dialect (`router.messages_out`), errors included.

`count_tokens` answers an honest estimate, not a tokenizer's count (each upstream vendor
tokenizes differently, and the sidecar calls none of them to count): the estimate of
`router.token_estimate` (4 characters a token) over every text the request holds (system,
messages, tool calls and results, thinking, tool definitions, the output schema), plus
`IMAGE_TOKENS` per image. The answer says so in our `router` object.
"""

from __future__ import annotations

from aiohttp import web

from router.catalog import FUSION_PREFIX
from router.errors import UnknownModel
from router.handlers import serve_chat
from router.messages_in import read_messages
from router.messages_out import ANTHROPIC_MESSAGES
from router.request_scope import RequestScope, RouteFlags, ScopedHandler
from router.token_estimate import ESTIMATE, estimate_input_tokens


async def create_message(request: web.Request, scope: RequestScope) -> web.StreamResponse:
    """`POST /v1/messages`: a catalog model, a route or a fusion panel, whole or streamed."""
    chat, fusion_options = read_messages(scope.body, scope.services.settings.limits)
    return await serve_chat(request, scope, chat, fusion_options, ANTHROPIC_MESSAGES)


async def count_tokens(_request: web.Request, scope: RequestScope) -> web.StreamResponse:
    """`POST /v1/messages/count_tokens`: the request's input tokens, estimated
    (`estimate_input_tokens`), for a model, route or panel this sidecar knows. No upstream
    call is made."""
    chat, _ = read_messages(scope.body, scope.services.settings.limits, counting=True)
    scope.completed.requested_model = chat.model
    catalog = scope.services.catalog
    known = (
        catalog.chain_for(chat.model) is not None
        or chat.model == "fusion"
        or (chat.model.startswith(FUSION_PREFIX) and catalog.panel_for(chat.model) is not None)
    )
    if not known:
        raise UnknownModel(chat.model)
    body = {"input_tokens": estimate_input_tokens(chat), "router": {"method": ESTIMATE}}
    return web.json_response(body, headers={"X-Request-Id": scope.request_id})


MESSAGES = RouteFlags(
    guard=True, shed=True, log=True, count=True, json_body=True, dialect=ANTHROPIC_MESSAGES
)
COUNT = RouteFlags(
    guard=True, shed=False, log=True, count=False, json_body=True, dialect=ANTHROPIC_MESSAGES
)

ROUTES: tuple[tuple[str, str, ScopedHandler, RouteFlags], ...] = (
    ("POST", "/v1/messages", create_message, MESSAGES),
    ("POST", "/v1/messages/count_tokens", count_tokens, COUNT),
)
