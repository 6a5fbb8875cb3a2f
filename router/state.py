"""The app's state: one typed app key and the objects it holds (no module-level singletons)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
    """What exists only while the app runs: the session, providers and router built on it,
    and the requests in flight (which a shutdown answers with 503 once its grace is spent)."""

    session: UpstreamClient | None = None
    providers: dict[str, Provider] = field(default_factory=dict)
    router: Router | None = None
    breakers: BreakerBoard | None = None
    inflight: int = 0
    capture_content: bool = False
    draining: bool = False  # set at shutdown: new requests get 503, cut ones are answered
    requests: set[asyncio.Task[Any]] = field(default_factory=set)  # chat requests in flight


@dataclass(frozen=True)
class Settings:
    """Per-process settings derived once from config and environment."""

    auth_token: Secret | None
    allowed_hosts: frozenset[str]
    limits: Limits
    max_inflight: int
    max_body_bytes: int
    default_deadline_s: float
    body_timeout_s: float


@dataclass(frozen=True, slots=True)
class Services:
    """The app's state, as one object under one key (`app[SERVICES]`); each route is bound to
    it when the app is built."""

    config: LoadedConfig
    catalog: Catalog
    settings: Settings
    runtime: Runtime
    metrics: Metrics
    telemetry: Telemetry
    policy: PolicyStore
    logger: FilteringBoundLogger
    keys: Mapping[str, Secret | None]


SERVICES = web.AppKey("services", Services)  # the one way to the app's state
