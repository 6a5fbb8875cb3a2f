"""The OpenAI Responses API (`POST /v1/responses`), stateless, over the one core."""

from __future__ import annotations

from router.request_scope import RouteFlags, ScopedHandler

ROUTES: tuple[tuple[str, str, ScopedHandler, RouteFlags], ...] = ()
