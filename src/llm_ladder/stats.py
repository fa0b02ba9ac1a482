"""Bootstrap confidence intervals and paired tests between two runs (fixed seeds, so reports
are stable).

Intervals use the percentile method. Two runs on the same test examples are compared pair by
pair: the exact McNemar test when both runs' scores are all 0/1, otherwise a paired bootstrap
of the mean difference. Skipped: BCa intervals, multiple-comparison corrections (the decision
makes few, ordered comparisons; see docs/decision.md) and corpus-level paired statistics.
"""

from __future__ import annotations

import math
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


# ---- paired tests between two runs on the same test examples ---------------------------

@dataclass
class Paired:
    """B minus A on the same examples: the mean difference with a 95% paired-bootstrap
    interval and a two-sided p-value from the named test."""

    test: str            # "mcnemar" (exact, binary scores) or "paired-bootstrap"
    n: int               # examples scored in both runs
    mean_a: float | None
    mean_b: float | None
    diff: float | None   # mean(b) - mean(a)
    low: float | None
    high: float | None
    p_value: float
    a_only: int = 0      # binary: A right, B wrong (B broke it)
    b_only: int = 0      # binary: A wrong, B right (B fixed it)

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05

    def as_dict(self) -> dict:
        return {"test": self.test, "n": self.n, "mean_a": self.mean_a, "mean_b": self.mean_b,
                "diff": self.diff, "low": self.low, "high": self.high,
                "p_value": self.p_value, "significant": self.significant,
                "a_only": self.a_only, "b_only": self.b_only}


def binom_two_sided_half(k: int, n: int) -> float:
    """Exact two-sided binomial p-value for k successes in n trials at p = 1/2."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def mcnemar_exact(a: Sequence[float], b: Sequence[float]) -> tuple[float, int, int]:
    """Exact McNemar test on paired 0/1 scores: (p-value, A-only right, B-only right).
    Only discordant pairs count; under the null each goes either way with probability 1/2."""
    a_only = sum(1 for x, y in zip(a, b, strict=True) if x == 1 and y == 0)
    b_only = sum(1 for x, y in zip(a, b, strict=True) if x == 0 and y == 1)
    return binom_two_sided_half(b_only, a_only + b_only), a_only, b_only


def paired_bootstrap(a: Sequence[float], b: Sequence[float], resamples: int = 10000,
                     level: float = 0.95, seed: int = 0) -> tuple[float, float, float, float]:
    """(diff, low, high, p) for mean(b) - mean(a), resampling examples (pairs kept together).
    The p-value is two-sided against a null of no difference: the share of resampled
    differences, shifted to centre on 0, at least as far from 0 as the observed one."""
    x = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    d = float(x.mean())
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))
    if np.allclose(x, 0):
        return d, low, high, 1.0
    extreme = int(np.sum(np.abs(means - d) >= abs(d) - 1e-12))
    return d, low, high, (extreme + 1) / (resamples + 1)


def is_binary(values: Sequence[float]) -> bool:
    return all(v in (0.0, 1.0) for v in values)


def paired_test(a: Sequence[float], b: Sequence[float], seed: int = 0) -> Paired:
    """McNemar when both runs' scores are all 0/1, otherwise the paired bootstrap. The
    interval on the difference always comes from the paired bootstrap."""
    if len(a) != len(b):
        raise ValueError(f"paired scores differ in length: {len(a)} vs {len(b)}")
    if not a:
        return Paired("none", 0, None, None, None, None, None, 1.0)
    diff, low, high, p = paired_bootstrap(a, b, seed=seed)
    mean_a, mean_b = float(np.mean(a)), float(np.mean(b))
    if is_binary(a) and is_binary(b):
        p, a_only, b_only = mcnemar_exact(a, b)
        return Paired("mcnemar", len(a), mean_a, mean_b, diff, low, high, p, a_only, b_only)
    return Paired("paired-bootstrap", len(a), mean_a, mean_b, diff, low, high, p)
