"""One call's cost ceiling, and a request's money held like its calls (`CostBudget`).

The ceiling of one call is its worst case: estimated input tokens times the model's input price +
the most it may write (the request's `max_tokens`, else the model's `max_output_tokens`) times its
output price + its web searches times the price of a search.

`CostBudget` holds money as `CallBudget` holds calls: the judge's and the synthesizer's
ceilings are reserved when the plan is made; every call holds its ceiling before it is made
and settles to what it cost once it ends (a failed call costs nothing: a provider does not
bill an error). With no cap, every hold succeeds and only the books are kept.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from router.catalog import CatalogModel
from router.token_estimate import estimate_input_tokens
from router.types import ChatRequest, Usage

COST_LIMIT = "cost_limit"  # a call (or a stage) not made because its ceiling did not fit
# what a cap may be over by and still hold: the `fusion` object reports USD to 8 decimals, so a
# cap copied from a reported estimate holds that estimate
COST_EPSILON = 1e-8


def output_ceiling(request: ChatRequest, model: CatalogModel) -> int:
    """The most output tokens `model` may write for `request`."""
    if request.max_tokens is None:
        return model.max_output_tokens
    return min(request.max_tokens, model.max_output_tokens)


def searches_of(request: ChatRequest, model: CatalogModel) -> int:
    """The web searches `model` may run for `request` (none unless it researches)."""
    if request.web_search is None or "web_search" not in model.capabilities:
        return 0
    return request.web_search.max_uses


def call_ceiling(
    model: CatalogModel, request: ChatRequest, input_tokens: int | None = None
) -> float:
    """USD `model` may cost at most for `request` (`input_tokens`: when known better than
    the request's estimate)."""
    tokens = estimate_input_tokens(request) if input_tokens is None else input_tokens
    usage = Usage(tokens, output_ceiling(request, model), searches_of(request, model))
    return model.cost(usage)


def chain_ceiling(
    models: Iterable[CatalogModel], request: ChatRequest, input_tokens: int | None = None
) -> float:
    """The ceiling of a call that may land on any of `models` (the dearest's)."""
    return max((call_ceiling(m, request, input_tokens) for m in models), default=0.0)


class CostBudget:
    """A request's money, held like its calls (see the module docstring). With no cap,
    every hold succeeds and only the books are kept."""

    __slots__ = ("_held", "_reserved", "cap", "spent")

    def __init__(self, cap: float | None) -> None:
        self.cap = cap
        self.spent = 0.0
        self._reserved: dict[str, float] = {}  # a later stage's, by role
        self._held = 0.0  # the ceilings of calls in flight

    @property
    def free(self) -> float:
        """Money neither spent, held by a call in flight, nor reserved for a later stage."""
        if self.cap is None:
            return math.inf
        return self.cap - self.spent - self._held - sum(self._reserved.values())

    def reserve(self, role: str, usd: float) -> None:
        """Keep `usd` for `role`'s stage alone (checked against the cap by the estimate)."""
        self._reserved[role] = self._reserved.get(role, 0.0) + usd

    def release(self, role: str) -> None:
        """`role`'s stage will not run: its reserve goes back to everyone."""
        self._reserved.pop(role, None)

    def fits(self, usd: float, role: str | None = None) -> bool:
        """Whether a call with ceiling `usd` may be made by `role` now."""
        own = self._reserved.get(role, 0.0) if role is not None else 0.0
        return usd <= self.free + own + COST_EPSILON

    def hold(self, usd: float, role: str | None = None) -> bool:
        """Hold `usd` for one call (from `role`'s reserve first); False when it does not fit."""
        if not self.fits(usd, role):
            return False
        if role is not None and role in self._reserved:
            self._reserved[role] = max(0.0, self._reserved[role] - usd)
        self._held += usd
        return True

    def settle(self, held: float, cost: float) -> None:
        """A call that held `held` ended having cost `cost`."""
        self._held = max(0.0, self._held - held)
        self.spent += cost
