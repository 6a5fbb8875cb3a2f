"""Retry arithmetic and budgets (R1, R3, R4, R5 of the reliability bar)."""

from __future__ import annotations

import asyncio
import random
import time

import aiohttp

from router.retry import RetryBudget, RetryPolicy, full_jitter
from tests.fakes.script import Answer, Delay, Status
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
