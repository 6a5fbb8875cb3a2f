"""Prometheus metrics: one registry per app, low-cardinality labels, names pinned as a contract.

Label values come only from config (provider, model, route, panel names,
jurisdictions, rule ids) or from fixed vocabularies (outcome classes, error
codes, stages); a name a caller made up is reported as ``unknown``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from router.catalog import Catalog
from router.errors import Outcome

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BREAKER_STATE_VALUE = {"closed": 0, "half_open": 1, "open": 2}
_ATTEMPT_OUTCOMES = tuple(outcome.value for outcome in Outcome)
SPANS_DROPPED_REASONS = ("queue_full", "export_failed")


@dataclass
class Metrics:
    """Every metric the router exports (the README, alert rules and dashboard use these names)."""

    registry: CollectorRegistry
    requests: Counter
    request_duration: Histogram
    inflight: Gauge
    shed: Counter
    upstream_attempts: Counter
    upstream_duration: Histogram
    quota_exhausted: Counter
    auth_failures: Counter
    breaker_state: Gauge
    breaker_transitions: Counter
    retry_budget_exhausted: Counter
    stream_truncated: Counter
    sse_malformed: Counter
    substitutions: Counter
    quorum_failures: Counter
    fusion_degraded: Counter
    policy_denials: Counter
    policy_reloads: Counter
    policy_stale: Gauge
    tokens: Counter
    cost: Counter
    # the listener's own limits (router/server_limits.py; body timeouts: router/request_scope.py)
    inbound_connections: Gauge
    inbound_refused: Counter
    inbound_timeouts: Counter
    # spans that never reached the collector (router/span_shipping.py)
    spans_dropped: Counter
    # per-request label lookups, cached (label values come from config: a bounded set)
    requests_of: Callable[..., Counter] = field(init=False, repr=False)
    request_duration_of: Callable[..., Histogram] = field(init=False, repr=False)
    upstream_attempts_of: Callable[..., Counter] = field(init=False, repr=False)
    upstream_duration_of: Callable[..., Histogram] = field(init=False, repr=False)
    tokens_of: Callable[..., Counter] = field(init=False, repr=False)
    cost_of: Callable[..., Counter] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        def cached(metric: Any) -> Any:
            return functools.lru_cache(maxsize=4096)(metric.labels)

        self.requests_of = cached(self.requests)
        self.request_duration_of = cached(self.request_duration)
        self.upstream_attempts_of = cached(self.upstream_attempts)
        self.upstream_duration_of = cached(self.upstream_duration)
        self.tokens_of = cached(self.tokens)
        self.cost_of = cached(self.cost)

    @classmethod
    def create(cls) -> Metrics:
        r = CollectorRegistry(auto_describe=True)
        return cls(
            registry=r,
            requests=Counter(
                "router_requests_total",
                "Chat requests by kind (model, route, fusion), target and outcome.",
                ["kind", "target", "outcome"],
                registry=r,
            ),
            request_duration=Histogram(
                "router_request_duration_seconds",
                "Chat request latency by kind, target and outcome.",
                ["kind", "target", "outcome"],
                buckets=_LATENCY_BUCKETS,
                registry=r,
            ),
            inflight=Gauge("router_inflight_requests", "Chat requests in flight.", registry=r),
            shed=Counter(
                "router_requests_shed_total",
                "Requests refused because the inbound cap was reached.",
                registry=r,
            ),
            upstream_attempts=Counter(
                "router_upstream_attempts_total",
                "Upstream attempts by provider, model and outcome class.",
                ["provider", "model", "outcome"],
                registry=r,
            ),
            upstream_duration=Histogram(
                "router_upstream_duration_seconds",
                "Upstream attempt latency (to the whole answer or first event).",
                ["provider", "model"],
                buckets=_LATENCY_BUCKETS,
                registry=r,
            ),
            quota_exhausted=Counter(
                "router_provider_quota_exhausted_total",
                "Upstream answers saying the account's quota is spent (429 insufficient_quota).",
                ["provider", "model"],
                registry=r,
            ),
            auth_failures=Counter(
                "router_provider_auth_failures_total",
                "Upstream answers refusing our credential (401/403).",
                ["provider", "model"],
                registry=r,
            ),
            breaker_state=Gauge(
                "router_breaker_state",
                "Breaker state: 0 closed, 1 half-open, 2 open.",
                ["key", "provider", "model"],
                registry=r,
            ),
            breaker_transitions=Counter(
                "router_breaker_transitions_total",
                "Breaker state changes.",
                ["provider", "model", "to"],
                registry=r,
            ),
            retry_budget_exhausted=Counter(
                "router_retry_budget_exhausted_total",
                "Retries refused because the retry budget was spent.",
                registry=r,
            ),
            stream_truncated=Counter(
                "router_stream_truncated_total",
                "Streams that ended with an in-band error after the first byte.",
                ["provider", "model"],
                registry=r,
            ),
            sse_malformed=Counter(
                "router_sse_malformed_total",
                "Malformed upstream stream events skipped (providers.*.skip_malformed_events).",
                ["provider"],
                registry=r,
            ),
            substitutions=Counter(
                "router_fusion_substitutions_total",
                "Fusion seats given to a substitute, by panel and why.",
                ["panel", "reason"],
                registry=r,
            ),
            quorum_failures=Counter(
                "router_fusion_quorum_failures_total",
                "Fusion requests that could not seat their quorum.",
                ["panel"],
                registry=r,
            ),
            fusion_degraded=Counter(
                "router_fusion_degraded_total",
                "Fusion answers served degraded, by stage.",
                ["panel", "stage"],
                registry=r,
            ),
            policy_denials=Counter(
                "router_policy_denials_total",
                "Policy exclusions by jurisdiction and rule.",
                ["jurisdiction", "rule"],
                registry=r,
            ),
            policy_reloads=Counter(
                "router_policy_reloads_total",
                "Policy reloads by result (ok, failed).",
                ["result"],
                registry=r,
            ),
            policy_stale=Gauge(
                "router_policy_stale",
                "1 when the last policy reload failed and the last-known-good is served.",
                registry=r,
            ),
            tokens=Counter(
                "router_tokens_total",
                "Tokens by provider, model and type (input, output).",
                ["provider", "model", "type"],
                registry=r,
            ),
            cost=Counter(
                "router_cost_usd_total",
                "Cost in USD at catalog prices.",
                ["provider", "model"],
                registry=r,
            ),
            inbound_connections=Gauge(
                "router_inbound_connections",
                "Open inbound connections (server.max_connections caps them).",
                registry=r,
            ),
            inbound_refused=Counter(
                "router_inbound_connections_refused_total",
                "Inbound connections closed by the listener, by reason (max_connections: "
                "past the cap, answered 503; head_too_large: a request head over 64 KiB, 431).",
                ["reason"],
                registry=r,
            ),
            inbound_timeouts=Counter(
                "router_inbound_timeouts_total",
                "Requests cut because their head (server.head_timeout_s, connection closed) "
                "or body (server.body_timeout_s, 408) did not arrive in time, by phase.",
                ["phase"],
                registry=r,
            ),
            spans_dropped=Counter(
                "router_spans_dropped_total",
                "Ended spans that never reached the OTLP collector, by reason (queue_full: "
                "OTEL_BSP_MAX_QUEUE_SIZE spans were already waiting; export_failed: the "
                "collector refused them or could not be reached before the exporter gave up).",
                ["reason"],
                registry=r,
            ),
        )

    def start_at_zero(self, catalog: Catalog) -> None:
        """Every labelled counter of a configured provider, model or panel exists from startup
        at zero, so `increase()` and `rate()` see its first event (not only the ones after)."""
        for model in catalog.models.values():
            provider, name = model.provider, model.id
            for outcome in _ATTEMPT_OUTCOMES:
                self.upstream_attempts_of(provider, name, outcome)
            for metric in (self.quota_exhausted, self.auth_failures, self.stream_truncated):
                metric.labels(provider, name)
            self.cost_of(provider, name)
            for kind in ("input", "output"):
                self.tokens_of(provider, name, kind)
            for state in BREAKER_STATE_VALUE:
                self.breaker_transitions.labels(provider, name, state)
        for provider in {m.provider for m in catalog.models.values()}:
            self.sse_malformed.labels(provider)
        for panel in catalog.panels:
            self.quorum_failures.labels(panel)
            for reason in ("planned", "failed", "hedged"):
                self.substitutions.labels(panel, reason)
            for stage in ("quorum", "judge", "synthesizer"):
                self.fusion_degraded.labels(panel, stage)
        for result in ("ok", "failed"):
            self.policy_reloads.labels(result)
        for reason in SPANS_DROPPED_REASONS:
            self.spans_dropped.labels(reason)

    def render(self) -> bytes:
        """The exposition text for `GET /metrics`."""
        return generate_latest(self.registry)
