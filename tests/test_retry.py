"""Retry arithmetic and budgets (R1-R5 of the reliability bar, section 5.3).

The first tests check the arithmetic in-process; the later ones run R1-R5 end to end through
the sidecar against the fake OpenAI server (the bed of `tests/test_fault_matrix.py`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections import Counter
from typing import Any

import aiohttp
import pytest

from router.retry import RetryBudget, RetryPolicy, full_jitter
from tests.fakes.script import Answer, CutStream, Delay, Reset, Status
from tests.helpers import sidecar


def test_r3_backoff_samples_stay_in_bounds_and_look_uniform() -> None:
    """10k full-jitter samples lie in [0, min(cap, base*2^n)] and pass a KS test against uniform."""
    rng = random.Random(1)
    for attempt in range(4):
        ceiling = min(2.0, 0.2 * 2**attempt)
        samples = sorted(full_jitter(attempt, 0.2, 2.0, rng) for _ in range(10_000))
        assert samples[0] >= 0
        assert samples[-1] <= ceiling
        n = len(samples)
        d = max(max((i + 1) / n - x / ceiling, x / ceiling - i / n) for i, x in enumerate(samples))
        assert d < 1.63 / n**0.5  # the KS critical value at p = 0.01


def test_r1_retry_budget_caps_retries_at_ratio_plus_floor() -> None:
    """With every upstream failing, retries never exceed 20% of requests plus the floor."""
    now = [0.0]
    budget = RetryBudget(
        RetryPolicy(budget_ratio=0.2, budget_floor_per_s=1.0, budget_window_s=10),
        clock=lambda: now[0],
    )
    granted = 0
    for i in range(1000):
        now[0] = i / 100  # 1000 requests over 10 s
        budget.record_request()
        granted += sum(budget.try_retry() for _ in range(2))
    assert granted <= 0.2 * 1000 + 1.0 * 10 + 1
    assert budget.exhausted > 0


async def test_r4_deadline_is_kept_and_no_attempt_starts_too_late() -> None:
    """A 1.2 s deadline with slow targets ends in 504 well inside deadline + slack."""
    async with sidecar() as s, aiohttp.ClientSession() as http:
        s.wall.script("up-model-a", Delay(5, Answer("late")))
        s.wall.script("up-model-b", Delay(5, Answer("late")))
        started = time.monotonic()
        async with http.post(
            f"{s.base_url}/chat/completions",
            json={"model": "both", "messages": [{"role": "user", "content": "x"}]},
            headers={"X-Router-Deadline-Ms": "1200"},
        ) as response:
            body = await response.json()
        elapsed = time.monotonic() - started
        assert response.status in (502, 504), body
        assert elapsed < 1.2 + 0.5
        # first-byte clock (1 s) cut A; B got only what was left, never a full attempt past the deadline
        assert all(call.at - s.wall.calls[0].at < 1.2 for call in s.wall.calls)


async def test_r5_the_wall_sees_exactly_the_attempts_the_sidecar_reports() -> None:
    """No hidden client retries: upstream calls equal the attempts in the response."""
    async with sidecar() as s, aiohttp.ClientSession() as http:
        s.wall.script("up-model-a", Status(503))
        s.wall.script("up-model-b", [Status(500), Answer("b")])
        for _ in range(5):
            before = len(s.wall.calls)
            async with http.post(
                f"{s.base_url}/chat/completions",
                json={"model": "both", "messages": [{"role": "user", "content": "x"}]},
            ) as response:
                await response.read()
                reported = int(response.headers.get("X-Router-Attempts", "0"))
            assert len(s.wall.calls) - before == reported
            await asyncio.sleep(0)


# --- R1-R5 end to end, against the fake (the bar's section 5.3 at CI scale) -------------------

R1_REQUESTS = 200
R1_FLOOR_PER_S = 1.0
R1_WINDOW_S = 10.0
NO_TRIP = "{fail_max: 1000, rate_min_calls: 100000}"  # keep breakers out: the budget must bind


def _statistic(samples: list[float], ceiling: float) -> float:
    """The two-sided Kolmogorov-Smirnov statistic of `samples` against uniform [0, ceiling]."""
    ordered = sorted(samples)
    n = len(ordered)
    return max(max((i + 1) / n - x / ceiling, x / ceiling - i / n) for i, x in enumerate(ordered))


def _ks_critical(n: int) -> float:
    return 1.63 / n**0.5  # p = 0.01 (asymptotic)


def test_r3_capped_retries_and_throttle_backoff_are_uniform_below_the_cap() -> None:
    """Past the point where base * 2^n exceeds the cap, samples are uniform on [0, cap]; the
    throttle defaults (1 s base, 10 s cap) behave alike; and the KS check has the power to
    reject a distribution that is not full jitter (equal jitter: [c/2, c])."""
    rng = random.Random(3)
    policy = RetryPolicy()
    for attempt, base, cap in [
        (5, policy.transient_base_s, policy.transient_cap_s),  # 0.2 * 32 > 2: capped
        (0, policy.throttle_base_s, policy.throttle_cap_s),
        (3, policy.throttle_base_s, policy.throttle_cap_s),
        (9, policy.throttle_base_s, policy.throttle_cap_s),
    ]:
        ceiling = min(cap, base * 2**attempt)
        samples = [full_jitter(attempt, base, cap, rng) for _ in range(10_000)]
        assert min(samples) >= 0
        assert max(samples) <= ceiling
        assert _statistic(samples, ceiling) < _ks_critical(len(samples))
    equal_jitter = [1.0 + rng.uniform(0, 1.0) for _ in range(10_000)]  # not full jitter
    assert _statistic(equal_jitter, 2.0) > _ks_critical(10_000)


async def test_r1_budget_binds_end_to_end_with_every_upstream_failing() -> None:
    """200 requests on a 3-target route where every upstream answers 503, with a 1/s floor:
    upstream attempts ≤ requests + 20% of requests + floor·window, ≤ 3 per request, every
    refusal visible in the error body and the metric."""
    from tests.test_fault_matrix import ABC, bed, metric_value

    retry = (
        "{transient_base_s: 0.001, transient_cap_s: 0.002, budget_ratio: 0.2, "
        f"budget_floor_per_s: {R1_FLOOR_PER_S}, budget_window_s: {R1_WINDOW_S}}}"
    )
    # generous clocks: this is about the budget, and a connect clock that runs out on a starved
    # CI machine is an attempt the router reports but the fake never saw
    timeouts = "{connect_s: 5, first_byte_s: 5, idle_s: 5, total_s: 10}"
    targets = tuple(dataclasses.replace(t, timeouts=timeouts) for t in ABC)
    async with bed(targets, retry=retry, breaker=NO_TRIP) as s:
        for m in ("a", "b", "c"):
            s.wall.script(f"up-{m}", Status(503))
        gate = asyncio.Semaphore(20)

        async def one() -> Any:
            async with gate:
                return await s.post("abc")

        started = time.monotonic()
        results = await asyncio.gather(*(one() for _ in range(R1_REQUESTS)))
        assert time.monotonic() - started < R1_WINDOW_S  # one budget window
        metrics = await s.metrics()
    bound = R1_REQUESTS + 0.2 * R1_REQUESTS + R1_FLOOR_PER_S * R1_WINDOW_S
    assert len(s.wall.calls) <= bound
    reported = 0
    refused = 0
    for r in results:
        assert (r.status, r.body["error"]["code"]) == (502, "all_providers_failed")
        records = r.body["error"]["attempts"]
        calls = [a for a in records if a["outcome"] != "skipped"]
        assert 1 <= len(calls) <= 3
        reported += len(calls)
        refused += any(a["code"] == "retry_budget_exhausted" for a in records)
    codes = Counter(a["code"] for r in results for a in r.body["error"]["attempts"])
    assert reported == len(s.wall.calls), codes  # R5 on the way: the wall saw what was reported
    assert refused > 0  # the budget did bind
    assert metric_value(metrics, "router_retry_budget_exhausted_total") == refused
    print(f"\nR1: {len(s.wall.calls)} upstream attempts for {R1_REQUESTS} requests (≤ {bound:.0f})")


def test_r2_any_failure_schedule_keeps_3_attempts_and_the_deadline() -> None:
    """R2: whatever each target does, one request makes ≤ 3 upstream calls, ends by its
    `X-Router-Deadline-Ms` (+ slack) and ends well-formed; a success reports exactly the
    attempts the fake saw."""
    from hypothesis import HealthCheck, example, given, settings
    from hypothesis import strategies as st

    from tests.fakes.script import CutStream, Hang, Malformed, Reset, StallStream
    from tests.test_fault_matrix import bed

    deadline_ms = 1500
    slack_s = 0.3  # the bar says 100 ms; CI machines are shared
    faults = [
        Answer("ok"),
        Status(500),
        Status(503),
        Status(429),
        Status(429, retry_after="1"),
        Status(429, retry_after="30"),
        Status(400),
        Status(401),
        Hang(3),
        Delay(0.4, Answer("slow ok")),
        Malformed(),
        Reset(),
        CutStream(after=0),
        CutStream(after=1),
        StallStream(after=1, seconds=3),
    ]

    @settings(
        max_examples=20,  # each example drives a real sidecar: about 0.6 s
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        st.fixed_dictionaries(
            {m: st.lists(st.sampled_from(faults), min_size=1, max_size=3) for m in "abc"}
        ),
        st.booleans(),
    )
    # the deadline must bind at least once, whatever the generator picks
    @example({"a": [Hang(3)], "b": [Hang(3)], "c": [Hang(3)]}, False)
    @example({"a": [Status(503)], "b": [Delay(0.4, Answer("slow ok"))], "c": [Hang(3)]}, True)
    @example({"a": [StallStream(after=1, seconds=3)], "b": [Hang(3)], "c": [Hang(3)]}, True)
    def check(schedule: dict[str, list[Any]], stream: bool) -> None:
        async def run() -> None:
            async with bed() as s:
                for model, behaviours in schedule.items():
                    s.wall.script(f"up-{model}", behaviours)
                r = await s.post(
                    "abc", stream=stream, headers={"X-Router-Deadline-Ms": str(deadline_ms)}
                )
                await s.settled(1.0)
            assert len(s.wall.calls) <= 3
            assert r.elapsed <= deadline_ms / 1000 + slack_s
            assert r.status in (200, 400, 429, 502, 503, 504)
            if r.status == 200:
                assert r.attempts == len(s.wall.calls)
                assert r.done or r.error is not None or r.body is not None
            else:
                assert r.body["error"]["code"]

        asyncio.run(run())

    check()


@pytest.mark.parametrize(
    ("first_byte_s", "stream", "calls"),
    [(0.8, False, 3), (0.95, True, 2)],
    ids=["third_attempt_gets_the_rest", "no_attempt_with_under_100ms_left"],
)
async def test_r4_two_second_deadline_with_slow_targets(
    first_byte_s: float, stream: bool, calls: int
) -> None:
    """Every target answers after 5 s; the first-byte clock cuts each attempt; the deadline
    (2 s) cuts the last one. 504 by 2.1 s (+ CI slack); no attempt starts with < 100 ms left."""
    from tests.test_fault_matrix import ABC, bed

    timeouts = f"{{connect_s: 0.5, first_byte_s: {first_byte_s}, idle_s: 0.5, total_s: 10}}"
    targets = tuple(dataclasses.replace(t, timeouts=timeouts) for t in ABC)
    async with bed(targets) as s:
        for m in ("a", "b", "c"):
            s.wall.script(f"up-{m}", Delay(5, Answer("late")))
        started = time.monotonic()
        r = await s.post("abc", stream=stream, headers={"X-Router-Deadline-Ms": "2000"})
        await s.settled(1.0)
    assert r.status == 504
    assert r.body["error"]["code"] == "deadline_exceeded"
    assert r.elapsed <= 2.1 + 0.15
    assert len(s.wall.calls) == calls
    for call in s.wall.calls:
        # the fake stamps a call a little after the sidecar started it: 30 ms of tolerance
        assert call.at - started <= 2.0 - 0.1 + 0.03


async def test_r5_the_wall_sees_exactly_the_reported_attempts_for_every_outcome() -> None:
    """Successes (first try, after failover, streamed) and failures (502 with its attempt list):
    the fake's count always equals what the sidecar reported; no hidden client retries."""
    from tests.test_fault_matrix import bed

    async with bed() as s:
        plans: list[tuple[dict[str, Any], str, bool]] = [
            ({}, "abc", False),
            ({"up-a": Status(503)}, "abc", False),
            ({"up-a": Status(500), "up-b": Reset()}, "abc", True),
            ({"up-a": Status(503), "up-b": Status(502), "up-c": Status(500)}, "abc", False),
            ({"up-c": [Status(500), Answer("again")]}, "c", False),
            ({"up-a": CutStream(after=0)}, "ab", True),
        ]
        for script, model, stream in plans:
            for m in ("a", "b", "c"):
                s.wall.script(f"up-{m}", script.get(f"up-{m}", Answer(f"from {m}")))
            before = len(s.wall.calls)
            r = await s.post(model, stream=stream)
            seen = len(s.wall.calls) - before
            if r.status == 200:
                assert r.attempts == seen
                assert len(r.attempted) == seen
            else:
                attempts = r.body["error"]["attempts"]
                assert len([a for a in attempts if a["outcome"] != "skipped"]) == seen
            assert 1 <= seen <= 3
        for call in s.wall.calls:  # plain aiohttp upstream: no SDK retry machinery in play
            assert not any(h.lower().startswith("x-stainless") for h in call.headers)


async def test_529_on_the_last_target_backs_off_like_a_throttle() -> None:
    """529 (overloaded) is a provider fault, but its one retry on the last target waits a
    throttle backoff (first retry: full jitter below the throttle base, 0.2 s here), not a
    transient one (below 0.05 s): over fifteen requests at least one gap exceeds 0.08 s (all
    fifteen below it under throttle: p = 0.4^15)."""
    from tests.test_fault_matrix import bed

    async with bed(breaker="{fail_max: 50, rate_min_calls: 1000}") as s:
        gaps = []
        for _ in range(15):
            before = len(s.wall.calls)
            s.wall.script("up-c", [Status(529, "overloaded"), Answer("after the 529")])
            r = await s.post("c")
            assert (r.status, r.text) == (200, "after the 529")
            calls = s.wall.calls[before:]
            assert len(calls) == 2
            gaps.append(calls[1].at - calls[0].at)
        assert max(gaps) > 0.08
        assert max(gaps) < 0.2 + 0.3
