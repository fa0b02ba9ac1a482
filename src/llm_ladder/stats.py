"""Bootstrap confidence intervals (percentile method, fixed seed, so reports are stable).

Skipped: BCa intervals and paired tests between rungs (they come with the decision rule).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Interval:
    value: float | None
    low: float | None
    high: float | None
    n: int

    def as_dict(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}


def bootstrap_mean(values: Sequence[float], resamples: int = 2000, level: float = 0.95,
                   seed: int = 0) -> Interval:
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Interval(None, None, None, 0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    means = x[idx].mean(axis=1)
    a = (1 - level) / 2
    return Interval(float(x.mean()), float(np.quantile(means, a)),
                    float(np.quantile(means, 1 - a)), int(x.size))


def bootstrap_stat(n: int, stat: Callable[[np.ndarray], float | None], resamples: int = 1000,
                   level: float = 0.95, seed: int = 0) -> Interval:
    """Interval for a corpus statistic computed from resampled example indices."""
    if n == 0:
        return Interval(None, None, None, 0)
    rng = np.random.default_rng(seed)
    full = stat(np.arange(n))
    draws = [stat(rng.integers(0, n, size=n)) for _ in range(resamples)]
    vals = np.asarray([d for d in draws if d is not None], dtype=float)
    a = (1 - level) / 2
    return Interval(full, float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a)), n)


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None
