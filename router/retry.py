"""Retry arithmetic: full-jitter backoff, the process-wide retry budget, and Retry-After cooldowns."""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from router.config import RetryConfig


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard one request tries (defaults from the reliability bar, section 1.7)."""

    max_attempts: int = 3
    transient_base_s: float = 0.2
    transient_cap_s: float = 2.0
    throttle_base_s: float = 1.0
    throttle_cap_s: float = 10.0
    max_retry_after_s: float = 30.0
    quota_cooldown_s: float = 300.0
    max_cooldown_s: float = 300.0
    budget_ratio: float = 0.2
    budget_floor_per_s: float = 10.0
    budget_window_s: float = 10.0


def retry_policy(config: RetryConfig) -> RetryPolicy:
    """The policy a config's `retry` section describes."""
    return RetryPolicy(**config.model_dump())


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """A delay drawn uniformly from [0, min(cap, base * 2**attempt)] (AWS "full jitter")."""
    ceiling = min(cap, base * (2 ** max(0, attempt)))
    return (rng or random).uniform(0.0, ceiling)


class RetryBudget:
    """Retries (every attempt after a request's first) may add at most `ratio` of the requests
    seen in the window, plus `floor_per_s` free retries per second (Linkerd's budget).

    Counts are kept in one-second buckets, so admission is O(window) at worst and memory is
    bounded whatever the traffic.
    """

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self._ratio = policy.budget_ratio
        self._floor = policy.budget_floor_per_s
        self._window = max(1, int(policy.budget_window_s))
        self._clock = clock
        self._buckets: deque[list[int]] = deque()  # [second, requests, retries]
        self.exhausted = 0

    def _bucket(self) -> list[int]:
        now = int(self._clock())
        if self._buckets and self._buckets[-1][0] == now:
            return self._buckets[-1]  # this second's bucket: pruned when it was added
        while self._buckets and self._buckets[0][0] <= now - self._window:
            self._buckets.popleft()
        if not self._buckets or self._buckets[-1][0] != now:
            self._buckets.append([now, 0, 0])
        return self._buckets[-1]

    def record_request(self) -> None:
        self._bucket()[1] += 1

    def try_retry(self) -> bool:
        """Spend one retry if the budget allows; count the refusal otherwise."""
        bucket = self._bucket()
        requests = sum(b[1] for b in self._buckets)
        retries = sum(b[2] for b in self._buckets)
        if retries + 1 > self._ratio * requests + self._floor * self._window:
            self.exhausted += 1
            return False
        bucket[2] += 1
        return True


class Cooldowns:
    """Targets told to wait (Retry-After, exhausted quota); a new cooldown never shortens one."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.until: dict[str, float] = {}  # empty: nothing cools (routing checks that first)
        self._clock = clock

    def cool(self, key: str, seconds: float) -> None:
        until = self._clock() + seconds
        if until > self.until.get(key, 0.0):
            self.until[key] = until

    def remaining(self, key: str) -> float:
        until = self.until.get(key)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self.until[key]
            return 0.0
        return left
