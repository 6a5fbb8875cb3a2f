"""Panel → judge → synthesizer, degrading explicitly instead of failing where answers exist.

`deliberate()` runs the panel and the judge and applies the quorum rule;
`synthesize()` writes the final answer (non-streaming), or the handler opens
the synthesizer's stream itself. `FusionReport` is the `fusion` object of the
response: seats as planned and served, substitutions, judge findings,
synthesizer, tokens and cost per stage, per-stage latency.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from router.errors import PanelExhausted, RouterError
from router.fusion.judge import JudgeResult, run_judge
from router.fusion.panel import FusionDeps, PanelResult, SeatResult, gather_panel
from router.fusion.plan import FusionPlan
from router.fusion.synthesize import SynthesisResult, best_answer, synthesis_request
from router.types import ChatRequest, Completion, Usage

PANEL_SHARE = 0.6  # of the fusion deadline, for the seats
JUDGE_SHARE = 0.8  # cumulative: the judge must finish by 80%; synthesis gets the rest


@dataclass
class FusionReport:
    """Everything that happened, for the response's `fusion` object, logs and traces."""

    plan: FusionPlan
    panel: PanelResult | None = None
    judge: JudgeResult | None = None
    synthesis: SynthesisResult | None = None
    degraded: list[str] = field(default_factory=list)
    jurisdictions: tuple[str, ...] = ()
    policy_version: str | None = None
    upstream_calls: int = 0
    total_ms: float = 0.0
    providers: dict[str, str] = field(default_factory=dict)  # model id -> provider, for metrics

    @property
    def usage(self) -> Usage:
        total = Usage()
        for seat in self.panel.seats if self.panel else ():
            total = total + seat.usage
        if self.judge:
            total = total + self.judge.usage
        if self.synthesis:
            total = total + self.synthesis.usage
        return total

    @property
    def cost(self) -> float:
        seats = sum(s.cost for s in self.panel.seats) if self.panel else 0.0
        return (
            seats
            + (self.judge.cost if self.judge else 0.0)
            + (self.synthesis.cost if self.synthesis else 0.0)
        )

    def as_dict(self) -> dict[str, Any]:
        usage = self.usage
        return {
            "panel": self.plan.panel,
            "quorum": self.plan.quorum,
            "jurisdictions": list(self.jurisdictions),
            "policy_version": self.policy_version,
            "plan": self.plan.as_dict(),
            "seats": [s.as_dict() for s in self.panel.seats] if self.panel else [],
            "substitutions": [s.as_dict() for s in self.panel.substitutions] if self.panel else [],
            "judge": self.judge.as_dict() if self.judge else None,
            "synthesizer": self.synthesis.as_dict() if self.synthesis else None,
            "degraded": list(self.degraded),
            "upstream_calls": self.upstream_calls,
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
            "cost_usd": round(self.cost, 8),
            "timings_ms": {
                "panel": round(self.panel.latency_ms, 1) if self.panel else None,
                "judge": round(self.judge.latency_ms, 1) if self.judge else None,
                "synthesis": round(self.synthesis.latency_ms, 1) if self.synthesis else None,
                "total": round(self.total_ms, 1),
            },
        }


@dataclass(frozen=True, slots=True)
class Deliberation:
    """The panel's answers and the judge's findings, ready for synthesis (or a degraded answer)."""

    answers: tuple[SeatResult, ...]
    single: SeatResult | None  # set when synthesis is skipped (one answer, or degraded quorum)


def _stories(seats: Sequence[SeatResult]) -> list[dict[str, object]]:
    return [s.as_dict() for s in seats]


async def deliberate(
    request: ChatRequest,
    plan: FusionPlan,
    deps: FusionDeps,
    report: FusionReport,
    started: float,
    deadline: float,
    *,
    degrade: str = "error",
    hedge_after_s: float | None = None,
    judge_template: str | None = None,
    rng: random.Random | None = None,
) -> Deliberation:
    """Run the panel and the judge; raise `PanelExhausted` below quorum unless degrading."""
    span = max(0.0, deadline - started)
    panel = await gather_panel(plan, request, deps, started + span * PANEL_SHARE, hedge_after_s)
    report.panel = panel
    answers = panel.answers
    if len(answers) < plan.quorum:
        if degrade == "best_single" and answers:
            report.degraded.append("quorum")
            return Deliberation(answers, answers[0])
        raise PanelExhausted(
            f"panel {plan.panel!r} got {len(answers)} answer(s), quorum is {plan.quorum}",
            seats=_stories(panel.seats),
        )
    if len(answers) == 1:
        report.judge = JudgeResult("skipped", None, None, error="one answer")
        return Deliberation(answers, answers[0])
    judge = await run_judge(
        request,
        answers,
        plan.judges.candidates,
        deps,
        started + span * JUDGE_SHARE,
        rng or random.Random(),
        judge_template,
    )
    report.judge = judge
    if judge.status != "ok":
        report.degraded.append("judge")
    return Deliberation(answers, None)


async def synthesize(
    request: ChatRequest,
    deliberation: Deliberation,
    plan: FusionPlan,
    deps: FusionDeps,
    report: FusionReport,
    deadline: float,
    template: str | None = None,
) -> Completion:
    """The final answer; if every synthesizer fails, the best single answer, flagged."""
    if deliberation.single is not None:
        single = deliberation.single
        report.synthesis = SynthesisResult("skipped", None, error="single answer")
        return Completion(single.text or "", "stop", Usage(), single.served or "")
    findings = report.judge.findings if report.judge else None
    started = deps.clock()
    candidates = [c for c in plan.synthesizers.candidates if deps.availability(c) is None]
    with deps.tracer.start_as_current_span(
        "fusion.synthesize", attributes={"router.fusion.role": "synthesizer"}
    ):
        return await _synthesize(
            request, deliberation, deps, report, deadline, template, findings, candidates, started
        )


async def _synthesize(
    request: ChatRequest,
    deliberation: Deliberation,
    deps: FusionDeps,
    report: FusionReport,
    deadline: float,
    template: str | None,
    findings: Any,
    candidates: list[str],
    started: float,
) -> Completion:
    try:
        if not candidates:
            raise PanelExhausted("no synthesizer candidate is available", seats=[])
        routed = await deps.caller.complete(
            synthesis_request(request, deliberation.answers, findings, template),
            candidates,
            deadline,
            role="synthesizer",
        )
    except RouterError as exc:
        report.synthesis = SynthesisResult(
            "failed", None, latency_ms=(deps.clock() - started) * 1000, error=exc.code
        )
        report.degraded.append("synthesizer")
        best = best_answer(deliberation.answers, findings)
        return Completion(best.text or "", "stop", Usage(), best.served or "")
    report.synthesis = SynthesisResult(
        "ok",
        routed.model.id,
        usage=routed.completion.usage,
        cost=routed.cost,
        latency_ms=(deps.clock() - started) * 1000,
        attempts=tuple(routed.attempts.records),
    )
    return routed.completion
