"""The OpenAI Responses API (`POST /v1/responses`), stateless, over the one core: the request
is translated into a `ChatRequest` (`router.responses_in`) and served by `serve_chat` through
the same catalog, routes, fusion panels, policy, breakers, retries and deadlines as chat,
rendered in the Responses dialect (`router.responses_out`). Nothing is stored, so a stored
response asked for by id is a 404 that says so."""

from __future__ import annotations

from aiohttp import web

from router.errors import NotFound
from router.handlers import serve_chat
from router.request_scope import RequestScope, RouteFlags, ScopedHandler
from router.responses_in import read_responses
from router.responses_out import OPENAI_RESPONSES, OpenAIResponses


async def create_response(request: web.Request, scope: RequestScope) -> web.StreamResponse:
    """`POST /v1/responses`: a catalog model, a route alias or a fusion panel, whole or
    streamed."""
    parsed = read_responses(scope.body, scope.services.settings.limits)
    dialect = OpenAIResponses(parsed.echo)
    scope.dialect = dialect  # an error cutting the stream goes on in the stream's own events
    return await serve_chat(request, scope, parsed.chat, parsed.fusion, dialect)


async def stored_response(_request: web.Request, _scope: RequestScope) -> web.StreamResponse:
    """`GET` or `DELETE /v1/responses/{id}`: nothing is stored, so there is none (404)."""
    raise NotFound(
        "no stored response: this sidecar is stateless and stores no responses "
        "(send the whole conversation as 'input' items instead of an id)"
    )


RESPONSES = RouteFlags(
    guard=True, shed=True, log=True, count=True, json_body=True, dialect=OPENAI_RESPONSES
)
STORED = RouteFlags(guard=True, shed=False, log=True, count=False, dialect=OPENAI_RESPONSES)

ROUTES: tuple[tuple[str, str, ScopedHandler, RouteFlags], ...] = (
    ("POST", "/v1/responses", create_response, RESPONSES),
    ("GET", "/v1/responses/{response_id}", stored_response, STORED),
    ("DELETE", "/v1/responses/{response_id}", stored_response, STORED),
)
