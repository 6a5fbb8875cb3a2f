"""The HTTP side of fusion: plan the panel for this request, run it, answer whole or streamed.

Everything that is not HTTP lives in `router.fusion` (`resolve`, `plan`, `pipeline`); here the
outcome becomes a `chat.completion` (or a stream through the one relay) with its `fusion`
object, headers, metrics and the request's log fields.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from router import semconv
from router.catalog import FUSION_PREFIX, CatalogModel, Panel
from router.dialect import Dialect
from router.errors import (
    CostLimitExceeded,
    PanelExhausted,
    PolicyDenied,
    RouterError,
    ShuttingDown,
    UnsupportedParameter,
)
from router.fusion.caller import RouterCaller
from router.fusion.cost import (
    Costing,
    estimate_fusion,
    fitting_max_tokens,
    per_answer_token,
    solo_model,
)
from router.fusion.panel import FusionDeps
from router.fusion.pipeline import FusionOutcome, FusionRequest, run_fusion
from router.fusion.plan import FusionPlan, plan_panel
from router.fusion.resolve import availability_for, research_of, research_plan, resolve_panel
from router.fusion.spend import COST_EPSILON, CostBudget
from router.fusion.synthesize import synthesis_request
from router.fusion.views import deliberation_view, fusion_refusal, panelist_view
from router.metrics import Metrics
from router.protocol_support import missing_field, required_capabilities
from router.providers.base import Provider, estimate_tokens
from router.relay import finish, known_text, relay
from router.request_scope import RequestScope
from router.routing import Gate, Router, lacking_capability
from router.sse_response import event_stream
from router.token_estimate import estimate_input_tokens
from router.tracing import child_span
from router.types import ChatRequest, Completion, Usage
from router.wire_out import json_bytes


async def serve_fusion(
    request: web.Request,
    scope: RequestScope,
    chat: ChatRequest,
    options: Mapping[str, Any] | None,
    router: Router,
    deadline: float,
    dialect: Dialect,
) -> web.StreamResponse:
    """Answer `chat` with the panel it names: plan, run the stages, render in `dialect`."""
    services, view = scope.services, scope.view
    assert view is not None  # noqa: S101  # pinned by the handler
    refused = fusion_refusal(chat)
    if refused is not None:
        raise UnsupportedParameter(refused[1], param=refused[0])
    catalog = services.catalog
    panel = resolve_panel(chat.model, options, catalog)

    def unavailable(model: CatalogModel) -> str | None:
        return router.unavailable(model)

    availability = availability_for(catalog.models, view.gate, unavailable)
    research = research_of(panel)
    deliberation = panelist_view(deliberation_view(chat), research)
    synthesis = synthesis_request(chat, (), None)
    seat_needs = required_capabilities(deliberation)
    seat_availability = availability_for(catalog.models, view.gate, unavailable, seat_needs)
    plan = plan_panel(panel, catalog.models, availability, seat_availability)
    _check_carried(plan, deliberation, synthesis, catalog.models, services.runtime.providers)
    _check_capable(plan, chat, seat_needs, required_capabilities(synthesis), catalog.models)
    costing = _costing(panel, plan, chat, deliberation, synthesis, catalog.models, view.gate)
    if not plan.seated:
        # nothing could be seated: if policy is why, say so (403), never "panel exhausted"
        decision = view.decision(catalog.models[panel.panelists[0]])
        if not decision.allowed:
            raise PolicyDenied(
                f"no panelist of {chat.model!r} (or substitute) is allowed in jurisdiction "
                f"{decision.jurisdiction!r} (rule {decision.rule_id}: {decision.reason})",
                rule_id=decision.rule_id,
            )
    caller = RouterCaller(router, catalog.models, view.gate, money=CostBudget(panel.max_cost_usd))
    tracer = services.telemetry.tracer
    deps = FusionDeps(caller, catalog.models, availability, log=services.logger, tracer=tracer)
    started = deps.clock()
    fusion = FusionRequest(
        chat,
        plan,
        started,
        min(deadline, started + panel.deadline_s),
        degrade=panel.degrade,
        hedge_after_s=panel.hedge_after_s,
        judge_prompt=panel.judge_prompt,
        synthesizer_prompt=panel.synthesizer_prompt,
        rng=random.Random(scope.request_id),
        research=research,
        estimate=costing.estimate,
    )
    attributes: dict[str, str | int] = {
        semconv.GEN_AI_OPERATION_NAME: semconv.OPERATION_INVOKE_WORKFLOW,
        semconv.ROUTER_FUSION_PANEL: panel.name,
        semconv.ROUTER_FUSION_PLANNED_SUBSTITUTIONS: sum(1 for s in plan.seats if s.substituted),
    }
    with child_span(tracer, semconv.SPAN_FUSION, attributes=attributes):
        outcome = await run_fusion(fusion, deps)
        answer = _Answer(
            scope,
            outcome,
            caller,
            f"{FUSION_PREFIX}{panel.name}",
            started,
            dialect,
            costing,
            research_plan(panel, plan.seated, catalog.models),
        )
        if outcome.exhausted:
            services.metrics.quorum_failures.labels(panel.name).inc()
            answer.account()
            raise PanelExhausted(
                f"panel {plan.panel!r} got {len(outcome.panel.answers)} answer(s), "
                f"quorum is {plan.quorum}",
                seats=[s.as_dict() for s in outcome.panel.seats],
            )
        if not chat.stream:
            return answer.whole()
        return await answer.stream(request, fusion.deadline)


class _Answer:
    """One fusion outcome rendered for HTTP: the `fusion` object, headers, the log fields."""

    def __init__(
        self,
        scope: RequestScope,
        outcome: FusionOutcome,
        caller: RouterCaller,
        model_name: str,
        started: float,
        dialect: Dialect,
        costing: Costing,
        research: dict[str, Any] | None,
    ) -> None:
        self.scope, self.outcome, self.caller = scope, outcome, caller
        self.model_name, self.started, self.dialect = model_name, started, dialect
        self.costing = costing
        self.research = research  # the panel's research plan, if it researches

    def fusion_object(self) -> dict[str, Any]:
        view, outcome = self.scope.view, self.outcome
        synthesis = outcome.synthesis
        answer_tokens = 0
        if synthesis is not None:
            answer_tokens = synthesis.result.usage.output_tokens or estimate_tokens(
                synthesis.text or (synthesis.completion.text if synthesis.completion else "")
            )
        return outcome.as_dict(
            jurisdictions=list(view.jurisdictions) if view else [],
            policy_version=view.pinned.version if view else None,
            upstream_calls=self.caller.calls,
            total_ms=(time.monotonic() - self.started) * 1000,
            cost=self.costing.report(outcome.cost, answer_tokens),
            **({"research": self.research} if self.research else {}),
        )

    def headers(self) -> dict[str, str]:
        """Who served, what was substituted, what degraded, under which policy."""
        outcome, view = self.outcome, self.scope.view
        substitutions = sum(1 for s in outcome.plan.seats if s.substituted) + len(
            outcome.panel.substitutions
        )
        headers = {
            "X-Request-Id": self.scope.request_id,
            "X-Router-Model": self.model_name,
            "X-Router-Attempts": str(self.caller.calls),
            "X-Fusion-Seats": ",".join(s.served or "-" for s in outcome.panel.seats),
            "X-Fusion-Substitutions": str(substitutions),
            **(view.headers() if view is not None else {}),
            **self.scope.mapped_headers,
        }
        if outcome.degraded:
            headers["X-Fusion-Degraded"] = ",".join(outcome.degraded)
        return headers

    def account(self) -> None:
        """The outcome in the request's log fields and in the fusion metrics."""
        outcome, completed = self.outcome, self.scope.completed
        _count(self.scope.services.metrics, outcome, self.scope.services.catalog.models)
        usage = outcome.usage
        completed.fusion_panel = outcome.plan.panel
        completed.fusion_seats = [s.served for s in outcome.panel.seats]
        completed.substitutions = [s.as_dict() for s in outcome.plan.seats if s.substituted] + [
            s.as_dict() for s in outcome.panel.substitutions
        ]
        completed.degraded = list(outcome.degraded)
        completed.upstream_calls = self.caller.calls
        completed.input_tokens, completed.output_tokens = usage.input_tokens, usage.output_tokens
        completed.cost_usd = round(outcome.cost, 8)

    def whole(self) -> web.Response:
        """The `chat.completion` with its `fusion` object: the synthesizer's message as a
        routed answer's (text, tool calls, reasoning), or the text standing in for it."""
        synthesis = self.outcome.synthesis
        assert synthesis is not None  # noqa: S101  # not exhausted
        self.account()
        answer = synthesis.completion or Completion(synthesis.text or "", "stop", Usage(), "")
        body = self.dialect.whole(
            self.scope.request_id,
            self.model_name,
            answer,
            self.outcome.usage,
            {"fusion": self.fusion_object()},
        )
        return web.Response(
            body=json_bytes(body), content_type="application/json", headers=self.headers()
        )

    async def stream(self, request: web.Request, deadline: float) -> web.StreamResponse:
        """The synthesis (or the single or fallback answer) through the one relay; the
        `fusion` object in the last chunk before `[DONE]`."""
        synthesis = self.outcome.synthesis
        assert synthesis is not None  # noqa: S101  # not exhausted
        opened = synthesis.stream
        response = self.scope.response = event_stream(self.headers())
        try:
            await response.prepare(request)
            chunks = self.dialect.writer(self.scope.request_id, self.model_name, int(time.time()))
            first, rest = (
                (opened.first, opened.events) if opened else known_text(synthesis.text or "")
            )
            relayed = time.monotonic()
            end = await relay(response, first, rest, chunks, deadline)
            self.outcome = self.outcome.with_synthesis(
                synthesis.ended(end, (time.monotonic() - relayed) * 1000)
            )
            self.account()
            if isinstance(end, RouterError):
                self.scope.completed.failed(end)
                self.scope.completed.stream_truncated = True
                return response
            last = chunks.done(self.outcome.usage, {"fusion": self.fusion_object()})
            await finish(response, last)
            return response
        except ConnectionError:  # the client hung up mid-stream: nothing more to say to it
            self.scope.completed.cancelled()
            return response
        except asyncio.CancelledError as exc:
            if not ShuttingDown.cut(exc):
                self.scope.completed.cancelled()
            raise
        finally:
            if opened is not None:
                await opened.aclose()


def _costing(
    panel: Panel,
    plan: FusionPlan,
    chat: ChatRequest,
    deliberation: ChatRequest,
    synthesis: ChatRequest,
    models: Mapping[str, CatalogModel],
    gate: Gate,
) -> Costing:
    """The plan's estimate, checked against the panel's `max_cost_usd` before any call (a 400
    saying which `max_tokens` would fit), and the solo model the answer is priced against: the
    panel's `compare_with`, else the best-ranked model policy allows that can serve `chat`."""
    estimate = estimate_fusion(plan, deliberation, synthesis, models)
    per_token = per_answer_token(plan, deliberation, synthesis, models)
    cap = panel.max_cost_usd
    if cap is not None and estimate.total > cap + COST_EPSILON:
        fits = fitting_max_tokens(cap, per_token, plan, deliberation, synthesis, models)
        advice = f"; max_tokens {fits} would fit" if fits else "; no answer fits"
        raise CostLimitExceeded(
            f"the fusion may cost up to ${estimate.total:.6f}, over max_cost_usd ${cap}"
            f" (every planned call at its longest{advice})",
            estimate_usd=estimate.total,
            max_cost_usd=cap,
            fits_max_tokens=fits,
        )
    needs = required_capabilities(chat)
    allowed = [m.id for m in models.values() if gate(m) is None and not m.lacking(needs)]
    solo = solo_model(models, allowed, panel.compare_with)
    return Costing(estimate, cap, solo, estimate_input_tokens(chat), per_token)


def _check_carried(
    plan: FusionPlan,
    deliberation: ChatRequest,
    synthesis: ChatRequest,
    models: Mapping[str, CatalogModel],
    providers: Mapping[str, Provider],
) -> None:
    """A 400 before any call for a field a seated panelist's protocol cannot carry (in the
    `deliberation` view: tools are not theirs to carry), or that no synthesizer candidate's
    protocol can carry (in the `synthesis` request: tools, schema, the conversation)."""
    for model_id in plan.seated:
        protocol = providers[models[model_id].provider].protocol
        missing = missing_field(deliberation, protocol)
        if missing is not None:
            raise UnsupportedParameter(
                f"'{missing}' cannot be sent to the {protocol} protocol of panelist {model_id!r}",
                param=missing,
            )
    refusals = []
    for model_id in plan.synthesizers.candidates:
        protocol = providers[models[model_id].provider].protocol
        missing = missing_field(synthesis, protocol)
        if missing is None:
            return
        refusals.append((missing, protocol, model_id))
    if refusals:  # (no candidate available at all: the synthesis stage falls back, flagged)
        missing, protocol, model_id = refusals[0]
        raise UnsupportedParameter(
            f"'{missing}' cannot be sent to the {protocol} protocol of synthesizer "
            f"{model_id!r}, and no other synthesizer candidate carries it",
            param=missing,
        )


def _check_capable(
    plan: FusionPlan,
    chat: ChatRequest,
    seat_needs: frozenset[str],
    needs: frozenset[str],
    models: Mapping[str, CatalogModel],
) -> None:
    """A 400 before any call when the catalog says no synthesizer candidate has what the
    synthesizer's request `needs` (tools, a JSON schema...), or no panelist `seat_needs`."""
    candidates = plan.synthesizers.candidates
    lacking = [(m, models[m].lacking(needs)) for m in candidates]
    if candidates and all(caps for _, caps in lacking):
        raise lacking_capability(chat, lacking)
    if not plan.seated:
        lacking = [
            (s.wanted, models[s.wanted].lacking(seat_needs))
            for s in plan.seats
            if s.wanted in models
        ]
        if lacking and all(caps for _, caps in lacking):
            raise lacking_capability(chat, lacking)


def _count(metrics: Metrics, outcome: FusionOutcome, models: Mapping[str, Any]) -> None:
    """Fusion counters: substitutions by reason, degraded stages, tokens and cost per stage."""
    panel = outcome.plan.panel
    for seat in outcome.plan.seats:
        if seat.substituted:
            metrics.substitutions.labels(panel, "planned").inc()
    for sub in outcome.panel.substitutions:
        metrics.substitutions.labels(panel, "hedged" if sub.code == "hedged" else "failed").inc()
    for stage in outcome.degraded:
        metrics.fusion_degraded.labels(panel, stage).inc()
    stages: list[tuple[str | None, Usage, float]] = [
        (seat.served, seat.usage, seat.cost) for seat in outcome.panel.seats
    ]
    if outcome.judge is not None:
        stages.append((outcome.judge.model, outcome.judge.usage, outcome.judge.cost))
    if outcome.synthesis is not None:
        result = outcome.synthesis.result
        stages.append((result.model, result.usage, result.cost))
    for model, usage, cost in stages:
        if model is None or not (usage.input_tokens or usage.output_tokens):
            continue
        provider = models[model].provider if model in models else "unknown"
        metrics.tokens.labels(provider, model, "input").inc(usage.input_tokens)
        metrics.tokens.labels(provider, model, "output").inc(usage.output_tokens)
        metrics.cost.labels(provider, model).inc(cost)


__all__ = ["serve_fusion"]
