"""Panel → judge → synthesizer: `run_fusion`, the composition of the three stages.

Each stage is a plain async function returning a value (`PanelResult`, `JudgeResult`,
`Synthesis`); failures are values too, and every degradation is explicit in the outcome's
`degraded`. The outcome is frozen: the HTTP side renders it (`fusion` object, headers, log
fields) and, for a stream, replaces its synthesis once the stream ended.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

from router.fusion.cost import CostEstimate
from router.fusion.judge import JUDGE, JudgeResult, run_judge
from router.fusion.panel import FusionDeps, PanelResult, gather_panel
from router.fusion.plan import FusionPlan, independent_roles
from router.fusion.synthesize import SYNTHESIZER, Synthesis, synthesize
from router.fusion.views import deliberation_view, panelist_view, synthesizer_only
from router.types import ChatRequest, Source, Usage, WebSearch

PANEL_SHARE = 0.6  # of the fusion deadline, for the seats
JUDGE_SHARE = 0.8  # cumulative: the judge must finish by 80%; synthesis gets the rest


@dataclass(frozen=True, slots=True)
class FusionRequest:
    """One fusion request as the stages see it: the question, the plan, the clock, the panel's
    settings."""

    chat: ChatRequest
    plan: FusionPlan
    started: float
    deadline: float
    degrade: str = "error"
    hedge_after_s: float | None = None
    judge_prompt: str | None = None
    synthesizer_prompt: str | None = None
    rng: random.Random | None = None
    research: WebSearch | None = None  # the panelists' web search (`panelist_tools`)
    estimate: CostEstimate | None = None  # the plan's ceilings: the judge's and synthesizer's held

    def by_share(self, share: float) -> float:
        """The instant by which a stage ending at `share` of the fusion deadline must end."""
        return self.started + max(0.0, self.deadline - self.started) * share


@dataclass(frozen=True, slots=True)
class FusionOutcome:
    """What happened: the plan, every seat, the judge, the synthesis, what degraded.

    `synthesis` is None when the panel fell below quorum and no degrade applies
    (`exhausted`): the caller answers with `PanelExhausted`.
    """

    plan: FusionPlan
    panel: PanelResult
    judge: JudgeResult | None
    synthesis: Synthesis | None
    degraded: tuple[str, ...] = ()

    @property
    def exhausted(self) -> bool:
        return self.synthesis is None

    @property
    def usage(self) -> Usage:
        total = Usage()
        for seat in self.panel.seats:
            total = total + seat.usage
        if self.judge is not None:
            total = total + self.judge.usage
        if self.synthesis is not None:
            total = total + self.synthesis.result.usage
        return total

    @property
    def cost(self) -> float:
        return (
            sum(s.cost for s in self.panel.seats)
            + (self.judge.cost if self.judge else 0.0)
            + (self.synthesis.result.cost if self.synthesis else 0.0)
        )

    @property
    def sources(self) -> tuple[Source, ...]:
        """Every answered seat's sources, each page once, in seat order."""
        seen: dict[str, Source] = {}
        for seat in self.panel.answers:
            for source in seat.sources:
                seen.setdefault(source.url, source)
        return tuple(seen.values())

    def with_synthesis(self, synthesis: Synthesis) -> FusionOutcome:
        """The outcome once a streamed synthesis ended (it may have failed mid-stream)."""
        failed = synthesis.result.status == "failed" and "synthesizer" not in self.degraded
        return replace(
            self, synthesis=synthesis, degraded=self.degraded + (("synthesizer",) if failed else ())
        )

    def as_dict(self, *, upstream_calls: int, total_ms: float, **context: Any) -> dict[str, Any]:
        """The response's `fusion` object (`context`: jurisdictions and policy version)."""
        usage = self.usage
        synthesis = self.synthesis.result if self.synthesis else None
        return {
            "panel": self.plan.panel,
            "quorum": self.plan.quorum,
            **context,
            "plan": self.plan.as_dict(),
            "seats": [s.as_dict() for s in self.panel.seats],
            "substitutions": [s.as_dict() for s in self.panel.substitutions],
            "judge": self.judge.as_dict() if self.judge else None,
            "synthesizer": synthesis.as_dict() if synthesis else None,
            "degraded": list(self.degraded),
            "upstream_calls": upstream_calls,
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
            "cost_usd": round(self.cost, 8),
            "sources": [{"url": s.url, "title": s.title} for s in self.sources],
            "timings_ms": {
                "panel": round(self.panel.latency_ms, 1),
                "judge": round(self.judge.latency_ms, 1) if self.judge else None,
                "synthesis": round(synthesis.latency_ms, 1) if synthesis else None,
                "total": round(total_ms, 1),
            },
        }


def reserve_calls(plan: FusionPlan, deps: FusionDeps, estimate: CostEstimate | None) -> None:
    """Hold the judge's and the synthesizer's call (and their cost ceilings) before any
    panelist is called: the panel (its retries, substitutions and hedges) spends only what is
    left, so a panel that meets its quorum always leaves the stages that finish the answer a
    call each."""
    if len(plan.seated) > 1 and plan.judges.candidates:
        deps.caller.reserve(JUDGE, usd=estimate.judge if estimate else 0.0)
    if plan.synthesizers.candidates:
        deps.caller.reserve(SYNTHESIZER, usd=estimate.synthesizer if estimate else 0.0)


async def run_fusion(request: FusionRequest, deps: FusionDeps) -> FusionOutcome:
    """Panel → judge → synthesizer, degrading explicitly instead of failing where answers exist.

    Panelists and the judge see the deliberation view (no tools, tool turns as text); the
    synthesizer sees the client's request. A single answer (one seat, or a degraded quorum)
    stands as the answer unless the request asks for what only the synthesizer can give.
    """
    plan, chat = request.plan, request.chat
    view = deliberation_view(chat)
    reserve_calls(plan, deps, request.estimate)
    panel = await gather_panel(
        plan,
        panelist_view(view, request.research),
        deps,
        request.by_share(PANEL_SHARE),
        request.hedge_after_s,
    )
    # independent judging: a model that took a seat mid-flight gives up the judging roles
    plan = independent_roles(
        plan,
        [(s.seat, s.failed, s.substitute) for s in panel.substitutions],
        deps.models,
        deps.availability,
    )
    answers = panel.answers
    if len(answers) < plan.quorum and not (request.degrade == "best_single" and answers):
        return FusionOutcome(plan, panel, None, None)
    degraded: tuple[str, ...] = ("quorum",) if len(answers) < plan.quorum else ()
    judge: JudgeResult | None = None
    if degraded or len(answers) == 1:
        deps.caller.release(JUDGE)  # no judging: its call may serve the synthesizer's failover
        if not degraded:
            judge = JudgeResult("skipped", None, None, error="one answer")
        if not synthesizer_only(chat):
            return FusionOutcome(plan, panel, judge, Synthesis.single(answers[0]), degraded)
    else:
        judge = await run_judge(
            view,
            answers,
            plan.judges.candidates,
            deps,
            request.by_share(JUDGE_SHARE),
            request.rng or random.Random(),
            request.judge_prompt,
        )
        degraded += ("judge",) if judge.status != "ok" else ()
    synthesis = await synthesize(
        chat,
        plan,
        answers,
        judge.findings if judge is not None else None,
        deps,
        request.deadline,
        request.synthesizer_prompt,
    )
    return FusionOutcome(
        plan, panel, judge, synthesis, degraded + (("synthesizer",) if synthesis.fallback else ())
    )
