"""Breaker semantics B1-B10 (reliability-bar §5.3) and pins of the pybreaker quirks we work around.

The upstream is an async function that counts its calls; time is a fake monotonic clock for
the rate window plus time-machine for pybreaker's wall clock (or a real sub-second wait).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pybreaker
import pytest
import time_machine

from router.breakers import PROBE_BUSY_RETRY_S, BreakerBoard, BreakerChange
from router.config import BreakerConfig
from router.errors import (
    BreakerOpen,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Upstream:
    """The provider: counts calls, may wait on a gate, then returns 'ok' or raises."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(
        self, result: BaseException | None = None, gate: asyncio.Event | None = None
    ) -> str:
        self.calls += 1
        if gate is not None:
            await gate.wait()
        if result is not None:
            raise result
        return "ok"


def fault(provider: str = "a") -> ProviderError:
    return ProviderUnavailable("upstream 500", provider=provider, upstream_status=500)


def rejected(provider: str = "a") -> ProviderError:
    return ProviderRejected("bad payload", provider=provider, upstream_status=400)


def settings(*providers: str, **overrides: Any) -> dict[str, BreakerConfig]:
    cfg = BreakerConfig(**{"fail_max": 5, "reset_timeout_s": 3.0, **overrides})
    return dict.fromkeys(providers or ("a",), cfg)


async def attempt(
    board: BreakerBoard,
    upstream: Upstream,
    result: BaseException | None = None,
    *,
    provider: str = "a",
    model: str = "m",
    gate: asyncio.Event | None = None,
    timeout: float | None = None,
) -> str:
    """One attempt the way the router makes it: the attempt clock inside the guard."""
    async with board.guard(provider, model):
        try:
            async with asyncio.timeout(timeout):
                return await upstream(result, gate)
        except TimeoutError:
            raise ProviderTimeout("no first byte", provider=provider, phase="first_byte") from None


async def outcome(board: BreakerBoard, upstream: Upstream, *args: Any, **kwargs: Any) -> str:
    """'ok' or the name of the exception the attempt raised."""
    try:
        return await attempt(board, upstream, *args, **kwargs)
    except Exception as exc:
        return type(exc).__name__


async def trip(board: BreakerBoard, upstream: Upstream, n: int = 5, **kwargs: Any) -> None:
    for _ in range(n):
        assert await outcome(board, upstream, fault(), **kwargs) == "ProviderUnavailable"


async def cancelled_attempt(board: BreakerBoard, upstream: Upstream) -> None:
    """An attempt whose task is cancelled while the upstream is still working."""
    task = asyncio.create_task(attempt(board, upstream, gate=asyncio.Event()))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def row(board: BreakerBoard, key: str) -> dict[str, Any]:
    return next(r for r in board.snapshot() if r["key"] == key)


# --- B1-B10 -------------------------------------------------------------------


async def test_b1_five_consecutive_faults_open_and_the_sixth_call_never_reaches_upstream() -> None:
    board, up = BreakerBoard(settings()), Upstream()
    await trip(board, up)  # the tripping call still raises its own, classified error
    assert board.state("a/m") == "open"
    with pytest.raises(BreakerOpen) as info:
        await attempt(board, up)
    assert up.calls == 5
    assert info.value.provider == "a"
    assert 2.7 <= (info.value.retry_after or 0) <= 3.3
    assert board.is_open("a", "m")


async def test_b2_alternating_half_faults_open_through_the_rate_rule() -> None:
    clock = FakeClock()
    board, up = (
        BreakerBoard(settings(rate_min_calls=20, rate_window_s=30.0), clock=clock),
        Upstream(),
    )
    for i in range(19):
        await outcome(board, up, fault() if i % 2 == 0 else None)
        await outcome(board, up, rejected())  # neutral: not in the window
        clock.advance(1.0)
    assert board.state("a/m") == "closed"
    assert row(board, "a/m")["window_calls"] == 19
    await outcome(board, up, None)  # call 20: 10 faults of 20 = 50%
    assert board.state("a/m") == "open"


async def test_b2_outcomes_older_than_the_window_fall_out() -> None:
    clock = FakeClock()
    board, up = (
        BreakerBoard(settings(rate_min_calls=20, rate_window_s=30.0), clock=clock),
        Upstream(),
    )
    for i in range(19):
        await outcome(board, up, fault() if i % 2 == 0 else None)
    clock.advance(30.0)
    await outcome(board, up, fault())
    assert board.state("a/m") == "closed"
    assert row(board, "a/m")["window_calls"] == 1


async def test_b3_one_probe_in_flight_and_the_other_49_fail_fast() -> None:
    board, up = BreakerBoard(settings(success_threshold=1), jitter=0.0), Upstream()
    with time_machine.travel(T0, tick=False) as clock:
        await trip(board, up)
        clock.shift(2.9)
        with pytest.raises(BreakerOpen) as info:
            await attempt(board, up)
        assert info.value.retry_after == pytest.approx(0.1)
        assert up.calls == 5
        clock.shift(0.2)
        assert board.state("a/m") == "half_open"
        gate = asyncio.Event()

        async def caller() -> tuple[str, float]:
            start = time.perf_counter()
            result = await outcome(board, up, gate=gate)
            return result, time.perf_counter() - start

        tasks = [asyncio.create_task(caller()) for _ in range(50)]
        while up.calls < 6 or sum(t.done() for t in tasks) < 49:
            await asyncio.sleep(0)
        assert board.is_open("a", "m")
        assert board.retry_after("a", "m") == PROBE_BUSY_RETRY_S
        gate.set()
        results = await asyncio.gather(*tasks)
    assert up.calls == 6
    assert [r for r, _ in results].count("ok") == 1
    fast = [elapsed for r, elapsed in results if r == "BreakerOpen"]
    assert len(fast) == 49
    assert max(fast) < 0.005
    assert board.state("a/m") == "closed"


async def test_b4_probe_failures_double_the_open_time_up_to_the_cap_and_closing_resets_it() -> None:
    changes: list[BreakerChange] = []
    board = BreakerBoard(settings(max_reset_timeout_s=20.0), on_change=changes.append)
    up = Upstream()
    with time_machine.travel(T0, tick=False) as clock:
        await trip(board, up)
        for nominal in (6.0, 12.0, 20.0, 20.0):
            clock.shift(board.retry_after("a", "m") or 0)
            assert await outcome(board, up, fault()) == "ProviderUnavailable"
            assert 0.9 * nominal <= (board.retry_after("a", "m") or 0) <= min(20.0, 1.1 * nominal)
        assert row(board, "a/m")["reopens"] == 4
        clock.shift(board.retry_after("a", "m") or 0)
        assert [await outcome(board, up) for _ in range(2)] == ["ok", "ok"]
        assert board.state("a/m") == "closed"
        await trip(board, up)
    opens = [c.open_for_s or 0 for c in changes if c.new_state == "open"]
    assert len(opens) == 6
    assert 2.7 <= opens[0] <= 3.3
    assert 2.7 <= opens[-1] <= 3.3
    assert row(board, "a/m")["reopens"] == 0


async def test_b5_a_success_from_before_the_open_does_not_close_it() -> None:
    board, up = BreakerBoard(settings(success_threshold=1)), Upstream()
    with time_machine.travel(T0, tick=False) as clock:
        gates = [asyncio.Event(), asyncio.Event()]
        old = [asyncio.create_task(attempt(board, up, gate=gate)) for gate in gates]
        await asyncio.sleep(0)
        await trip(board, up)
        before = board.retry_after("a", "m")
        gates[0].set()
        assert await old[0] == "ok"  # while open
        assert board.state("a/m") == "open"
        assert board.retry_after("a", "m") == before
        clock.shift(before or 0)
        probe_gate = asyncio.Event()
        probe = asyncio.create_task(outcome(board, up, fault(), gate=probe_gate))
        await asyncio.sleep(0)
        gates[1].set()
        assert await old[1] == "ok"  # while the probe is in flight
        assert board.state("a/m") == "half_open"
        probe_gate.set()
        assert await probe == "ProviderUnavailable"
        assert board.state("a/m") == "open"
        assert row(board, "a/m")["reopens"] == 1


async def test_b5_a_late_failure_neither_extends_the_open_window_nor_counts_twice() -> None:
    changes: list[BreakerChange] = []
    clock = FakeClock()
    board = BreakerBoard(settings(), clock=clock, on_change=changes.append)
    up = Upstream()
    with time_machine.travel(T0, tick=False) as wall:
        gate = asyncio.Event()
        late = asyncio.create_task(outcome(board, up, fault(), gate=gate))
        await asyncio.sleep(0)
        await trip(board, up)
        before = board.retry_after("a", "m") or 0
        wall.shift(1.0)
        gate.set()
        assert await late == "ProviderUnavailable"
        assert board.retry_after("a", "m") == pytest.approx(before - 1.0)
    assert [c.new_state for c in changes] == ["open"]
    assert row(board, "a/m")["fail_counter"] == 5
    assert row(board, "a/m")["window_calls"] == 0


async def test_b6_a_hundred_neutral_outcomes_record_no_fault() -> None:
    board, up = BreakerBoard(settings()), Upstream()
    limited = ProviderRateLimited("429", provider="a", retry_after=1.0)
    for i in range(100):
        if i % 4 == 3:
            await cancelled_attempt(board, up)
        else:
            await outcome(board, up, (rejected(), limited, ValueError("bug"))[i % 4])
    state = row(board, "a/m")
    assert (state["state"], state["fail_counter"], state["window_calls"]) == ("closed", 0, 0)
    assert up.calls == 100
    await trip(board, up, 4)
    for _ in range(100):
        await outcome(board, up, rejected())
    assert row(board, "a/m")["fail_counter"] == 4  # pybreaker's reset was undone
    await trip(board, up, 1)
    assert board.state("a/m") == "open"


async def test_b6_a_cancelled_probe_leaves_it_open_without_doubling() -> None:
    changes: list[BreakerChange] = []
    board = BreakerBoard(settings(success_threshold=1), jitter=0.0, on_change=changes.append)
    up = Upstream()
    with time_machine.travel(T0, tick=False) as clock:
        await trip(board, up)
        clock.shift(3.0)
        await cancelled_attempt(board, up)
        assert board.state("a/m") == "open"
        assert board.retry_after("a", "m") == pytest.approx(3.0)
        assert row(board, "a/m")["reopens"] == 0
        assert row(board, "a/m")["probe_in_flight"] is False
        clock.shift(3.0)
        assert await outcome(board, up, rejected()) == "ProviderRejected"  # a 400 probe
        assert board.state("a/m") == "open"  # plain pybreaker would have closed it
        assert board.retry_after("a", "m") == pytest.approx(3.0)
        clock.shift(3.0)
        assert await outcome(board, up) == "ok"
    assert board.state("a/m") == "closed"
    assert [c.open_for_s for c in changes if c.new_state == "open"] == [3.0, 3.0, 3.0]


async def test_b7_a_raising_listener_never_breaks_a_request() -> None:
    def explode(change: BreakerChange) -> None:
        raise RuntimeError("listener bug")

    board, up = BreakerBoard(settings(success_threshold=1), on_change=explode), Upstream()
    with time_machine.travel(T0, tick=False) as clock:
        await trip(board, up)  # the 5th call still raises ProviderUnavailable, not RuntimeError
        assert board.state("a/m") == "open"
        assert board.listener_errors == 1
        clock.shift(4.0)
        assert await outcome(board, up) == "ok"  # open -> half_open -> closed, both raise
    assert board.state("a/m") == "closed"
    assert board.listener_errors == 3


async def test_b7_one_change_per_transition() -> None:
    changes: list[BreakerChange] = []
    clock = FakeClock()
    board = BreakerBoard(settings(success_threshold=1), clock=clock, on_change=changes.append)
    up = Upstream()
    with time_machine.travel(T0, tick=False) as wall:
        await trip(board, up)
        wall.shift(4.0)
        await outcome(board, up)
    assert [(c.old_state, c.new_state) for c in changes] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    first = changes[0]
    assert (first.key, first.provider, first.model, first.at) == ("a/m", "a", "m", clock.now)
    assert 2.7 <= (first.open_for_s or 0) <= 3.3
    assert changes[1].open_for_s is None


async def test_b8_one_open_target_leaves_the_others_alone() -> None:
    cfg = settings("a", "b") | settings("c", scope="provider")
    board, up = BreakerBoard(cfg), Upstream()
    await trip(board, up, model="x")
    assert board.is_open("a", "x")
    for provider, model in (("a", "y"), ("b", "x"), ("c", "x")):
        assert await outcome(board, up, provider=provider, model=model) == "ok"
        assert not board.is_open(provider, model)
    await trip(board, up, provider="c", model="x")
    assert board.key_for("c", "y") == "c"
    assert await outcome(board, up, provider="c", model="y") == "BreakerOpen"
    assert {r["key"]: r["state"] for r in board.snapshot()} == {
        "a/x": "open",
        "a/y": "closed",
        "b/x": "closed",
        "c": "open",
    }


async def test_b9_a_hung_probe_releases_its_permit_at_the_attempt_timeout() -> None:
    board = BreakerBoard(settings(reset_timeout_s=0.05, success_threshold=1), jitter=0.0)
    up = Upstream()
    await trip(board, up)
    await asyncio.sleep(0.06)
    hung = asyncio.create_task(outcome(board, up, gate=asyncio.Event(), timeout=0.05))
    await asyncio.sleep(0)
    assert await outcome(board, up) == "BreakerOpen"  # the permit is taken
    assert await hung == "ProviderTimeout"
    assert row(board, "a/m")["probe_in_flight"] is False
    assert board.retry_after("a", "m") == pytest.approx(0.1, abs=0.02)  # a failed probe doubles
    await asyncio.sleep(0.11)
    assert await outcome(board, up) == "ok"
    assert board.state("a/m") == "closed"
    assert up.calls == 7


async def test_b10_hot_reload_keeps_unchanged_drops_removed_and_applies_changes() -> None:
    board, up = BreakerBoard(settings("a", "b", "c", "d")), Upstream()
    await trip(board, up, provider="a")
    await trip(board, up, 4, provider="b")
    await outcome(board, up, provider="c")
    await outcome(board, up, provider="d")
    left = board.retry_after("a", "m")
    board.reconfigure(
        settings("a")
        | settings("b", fail_max=5, success_threshold=1)
        | settings("d", scope="provider")
        | settings("e")
    )
    assert board.state("a/m") == "open"
    assert (board.retry_after("a", "m") or 0) <= (left or 0)
    assert row(board, "b/m")["fail_counter"] == 4
    await trip(board, up, 1, provider="b")
    assert board.state("b/m") == "open"
    keys = {r["key"] for r in board.snapshot()}
    assert keys == {"a/m", "b/m"}  # c removed, d changed scope
    assert await outcome(board, up, provider="e") == "ok"
    assert board.state("e/m") == "closed"
    board.reconfigure(settings("a", fail_max=1))
    assert [r["key"] for r in board.snapshot()] == ["a/m"]
    assert board.state("a/m") == "open"


async def test_b10_changed_fail_max_applies_to_the_kept_counter() -> None:
    board, up = BreakerBoard(settings()), Upstream()
    await trip(board, up, 2)
    board.reconfigure(settings(fail_max=3))
    await trip(board, up, 1)
    assert board.state("a/m") == "open"


# --- reading the board ---------------------------------------------------------


async def test_demotion_at_the_demote_rate_below_the_trip_rate_and_its_expiry() -> None:
    """3 faults in 10 calls (30%): closed (the trip rate is 50%) but demoted for demote_for_s;
    the demotion ends when its time is up, and the next fault (still >= 20%) renews it."""
    clock = FakeClock()
    board, up = BreakerBoard(settings(demote_for_s=10.0), clock=clock), Upstream()
    for i in range(9):
        await outcome(board, up, fault() if i in (0, 4, 8) else None)
    assert not board.is_demoted("a", "m")  # 9 calls: under demote_min_calls (10)
    await outcome(board, up, None)
    assert not board.is_demoted("a", "m")  # only a failure decides a demotion
    await outcome(board, up, fault())  # 4 of 11
    assert board.state("a/m") == "closed"
    assert board.is_demoted("a", "m")
    assert row(board, "a/m")["demoted_for_s"] == 10.0
    clock.advance(10.0)
    assert not board.is_demoted("a", "m")
    await outcome(board, up, fault())  # 5 of 12, not 5 in a row: still closed
    assert board.is_demoted("a", "m")


async def test_a_rare_fault_never_demotes_and_demote_rate_0_disables_it() -> None:
    clock = FakeClock()
    board, up = BreakerBoard(settings(), clock=clock), Upstream()
    for i in range(30):
        await outcome(board, up, fault() if i % 10 == 9 else None)  # 10%
    assert not board.is_demoted("a", "m")
    off, up2 = BreakerBoard(settings(demote_rate=0), clock=clock), Upstream()
    for i in range(19):
        await outcome(off, up2, fault() if i % 3 == 0 else None)  # 37%
    assert not off.is_demoted("a", "m")
    assert off.state("a/m") == "closed"


async def test_an_elapsed_open_breaker_reads_half_open_and_admits() -> None:
    board, up = BreakerBoard(settings(), jitter=0.0), Upstream()
    with time_machine.travel(T0, tick=False) as clock:
        await trip(board, up)
        assert row(board, "a/m")["open_until_s"] == 3.0
        clock.shift(3.0)
        assert board.state("a/m") == "half_open"
        assert not board.is_open("a", "m")
        assert board.retry_after("a", "m") is None


async def test_unknown_targets_read_closed_and_unknown_providers_cannot_be_guarded() -> None:
    board, up = BreakerBoard(settings()), Upstream()
    assert board.state("a/m") == "closed"
    assert not board.is_open("zz", "m")
    assert board.snapshot() == []
    with pytest.raises(KeyError, match="zz"):
        await attempt(board, up, provider="zz")
    assert up.calls == 0


# --- pins: pybreaker 1.4.1 behaviours the adapter works around ------------------


def plain(**kwargs: Any) -> tuple[pybreaker.CircuitBreaker, pybreaker.CircuitMemoryStorage]:
    storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
    kwargs = {"fail_max": 3, "reset_timeout": 3, "throw_new_error_on_trip": False} | kwargs
    return pybreaker.CircuitBreaker(state_storage=storage, **kwargs), storage


async def plain_call(cb: pybreaker.CircuitBreaker, up: Upstream, *args: Any) -> str:
    try:
        with cb.calling():
            return await up(*args)
    except Exception as exc:
        return type(exc).__name__


async def test_pin_pybreaker_half_open_admits_all_50_concurrent_callers() -> None:
    cb, _ = plain()
    up = Upstream()
    with time_machine.travel(T0, tick=False) as clock:
        for _ in range(3):
            await plain_call(cb, up, fault())
        clock.shift(3.1)
        gate = asyncio.Event()
        tasks = [asyncio.create_task(plain_call(cb, up, None, gate)) for _ in range(50)]
        await asyncio.sleep(0)
        assert up.calls == 3 + 50
        gate.set()
        await asyncio.gather(*tasks)


async def test_pin_pybreaker_counts_an_excluded_error_as_success() -> None:
    cb, _ = plain(exclude=[ProviderRejected])
    up = Upstream()
    for exc in (fault(), fault(), rejected(), fault(), fault()):
        await plain_call(cb, up, exc)
    assert (cb.current_state, cb.fail_counter) == ("closed", 2)
    await plain_call(cb, up, fault())
    with time_machine.travel(T0, tick=False) as clock:
        cb.open()
        clock.shift(3.1)
        await plain_call(cb, up, rejected())
    assert cb.current_state == "closed"  # a 400 as the trial call closes it


async def test_pin_pybreaker_never_trips_on_a_50_percent_rate() -> None:
    cb, _ = plain(fail_max=5)
    up = Upstream()
    for i in range(1000):
        await plain_call(cb, up, fault() if i % 2 else None)
    assert cb.current_state == "closed"


async def test_pin_pybreaker_call_records_a_coroutine_as_success() -> None:
    cb, _ = plain(fail_max=1)
    up = Upstream()
    coroutine = cb.call(up, fault())
    with pytest.raises(ProviderUnavailable):
        await coroutine
    assert (cb.current_state, cb.fail_counter) == ("closed", 0)


async def test_pin_pybreaker_late_failure_refreshes_opened_at() -> None:
    cb, storage = plain(fail_max=2)
    up = Upstream()
    with time_machine.travel(T0, tick=False) as clock:
        gate = asyncio.Event()
        late = asyncio.create_task(plain_call(cb, up, fault(), gate))
        await asyncio.sleep(0)
        await plain_call(cb, up, fault())
        await plain_call(cb, up, fault())
        opened = storage.opened_at
        clock.shift(1.0)
        gate.set()
        await late
        assert storage.opened_at is not None
        assert opened is not None
        assert (storage.opened_at - opened).total_seconds() == 1.0


async def test_pin_pybreaker_listener_exception_reaches_the_caller() -> None:
    class Broken(pybreaker.CircuitBreakerListener):
        def success(self, cb: pybreaker.CircuitBreaker) -> None:
            raise RuntimeError("listener bug")

    cb, _ = plain(listeners=[Broken()])
    assert await plain_call(cb, Upstream()) == "RuntimeError"


async def test_pin_pybreaker_keeps_time_on_the_wall_clock() -> None:
    cb, _ = plain(fail_max=1, reset_timeout=30)
    up = Upstream()
    with time_machine.travel(T0, tick=False) as clock:
        await plain_call(cb, up, fault())
        assert await plain_call(cb, up) == "CircuitBreakerError"
        clock.shift(30.0)  # no real time passes
        assert await plain_call(cb, up) == "ok"


async def test_pin_pybreaker_a_closed_success_only_zeroes_the_counter() -> None:
    """What `_Breaker.record` relies on to skip pybreaker for a success while nothing has
    failed: in closed state a success zeroes the fail counter, calls the listeners' success(),
    and changes nothing else."""
    cb, storage = plain()
    heard: list[str] = []

    class Ear(pybreaker.CircuitBreakerListener):
        def success(self, cb: pybreaker.CircuitBreaker) -> None:
            heard.append("success")

        def state_change(self, cb: Any, old: Any, new: Any) -> None:
            heard.append("change")

    cb.add_listener(Ear())

    def snapshot() -> tuple[object, ...]:
        return (storage.state, storage.counter, storage.success_counter, storage.opened_at)

    before = snapshot()
    cb.call(lambda: None)
    assert snapshot() == before
    assert heard == ["success"]
    with pytest.raises(ProviderUnavailable):
        cb.call(_raise, fault())
    assert storage.counter == 1
    cb.call(lambda: None)
    assert snapshot() == before  # zeroed again


def _raise(exc: BaseException) -> None:
    raise exc
