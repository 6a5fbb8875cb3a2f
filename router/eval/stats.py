"""Statistics for the report (pure): the mean, a bootstrap confidence interval, percentiles."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

RESAMPLES = 2000
SEED = 20260601  # fixed: the same results give the same interval on every run


def mean(values: Sequence[float]) -> float | None:
    """The arithmetic mean, or None for no values."""
    return sum(values) / len(values) if values else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The `q`-th percentile (0-100) by linear interpolation between closest ranks (numpy's
    default), or None for no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not in [0, 100]")
    ordered = sorted(values)
    return _interpolate(ordered, (len(ordered) - 1) * q / 100)


def bootstrap_ci(
    values: Sequence[float],
    *,
    level: float = 0.95,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> tuple[float, float] | None:
    """The percentile-bootstrap interval of the mean at `level`: `resamples` resamples of
    `values` with replacement, drawn from a generator seeded with `seed`. None for no values;
    one value (or all equal) gives a zero-width interval."""
    if not values:
        return None
    if not 0 < level < 1:
        raise ValueError(f"confidence level {level} is not in (0, 1)")
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    tail = (1 - level) / 2 * 100
    index = (len(means) - 1) / 100
    return _interpolate(means, tail * index), _interpolate(means, (100 - tail) * index)


def _interpolate(ordered: Sequence[float], rank: float) -> float:
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
