"""Every endpoint of the sidecar, registered on the app: the OpenAI chat surface and the
admin views (`router.handlers`), and the other inbound APIs (each a module of its own)."""

from __future__ import annotations

from aiohttp import web

from router import embeddings_api, handlers, messages_api, responses_api
from router.request_scope import RouteFlags, no_route, not_allowed, scoped
from router.state import Services

ROUTES = (*handlers.ROUTES, *messages_api.ROUTES, *responses_api.ROUTES, *embeddings_api.ROUTES)


def add_routes(app: web.Application, services: Services) -> None:
    """Register every endpoint, each wrapped in its request scope. A served path answers its
    other methods with a JSON 405 under its own guard (an open path stays open); a catch-all
    answers any other path with a JSON 404."""
    resources: dict[str, tuple[web.Resource, set[str], RouteFlags]] = {}
    for method, path, handler, flags in ROUTES:
        resource, methods, _ = resources.get(path) or (app.router.add_resource(path), set(), flags)
        wrapped = scoped(services, handler, path, flags)
        if method == "GET":
            resource.add_route("HEAD", wrapped)
            methods.add("HEAD")
        resource.add_route(method, wrapped)
        methods.add(method)
        resources[path] = (resource, methods, flags)
    for path, (resource, methods, flags) in resources.items():  # after the served methods
        others = RouteFlags(
            guard=flags.guard, shed=False, log=flags.log, count=False, dialect=flags.dialect
        )
        resource.add_route("*", scoped(services, not_allowed(methods), path, others))
    fallback = scoped(services, no_route, "unmatched", handlers.API)
    app.router.add_route("*", "/{tail:.*}", fallback)
