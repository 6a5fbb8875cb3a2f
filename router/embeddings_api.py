"""`POST /v1/embeddings` over the catalog's embedding models."""

from __future__ import annotations

from router.request_scope import RouteFlags, ScopedHandler

ROUTES: tuple[tuple[str, str, ScopedHandler, RouteFlags], ...] = ()
