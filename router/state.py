"""Typed app keys and the state objects they hold (no module-level singletons)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web
from structlog.typing import FilteringBoundLogger

from router.breakers import BreakerBoard
from router.catalog import Catalog
from router.config import LoadedConfig
from router.inbound import Limits
from router.metrics import Metrics
from router.policy_loader import PolicyStore
from router.providers import Provider, Secret
from router.routing import Router
from router.tracing import Telemetry
from router.upstream_http import UpstreamClient


@dataclass
class Runtime:
    """What exists only while the app runs: the session, providers and router built on it."""

    session: UpstreamClient | None = None
    providers: dict[str, Provider] = field(default_factory=dict)
    router: Router | None = None
    breakers: BreakerBoard | None = None
    inflight: int = 0
    capture_content: bool = False


@dataclass(frozen=True)
class Settings:
    """Per-process settings derived once from config and environment."""

    auth_token: Secret | None
    allowed_hosts: frozenset[str]
    limits: Limits
    max_inflight: int
    max_body_bytes: int
    default_deadline_s: float


@dataclass(frozen=True, slots=True)
class Services:
    """The app's state as one object: a request looks it up once (`request.app[SERVICES]`)
    instead of once per key (three calls each on aiohttp's side)."""

    config: LoadedConfig
    catalog: Catalog
    settings: Settings
    runtime: Runtime
    metrics: Metrics
    telemetry: Telemetry
    policy: PolicyStore
    logger: FilteringBoundLogger


CONFIG = web.AppKey("config", LoadedConfig)
CATALOG = web.AppKey("catalog", Catalog)
SETTINGS = web.AppKey("settings", Settings)
RUNTIME = web.AppKey("runtime", Runtime)
KEYS = web.AppKey("keys", Mapping[str, Secret | None])
METRICS = web.AppKey("metrics", Metrics)
TELEMETRY = web.AppKey("telemetry", Telemetry)
POLICY = web.AppKey("policy", PolicyStore)
LOGGER = web.AppKey("logger", FilteringBoundLogger)  # bound once: no logger built per request
SERVICES = web.AppKey("services", Services)  # the keys above, together
