"""Fan out to the panel: every seat in parallel, substitutes mid-flight, outcomes as values.

`fill_seat` never raises a provider or routing error: a seat ends `answered`
or `failed`, with its story (every model tried, every attempt's code, who
substituted whom). An empty or whitespace-only answer is a failure of the seat
(`empty_answer`). A failed panelist is substituted rather than retried when a
substitute is ready; panel calls spend only the calls the judge and synthesizer
do not hold in reserve. A failure of one seat never cancels its siblings; only
cancellation (the client went away, the deadline) stops the fan-out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from opentelemetry import trace

from router import semconv
from router.catalog import CatalogModel
from router.errors import AllProvidersFailed, AttemptRecord, RouterError
from router.fusion.caller import CALL_BUDGET_EXHAUSTED
from router.fusion.plan import (
    MAX_SUBSTITUTIONS,
    Availability,
    FusionPlan,
    SeatPlan,
    SubstituteRules,
    pick_substitute,
)
from router.routing import OpenedStream, Routed
from router.tracing import child_span
from router.types import ChatRequest, Completion, Source, Usage

MIN_SEAT_S = 0.05
PANELIST = "panelist"
EMPTY_ANSWER = "empty_answer"


class Caller(Protocol):
    """How fusion stages reach providers: policy-checked, breaker-guarded, budgeted."""

    async def complete(
        self,
        request: ChatRequest,
        chain: Sequence[str],
        deadline: float,
        *,
        role: str,
        seat: int | None = None,
        retry: bool = True,
    ) -> Routed: ...

    async def open_stream(
        self, request: ChatRequest, chain: Sequence[str], deadline: float, *, role: str
    ) -> OpenedStream: ...

    def reserve(self, role: str, calls: int = 1, usd: float = 0.0) -> bool: ...

    def release(self, role: str) -> None: ...

    def available(self, role: str) -> int: ...

    def affordable(self, request: ChatRequest, model: str, role: str) -> bool: ...


@dataclass
class FusionDeps:
    """What the stages need, built per request by the handler."""

    caller: Caller
    models: Mapping[str, CatalogModel]
    availability: Availability
    clock: Callable[[], float] = time.monotonic
    log: Any = None
    tracer: trace.Tracer = field(default_factory=trace.NoOpTracer)


@dataclass(frozen=True, slots=True)
class Substitution:
    """One mid-flight replacement."""

    seat: int
    failed: str
    code: str
    substitute: str

    def as_dict(self) -> dict[str, object]:
        return {
            "seat": self.seat,
            "failed": self.failed,
            "code": self.code,
            "substitute": self.substitute,
        }


@dataclass(frozen=True, slots=True)
class SeatFailure:
    """One model's failure in a seat: the telling code (the last call's, else why no call
    was made), and every attempt's (code, upstream status), in order."""

    model: str
    code: str
    attempts: tuple[tuple[str, int | None], ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "code": self.code,
            "attempts": [{"code": c, "status": s} for c, s in self.attempts],
        }


@dataclass(frozen=True, slots=True)
class SeatResult:
    """How one seat ended."""

    plan: SeatPlan
    status: str  # answered | failed
    served: str | None
    text: str | None
    substitutions: tuple[Substitution, ...]
    failures: tuple[SeatFailure, ...]
    attempts: tuple[AttemptRecord, ...]
    usage: Usage
    cost: float
    latency_ms: float
    sources: tuple[Source, ...] = ()  # what its web searches found and its answer cited
    blocked_sources: int = 0  # sources from a blocked domain, dropped (see `cited`)
    unsubstituted: str | None = None  # a failed seat: why no substitute took it

    @property
    def briefing(self) -> str:
        """The answer as the judge and the synthesizer read it: its text, then its sources."""
        text = self.text or ""
        if not self.sources:
            return text
        listed = "\n".join(f"- {s.title or s.url} <{s.url}>" for s in self.sources)
        return f"{text}\n\nSources:\n{listed}"

    def as_dict(self) -> dict[str, object]:
        research: dict[str, object] = {}
        if self.sources or self.usage.web_searches or self.blocked_sources:
            research = {
                "web_searches": self.usage.web_searches,
                "sources": [{"url": s.url, "title": s.title} for s in self.sources],
                "blocked_sources": self.blocked_sources,
            }
        return {
            "seat": self.plan.index,
            "planned": self.plan.wanted,
            "seated": self.plan.model,
            "plan_reason": self.plan.reason,
            "served": self.served,
            "status": self.status,
            "substitutions": [s.as_dict() for s in self.substitutions],
            "failures": [f.as_dict() for f in self.failures],
            "attempts": len(self.attempts),
            "latency_ms": round(self.latency_ms, 1),
            "usage": {
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
            },
            "cost_usd": round(self.cost, 8),
            **research,
            **({"unsubstituted": self.unsubstituted} if self.unsubstituted else {}),
        }


def _blocked(url: str, domains: Sequence[str]) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return any(host == d or host.endswith("." + d) for d in domains)


def cited(completion: Completion, request: ChatRequest) -> tuple[tuple[Source, ...], int]:
    """The sources a seat reports, and how many were dropped for coming from a blocked domain
    (a provider that cannot apply `blocked_domains` may return them)."""
    blocked = request.web_search.blocked_domains if request.web_search else ()
    kept = tuple(s for s in completion.sources if not _blocked(s.url, blocked))
    return kept, len(completion.sources) - len(kept)


@dataclass
class SeatState:
    """Shared across the seats of one request: who is taken, how many substitutions so far."""

    taken: set[str]
    vendors: set[str]
    explicit_pool: tuple[str, ...]
    substitutions: int = 0
    rules: SubstituteRules = field(default_factory=SubstituteRules)
    cancelled_losers: int = 0
    log: list[Substitution] = field(default_factory=list)

    def _pick(
        self, model: str, deps: FusionDeps, request: ChatRequest, *, priced: bool = True
    ) -> tuple[CatalogModel, str] | None:
        """The substitute the plan's rules give for `model` now, with its reason, or None
        (`priced`: one whose call would not fit in the money left is not usable)."""

        def availability(candidate: str) -> str | None:
            why = deps.availability(candidate)
            if why is None and priced and not deps.caller.affordable(request, candidate, PANELIST):
                return "over what is left of max_cost_usd"
            return why

        return pick_substitute(
            model,
            deps.models,
            self.explicit_pool,
            self.taken,
            self.vendors,
            availability,
            self.rules,
        )

    def substitute_ready(self, model: str, deps: FusionDeps, request: ChatRequest) -> bool:
        """Whether `model`, should it fail, has a substitute to take its seat, with a call
        left for it beside `model`'s own: then `model` is not retried."""
        if self.substitutions >= MAX_SUBSTITUTIONS or deps.caller.available(PANELIST) < 2:
            return False
        return self._pick(model, deps, request) is not None

    def claim(self, failed: str, deps: FusionDeps, request: ChatRequest) -> CatalogModel | str:
        """Atomically claim a substitute for `failed` (no await between check and take), or
        say why there is none (`UNSUBSTITUTED`)."""
        if self.substitutions >= MAX_SUBSTITUTIONS:
            return UNSUBSTITUTED["used_up"]
        if deps.caller.available(PANELIST) < 1:
            return UNSUBSTITUTED["no_call"]
        picked = self._pick(failed, deps, request)
        if picked is None:
            unpriced = self._pick(failed, deps, request, priced=False)
            return UNSUBSTITUTED["no_money" if unpriced else "none"]
        model, _reason = picked
        self.taken.add(model.id)
        self.vendors.add(model.vendor)
        self.substitutions += 1
        return model


# why a failed seat got no substitute (its `unsubstituted`)
UNSUBSTITUTED = {
    "used_up": f"the request's {MAX_SUBSTITUTIONS} substitutions are used up",
    "no_call": "no upstream call left for a substitute",
    "no_money": "no substitute fits in what is left of max_cost_usd",
    "none": "no substitute within the panel's rules (policy, availability, tier, independence)",
}


@dataclass(frozen=True, slots=True)
class Tried:
    """One model's try at a seat: its answer (None when it failed or was empty), why not,
    and what it cost."""

    model: str
    routed: Routed | None
    failure: SeatFailure | None
    attempts: tuple[AttemptRecord, ...] = ()
    usage: Usage = field(default_factory=Usage)
    cost: float = 0.0


def _failure(model: str, error: RouterError) -> SeatFailure:
    """The seat's record of `error`: every attempt's code, the last call's as the telling one."""
    if isinstance(error, AllProvidersFailed) and error.attempts:
        records = error.attempts
        made = [r for r in records if r.outcome != "skipped"]
        code = (made or list(records))[-1].code
        return SeatFailure(model, code, tuple((r.code, r.status) for r in records))
    return SeatFailure(model, error.code, ((error.code, None),))


async def _try(
    deps: FusionDeps,
    request: ChatRequest,
    model: str,
    deadline: float,
    seat: int,
    retry: bool = True,
) -> Tried:
    try:
        routed = await deps.caller.complete(
            request, [model], deadline, role=PANELIST, seat=seat, retry=retry
        )
    except RouterError as exc:
        records = exc.attempts if isinstance(exc, AllProvidersFailed) else ()
        return Tried(model, None, _failure(model, exc), tuple(records))
    except (
        Exception
    ) as exc:  # a bug must not cancel the sibling seats: it becomes this seat's failure
        if deps.log is not None:
            deps.log.exception("fusion.seat_crashed", seat=seat, model=model)
        error = RouterError(f"internal error in seat {seat}: {type(exc).__name__}")
        return Tried(model, None, _failure(model, error))
    records = tuple(routed.attempts.records)
    usage, cost = routed.completion.usage, routed.cost
    if not routed.completion.text.strip():  # an empty answer is no answer: the seat failed
        codes = (*((r.code, r.status) for r in records[:-1]), (EMPTY_ANSWER, 200))
        return Tried(model, None, SeatFailure(model, EMPTY_ANSWER, codes), records, usage, cost)
    return Tried(model, routed, None, records, usage, cost)


async def fill_seat(
    seat: SeatPlan,
    request: ChatRequest,
    deps: FusionDeps,
    state: SeatState,
    deadline: float,
    hedge_after_s: float | None = None,
) -> SeatResult:
    """Try the seat's model, then (once) a claimed substitute, until one answers or time runs out."""
    attributes: dict[str, str | int] = {
        semconv.ROUTER_FUSION_ROLE: "panelist",
        semconv.ROUTER_FUSION_SEAT: seat.index,
        semconv.ROUTER_MODEL: seat.model or "",
    }
    if seat.substituted:
        attributes[semconv.ROUTER_SUBSTITUTE_FOR] = seat.wanted
    with child_span(deps.tracer, semconv.SPAN_FUSION_SEAT, attributes=attributes) as span:
        result = await _fill_seat(seat, request, deps, state, deadline, hedge_after_s, span)
        span.set_attribute(semconv.ROUTER_FUSION_STATUS, result.status)
        if result.served:
            span.set_attribute(semconv.ROUTER_FUSION_SERVED, result.served)
        return result


async def _fill_seat(
    seat: SeatPlan,
    request: ChatRequest,
    deps: FusionDeps,
    state: SeatState,
    deadline: float,
    hedge_after_s: float | None,
    span: trace.Span,
) -> SeatResult:
    started = deps.clock()
    subs: list[Substitution] = []
    failures: list[SeatFailure] = []
    attempts: list[AttemptRecord] = []
    usage, cost = Usage(), 0.0

    def done(status: str, routed: Routed | None, unsubstituted: str | None = None) -> SeatResult:
        sources, blocked = cited(routed.completion, request) if routed else ((), 0)
        return SeatResult(
            plan=seat,
            status=status,
            served=routed.model.id if routed else None,
            text=routed.completion.text if routed else None,
            substitutions=tuple(subs),
            failures=tuple(failures),
            attempts=tuple(attempts),
            usage=usage,
            cost=cost,
            latency_ms=(deps.clock() - started) * 1000,
            sources=sources,
            blocked_sources=blocked,
            unsubstituted=unsubstituted,
        )

    model = seat.model
    substituted_here = False
    unsubstituted: str | None = None
    while model is not None:
        # a model with a substitute ready is not retried: the substitute takes the seat
        retry = substituted_here or not state.substitute_ready(model, deps, request)
        if hedge_after_s is not None and not substituted_here:
            tries, hedged = await _hedged(
                seat, request, deps, state, deadline, model, hedge_after_s, subs, retry
            )
            substituted_here = hedged
        else:
            tries = [await _try(deps, request, model, deadline, seat.index, retry)]
        winner: Routed | None = None
        for tried in tries:
            attempts.extend(tried.attempts)
            usage, cost = usage + tried.usage, cost + tried.cost
            if tried.failure is not None:
                failures.append(tried.failure)
            winner = winner or tried.routed
        if winner is not None:
            return done("answered", winner)
        failure = tries[0].failure
        assert failure is not None  # noqa: S101  # a try without an answer says why
        if substituted_here or deadline - deps.clock() < MIN_SEAT_S:
            break
        if failure.code == CALL_BUDGET_EXHAUSTED:
            unsubstituted = UNSUBSTITUTED["no_call"]  # none for this seat: none for another
            break
        replacement = state.claim(model, deps, request)
        if isinstance(replacement, str):
            unsubstituted = replacement
            break
        sub = Substitution(seat.index, model, failure.code, replacement.id)
        subs.append(sub)
        state.log.append(sub)
        if deps.log is not None:
            deps.log.warning(
                "fusion.seat_substituted",
                seat=seat.index,
                failed=model,
                code=failure.code,
                substitute=replacement.id,
            )
        span.add_event(
            semconv.EVENT_FUSION_SUBSTITUTED,
            {
                semconv.ROUTER_SUBSTITUTE_FOR: model,
                semconv.ROUTER_MODEL: replacement.id,
                semconv.ERROR_TYPE: failure.code,
            },
        )
        span.set_attribute(semconv.ROUTER_SUBSTITUTE_FOR, model)
        model = replacement.id
        substituted_here = True
    return done("failed", None, unsubstituted)


async def _hedged(
    seat: SeatPlan,
    request: ChatRequest,
    deps: FusionDeps,
    state: SeatState,
    deadline: float,
    model: str,
    hedge_after_s: float,
    subs: list[Substitution],
    retry: bool,
) -> tuple[list[Tried], bool]:
    """Start a substitute if the seat is slower than its budget; the first answer wins.
    Returns every try that ended (the answer, if any, among them) and whether it hedged."""
    primary = asyncio.ensure_future(_try(deps, request, model, deadline, seat.index, retry))
    backup: asyncio.Future[Tried] | None = None
    try:
        finished, _ = await asyncio.wait({primary}, timeout=hedge_after_s)
        if finished:
            return [primary.result()], False
        replacement = state.claim(model, deps, request)
        if isinstance(replacement, str):
            return [await primary], False
        sub = Substitution(seat.index, model, "hedged", replacement.id)
        subs.append(sub)
        state.log.append(sub)
        backup = asyncio.ensure_future(_try(deps, request, replacement.id, deadline, seat.index))
        pending: set[asyncio.Future[Tried]] = {primary, backup}
        ended: list[Tried] = []
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            ended.extend(task.result() for task in done)
            if any(t.routed is not None for t in ended):
                for loser in pending:
                    loser.cancel()
                    state.cancelled_losers += 1
                await asyncio.gather(*pending, return_exceptions=True)
                return ended, True
        return ended, True
    finally:  # a cancelled seat (client gone, shutdown) leaves no call of its own running
        running = [t for t in (primary, backup) if t is not None and not t.done()]
        for left in running:
            left.cancel()
        await asyncio.gather(*running, return_exceptions=True)


@dataclass(frozen=True, slots=True)
class PanelResult:
    """Every seat's outcome."""

    seats: tuple[SeatResult, ...]
    substitutions: tuple[Substitution, ...]
    latency_ms: float

    @property
    def answers(self) -> tuple[SeatResult, ...]:
        return tuple(s for s in self.seats if s.status == "answered")


async def gather_panel(
    plan: FusionPlan,
    request: ChatRequest,
    deps: FusionDeps,
    deadline: float,
    hedge_after_s: float | None = None,
) -> PanelResult:
    """All seats in parallel; a failing seat never cancels its siblings."""
    started = deps.clock()
    with child_span(
        deps.tracer, semconv.SPAN_FUSION_PANEL, attributes={semconv.ROUTER_FUSION_PANEL: plan.panel}
    ):
        return await _gather(plan, request, deps, deadline, hedge_after_s, started)


async def _gather(
    plan: FusionPlan,
    request: ChatRequest,
    deps: FusionDeps,
    deadline: float,
    hedge_after_s: float | None,
    started: float,
) -> PanelResult:
    state = SeatState(
        taken=set(plan.seated) | {s.wanted for s in plan.seats},
        vendors={deps.models[m].vendor for m in plan.seated if m in deps.models},
        explicit_pool=plan.pool,
        rules=plan.rules,
    )
    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(fill_seat(seat, request, deps, state, deadline, hedge_after_s))
            for seat in plan.seats
        ]
    return PanelResult(
        tuple(t.result() for t in tasks), tuple(state.log), (deps.clock() - started) * 1000
    )
