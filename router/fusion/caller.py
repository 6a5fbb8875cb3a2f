"""Fusion's way to providers: the router, with the request's policy gate, call budget and money.

The call budget (`MAX_UPSTREAM_CALLS`) is shared by every stage; `reserve` holds calls for a
later stage (the judge's, the synthesizer's) that no earlier stage can spend. The money
(`CostBudget`, the panel's `max_cost_usd`) is kept the same way: every call holds its cost
ceiling before it is made (`CostLimitReached` when it does not fit) and settles to its cost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from router.catalog import CatalogModel
from router.errors import AllProvidersFailed, CostLimitReached, RouterError
from router.fusion.plan import MAX_UPSTREAM_CALLS
from router.fusion.spend import CostBudget, chain_ceiling
from router.routing import CallBudget, Gate, OpenedStream, Routed, Router
from router.types import ChatRequest

CALL_BUDGET_EXHAUSTED = "call_budget_exhausted"


def failure_code(error: RouterError) -> str:
    """The code a stage reports for `error`: `call_budget_exhausted` when no call was made
    because the request's calls were spent, never `all_providers_failed` for a stage that was
    not called."""
    if isinstance(error, AllProvidersFailed):
        records = error.attempts
        made = [r for r in records if r.outcome != "skipped"]
        if not made and any(r.code == CALL_BUDGET_EXHAUSTED for r in records):
            return CALL_BUDGET_EXHAUSTED
    return error.code


def attempt_codes(error: RouterError) -> tuple[str, ...]:
    """Every attempt's code behind `error` (the calls made, and the targets skipped), or the
    error's own code when it carries no attempts."""
    if isinstance(error, AllProvidersFailed) and error.attempts:
        return tuple(r.code for r in error.attempts)
    return (error.code,)


class RouterCaller:
    """Every stage's upstream calls, through the one router: policy-checked, breaker-guarded,
    and counted against one budget for the whole request (`MAX_UPSTREAM_CALLS`)."""

    def __init__(
        self,
        router: Router,
        models: Mapping[str, CatalogModel],
        gate: Gate,
        limit: int = MAX_UPSTREAM_CALLS,
        money: CostBudget | None = None,
    ) -> None:
        self._router = router
        self._models = models
        self._gate = gate
        self._budget = CallBudget(limit)
        self.money = money or CostBudget(None)

    @property
    def calls(self) -> int:
        """Upstream calls made so far."""
        return self._budget.used

    def reserve(self, role: str, calls: int = 1, usd: float = 0.0) -> bool:
        """Hold `calls` (and `usd` of the cap) for `role`'s stage alone; False when fewer
        calls are left."""
        if not self._budget.reserve(role, calls):
            return False
        self.money.reserve(role, usd)
        return True

    def release(self, role: str) -> None:
        """`role`'s stage will not run: its reserve goes back to everyone."""
        self._budget.release(role)
        self.money.release(role)

    def affordable(self, request: ChatRequest, model: str, role: str) -> bool:
        """Whether a call of `request` to `model` by `role` fits in the money left."""
        return self.money.fits(chain_ceiling(self._targets([model]), request), role)

    def _hold(self, request: ChatRequest, targets: Sequence[CatalogModel], role: str) -> float:
        ceiling = chain_ceiling(targets, request)
        if not self.money.hold(ceiling, role):
            raise CostLimitReached(
                f"the {role}'s call may cost up to ${ceiling:.6f}, more than is left of "
                f"max_cost_usd (${self.money.cap})"
            )
        return ceiling

    def available(self, role: str) -> int:
        """Calls `role` may still make (its reserve and the unheld ones)."""
        return self._budget.available(role)

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
        retry: bool = True,
    ) -> Routed:
        lane = self._budget.lane(role, retry=retry)
        targets = self._targets(chain)
        held = self._hold(request, targets, role)
        cost = 0.0
        try:
            routed = await self._router.complete(
                request, targets, deadline, budget=lane, gate=self._gate
            )
            cost = routed.cost
            return routed
        finally:
            self.money.settle(held, cost)

    async def open_stream(
        self, request: ChatRequest, chain: Sequence[str], deadline: float, *, role: str
    ) -> OpenedStream:
        lane = self._budget.lane(role)
        targets = self._targets(chain)
        held = self._hold(request, targets, role)  # held to the end: no later stage spends
        try:
            return await self._router.open_stream(
                request, targets, deadline, budget=lane, gate=self._gate
            )
        except BaseException:
            self.money.settle(held, 0.0)
            raise
