"""Fusion's way to providers: the router, with the request's policy gate and its call budget."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from router.catalog import CatalogModel
from router.fusion.plan import MAX_UPSTREAM_CALLS
from router.routing import CallBudget, Gate, OpenedStream, Routed, Router
from router.types import ChatRequest


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
            request, self._targets(chain), deadline, budget=self._budget, gate=self._gate
        )

    async def open_stream(
        self, request: ChatRequest, chain: Sequence[str], deadline: float, *, role: str
    ) -> OpenedStream:
        return await self._router.open_stream(
            request, self._targets(chain), deadline, budget=self._budget, gate=self._gate
        )
