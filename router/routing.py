"""Single-shot routing: walk a model chain, attempt by attempt, until one answer is complete.

One walk serves every kind of work: a chat answer, whole or streamed (`complete`,
`open_stream`), and embeddings (`embed`). Each kind is a job (`_Job`, `_EmbedJob`) that says
which targets the request itself cannot go to (`unfit`) and makes the one upstream call of an
attempt (`attempt`); policy, breakers, cooldowns, bulkheads, retries, the retry budget, the
deadline and the attempt log are the walk's, the same for all.

Every attempt's outcome is classified (`errors.Outcome`) before retry,
failover or the breaker act on it:

- caller faults go straight back (a context-length refusal may move on to a
  larger-context model of the same route);
- a silent provider (any timeout) and a rejected credential fail over at once;
- a pooled connection the server had dropped while idle (`StaleConnection`, neutral) is
  tried once more on the same target, at once;
- other provider faults fail over to the next target at once; on the last target of the
  chain they get one jittered retry (throttling without Retry-After: one throttle backoff);
- 429 with Retry-After cools the target down (never shortening a cooldown) and
  fails over now, or waits when it is the last target and the wait fits the
  deadline; an exhausted quota cools it for 5 minutes.

Open breakers, cooling targets, full bulkheads, targets policy no longer
allows, targets that lack a capability the request needs (as the catalog
declares it) and targets whose protocol cannot carry one of its fields are
skipped without a call; when only the last two kinds were left, the request
gets a 400 that names what was missing. At most `max_attempts` upstream
calls per request, failover included; every attempt after the first spends
the process-wide retry budget. For streams, failover ends when the first event
arrives: the caller owns the rest.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, NoReturn, Protocol, cast

from opentelemetry import trace

from router import semconv
from router.catalog import ALL_CAPABILITIES, CatalogModel
from router.errors import (
    AllProvidersFailed,
    AllUpstreamsUnavailable,
    AttemptRecord,
    BreakerOpen,
    DeadlineExceeded,
    InvalidRequest,
    MissingCapability,
    NoEligibleModel,
    Outcome,
    ProviderAuthFailed,
    ProviderError,
    ProviderMalformed,
    ProviderQuotaExhausted,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    RateLimited,
    RouterError,
    StaleConnection,
    StreamTruncated,
    UnsupportedParameter,
    WrongModelKind,
)
from router.logs import get_logger
from router.protocol_support import (
    EFFORT_FIELD,
    IMAGE_FIELD,
    missing_field,
    required_capabilities,
)
from router.providers.base import EmbeddingProvider, Provider, unexpected
from router.retry import Cooldowns, RetryBudget, RetryPolicy, full_jitter
from router.tracing import REQUEST_SPANNED, current_event
from router.types import (
    ChatRequest,
    Completion,
    EmbeddingCall,
    EmbeddingRequest,
    Embeddings,
    ProviderCall,
    StreamEnd,
    StreamEvent,
    Timeouts,
)
from router.values import value

MIN_ATTEMPT_S = 0.1
Gate = Callable[[CatalogModel], str | None]  # why the target may not be called now, or None
_SUCCESS = Outcome.SUCCESS.value  # (an enum's .value is a Python-level property)
_THROTTLED = frozenset({ProviderRateLimited.code, ProviderQuotaExhausted.code, "cooling_down"})
# skips for what the request itself asks: with only these left, the request gets a 400
_REQUEST_SHAPED = frozenset({MissingCapability.code, UnsupportedParameter.code})


class Permit(Protocol):
    """One admitted call's breaker permit (implemented by `breakers.Permit`)."""

    def settle(self, exc: BaseException | None) -> None: ...


class Guard(Protocol):
    """The breaker board as routing sees it (implemented by `breakers.BreakerBoard`)."""

    def is_open(self, provider: str, model: str) -> bool: ...

    def is_demoted(self, provider: str, model: str) -> bool: ...

    def retry_after(self, provider: str, model: str) -> float | None: ...

    def key_for(self, provider: str, model: str) -> str: ...

    def admit(self, provider: str, model: str) -> Permit: ...


class CallBudget:
    """A cap on upstream calls shared by every stage of one request (fusion: 8).

    Calls can be held in reserve for a named role (fusion: the judge's and the synthesizer's,
    reserved when the plan is made): no other role may spend them. A role spends through its
    `lane`: its own reserve first, then the calls nobody holds (`free`)."""

    __slots__ = ("_drawn", "_reserved", "limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._reserved: dict[str, int] = {}
        self._drawn: dict[str, int] = {}  # calls a role took from the free ones

    @property
    def free(self) -> int:
        """Calls neither made nor held in reserve."""
        return self.limit - self.used - sum(self._reserved.values())

    def reserve(self, role: str, calls: int = 1) -> bool:
        """Hold `calls` for `role` alone; False (nothing held) when fewer are free."""
        if calls > self.free:
            return False
        self._reserved[role] = self._reserved.get(role, 0) + calls
        return True

    def release(self, role: str) -> None:
        """Give `role`'s unspent reserve back to everyone (its stage will not run)."""
        self._reserved.pop(role, None)

    def available(self, role: str | None = None) -> int:
        """Calls `role` may still make: its reserve and the free ones."""
        return self.free + (self._reserved.get(role, 0) if role is not None else 0)

    def take(self, role: str | None = None) -> bool:
        """Reserve one upstream call; False when the budget is spent (for `role`)."""
        if role is not None and self._reserved.get(role, 0) > 0:
            self._reserved[role] -= 1
        elif self.free > 0:
            if role is not None:
                self._drawn[role] = self._drawn.get(role, 0) + 1
        else:
            return False
        self.used += 1
        return True

    def give_back(self, role: str | None = None) -> None:
        """Return a reserved call that was not made (the breaker refused it at admission)."""
        self.used -= 1
        if role is None:
            return
        if self._drawn.get(role, 0) > 0:
            self._drawn[role] -= 1
        elif role in self._reserved:
            self._reserved[role] += 1

    @property
    def retry(self) -> bool:
        """Whether routing may retry a failed target (always, for the budget as a whole)."""
        return True

    def lane(self, role: str, *, retry: bool = True) -> CallLane:
        """What one role's calls spend from; `retry=False`: a failed target is not retried
        (fusion: a substitute is ready to take the seat instead)."""
        return CallLane(self, role, retry)


class CallLane:
    """One role's way to spend a `CallBudget` (see `CallBudget.lane`)."""

    __slots__ = ("_budget", "retry", "role")

    def __init__(self, budget: CallBudget, role: str, retry: bool) -> None:
        self._budget, self.role, self.retry = budget, role, retry

    def take(self) -> bool:
        return self._budget.take(self.role)

    def give_back(self) -> None:
        self._budget.give_back(self.role)


@value
class CapabilitySkip(AttemptRecord):
    """A target skipped without a call because it lacks a capability the request needs."""

    capability: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {**AttemptRecord.as_dict(self), "capability": self.capability}


@dataclass
class AttemptLog:
    """The attempts (and skipped targets) of one request, in order."""

    records: list[AttemptRecord] = field(default_factory=list)
    observer: Callable[[AttemptRecord], None] | None = None

    def add(
        self,
        model: CatalogModel,
        outcome: str,
        code: str,
        status: int | None,
        started: float,
        now: float,
    ) -> None:
        record = AttemptRecord(
            model.provider, model.id, outcome, code, status, (now - started) * 1000
        )
        self.records.append(record)
        if self.observer is not None:
            self.observer(record)

    def skip(self, model: CatalogModel, code: str) -> None:
        self.records.append(AttemptRecord(model.provider, model.id, "skipped", code, None, 0.0))

    def skip_lacking(self, model: CatalogModel, capability: str) -> None:
        """`model` skipped because it lacks `capability`, which the request needs."""
        self.records.append(
            CapabilitySkip(
                model.provider,
                model.id,
                "skipped",
                MissingCapability.code,
                None,
                0.0,
                capability,
            )
        )

    @property
    def calls(self) -> list[AttemptRecord]:
        """Only the attempts that reached a provider."""
        return [r for r in self.records if r.outcome != "skipped"]

    @property
    def providers(self) -> list[str]:
        return [r.provider for r in self.calls]


@dataclass(frozen=True, slots=True)
class Routed:
    """A complete answer and how it was obtained."""

    model: CatalogModel
    completion: Completion
    attempts: AttemptLog

    @property
    def cost(self) -> float:
        return self.model.cost(self.completion.usage)


@dataclass(frozen=True, slots=True)
class RoutedEmbeddings:
    """Every input's vector and how they were obtained."""

    model: CatalogModel
    embeddings: Embeddings
    attempts: AttemptLog

    @property
    def cost(self) -> float:
        return self.model.cost(self.embeddings.usage)


class StreamAbandoned(Exception):  # a verdict, never raised to a caller
    """The caller closed a stream before its end: neutral for the breaker."""


class HeldEvents:
    """The rest of a stream; its breaker permit is settled when the stream is closed.

    Faults after the first event (a cut, a stall, a malformed event, an end without the
    terminal event, raised here as `StreamTruncated`) count against the provider's breaker
    like faults before it; a stream the caller abandons is neutral; one that reached its end
    event is a success.
    """

    __slots__ = ("_permit", "_provider", "_source", "_verdict")

    def __init__(
        self,
        source: AsyncIterator[StreamEvent],
        permit: Permit | None,
        first: StreamEvent,
        provider: str,
    ) -> None:
        self._source = source
        self._permit = permit
        self._provider = provider
        self._verdict: BaseException | None = (
            None if isinstance(first, StreamEnd) else StreamAbandoned()
        )

    def __aiter__(self) -> HeldEvents:
        return self

    async def __anext__(self) -> StreamEvent:
        try:
            event = await anext(self._source)
        except StopAsyncIteration:
            self._verdict = StreamTruncated(
                "the stream ended without its terminal event", provider=self._provider
            )
            raise self._verdict from None
        except ProviderError as exc:
            self._verdict = exc
            raise
        except Exception as exc:  # noqa: BLE001  # an adapter met something it could not handle
            self._verdict = _unexpected(exc, self._provider)
            raise self._verdict from None
        if isinstance(event, StreamEnd):
            self._verdict = None
        return event

    async def aclose(self) -> None:
        """Close the upstream stream, then give the breaker its verdict (once)."""
        try:
            aclose = getattr(self._source, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            permit, self._permit = self._permit, None
            if permit is not None:
                permit.settle(self._verdict)


@dataclass
class OpenedStream:
    """A stream whose first event has arrived; `events` yields the rest."""

    model: CatalogModel
    first: StreamEvent
    events: HeldEvents
    attempts: AttemptLog

    async def aclose(self) -> None:
        await self.events.aclose()


def check_max_tokens(request: ChatRequest, chain: Sequence[CatalogModel]) -> None:
    """`max_tokens` must fit at least one model of the chain."""
    if request.max_tokens is not None and chain:
        limit = max(m.max_output_tokens for m in chain)
        if request.max_tokens > limit:
            raise InvalidRequest(
                f"'max_tokens' is larger than the model's limit ({limit})", param="max_tokens"
            )


def check_dimensions(request: EmbeddingRequest, chain: Sequence[CatalogModel]) -> None:
    """`dimensions` must fit at least one model of the chain (where the catalog says sizes)."""
    sizes = [m.dimensions for m in chain]
    if request.dimensions is not None and sizes and None not in sizes:
        limit = max(size for size in sizes if size is not None)
        if request.dimensions > limit:
            raise InvalidRequest(
                f"'dimensions' is larger than the model's vectors ({limit})", param="dimensions"
            )


def _clocks(model: CatalogModel, remaining: float) -> Timeouts:
    """The model's clocks, each cut to what is left of the request's deadline."""
    t = model.timeouts
    if (  # the usual case: the request's deadline cuts none of the attempt's clocks
        remaining >= t.total
        and remaining >= t.first_byte
        and remaining >= t.idle
        and remaining >= t.connect
    ):
        return t
    return Timeouts(
        connect=min(t.connect, remaining),
        first_byte=min(t.first_byte, remaining),
        idle=min(t.idle, remaining),
        total=min(t.total, remaining),
    )


def _call_for(
    request: ChatRequest,
    model: CatalogModel,
    remaining: float,
    extra_headers: tuple[tuple[str, str], ...],
) -> ProviderCall:
    """The attempt: the model's clocks, each cut to what is left of the request's deadline."""
    timeouts = _clocks(model, remaining)
    if request.max_tokens is not None and request.max_tokens > model.max_output_tokens:
        request = dataclasses.replace(request, max_tokens=model.max_output_tokens)
    deadline = time.monotonic() + timeouts.total
    return ProviderCall(
        request,
        model.upstream_id,
        timeouts,
        extra_headers,
        deadline,
        structured_output=model.structured_output,
        thinking=model.thinking,
    )


async def _open(
    provider: Provider, call: ProviderCall
) -> tuple[StreamEvent, AsyncIterator[StreamEvent]]:
    """Start a stream and wait for its first event (a stream that ends first is a timeout)."""
    events = provider.stream(call)
    try:
        first = await anext(events)
    except StopAsyncIteration:
        raise ProviderTimeout(
            "stream ended before its first event", provider=provider.name, phase="first_byte"
        ) from None
    except BaseException:
        await _close(events)
        raise
    return first, events


async def _close(events: AsyncIterator[StreamEvent]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


@dataclass(slots=True)
class _Job:
    """One chat request's walk along its chain: what it asks, by when, within which limits."""

    request: ChatRequest
    deadline: float
    stream: bool
    budget: CallBudget | CallLane | None
    gate: Gate | None
    attempts: AttemptLog
    missing: list[tuple[str, str]] = field(default_factory=list)  # (field, protocol) skipped
    needed: frozenset[str] | None = None  # the capabilities it needs, once a target may lack one
    lacking: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (model, lacks)
    operation: ClassVar[str] = semconv.OPERATION_CHAT

    def lacks(self, model: CatalogModel) -> tuple[str, ...]:
        """The capabilities the request needs that `model` lacks (none, for a model that can
        do everything: the request is then not even looked at)."""
        if model.capabilities >= ALL_CAPABILITIES:
            return ()
        if self.needed is None:
            self.needed = required_capabilities(self.request)
        return model.lacking(self.needed)

    def unfit(self, model: CatalogModel, provider: Provider) -> str | None:
        """Why the request itself cannot go to `model` (a capability it lacks, a field its
        protocol cannot carry), or None."""
        lacks = self.lacks(model)
        if lacks:
            self.lacking.append((model.id, lacks))
            return MissingCapability.code
        missing = missing_field(self.request, provider.protocol)
        if missing is not None:
            self.missing.append((missing, provider.protocol))
            return UnsupportedParameter.code
        return None

    def refusal(self) -> InvalidRequest:
        """The 400 for a request every target was unfit for: the first target's reason."""
        if self.attempts.records[0].code == MissingCapability.code:
            return lacking_capability(self.request, self.lacking)
        name, protocol = self.missing[0]
        return UnsupportedParameter(
            f"'{name}' cannot be sent to the {protocol} protocol, and no target of "
            "this request speaks another one that carries it",
            param=name,
        )

    def attempt(
        self,
        provider: Provider,
        model: CatalogModel,
        remaining: float,
        extra_headers: tuple[tuple[str, str], ...],
    ) -> Awaitable[Answer]:
        """The upstream call of one attempt: a whole answer, or a stream's first event."""
        call = _call_for(self.request, model, remaining, extra_headers)
        return _open(provider, call) if self.stream else provider.complete(call)


@dataclass(slots=True)
class _EmbedJob:
    """One embeddings request's walk along its chain: the texts, by when, within which limits."""

    request: EmbeddingRequest
    deadline: float
    budget: CallBudget | CallLane | None
    gate: Gate | None
    attempts: AttemptLog
    stream: bool = False
    # (the walk's record of targets unfit for what the request asks: none are, for texts)
    missing: list[tuple[str, str]] = field(default_factory=list)
    lacking: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    operation: ClassVar[str] = semconv.OPERATION_EMBEDDINGS

    def unfit(self, model: CatalogModel, provider: Provider) -> str | None:
        """Why the texts cannot go to `model`: not an embedding model (the catalog keeps them
        apart), an upstream without embeddings, vectors smaller than the size asked for."""
        if model.kind != "embedding":
            return WrongModelKind.code
        if not isinstance(provider, EmbeddingProvider):
            return "no_embeddings_api"
        size = self.request.dimensions
        if size is not None and model.dimensions is not None and size > model.dimensions:
            return "dimensions_too_large"
        return None

    def refusal(self) -> InvalidRequest:
        """(Never needed: no embeddings target is skipped for a request-shaped reason.)"""
        return InvalidRequest(f"no target of {self.request.model!r} can embed this request")

    def attempt(
        self,
        provider: Provider,
        model: CatalogModel,
        remaining: float,
        extra_headers: tuple[tuple[str, str], ...],
    ) -> Awaitable[Answer]:
        """The upstream call of one attempt: every input's vector."""
        timeouts = _clocks(model, remaining)
        call = EmbeddingCall(
            self.request,
            model.upstream_id,
            timeouts,
            extra_headers,
            time.monotonic() + timeouts.total,
            model_dimensions=model.dimensions,
        )
        return cast(EmbeddingProvider, provider).embed(call)  # (`unfit` checked it)


Answer = Completion | tuple[StreamEvent, AsyncIterator[StreamEvent]] | Embeddings


class Router:
    """Turns a chain of allowed models into one answer, or one well-formed error."""

    def __init__(
        self,
        providers: Mapping[str, Provider],
        *,
        breakers: Guard | None = None,
        policy: RetryPolicy | None = None,
        budget: RetryBudget | None = None,
        cooldowns: Cooldowns | None = None,
        bulkheads: Mapping[str, int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        trace_headers: Callable[[CatalogModel], tuple[tuple[str, str], ...]] | None = None,
        observer: Callable[[AttemptRecord], None] | None = None,
        tracer: trace.Tracer | None = None,
        capture_content: bool = False,
    ) -> None:
        self._capture = capture_content
        self._tracer = tracer or trace.NoOpTracer()
        self._tracing = tracer is not None  # None: no CLIENT spans at all (nothing exports them)
        self._observer = observer
        self.on_budget_exhausted: Callable[[], None] | None = None
        self._providers = providers
        self._breakers = breakers
        self.policy = policy or RetryPolicy()
        self.budget = budget or RetryBudget(self.policy, clock)
        self.cooldowns = cooldowns or Cooldowns(clock)
        self._limits = dict(bulkheads or {})
        self.inflight: dict[str, int] = dict.fromkeys(providers, 0)
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._trace_headers = trace_headers

    def unavailable(self, model: CatalogModel) -> str | None:
        """Why routing would skip `model` right now (breaker open, cooling down), or None."""
        if self._breakers is not None and self._breakers.is_open(model.provider, model.id):
            return "breaker open"
        cooling = self.cooldowns.remaining(self._key(model))
        if cooling > 0:
            until = datetime.fromtimestamp(time.time() + cooling, UTC).strftime("%H:%M:%SZ")
            return f"cooling down after a rate limit until {until} ({cooling:.0f} s)"
        return None

    def _key(self, model: CatalogModel) -> str:
        if self._breakers is not None:
            return self._breakers.key_for(model.provider, model.id)
        return f"{model.provider}/{model.id}"

    async def complete(
        self,
        request: ChatRequest,
        chain: Sequence[CatalogModel],
        deadline: float,
        *,
        budget: CallBudget | CallLane | None = None,
        gate: Gate | None = None,
    ) -> Routed:
        """The first complete answer along `chain`."""
        job = _Job(request, deadline, False, budget, gate, AttemptLog(observer=self._observer))
        model, answer, _ = await self._run(job, chain)
        assert isinstance(answer, Completion)  # noqa: S101  # a whole answer was asked for
        return Routed(model, answer, job.attempts)

    async def open_stream(
        self,
        request: ChatRequest,
        chain: Sequence[CatalogModel],
        deadline: float,
        *,
        budget: CallBudget | CallLane | None = None,
        gate: Gate | None = None,
    ) -> OpenedStream:
        """A stream from the first target along `chain` that produces its first event."""
        job = _Job(request, deadline, True, budget, gate, AttemptLog(observer=self._observer))
        model, answer, permit = await self._run(job, chain)
        assert isinstance(answer, tuple)  # noqa: S101  # a stream was asked for
        first, events = answer
        return OpenedStream(
            model, first, HeldEvents(events, permit, first, model.provider), job.attempts
        )

    async def embed(
        self,
        request: EmbeddingRequest,
        chain: Sequence[CatalogModel],
        deadline: float,
        *,
        gate: Gate | None = None,
    ) -> RoutedEmbeddings:
        """Every input's vector, from the first target along `chain` that embeds them all."""
        job = _EmbedJob(request, deadline, None, gate, AttemptLog(observer=self._observer))
        model, answer, _ = await self._run(job, chain)
        assert isinstance(answer, Embeddings)  # noqa: S101  # embeddings were asked for
        return RoutedEmbeddings(model, answer, job.attempts)

    async def _run(
        self, job: _Job | _EmbedJob, chain: Sequence[CatalogModel]
    ) -> tuple[CatalogModel, Answer, Permit | None]:
        if len(chain) > 1:
            chain = self._healthy_first(chain)
        try:
            return await self._walk(job, chain)
        except RouterError as exc:
            if exc.tried is None:  # the error response reports what was tried
                exc.tried = tuple(job.attempts.records)
            raise

    def _healthy_first(self, chain: Sequence[CatalogModel]) -> Sequence[CatalogModel]:
        """`chain` with demoted targets moved behind the others, order kept otherwise."""
        board = self._breakers
        if board is None or len(chain) < 2:
            return chain
        demoted = [board.is_demoted(m.provider, m.id) for m in chain]
        if not any(demoted) or all(demoted):
            return chain
        return [m for m, d in zip(chain, demoted, strict=True) if not d] + [
            m for m, d in zip(chain, demoted, strict=True) if d
        ]

    def _skip_reason(
        self, model: CatalogModel, job: _Job | _EmbedJob, waits: list[float]
    ) -> str | None:
        """Why `model` is skipped without a call now (policy, what the request asks that it
        cannot serve (`unfit`), cooldown, breaker, bulkhead)."""
        if job.gate is not None and job.gate(model) is not None:
            return "policy_denied"
        unfit = job.unfit(model, self._providers[model.provider])
        if unfit is not None:
            return unfit
        cooling = self.cooldowns.remaining(self._key(model)) if self.cooldowns.until else 0.0
        if cooling > 0:
            waits.append(cooling)
            return "cooling_down"
        if self._breakers is not None and self._breakers.is_open(model.provider, model.id):
            waits.append(self._breakers.retry_after(model.provider, model.id) or 1.0)
            self._breaker_rejected(model)
            return BreakerOpen.code
        limit = self._limits.get(model.provider)
        if limit is not None and self.inflight.get(model.provider, 0) >= limit:
            waits.append(1.0)
            return "bulkhead_full"
        return None

    def _breaker_rejected(self, model: CatalogModel) -> None:
        current_event(
            semconv.EVENT_BREAKER_REJECTED,
            {semconv.ROUTER_PROVIDER: model.provider, semconv.ROUTER_MODEL: model.id},
        )

    async def _walk(
        self, job: _Job | _EmbedJob, chain: Sequence[CatalogModel]
    ) -> tuple[CatalogModel, Answer, Permit | None]:
        """Each target in turn (a target may get one retry), until one answers."""
        attempts = job.attempts
        waits: list[float] = []
        rate_limited: float | None = None
        stopped_by_deadline = False
        calls = 0
        needs_window = 0  # after a context-length refusal: only larger windows may follow
        self.budget.record_request()
        policy = self.policy

        def give_up() -> NoReturn:
            records = attempts.records
            if records and all(r.code in _REQUEST_SHAPED for r in records):
                raise job.refusal()
            self._raise(attempts, waits, rate_limited, job.deadline, stopped_by_deadline)

        for position, model in enumerate(chain):
            if model.context_window <= needs_window:
                attempts.skip(model, "context_window_too_small")
                continue
            retries_here = 0
            while True:
                remaining = job.deadline - self._clock()
                if remaining < MIN_ATTEMPT_S:
                    stopped_by_deadline = True
                    break
                skipped = self._skip_reason(model, job, waits)
                if skipped == MissingCapability.code:
                    attempts.skip_lacking(model, job.lacking[-1][1][0])
                    break
                if skipped is not None:
                    attempts.skip(model, skipped)
                    break
                if calls >= policy.max_attempts:
                    give_up()
                if calls > 0 and not self.budget.try_retry():
                    attempts.skip(model, "retry_budget_exhausted")
                    if self.on_budget_exhausted is not None:
                        self.on_budget_exhausted()
                    give_up()
                if job.budget is not None and not job.budget.take():
                    attempts.skip(model, "call_budget_exhausted")
                    give_up()
                calls += 1
                started = self._clock()
                try:
                    answer, permit = await self._attempt(job, model, remaining, calls)
                except BreakerOpen as exc:
                    calls -= 1  # rejected without a call (the half-open probe was taken)
                    if job.budget is not None:
                        job.budget.give_back()
                    attempts.skip(model, exc.code)
                    self._breaker_rejected(model)
                    waits.append(exc.retry_after or 1.0)
                    break
                except ProviderError as exc:
                    attempts.add(
                        model,
                        exc.outcome.value,
                        exc.code,
                        exc.upstream_status,
                        started,
                        self._clock(),
                    )
                    action = self._after_failure(
                        exc, model, self._key(model), chain, position, retries_here, job.deadline
                    )
                    if (
                        job.budget is not None
                        and not job.budget.retry
                        and not isinstance(exc, StaleConnection)
                    ):
                        action = None  # the caller has a substitute ready: no retry here
                    if isinstance(action, float):
                        retries_here += 1
                        await self._sleep(action)
                        continue
                    if isinstance(exc, ProviderRateLimited) and exc.retry_after is not None:
                        rate_limited = min(exc.retry_after, policy.max_cooldown_s)
                    if isinstance(exc, ProviderRejected):  # context length: a larger model next
                        needs_window = max(needs_window, model.context_window)
                    break
                attempts.add(model, _SUCCESS, "ok", 200, started, self._clock())
                return model, answer, permit
            if stopped_by_deadline:
                break
        give_up()

    async def _attempt(
        self, job: _Job | _EmbedJob, model: CatalogModel, remaining: float, number: int
    ) -> tuple[Answer, Permit | None]:
        """One upstream call, in its CLIENT span when spans are exported and the request is
        sampled: one whose `request_scope` gave it a span (`tracing.REQUEST_SPANNED`; a
        router driven outside a request makes no CLIENT span)."""
        provider = self._providers[model.provider]
        if (
            not self._tracing
            or not REQUEST_SPANNED.get()
            or not trace.get_current_span().is_recording()
        ):
            # nothing exports CLIENT spans, or this request is not sampled: no span at all
            return await self._call(job, model, remaining, provider, None)
        attributes: dict[str, str | int] = {
            semconv.GEN_AI_OPERATION_NAME: job.operation,
            semconv.GEN_AI_PROVIDER_NAME: semconv.PROVIDER_NAME.get(
                provider.protocol, provider.protocol
            ),
            semconv.GEN_AI_REQUEST_MODEL: model.upstream_id,
            semconv.ROUTER_PROVIDER: model.provider,
            semconv.ROUTER_MODEL: model.id,
            semconv.ROUTER_ATTEMPT: number,
        }
        with self._tracer.start_as_current_span(  # under a recorded span: checked above
            f"{job.operation} {model.upstream_id}",
            kind=trace.SpanKind.CLIENT,
            attributes=attributes,
        ) as span:
            return await self._call(
                job, model, remaining, provider, span if span.is_recording() else None
            )

    async def _call(
        self,
        job: _Job | _EmbedJob,
        model: CatalogModel,
        remaining: float,
        provider: Provider,
        span: trace.Span | None,
    ) -> tuple[Answer, Permit | None]:
        """The call under its breaker permit; its outcome on `span` (a recording one, or None).

        Every wait inside the adapter is bounded by the attempt's clocks (`ProviderCall`,
        `EmbeddingCall`), cut to the request's deadline. A whole answer settles the permit
        here; a stream keeps it until it ends (`HeldEvents.aclose`).
        """
        trace_headers = self._trace_headers(model) if self._trace_headers is not None else ()
        permit = (
            self._breakers.admit(model.provider, model.id) if self._breakers is not None else None
        )  # BreakerOpen here: nothing was called
        self.inflight[model.provider] = self.inflight.get(model.provider, 0) + 1
        try:
            try:
                answer = await job.attempt(provider, model, remaining, trace_headers)
            except ProviderError:
                raise
            except Exception as exc:  # noqa: BLE001  # an adapter met something it could not handle
                raise _unexpected(exc, model.provider) from None
        except BaseException as exc:
            if permit is not None:
                permit.settle(exc)
            if span is not None and isinstance(exc, ProviderError):
                _failed_on(span, exc)
            raise
        finally:
            self.inflight[model.provider] -= 1
        if permit is not None and not job.stream:
            permit.settle(None)
            permit = None
        if span is not None:
            self._succeeded_on(span, job.request, model, answer)
        return answer, permit

    def _succeeded_on(
        self,
        span: trace.Span,
        request: ChatRequest | EmbeddingRequest,
        model: CatalogModel,
        answer: Answer,
    ) -> None:
        span.set_attribute(semconv.ROUTER_OUTCOME, _SUCCESS)
        if isinstance(answer, Embeddings):
            span.set_attribute(
                semconv.GEN_AI_RESPONSE_MODEL, answer.response_model or model.upstream_id
            )
            span.set_attribute(semconv.GEN_AI_USAGE_INPUT_TOKENS, answer.usage.input_tokens)
            return
        if self._capture and isinstance(request, ChatRequest):
            span.set_attribute(
                semconv.GEN_AI_INPUT_MESSAGES,
                json.dumps([{"role": m.role, "content": m.content} for m in request.messages]),
            )
            if isinstance(answer, Completion):
                span.set_attribute(
                    semconv.GEN_AI_OUTPUT_MESSAGES,
                    json.dumps([{"role": "assistant", "content": answer.text}]),
                )
        if isinstance(answer, Completion):
            span.set_attribute(
                semconv.GEN_AI_RESPONSE_MODEL, answer.response_model or model.upstream_id
            )
            span.set_attribute(semconv.GEN_AI_USAGE_INPUT_TOKENS, answer.usage.input_tokens)
            span.set_attribute(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, answer.usage.output_tokens)
            span.set_attribute(semconv.GEN_AI_RESPONSE_FINISH_REASONS, (answer.finish_reason,))

    def _after_failure(
        self,
        exc: ProviderError,
        model: CatalogModel,
        key: str,
        chain: Sequence[CatalogModel],
        position: int,
        retries_here: int,
        deadline: float,
    ) -> float | None:
        """Seconds to wait before retrying the same target, or None to move on (or raise)."""
        policy = self.policy
        remaining = deadline - self._clock()
        later = chain[position + 1 :]
        if isinstance(exc, StaleConnection):  # once, at once: the next goes on a new connection
            return 0.0 if retries_here == 0 and remaining >= 2 * MIN_ATTEMPT_S else None
        if isinstance(exc, ProviderRejected):
            if exc.reason == "context_length_exceeded" and any(
                m.context_window > model.context_window for m in later
            ):
                return None
            raise exc.to_request_error() from None
        if isinstance(exc, ProviderRateLimited):
            if exc.quota_exhausted:
                self.cooldowns.cool(key, policy.quota_cooldown_s)
                return None
            if exc.retry_after is not None:
                self.cooldowns.cool(key, min(exc.retry_after, policy.max_cooldown_s))
                fits = exc.retry_after <= min(policy.max_retry_after_s, remaining - MIN_ATTEMPT_S)
                if not later and fits and retries_here == 0:
                    self.cooldowns.cool(key, 0)  # we are about to wait it out ourselves
                    return exc.retry_after
                return None
            delay = full_jitter(
                retries_here, policy.throttle_base_s, policy.throttle_cap_s, self._rng
            )
        elif isinstance(exc, ProviderTimeout | ProviderAuthFailed):
            return None
        elif exc.upstream_status == 529:  # overloaded: a provider fault that backs off like a 429
            delay = full_jitter(
                retries_here, policy.throttle_base_s, policy.throttle_cap_s, self._rng
            )
        else:
            delay = full_jitter(
                retries_here, policy.transient_base_s, policy.transient_cap_s, self._rng
            )
        if later:
            return None  # another target is ready: fail over now rather than wait on this one
        if retries_here >= 1 or delay > remaining - MIN_ATTEMPT_S:
            return None
        return delay

    def _raise(
        self,
        attempts: AttemptLog,
        waits: list[float],
        rate_limited: float | None,
        deadline: float,
        stopped_by_deadline: bool,
    ) -> NoReturn:
        calls = attempts.calls
        if (
            not calls
            and attempts.records
            and all(r.code == "policy_denied" for r in attempts.records)
        ):
            raise NoEligibleModel("policy no longer allows any target of this request")
        if attempts.records and all(r.code in _THROTTLED for r in attempts.records):
            hints = [*waits, rate_limited] if rate_limited is not None else waits
            raise RateLimited(
                "every allowed target is rate limited or cooling down",
                retry_after=min(hints) if hints else None,
            )
        if not calls and waits:
            raise AllUpstreamsUnavailable(
                "every allowed target is unavailable (breaker open, cooling down or at capacity)",
                retry_after=min(waits),
            )
        timed_out = not calls or calls[-1].code == ProviderTimeout.code
        if timed_out and (stopped_by_deadline or self._clock() >= deadline - MIN_ATTEMPT_S):
            raise DeadlineExceeded("the request deadline passed before any provider answered")
        summary = ", ".join(f"{r.model}@{r.provider}: {r.code}" for r in attempts.records)
        raise AllProvidersFailed(f"every attempt failed ({summary})", attempts=attempts.records)


def capability_param(capability: str, request: ChatRequest) -> str:
    """The request field that asks for `capability` (the `param` of its 400)."""
    if capability == "tools":
        return "tools" if request.tools else "messages"
    return {
        "vision": IMAGE_FIELD,
        "json_schema": "response_format",
        "reasoning": EFFORT_FIELD,
    }.get(capability, capability)


def lacking_capability(
    request: ChatRequest, lacking: Sequence[tuple[str, tuple[str, ...]]]
) -> MissingCapability:
    """The 400 for a request whose targets were skipped for capabilities they lack: the first
    target's first missing capability, and every model skipped for one."""
    capability = lacking[0][1][0]
    each = "; ".join(f"{model} lacks {', '.join(map(repr, caps))}" for model, caps in lacking)
    return MissingCapability(
        f"no target of {request.model!r} has what this request needs ({each})",
        capability=capability,
        models=[model for model, _ in lacking],
        param=capability_param(capability, request),
    )


def _unexpected(exc: Exception, provider: str) -> ProviderError:
    """An exception that escaped an adapter, as the provider fault it is; logged with its
    frames (never its message or locals, which may quote the answer)."""
    error = unexpected(exc, provider)
    if isinstance(error, ProviderMalformed):
        get_logger().warning(
            "provider.unexpected_error",
            provider=provider,
            error=type(exc).__name__,
            where=_where(exc),
        )
    return error


def _where(exc: BaseException) -> str:
    """file:line of the innermost frame that raised `exc`."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "?"
    return f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"


def _failed_on(span: trace.Span, exc: ProviderError) -> None:
    span.set_attribute(semconv.ERROR_TYPE, exc.code)
    span.set_attribute(semconv.ROUTER_OUTCOME, exc.outcome.value)
    if exc.upstream_status is not None:
        span.set_attribute(semconv.HTTP_RESPONSE_STATUS_CODE, exc.upstream_status)
    span.set_status(trace.Status(trace.StatusCode.ERROR, exc.code))
