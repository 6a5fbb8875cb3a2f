"""Fusion's way to providers: the router, with the request's policy gate and its call budget.

The budget (`MAX_UPSTREAM_CALLS`) is shared by every stage; `reserve` holds calls for a
later stage (the judge's, the synthesizer's) that no earlier stage can spend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from router.catalog import CatalogModel
from router.errors import AllProvidersFailed, RouterError
from router.fusion.plan import MAX_UPSTREAM_CALLS
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
    ) -> None:
        self._router = router
        self._models = models
        self._gate = gate
        self._budget = CallBudget(limit)

    @property
    def calls(self) -> int:
        """Upstream calls made so far."""
        return self._budget.used

    def reserve(self, role: str, calls: int = 1) -> bool:
        """Hold `calls` for `role`'s stage alone; False when fewer are left."""
        return self._budget.reserve(role, calls)

    def release(self, role: str) -> None:
        """`role`'s stage will not run: its reserve goes back to everyone."""
        self._budget.release(role)

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
        return await self._router.complete(
            request, self._targets(chain), deadline, budget=lane, gate=self._gate
        )

    async def open_stream(
        self, request: ChatRequest, chain: Sequence[str], deadline: float, *, role: str
    ) -> OpenedStream:
        lane = self._budget.lane(role)
        return await self._router.open_stream(
            request, self._targets(chain), deadline, budget=lane, gate=self._gate
        )
