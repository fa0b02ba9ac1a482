"""Prediction-powered inference (PPI) for a mean: a judge scores many items, humans a few.

Angelopoulos, Bates, Fannjiang, Jordan, Zrnic, "Prediction-powered inference", Science 382
(2023). With judge scores f on N unlabelled items and (human y, judge f) on n labelled items
drawn from the same population, the classic estimator of the mean human score is

    θ̂ = mean(f_unlabelled) + mean(y − f)_labelled          (the "rectifier" removes bias)

with variance var(f_U)/N + var(y − f)_L/n. The interval is θ̂ ± t·se, with Student's t on
the Welch–Satterthwaite degrees of freedom rather than the normal quantile: at n ≈ 30
labelled items the rectifier's variance is itself estimated from few points, and t keeps
the interval honest there (it tends to the paper's CLT interval as n grows). A percentile
bootstrap is not used: at small n it is too narrow (docs/judge.md, ../STATS rules).

Also here: the plain judge interval (the same t interval on the judge scores alone, which
ignores the judge's bias) for reporting beside it. Skipped: the power-tuned PPI++ weight
(a judge with no signal makes classic PPI wider than humans alone; we report that instead
of hiding it), and stratified or cross-fitted variants.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import t as student_t

from llm_ladder.errors import LadderError


@dataclass
class PpiInterval:
    """A mean with its interval; `p_above(bar)` is the one-sided p of "mean ≤ bar"."""

    value: float
    low: float
    high: float
    se: float
    df: float
    n_labelled: int
    n_unlabelled: int
    rectifier: float  # mean(human − judge) on the labelled items: the judge's bias, negated
    method: str

    def p_above(self, bar: float) -> float:
        """One-sided p-value of "true mean ≤ bar" from the same t distribution."""
        if self.se == 0:
            return 0.0 if self.value > bar else 1.0
        return float(student_t.sf((self.value - bar) / self.se, self.df))

    def as_dict(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high, "se": self.se,
                "df": self.df, "n": self.n_unlabelled, "n_labelled": self.n_labelled,
                "rectifier": self.rectifier, "method": self.method}


def _welch_df(v1: float, n1: int, v2: float, n2: int) -> float:
    """Welch–Satterthwaite degrees of freedom of var1/n1 + var2/n2."""
    a, b = v1 / n1, v2 / n2
    den = (a * a / (n1 - 1) if n1 > 1 else 0.0) + (b * b / (n2 - 1) if n2 > 1 else 0.0)
    if den == 0:
        return float(max(n1 + n2 - 2, 1))
    return float((a + b) ** 2 / den)


def _clip(x: float, lo: float | None, hi: float | None) -> float:
    if lo is not None:
        x = max(lo, x)
    if hi is not None:
        x = min(hi, x)
    return x


def ppi_mean(judge_unlabelled: Sequence[float], judge_labelled: Sequence[float],
             human_labelled: Sequence[float], level: float = 0.95,
             bounds: tuple[float | None, float | None] = (0.0, 1.0)) -> PpiInterval:
    """The classic PPI estimate of the mean human score and its two-sided interval (clipped
    to `bounds`). Needs at least 2 labelled and 2 unlabelled items."""
    fu = np.asarray(judge_unlabelled, dtype=float)
    fl = np.asarray(judge_labelled, dtype=float)
    yl = np.asarray(human_labelled, dtype=float)
    if fl.shape != yl.shape:
        raise LadderError(f"PPI: {fl.size} judge scores for {yl.size} human scores on the "
                          "labelled items; they must pair up")
    if fu.size < 2 or fl.size < 2:
        raise LadderError(f"PPI needs at least 2 labelled and 2 unlabelled items, got "
                          f"{fl.size} and {fu.size}")
    if not (np.all(np.isfinite(fu)) and np.all(np.isfinite(fl)) and np.all(np.isfinite(yl))):
        raise LadderError("PPI: scores must be finite numbers (unscored items are left out "
                          "before calling)")
    rect = yl - fl
    theta = float(fu.mean() + rect.mean())
    vu, vr = float(fu.var(ddof=1)), float(rect.var(ddof=1))
    se = math.sqrt(vu / fu.size + vr / rect.size)
    df = _welch_df(vu, fu.size, vr, rect.size)
    half = float(student_t.ppf(0.5 + level / 2, df)) * se
    lo, hi = bounds
    return PpiInterval(theta, _clip(theta - half, lo, hi), _clip(theta + half, lo, hi), se, df,
                       int(fl.size), int(fu.size), float(rect.mean()),
                       f"prediction-powered (classic PPI, t on {df:.0f} Welch df)")


def mean_interval(values: Sequence[float], level: float = 0.95,
                  bounds: tuple[float | None, float | None] = (0.0, 1.0)) -> PpiInterval:
    """The plain t interval of a mean (the judge alone, or humans alone), in the same shape."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        raise LadderError(f"an interval needs at least 2 scores, got {x.size}")
    se = float(x.std(ddof=1)) / math.sqrt(x.size)
    df = float(x.size - 1)
    half = float(student_t.ppf(0.5 + level / 2, df)) * se
    m = float(x.mean())
    lo, hi = bounds
    return PpiInterval(m, _clip(m - half, lo, hi), _clip(m + half, lo, hi), se, df, 0,
                       int(x.size), 0.0, f"t interval on {x.size} scores")
