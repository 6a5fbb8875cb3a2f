"""Circuit breakers per provider or per provider/model: pybreaker, made correct under asyncio.

The only module that imports pybreaker (1.4.x, in-memory storage). A call goes::

    permit = board.admit(provider, model)   # BreakerOpen here: nothing was called
    try:
        value = await attempt()              # its clocks end it as ProviderTimeout
    except BaseException as exc:
        permit.settle(exc)
        raise
    permit.settle(None)                      # (a stream settles when it ends)

(``async with board.guard(provider, model):`` does the same around a block.)

Success is the block ending normally; failure is a `ProviderError` whose
``counts_against_breaker`` is true; anything else is neutral (`ProviderRejected`,
`ProviderRateLimited`, `asyncio.CancelledError`, a bare `TimeoutError`, any other exception).
Exceptions always reach the caller unchanged.

pybreaker under asyncio, and what this adapter does about it (reliability-bar §2):

- ``call()``, the decorator and ``call_async()`` record a coroutine *object* as a success.
  We never hand it an awaitable. An open or half-open breaker is entered through
  ``with cb.calling():`` held across the await (its lock is taken only on entry). A closed
  one admits every call and its before-call hooks do nothing, so admission there skips
  pybreaker (the request path is hot), and the block's outcome goes in at exit through
  ``cb.call(outcome)``, a plain function that returns or raises it, in the same closed state
  (the epoch, below, proves no transition happened in between). ``throw_new_error_on_trip``
  is False: a tripping call raises its own error, and `CircuitBreakerError` means only
  "rejected without calling"; it becomes `BreakerOpen`.
- Half-open lets every concurrent caller through. We hold one probe permit; the others get
  `BreakerOpen` at once. It is released however the probe ends (success, error, cancellation,
  the caller's attempt timeout), so a hung probe cannot wedge the breaker.
- No neutral outcome: an excluded exception is a success, which resets the consecutive
  counter and, in half-open, counts towards closing. In closed state we exclude a neutral
  outcome and restore the counter right after (no await in between). In half-open we report
  it as a failure, and the breaker re-opens *without* doubling.
- Stale results: an epoch is bumped on every transition. A call admitted in an earlier epoch
  is excluded (counter restored) and kept out of the rate window: a success from before an
  open cannot close, and a late failure cannot refresh ``opened_at`` or count twice.
- Missing rules, added: a sliding failure-rate window, and re-open backoff (each half-open ->
  open doubles the open time, capped at ``max_reset_timeout_s``, ±``jitter``; closing resets).
- Demotion (passive outlier detection, below the trip threshold): a closed breaker whose
  window shows at least ``demote_rate`` failures over ``demote_min_calls`` calls is *demoted*
  for ``demote_for_s``: routing tries it after the healthy targets of a chain instead of
  first. It still serves when they fail; when the time is up it is tried first again, and
  its next outcome decides anew.
- Listeners run synchronously inside transitions and their exceptions reach the caller. Ours
  is internal; ``on_change`` is wrapped, its errors logged and counted in ``listener_errors``.

Clocks (F29): pybreaker stamps ``opened_at`` with ``datetime.now(UTC)``, the wall clock, not
injectable: an NTP step stretches or shortens an open window (tests use time-machine).
``retry_after`` reads that clock too, so it agrees with pybreaker. The rate window and
``BreakerChange.at`` use the injected monotonic ``clock``. An open breaker whose time is up
reads ``half_open`` (the next call is the probe); ``is_open`` means "guard would reject now".

Residual risks:

- A neutral probe (client cancel, 400) re-opens for another full, undoubled window: it delays
  recovery by one window rather than closing on a result that proved nothing.
- pybreaker still calls listeners' ``success()`` for neutral and stale outcomes (we register
  none that care), and its fail counter reads 0 between its reset and our restore.
- A caller that lets a bare `TimeoutError` escape instead of `ProviderTimeout` makes its
  timeouts neutral: they never trip. While a probe is in flight, ``retry_after`` is a hint.
- The window holds one entry per provider outcome for ``rate_window_s``. State is per
  process; model-scoped breakers of models gone from the catalog live until their provider goes.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import pybreaker

from router.config import BreakerConfig
from router.errors import BreakerOpen, ProviderError
from router.logs import get_logger

PROBE_BUSY_RETRY_S = 1.0
"""Retry-After hint while a half-open probe is in flight (its attempt timeout bounds it)."""


def _outcome(exc: BaseException | None) -> None:
    if exc is not None:
        raise exc


def _public(state: str) -> str:
    return state.replace("-", "_")  # pybreaker's "half-open" -> "half_open"


@dataclass(frozen=True, slots=True)
class BreakerChange:
    """One state transition of one breaker (``model`` is None for provider-scoped breakers)."""

    key: str
    provider: str
    model: str | None
    old_state: str
    new_state: str
    open_for_s: float | None
    at: float


@dataclass(slots=True)
class _Ticket:
    """One admitted call: when it was admitted, and what settling it must do."""

    epoch: int
    probe: bool
    restore: int | None = None  # pybreaker's fail counter to put back (a success it must not see)
    counted: bool = False  # goes into the rate window
    failed: bool = False


class _Breaker(pybreaker.CircuitBreakerListener):
    """One pybreaker breaker plus what it lacks: probe permit, epoch, backoff, rate window."""

    def __init__(
        self, board: BreakerBoard, key: str, provider: str, model: str | None, cfg: BreakerConfig
    ) -> None:
        self.board, self.key, self.provider, self.model, self.cfg = board, key, provider, model, cfg
        self.storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
        self.cb = pybreaker.CircuitBreaker(
            fail_max=cfg.fail_max,
            reset_timeout=cfg.reset_timeout_s,
            success_threshold=cfg.success_threshold,
            exclude=[self._excluded],
            listeners=[self],
            state_storage=self.storage,
            name=key,
            throw_new_error_on_trip=False,
        )
        self.epoch = 0
        self.reopens = 0
        self.nominal_open_s = cfg.reset_timeout_s
        self.probing = False
        self.window: deque[tuple[float, bool]] = deque()
        self.window_failures = 0
        self.demoted_until = 0.0
        self._failing: BaseException | None = None  # the one exception pybreaker may count
        self._quiet_reopen = False  # the coming half-open -> open does not double

    def _excluded(self, exc: BaseException) -> bool:
        return exc is not self._failing

    def admit(self) -> _Ticket:
        """Called once pybreaker let a call in (any open -> half-open move has happened)."""
        probe = self.cb.current_state == pybreaker.STATE_HALF_OPEN
        self.probing = self.probing or probe
        return _Ticket(self.epoch, probe)

    def judge(self, ticket: _Ticket, exc: BaseException | None) -> None:
        """Decide, synchronously before pybreaker sees the result, how it must count."""
        failed = isinstance(exc, ProviderError) and exc.counts_against_breaker
        neutral = exc is not None and not failed
        stale = ticket.epoch != self.epoch
        if exc is not None and not stale and (failed or ticket.probe):
            self._failing, self._quiet_reopen = exc, neutral
        elif stale or neutral:
            ticket.restore = self.cb.fail_counter
        ticket.counted, ticket.failed = not (stale or neutral or ticket.probe), failed

    def record(self, exc: BaseException | None) -> None:
        """pybreaker's verdict on a call admitted in closed state, with no transition since.

        `cb.call` runs a plain function that returns, or raises the block's exception, so
        pybreaker counts the real outcome (never a coroutine object) in the very closed state
        that admitted the call; `judge` has already said how it must count.
        """
        if exc is None and self.storage.counter == 0:
            return  # a closed breaker's success only zeroes its counter (pinned by a test)
        try:
            self.cb.call(_outcome, exc)
        except BaseException as raised:
            if raised is not exc:
                raise

    def settle(self, ticket: _Ticket) -> None:
        """After pybreaker recorded the result: release the permit, restore, feed the window."""
        self._failing, self._quiet_reopen = None, False
        if ticket.probe:
            self.probing = False
        for _ in range((ticket.restore or 0) - self.cb.fail_counter):
            self.storage.increment_counter()
        if ticket.counted and self.cb.current_state == pybreaker.STATE_CLOSED:
            self._record(failed=ticket.failed)

    def _record(self, *, failed: bool) -> None:
        self.window.append((self.board.clock(), failed))
        self.window_failures += failed
        self._prune()
        calls = len(self.window)
        rate = self.window_failures / calls
        if calls >= self.cfg.rate_min_calls and rate >= self.cfg.failure_rate:
            self.cb.open()
        elif failed and 0 < self.cfg.demote_rate <= rate and calls >= self.cfg.demote_min_calls:
            now = self.board.clock()
            if self.demoted_until <= now:
                get_logger().warning(
                    "breaker.demoted",
                    breaker=self.key,
                    failure_rate=round(rate, 3),
                    calls=calls,
                    for_s=self.cfg.demote_for_s,
                )
            self.demoted_until = now + self.cfg.demote_for_s

    def _prune(self) -> None:
        horizon = self.board.clock() - self.cfg.rate_window_s
        while self.window and self.window[0][0] <= horizon:
            self.window_failures -= self.window.popleft()[1]

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        """pybreaker's hook, inside its transition: epoch, backoff, window, notification."""
        old = _public(old_state.name) if old_state else "closed"
        cap = self.cfg.max_reset_timeout_s
        new = _public(new_state.name)
        self.epoch += 1
        if new in ("open", "closed"):
            self.window.clear()
            self.window_failures = 0
            self.demoted_until = 0.0
        if new == "closed":
            self.reopens, self.nominal_open_s = 0, self.cfg.reset_timeout_s
            cb.reset_timeout = self.cfg.reset_timeout_s
        elif new == "open" and not self._quiet_reopen:
            if old == "half_open":
                self.reopens += 1
                self.nominal_open_s = min(cap, 2 * self.nominal_open_s)
            cb.reset_timeout = self.board.jittered(self.nominal_open_s, cap)
        open_for = cb.reset_timeout if new == "open" else None
        at = self.board.clock()
        change = BreakerChange(self.key, self.provider, self.model, old, new, open_for, at)
        self.board.notify(self, change)

    def open_remaining(self) -> float:
        """Wall-clock seconds left in the open window, as pybreaker will judge it (0 if none)."""
        opened_at = self.storage.opened_at
        if self.cb.current_state != pybreaker.STATE_OPEN or opened_at is None:
            return 0.0
        end = opened_at + timedelta(seconds=self.cb.reset_timeout)
        return max(0.0, (end - datetime.now(UTC)).total_seconds())

    def retry_after(self) -> float | None:
        """Seconds until `guard` admits a call; None when it would admit one now."""
        remaining = self.open_remaining()
        if remaining > 0:
            return remaining
        return PROBE_BUSY_RETRY_S if self.probing else None

    def public_state(self) -> str:
        if self.cb.current_state == pybreaker.STATE_OPEN and self.open_remaining() <= 0:
            return "half_open"
        return _public(self.cb.current_state)

    def rejected(self) -> BreakerOpen:
        why = "its half-open probe is in flight" if self.probing else "it is open"
        return BreakerOpen(
            f"breaker {self.key!r} rejected the call: {why}",
            provider=self.provider,
            retry_after=self.retry_after() or 0.0,
        )

    def reconfigure(self, cfg: BreakerConfig) -> None:
        """Apply changed settings, keeping state."""
        self.cfg = cfg
        self.cb.fail_max, self.cb.success_threshold = cfg.fail_max, cfg.success_threshold
        if self.cb.current_state == pybreaker.STATE_CLOSED:
            self.nominal_open_s = self.cb.reset_timeout = cfg.reset_timeout_s
        else:  # keep the open window, clamped to the new cap
            self.nominal_open_s = min(self.nominal_open_s, cfg.max_reset_timeout_s)
            self.cb.reset_timeout = min(self.cb.reset_timeout, cfg.max_reset_timeout_s)

    def describe(self) -> dict[str, Any]:
        self._prune()
        return {
            "key": self.key,
            "provider": self.provider,
            "model": self.model,
            "state": self.public_state(),
            "fail_counter": self.cb.fail_counter,
            "open_until_s": round(self.open_remaining(), 3),
            "reopens": self.reopens,
            "probe_in_flight": self.probing,
            "window_calls": len(self.window),
            "window_failures": self.window_failures,
            "demoted_for_s": round(max(0.0, self.demoted_until - self.board.clock()), 3),
        }


class Permit:
    """One call admitted by one breaker (`BreakerBoard.admit`); `settle` it once with the outcome.

    Admission goes through pybreaker's ``calling()`` (entered here, left in `settle`) unless the
    breaker is closed; `settle` judges the outcome before pybreaker records it, then settles
    the ticket. A stream holds its permit until it ends, then settles it with its verdict.
    """

    __slots__ = ("_breaker", "_calling", "_ticket")

    def __init__(self, breaker: _Breaker) -> None:
        self._breaker = breaker
        self._calling: contextlib.AbstractContextManager[None] | None = None
        if breaker.probing:
            raise breaker.rejected()
        if breaker.storage.state == pybreaker.STATE_CLOSED:
            # closed pybreaker admits every call and its before-call hooks do nothing: the
            # admission needs no call into it (the outcome goes in at settling: `_Breaker.record`)
            self._ticket: _Ticket | None = _Ticket(breaker.epoch, probe=False)
            return
        calling = breaker.cb.calling()
        try:
            calling.__enter__()
        except pybreaker.CircuitBreakerError:
            raise breaker.rejected() from None
        self._calling = calling
        self._ticket = breaker.admit()

    def settle(self, exc: BaseException | None) -> None:
        """The call ended: with `exc`, or successfully (None). Later calls do nothing."""
        breaker, ticket, calling = self._breaker, self._ticket, self._calling
        if ticket is None:
            return
        self._ticket = self._calling = None
        try:
            breaker.judge(ticket, exc)
            if calling is not None:  # pybreaker records it (it does not raise `exc` here)
                calling.__exit__(
                    type(exc) if exc else None, exc, exc.__traceback__ if exc else None
                )
            elif ticket.epoch == breaker.epoch:
                breaker.record(exc)
            # (admitted closed, stale now: pybreaker must not see it, as `judge` arranged)
        finally:
            breaker.settle(ticket)


class _Guard:
    """``async with board.guard(provider, model):``: a `Permit` around a block."""

    __slots__ = ("_breaker", "_permit")

    def __init__(self, breaker: _Breaker) -> None:
        self._breaker = breaker
        self._permit: Permit | None = None

    async def __aenter__(self) -> None:
        self._permit = Permit(self._breaker)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if self._permit is not None:
            self._permit.settle(exc)
        return False


class BreakerBoard:
    """Every breaker of the process, created lazily per key from the providers' settings."""

    def __init__(
        self,
        settings: Mapping[str, BreakerConfig],
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerChange], None] | None = None,
        jitter: float = 0.1,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = dict(settings)
        self.clock = clock
        self._on_change = on_change
        self._jitter = jitter
        self._rng = rng or random.Random()
        self._breakers: dict[str, _Breaker] = {}
        self._keys: dict[tuple[str, str], str] = {}
        self._by_target: dict[tuple[str, str], _Breaker] = {}  # (provider, model): one lookup
        self.listener_errors = 0

    def key_for(self, provider: str, model: str) -> str:
        """The provider for scope 'provider', else 'provider/model' (unknown providers: model)."""
        key = self._keys.get((provider, model))
        if key is None:
            cfg = self._settings.get(provider)
            scoped = cfg is not None and cfg.scope == "provider"
            key = provider if scoped else f"{provider}/{model}"
            if cfg is not None:  # remembered only for configured providers (a bounded set)
                self._keys[(provider, model)] = key
        return key

    def admit(self, provider: str, model: str) -> Permit:
        """A permit for one call to the target, or `BreakerOpen` (nothing may be called)."""
        return Permit(self._by_target.get((provider, model)) or self._breaker(provider, model))

    def guard(self, provider: str, model: str) -> _Guard:
        """Run the block under the target's breaker, or raise `BreakerOpen` without running it."""
        return _Guard(self._by_target.get((provider, model)) or self._breaker(provider, model))

    def state(self, key: str) -> str:
        """'closed', 'open' or 'half_open' (an elapsed open window reads 'half_open')."""
        breaker = self._breakers.get(key)
        return breaker.public_state() if breaker else "closed"

    def retry_after(self, provider: str, model: str) -> float | None:
        """Seconds until the target admits a call; None if it would admit one now."""
        breaker = self._existing(provider, model)
        return breaker.retry_after() if breaker else None

    def is_demoted(self, provider: str, model: str) -> bool:
        """Should routing try this target after the healthy ones? (See "Demotion" above.)"""
        breaker = self._existing(provider, model)
        return breaker is not None and breaker.demoted_until > self.clock()

    def is_open(self, provider: str, model: str) -> bool:
        """Would `guard` reject this target now? Cheap, and creates nothing."""
        breaker = self._existing(provider, model)
        if breaker is None or (
            breaker.storage.state == pybreaker.STATE_CLOSED and not breaker.probing
        ):
            return False
        return breaker.retry_after() is not None

    def register(self, targets: Iterable[tuple[str, str]]) -> None:
        """Create the breakers of these (provider, model) targets now, closed, so operators see
        every configured target before its first call."""
        for provider, model in targets:
            if provider in self._settings:
                self._breaker(provider, model)

    def snapshot(self) -> list[dict[str, Any]]:
        """Every breaker, for ``GET /admin/breakers``."""
        return [self._breakers[key].describe() for key in sorted(self._breakers)]

    def reconfigure(self, settings: Mapping[str, BreakerConfig]) -> None:
        """Hot reload: unchanged keys keep state, removed providers (or scopes) are dropped."""
        self._settings = dict(settings)
        self._keys.clear()
        self._by_target.clear()
        for key, breaker in list(self._breakers.items()):
            cfg = self._settings.get(breaker.provider)
            if cfg is None or (cfg.scope == "provider") != (breaker.model is None):
                del self._breakers[key]
            elif cfg != breaker.cfg:
                breaker.reconfigure(cfg)

    def jittered(self, nominal: float, cap: float) -> float:
        """``nominal`` ± the jitter fraction, never above ``cap``."""
        return min(cap, nominal * self._rng.uniform(1 - self._jitter, 1 + self._jitter))

    def notify(self, breaker: _Breaker, change: BreakerChange) -> None:
        """Pass a transition to ``on_change``; it can never break a request."""
        if self._on_change is None or self._breakers.get(breaker.key) is not breaker:
            return
        try:
            self._on_change(change)
        except Exception as exc:  # noqa: BLE001  # a listener must never fail a request
            self.listener_errors += 1
            get_logger().warning(
                "breaker.listener_failed", key=change.key, error=type(exc).__name__
            )

    def _existing(self, provider: str, model: str) -> _Breaker | None:
        """The target's breaker if one was created (looking creates nothing)."""
        return self._by_target.get((provider, model)) or self._breakers.get(
            self.key_for(provider, model)
        )

    def _breaker(self, provider: str, model: str) -> _Breaker:
        cfg = self._settings.get(provider)
        if cfg is None:
            raise KeyError(f"no breaker settings for provider {provider!r}")
        key = self.key_for(provider, model)
        breaker = self._breakers.get(key)
        if breaker is None:
            scoped_model = None if cfg.scope == "provider" else model
            breaker = self._breakers[key] = _Breaker(self, key, provider, scoped_model, cfg)
        self._by_target[(provider, model)] = breaker  # configured providers only: bounded
        return breaker
