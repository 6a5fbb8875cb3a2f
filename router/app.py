"""`create_app()`: wires config, catalog, providers and handlers into an aiohttp application.

No globals: every resource lives on the app under a typed `AppKey`, and each
resource with a lifetime (the pooled upstream client, the providers built on
it) has one cleanup context.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Mapping

from aiohttp import web
from opentelemetry.sdk.trace.export import SpanExporter

from router import routes
from router.breakers import BreakerBoard, BreakerChange
from router.catalog import Catalog, CatalogModel
from router.config import LoadedConfig
from router.errors import (
    AttemptRecord,
    ConfigError,
    PolicyError,
    Problem,
    ProviderAuthFailed,
    ProviderQuotaExhausted,
)
from router.inbound import Limits
from router.logs import get_logger
from router.metrics import BREAKER_STATE_VALUE, Metrics
from router.policy import PolicySet
from router.policy_loader import PolicyStore, watch
from router.providers import Secret, build_providers, client_from_environ, resolve_keys
from router.retry import retry_policy
from router.routing import Router
from router.state import (
    SERVICES,
    Runtime,
    Services,
    Settings,
)
from router.tracing import build_telemetry, content_capture, inject_headers
from router.upstream_http import UpstreamClient


def _settings(loaded: LoadedConfig, environ: Mapping[str, str], host: str | None) -> Settings:
    server = loaded.config.server
    token = None
    if server.auth_token_env:
        value = environ.get(server.auth_token_env)
        if not value:
            raise ConfigError(
                [
                    Problem(
                        loaded.source,
                        "server.auth_token_env",
                        f"environment variable {server.auth_token_env} is not set",
                    )
                ]
            )
        token = Secret(value)
    bind = host or server.host
    hosts = {"localhost", "127.0.0.1", "[::1]", "::1", bind}
    return Settings(
        auth_token=token,
        allowed_hosts=frozenset(h.lower() for h in hosts),
        limits=Limits(max_messages=server.max_messages),
        max_inflight=server.max_inflight,
        max_body_bytes=server.max_body_bytes,
        default_deadline_s=server.deadline_s,
        body_timeout_s=server.body_timeout_s,
    )


def _check_keys(loaded: LoadedConfig, environ: Mapping[str, str]) -> None:
    missing = [
        Problem(
            loaded.source,
            f"providers.{name}.api_key_env",
            f"environment variable {p.api_key_env} is not set",
        )
        for name, p in loaded.config.providers.items()
        if p.api_key_env and not environ.get(p.api_key_env)
    ]
    if missing:
        raise ConfigError(missing)


async def _client_session(app: web.Application) -> AsyncIterator[None]:
    """One pooled upstream client for every upstream call, closed with the app."""
    services = app[SERVICES]
    runtime = services.runtime
    session = runtime.session or UpstreamClient()  # (`create_app` puts one in)
    runtime.session = session
    config = services.config.config
    metrics = services.metrics

    def on_malformed_event(provider: str) -> None:
        metrics.sse_malformed.labels(provider).inc()

    runtime.providers = build_providers(
        config, session, services.keys, on_malformed_event=on_malformed_event
    )

    def observe(record: AttemptRecord) -> None:  # after the response: see `observe_later`
        metrics.upstream_attempts_of(record.provider, record.model, record.outcome).inc()
        metrics.upstream_duration_of(record.provider, record.model).observe(
            record.duration_ms / 1000
        )
        if record.code == ProviderQuotaExhausted.code:
            metrics.quota_exhausted.labels(record.provider, record.model).inc()
        elif record.code == ProviderAuthFailed.code:
            metrics.auth_failures.labels(record.provider, record.model).inc()

    def observe_later(record: AttemptRecord) -> None:
        asyncio.get_running_loop().call_soon(observe, record)

    log = get_logger()

    def on_change(change: BreakerChange) -> None:
        model = change.model or ""
        metrics.breaker_state.labels(change.key, change.provider, model).set(
            BREAKER_STATE_VALUE[change.new_state]
        )
        metrics.breaker_transitions.labels(change.provider, model, change.new_state).inc()
        log.warning(
            "breaker.state_changed",
            breaker=change.key,
            provider=change.provider,
            model=change.model,
            old=change.old_state,
            new=change.new_state,
            open_for_s=change.open_for_s,
        )

    runtime.breakers = board = BreakerBoard(
        {name: p.breaker for name, p in config.providers.items()}, on_change=on_change
    )
    catalog = services.catalog
    board.register((m.provider, m.id) for m in catalog.models.values())
    metrics.start_at_zero(catalog)
    telemetry = services.telemetry
    forwarding = config.trace_forwarding()

    def trace_headers(model: CatalogModel) -> tuple[tuple[str, str], ...]:
        return inject_headers() if model.provider in forwarding else ()

    runtime.router = router = Router(
        runtime.providers,
        breakers=board,
        tracer=telemetry.tracer if telemetry.exporting else None,
        capture_content=runtime.capture_content,
        trace_headers=trace_headers if forwarding else None,
        observer=observe_later,
        policy=retry_policy(config.retry),
        bulkheads={name: p.max_inflight for name, p in config.providers.items()},
    )
    router.on_budget_exhausted = metrics.retry_budget_exhausted.inc
    try:
        yield
    finally:
        runtime.router = None
        await session.close()


def _policy_store(loaded: LoadedConfig, catalog: Catalog, metrics: Metrics) -> PolicyStore:
    """Load every policy file now: no valid policy for our jurisdiction, no app (fail closed)."""
    log = get_logger()

    def changed(old: PolicySet, new: PolicySet) -> None:
        metrics.policy_reloads.labels("ok").inc()
        metrics.policy_stale.set(0)
        log.warning(
            "policy.reloaded",
            old_version=old.version,
            new_version=new.version,
            old_sha256=old.sha256,
            new_sha256=new.sha256,
        )

    def failed(error: PolicyError) -> None:
        metrics.policy_reloads.labels("failed").inc()
        metrics.policy_stale.set(1)
        log.error(
            "policy.reload_failed",
            problems=[str(p) for p in error.problems][:20],
            kept="last-known-good",
        )

    store = PolicyStore(
        loaded.policies_dir,
        catalog.models,
        required=[loaded.config.jurisdiction],
        on_change=changed,
        on_failure=failed,
    )
    log.info(
        "policy.loaded",
        version=store.current.version,
        sha256=store.current.sha256,
        folder=str(loaded.policies_dir),
    )
    return store


async def _policy_watcher(app: web.Application) -> AsyncIterator[None]:
    """Reload policies when their files change (SIGHUP and POST /admin/reload reload at once)."""
    task = asyncio.create_task(watch(app[SERVICES].policy, interval_s=1.0))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _telemetry(app: web.Application) -> AsyncIterator[None]:
    """Flush and stop the span exporter with the app (bounded by the exporter's own timeout)."""
    yield
    # the exporter may be retrying an unreachable collector: never hold up shutdown for it
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.to_thread(app[SERVICES].telemetry.shutdown), timeout=2.0)


def create_app(
    loaded: LoadedConfig,
    *,
    environ: Mapping[str, str] | None = None,
    host: str | None = None,
    span_exporter: SpanExporter | None = None,
    upstream_client: UpstreamClient | None = None,
) -> web.Application:
    """The sidecar as an aiohttp application; raises `ConfigError` if it cannot serve."""
    env = os.environ if environ is None else environ
    _check_keys(loaded, env)
    settings = _settings(loaded, env, host)
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        handler_args={"max_field_size": 8190, "max_line_size": 8190},
    )
    # a test may bring its own client; else proxy variables are read here, once
    runtime = Runtime(session=upstream_client or client_from_environ(env))
    metrics = Metrics.create()
    metrics.inflight.set_function(lambda: runtime.inflight)
    catalog = Catalog.from_config(loaded.config)
    runtime.capture_content = content_capture(loaded.config.telemetry.capture_content, env)
    policy = _policy_store(loaded, catalog, metrics)  # first: no valid policy, no app
    app[SERVICES] = Services(
        config=loaded,
        catalog=catalog,
        settings=settings,
        runtime=runtime,
        metrics=metrics,
        telemetry=build_telemetry(
            env,
            span_exporter,
            lambda reason, count: metrics.spans_dropped.labels(reason).inc(count),
            forwarding=bool(loaded.config.trace_forwarding()),
        ),
        policy=policy,
        logger=get_logger().bind(),
        keys=resolve_keys(loaded.config, env),
    )
    app.cleanup_ctx.append(_policy_watcher)
    app.cleanup_ctx.append(_telemetry)
    app.cleanup_ctx.append(_client_session)
    routes.add_routes(app, app[SERVICES])
    return app
