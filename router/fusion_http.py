"""The HTTP side of fusion: resolve the panel, plan it, run the stages, render JSON or SSE."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from router.catalog import FUSION_PREFIX, Catalog, CatalogModel, Panel
from router.config import PanelConfig
from router.errors import InvalidRequest, PanelExhausted, ProviderError, RouterError, UnknownModel
from router.fusion.panel import FusionDeps
from router.fusion.pipeline import FusionReport, deliberate, synthesize
from router.fusion.plan import MAX_UPSTREAM_CALLS, FusionPlan
from router.fusion.synthesize import SynthesisResult, best_answer, synthesis_request
from router.metrics import Metrics
from router.routing import CallBudget, Gate, OpenedStream, Routed, Router
from router.sse_response import event_stream
from router.state import METRICS
from router.types import ChatRequest, StreamEnd, TextDelta, Usage
from router.wire_out import DONE, error_event, role_prefix, sse, stream_chunk, usage_body

_OVERRIDABLE = ("panelists", "judges", "synthesizers", "quorum", "substitutes")


class RouterCaller:
    """Fusion's way to providers: the router, with the request's gate and call budget."""

    def __init__(
        self, router: Router, models: Mapping[str, CatalogModel], budget: CallBudget, gate: Gate
    ) -> None:
        self._router = router
        self._models = models
        self.budget = budget
        self._gate = gate

    def _targets(self, chain: Sequence[str]) -> list[CatalogModel]:
        return [self._models[m] for m in chain if m in self._models]

    async def complete(
        self,
        request: ChatRequest,
        chain: Sequence[str],
        deadline: float,
        *,
        role: str,
        seat: int | None = None,
    ) -> Routed:
        return await self._router.complete(
            request, self._targets(chain), deadline, budget=self.budget, gate=self._gate
        )

    async def open_stream(
        self, request: ChatRequest, chain: Sequence[str], deadline: float, *, role: str
    ) -> OpenedStream:
        return await self._router.open_stream(
            request, self._targets(chain), deadline, budget=self.budget, gate=self._gate
        )


def resolve_panel(model: str, options: Mapping[str, Any] | None, catalog: Catalog) -> Panel:
    """The configured panel named by `fusion/<name>`, with the request's overrides, or a
    panel the request names entirely (`model: "fusion"`)."""
    options = options or {}
    unknown = sorted(set(options) - set(_OVERRIDABLE))
    if unknown:
        raise InvalidRequest(
            f"unsupported fusion option(s): {', '.join(unknown)}",
            code="unsupported_parameter",
            param=f"fusion.{unknown[0]}",
        )
    if model == "fusion":
        base: dict[str, Any] = {}
        name = "custom"
    else:
        panel = catalog.panel_for(model)
        if panel is None:
            raise UnknownModel(model)
        name = panel.name
        base = {
            "panelists": list(panel.panelists),
            "judges": list(panel.judges),
            "synthesizers": list(panel.synthesizers),
            "quorum": panel.quorum,
            "substitutes": list(panel.substitutes),
            "deadline_s": panel.deadline_s,
            "degrade": panel.degrade,
            "hedge_after_s": panel.hedge_after_s,
            "judge_prompt": panel.judge_prompt,
            "synthesizer_prompt": panel.synthesizer_prompt,
        }
    merged = {**base, **options}
    if "quorum" not in options and "panelists" in options:
        merged.pop("quorum", None)
    try:
        config = PanelConfig.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        path = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"fusion.{path}: {first['msg']}", param=f"fusion.{path}") from None
    for role in (*_OVERRIDABLE[:3], "substitutes"):
        for model_id in getattr(config, role):
            if model_id not in catalog.models:
                raise UnknownModel(model_id)
    if config.quorum is not None and config.quorum > len(config.panelists):
        raise InvalidRequest("fusion.quorum is larger than the panel", param="fusion.quorum")
    return Panel.from_config(name, config)


def _count(metrics: Metrics, report: FusionReport) -> None:
    """Fusion counters: substitutions by reason, degraded stages, tokens and cost per stage."""
    panel = report.plan.panel
    for seat in report.plan.seats:
        if seat.substituted:
            metrics.substitutions.labels(panel, "planned").inc()
    for sub in report.panel.substitutions if report.panel else ():
        metrics.substitutions.labels(panel, "hedged" if sub.code == "hedged" else "failed").inc()
    for stage in report.degraded:
        metrics.fusion_degraded.labels(panel, stage).inc()
    stages: list[tuple[str | None, Usage, float]] = [
        (seat.served, seat.usage, seat.cost)
        for seat in (report.panel.seats if report.panel else ())
    ]
    if report.judge is not None:
        stages.append((report.judge.model, report.judge.usage, report.judge.cost))
    if report.synthesis is not None:
        stages.append((report.synthesis.model, report.synthesis.usage, report.synthesis.cost))
    for model, usage, cost in stages:
        if model is None or not (usage.input_tokens or usage.output_tokens):
            continue
        provider = report.providers.get(model, "unknown")
        metrics.tokens.labels(provider, model, "input").inc(usage.input_tokens)
        metrics.tokens.labels(provider, model, "output").inc(usage.output_tokens)
        metrics.cost.labels(provider, model).inc(cost)


def _completion_body(
    request_id: str, model: str, text: str, report: FusionReport
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": usage_body(report.usage),
        "fusion": report.as_dict(),
    }


def fusion_headers(request_id: str, model: str, report: FusionReport) -> dict[str, str]:
    """Response headers: who served, what was substituted, what degraded."""
    headers = {
        "X-Request-Id": request_id,
        "X-Router-Model": model,
        "X-Router-Attempts": str(report.upstream_calls),
        "X-Fusion-Seats": ",".join(s.served or "-" for s in report.panel.seats)
        if report.panel
        else "",
        "X-Fusion-Substitutions": str(
            sum(1 for s in report.plan.seats if s.substituted)
            + (len(report.panel.substitutions) if report.panel else 0)
        ),
    }
    if report.degraded:
        headers["X-Fusion-Degraded"] = ",".join(report.degraded)
    return headers


async def serve_fusion(
    request: web.Request,
    chat: ChatRequest,
    panel: Panel,
    plan: FusionPlan,
    deps: FusionDeps,
    caller: RouterCaller,
    report: FusionReport,
    deadline: float,
    request_id: str,
    log_fields: dict[str, Any],
) -> web.StreamResponse:
    """Run the stages and answer, whole or streamed."""
    started = deps.clock()
    deadline = min(deadline, started + panel.deadline_s)
    rng = random.Random(request_id)
    model_name = f"{FUSION_PREFIX}{panel.name}"
    metrics = request.app[METRICS]
    log_fields["metrics"] = metrics
    try:
        deliberation = await deliberate(
            chat,
            plan,
            deps,
            report,
            started,
            deadline,
            degrade=panel.degrade,
            hedge_after_s=panel.hedge_after_s,
            judge_template=panel.judge_prompt,
            rng=rng,
        )
        if not chat.stream:
            completion = await synthesize(
                chat, deliberation, plan, deps, report, deadline, panel.synthesizer_prompt
            )
            report.upstream_calls = caller.budget.used
            report.total_ms = (deps.clock() - started) * 1000
            _log(log_fields, report)
            return web.json_response(
                _completion_body(request_id, model_name, completion.text, report),
                headers=fusion_headers(request_id, model_name, report),
            )
    except PanelExhausted:
        metrics.quorum_failures.labels(panel.name).inc()
        _log(log_fields, report)
        raise
    finally:
        report.upstream_calls = caller.budget.used
    return await _stream_synthesis(
        request,
        chat,
        deliberation,
        plan,
        deps,
        caller,
        report,
        deadline,
        request_id,
        model_name,
        log_fields,
        started,
    )


def _log(fields: dict[str, Any], report: FusionReport) -> None:
    metrics: Metrics | None = fields.pop("metrics", None)
    if metrics is not None:
        _count(metrics, report)
    fields.update(
        fusion_panel=report.plan.panel,
        fusion_seats=[s.served for s in report.panel.seats] if report.panel else [],
        substitutions=[s.as_dict() for s in report.plan.seats if s.substituted]
        + ([s.as_dict() for s in report.panel.substitutions] if report.panel else []),
        degraded=report.degraded,
        upstream_calls=report.upstream_calls,
        input_tokens=report.usage.input_tokens,
        output_tokens=report.usage.output_tokens,
        cost_usd=round(report.cost, 8),
    )


async def _stream_synthesis(
    request: web.Request,
    chat: ChatRequest,
    deliberation: Any,
    plan: FusionPlan,
    deps: FusionDeps,
    caller: RouterCaller,
    report: FusionReport,
    deadline: float,
    request_id: str,
    model_name: str,
    log_fields: dict[str, Any],
    started: float,
) -> web.StreamResponse:
    findings = report.judge.findings if report.judge else None
    opened: OpenedStream | None = None
    fallback_text: str | None = None
    synth_started = deps.clock()
    if deliberation.single is not None:
        fallback_text = deliberation.single.text or ""
        report.synthesis = SynthesisResult("skipped", None, error="single answer")
    else:
        candidates = [c for c in plan.synthesizers.candidates if deps.availability(c) is None]
        try:
            if not candidates:
                raise RouterError("no synthesizer candidate is available")
            opened = await caller.open_stream(
                synthesis_request(chat, deliberation.answers, findings, None),
                candidates,
                deadline,
                role="synthesizer",
            )
        except RouterError as exc:
            report.synthesis = SynthesisResult("failed", None, error=exc.code)
            report.degraded.append("synthesizer")
            fallback_text = best_answer(deliberation.answers, findings).text or ""
    report.upstream_calls = caller.budget.used
    response = event_stream(fusion_headers(request_id, model_name, report))
    created = int(time.time())
    await response.prepare(request)
    # the role rides in the first token's delta, as in routed streams; a stream that ends
    # before any text still owes a role chunk
    role_owed = True
    try:
        if opened is None:
            await response.write(
                sse(
                    stream_chunk(
                        request_id, model_name, created, text=fallback_text or "", role=True
                    )
                )
            )
            role_owed = False
        else:
            end, role_owed = await _relay(
                response, opened, request_id, model_name, created, deadline
            )
            if isinstance(end, RouterError):
                report.synthesis = SynthesisResult("failed", opened.model.id, error=end.code)
                log_fields.update(error_code=end.code, stream_truncated=True)
                _log(log_fields, report)
                head = role_prefix(request_id, model_name, created, owed=role_owed)
                await response.write(head + sse(error_event(end)))
                await response.write_eof()
                return response
            report.synthesis = SynthesisResult(
                "ok",
                opened.model.id,
                usage=end.usage,
                cost=opened.model.cost(end.usage),
                latency_ms=(deps.clock() - synth_started) * 1000,
                attempts=tuple(opened.attempts.records),
            )
    finally:
        if opened is not None:
            await opened.aclose()
    report.total_ms = (deps.clock() - started) * 1000
    head = role_prefix(request_id, model_name, created, owed=role_owed)
    await response.write(head + sse(stream_chunk(request_id, model_name, created, finish="stop")))
    last = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model_name,
        "choices": [],
        "usage": usage_body(report.usage),
        "fusion": report.as_dict(),
    }
    await response.write(sse(last))
    await response.write(DONE)
    await response.write_eof()
    _log(log_fields, report)
    return response


async def _relay(
    response: web.StreamResponse,
    opened: OpenedStream,
    request_id: str,
    model_name: str,
    created: int,
    deadline: float,
) -> tuple[StreamEnd | RouterError, bool]:
    """Relay the synthesis text, the role in the first piece's delta; how it ended, and
    whether the role is still owed (no text came)."""
    role_owed = True
    event = opened.first
    try:
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            while True:
                if isinstance(event, TextDelta):
                    chunk = stream_chunk(
                        request_id, model_name, created, text=event.text, role=role_owed
                    )
                    await response.write(sse(chunk))
                    role_owed = False
                else:
                    return event, role_owed
                event = await anext(opened.events)
    except ProviderError as exc:
        return exc, role_owed
    except TimeoutError:
        error = RouterError("the synthesis stream passed its deadline")
        error.code = "deadline_exceeded"  # type: ignore[misc]
        return error, role_owed
    except StopAsyncIteration:
        error = RouterError("the synthesis stream ended without its terminal marker")
        error.code = "stream_truncated"  # type: ignore[misc]
        return error, role_owed


def availability_for(
    catalog: Catalog, gate: Gate, breaker_open: Callable[[CatalogModel], bool]
) -> Callable[[str], str | None]:
    """Why a model cannot take a fusion role now (policy, breaker, unknown), or None."""

    def availability(model_id: str) -> str | None:
        model = catalog.models.get(model_id)
        if model is None:
            return "not in the catalog"
        why = gate(model)
        if why is not None:
            return why
        if breaker_open(model):
            return "breaker open"
        return None

    return availability


def new_budget() -> CallBudget:
    return CallBudget(MAX_UPSTREAM_CALLS)


__all__ = [
    "RouterCaller",
    "Usage",
    "availability_for",
    "new_budget",
    "resolve_panel",
    "serve_fusion",
]
