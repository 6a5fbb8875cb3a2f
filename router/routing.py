"""Single-shot routing: walk a model chain, attempt by attempt, until one answer is complete.

Every attempt's outcome is classified (see `errors.Outcome`) before anything
else looks at it: caller faults go straight back to the caller, provider
faults and throttling move on to the next target, and the request deadline
bounds everything. For streams, failover is possible only until the first
event has been received; the caller then owns the rest of the stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from router.catalog import CatalogModel
from router.errors import (
    AllProvidersFailed,
    AllUpstreamsUnavailable,
    AttemptRecord,
    BreakerOpen,
    DeadlineExceeded,
    InvalidRequest,
    Outcome,
    ProviderError,
    ProviderRejected,
    ProviderTimeout,
)
from router.providers.base import Provider
from router.types import ChatRequest, Completion, ProviderCall, StreamEvent, Timeouts

MIN_ATTEMPT_S = 0.05


@dataclass
class AttemptLog:
    """The attempts of one request, in order."""

    records: list[AttemptRecord] = field(default_factory=list)

    def add(
        self,
        model: CatalogModel,
        outcome: str,
        code: str,
        status: int | None,
        started: float,
        now: float,
    ) -> None:
        self.records.append(
            AttemptRecord(model.provider, model.id, outcome, code, status, (now - started) * 1000)
        )

    @property
    def providers(self) -> list[str]:
        return [r.provider for r in self.records]


@dataclass(frozen=True, slots=True)
class Routed:
    """A complete answer and how it was obtained."""

    model: CatalogModel
    completion: Completion
    attempts: AttemptLog

    @property
    def cost(self) -> float:
        return self.model.cost(self.completion.usage)


@dataclass
class OpenedStream:
    """A stream whose first event has arrived; `events` yields the rest."""

    model: CatalogModel
    first: StreamEvent
    events: AsyncIterator[StreamEvent]
    attempts: AttemptLog

    async def aclose(self) -> None:
        aclose = getattr(self.events, "aclose", None)
        if aclose is not None:
            await aclose()


def check_max_tokens(request: ChatRequest, chain: Sequence[CatalogModel]) -> None:
    """`max_tokens` must fit at least one model of the chain."""
    if request.max_tokens is not None and chain:
        limit = max(m.max_output_tokens for m in chain)
        if request.max_tokens > limit:
            raise InvalidRequest(
                f"'max_tokens' is larger than the model's limit ({limit})", param="max_tokens"
            )


def _call_for(
    request: ChatRequest,
    model: CatalogModel,
    remaining: float,
    extra_headers: tuple[tuple[str, str], ...],
) -> ProviderCall:
    t = model.timeouts
    timeouts = Timeouts(
        connect=min(t.connect, remaining),
        first_byte=min(t.first_byte, remaining),
        idle=min(t.idle, remaining),
        total=min(t.total, remaining),
    )
    if request.max_tokens is not None and request.max_tokens > model.max_output_tokens:
        request = dataclasses.replace(request, max_tokens=model.max_output_tokens)
    return ProviderCall(request, model.upstream_id, timeouts, extra_headers)


class Router:
    """Turns a chain of allowed models into one answer, or one well-formed error."""

    def __init__(
        self,
        providers: Mapping[str, Provider],
        *,
        clock: Callable[[], float] = time.monotonic,
        trace_headers: Callable[[CatalogModel], tuple[tuple[str, str], ...]] = lambda _m: (),
    ) -> None:
        self._providers = providers
        self._clock = clock
        self._trace_headers = trace_headers

    def _fail(self, attempts: AttemptLog, deadline: float) -> Exception:
        if attempts.records and all(r.code == BreakerOpen.code for r in attempts.records):
            return AllUpstreamsUnavailable(
                "every allowed target is unavailable (breakers open)", retry_after=1.0
            )
        if self._clock() >= deadline - MIN_ATTEMPT_S:
            return DeadlineExceeded("the request deadline passed before any provider answered")
        summary = ", ".join(f"{r.model}@{r.provider}: {r.code}" for r in attempts.records)
        return AllProvidersFailed(f"every provider failed ({summary})", attempts=attempts.records)

    def _record_failure(
        self, attempts: AttemptLog, model: CatalogModel, exc: ProviderError, started: float
    ) -> None:
        attempts.add(
            model, exc.outcome.value, exc.code, exc.upstream_status, started, self._clock()
        )
        if isinstance(exc, ProviderRejected):
            raise exc.to_request_error() from None

    async def complete(
        self, request: ChatRequest, chain: Sequence[CatalogModel], deadline: float
    ) -> Routed:
        """The first complete answer along `chain`."""
        attempts = AttemptLog()
        for model in chain:
            remaining = deadline - self._clock()
            if remaining < MIN_ATTEMPT_S:
                break
            provider = self._providers[model.provider]
            call = _call_for(request, model, remaining, self._trace_headers(model))
            started = self._clock()
            try:
                async with asyncio.timeout(remaining):
                    completion = await provider.complete(call)
            except TimeoutError:
                attempts.add(
                    model,
                    Outcome.PROVIDER_FAULT.value,
                    ProviderTimeout.code,
                    None,
                    started,
                    self._clock(),
                )
                continue
            except ProviderError as exc:
                self._record_failure(attempts, model, exc, started)
                continue
            attempts.add(model, Outcome.SUCCESS.value, "ok", 200, started, self._clock())
            return Routed(model, completion, attempts)
        raise self._fail(attempts, deadline)

    async def open_stream(
        self, request: ChatRequest, chain: Sequence[CatalogModel], deadline: float
    ) -> OpenedStream:
        """A stream from the first target along `chain` that produces its first event."""
        attempts = AttemptLog()
        for model in chain:
            remaining = deadline - self._clock()
            if remaining < MIN_ATTEMPT_S:
                break
            provider = self._providers[model.provider]
            call = _call_for(request, model, remaining, self._trace_headers(model))
            started = self._clock()
            events = provider.stream(call)
            try:
                async with asyncio.timeout(remaining):
                    first = await anext(events)
            except (TimeoutError, StopAsyncIteration, ProviderError) as exc:
                await events.aclose()  # type: ignore[attr-defined]
                if isinstance(exc, ProviderError):
                    self._record_failure(attempts, model, exc, started)
                else:
                    attempts.add(
                        model,
                        Outcome.PROVIDER_FAULT.value,
                        ProviderTimeout.code,
                        None,
                        started,
                        self._clock(),
                    )
                continue
            except BaseException:
                await events.aclose()  # type: ignore[attr-defined]
                raise
            attempts.add(model, Outcome.SUCCESS.value, "ok", 200, started, self._clock())
            return OpenedStream(model, first, events, attempts)
        raise self._fail(attempts, deadline)
