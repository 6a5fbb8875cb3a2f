"""What a fusion may cost before it runs, and what one model alone would have cost instead.

Pure. A fusion's estimate is the sum of its planned calls' ceilings (`router.fusion.spend`):
every seat once, the judge (reading every answer at its longest), the synthesizer (reading
the answers and the findings). The estimate is linear in `max_tokens`, so when it is over a
panel's `max_cost_usd` the error can say which `max_tokens` would fit.

While the stages run, the request's `CostBudget` (in `RouterCaller`) keeps the cap: a retry,
a substitute or a hedge happens only when its ceiling fits in what is left; a judge that no
longer fits is skipped, a synthesizer that no longer fits leaves the best single answer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from router.catalog import CatalogModel
from router.fusion.judge import MAX_JUDGE_TOKENS, judge_request, question_text
from router.fusion.plan import FusionPlan
from router.fusion.spend import COST_EPSILON, call_ceiling, chain_ceiling, output_ceiling
from router.token_estimate import estimate_input_tokens
from router.types import ChatRequest, Usage

MIN_FITTING_TOKENS = 16  # below this an answer is not worth asking for


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """The ceiling of every planned call, in USD."""

    seats: tuple[float, ...]
    judge: float
    synthesizer: float

    @property
    def total(self) -> float:
        return sum(self.seats) + self.judge + self.synthesizer

    def as_dict(self) -> dict[str, object]:
        return {
            "total_usd": round(self.total, 8),
            "seats_usd": [round(s, 8) for s in self.seats],
            "judge_usd": round(self.judge, 8),
            "synthesizer_usd": round(self.synthesizer, 8),
        }


def _members(ids: Sequence[str], models: Mapping[str, CatalogModel]) -> list[CatalogModel]:
    return [models[m] for m in ids if m in models]


def estimate_fusion(
    plan: FusionPlan,
    panelist_request: ChatRequest,
    synthesis_base: ChatRequest,
    models: Mapping[str, CatalogModel],
    max_tokens: int | None = None,
) -> CostEstimate:
    """The plan's ceiling: each seated panelist once, the judge reading every answer at its
    longest, the synthesizer reading those and the judge's findings. `max_tokens` stands in
    for the request's own (to find one that fits a cap)."""
    if max_tokens is not None:
        panelist_request = replace(panelist_request, max_tokens=max_tokens)
        synthesis_base = replace(synthesis_base, max_tokens=max_tokens)
    seated = _members(plan.seated, models)
    asked = estimate_input_tokens(panelist_request)  # every seat reads the same request
    seats = tuple(call_ceiling(m, panelist_request, asked) for m in seated)
    answers = sum(output_ceiling(panelist_request, m) for m in seated)
    judge = 0.0
    if len(seated) > 1 and plan.judges.candidates:
        judging = judge_request(question_text(panelist_request), [], None)
        judge = chain_ceiling(
            _members(plan.judges.candidates, models),
            judging,
            estimate_input_tokens(judging) + answers,
        )
    synthesizer = chain_ceiling(
        _members(plan.synthesizers.candidates, models),
        synthesis_base,
        estimate_input_tokens(synthesis_base) + answers + (MAX_JUDGE_TOKENS if judge else 0),
    )
    return CostEstimate(seats, judge, synthesizer)


def per_answer_token(
    plan: FusionPlan,
    panelist_request: ChatRequest,
    synthesis_base: ChatRequest,
    models: Mapping[str, CatalogModel],
) -> float:
    """USD the plan adds per token of answer length, when every answer grows alike (each
    seat writes it, the judge and the synthesizer read every seat's, the synthesizer writes
    it): the slope of the estimate in `max_tokens`, what decides the price of long answers."""

    def total(tokens: int) -> float:
        return estimate_fusion(plan, panelist_request, synthesis_base, models, tokens).total

    return (total(1000) - total(0)) / 1000


def fitting_max_tokens(
    cap: float,
    per_token: float,
    plan: FusionPlan,
    panelist_request: ChatRequest,
    synthesis_base: ChatRequest,
    models: Mapping[str, CatalogModel],
) -> int | None:
    """The largest `max_tokens` whose estimate fits `cap` (the estimate is linear in it below
    every model's own limit, with slope `per_token`: `per_answer_token`), or None when not
    even a short answer fits."""
    base = estimate_fusion(plan, panelist_request, synthesis_base, models, 0).total
    if per_token <= 0:
        return None
    fits = math.floor((cap + COST_EPSILON - base) / per_token)
    return fits if fits >= MIN_FITTING_TOKENS else None


def solo_model(
    models: Mapping[str, CatalogModel],
    allowed: Iterable[str],
    named: str | None = None,
) -> CatalogModel | None:
    """The model the panel is compared with: `named` (the panel's `compare_with`), else the
    best-ranked of `allowed` (the highest tier, then catalog order)."""
    if named is not None:
        return models.get(named)
    order = {model_id: i for i, model_id in enumerate(models)}
    ranked = sorted(
        (models[m] for m in allowed if m in models and models[m].kind == "chat"),
        key=lambda m: (-m.tier_rank, order[m.id]),
    )
    return ranked[0] if ranked else None


def solo_cost(model: CatalogModel, input_tokens: int, output_tokens: int) -> float:
    """What `model` would have cost for the question alone (`input_tokens`) and an answer as
    long as the fusion's (`output_tokens`)."""
    return model.cost(Usage(input_tokens, output_tokens))


@dataclass(frozen=True, slots=True)
class Costing:
    """A fusion's money, as the `fusion` object reports it: the plan's estimate, the cap, and
    the solo model it is compared with."""

    estimate: CostEstimate
    cap: float | None
    solo: CatalogModel | None
    question_tokens: int  # the client's request, estimated: what a solo model would read
    per_token: float = 0.0  # USD the plan adds per token of answer length (`per_answer_token`)

    def report(self, spent: float, answer_tokens: int) -> dict[str, object]:
        """The `cost` object: estimate, cap, spend, and the same question to the solo model
        (its input, and an answer as long as this one, at its price)."""
        report: dict[str, object] = {
            "estimate_usd": round(self.estimate.total, 8),
            "max_cost_usd": self.cap,
            "spent_usd": round(spent, 8),
            "solo": None,
        }
        if self.solo is not None:
            solo = solo_cost(self.solo, self.question_tokens, answer_tokens)
            report["solo"] = {
                "model": self.solo.id,
                "cost_usd": round(solo, 8),
                "input_tokens": self.question_tokens,
                "output_tokens": answer_tokens,
            }
            report["vs_solo"] = round(spent / solo, 3) if solo > 0 else None
            # long answers: what each answer token costs the panel against the solo model
            solo_per_token = self.solo.price.output_per_mtok / 1e6
            report["per_answer_token_usd"] = {
                "fusion": round(self.per_token, 10),
                "solo": round(solo_per_token, 10),
            }
            report["long_answers_vs_solo"] = (
                round(self.per_token / solo_per_token, 3) if solo_per_token > 0 else None
            )
        return report
