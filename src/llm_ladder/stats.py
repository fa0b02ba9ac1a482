"""Intervals, tests against the bar, paired tests between runs, and power (fixed seeds, so
reports are stable). See docs/decision.md for the procedure these feed.

- 0/1 scores: the exact (Clopper–Pearson) interval and the exact one-sided binomial test of
  "quality ≤ bar" (`scipy.stats.binom`); they agree by construction.
- Continuous scores and corpus metrics (macro-F1 over a fixed label set): the BCa bootstrap
  (bias-corrected and accelerated, Efron 1987), and the one-sided p-value obtained by
  inverting it, so the lower bound clears the bar exactly when p ≤ α.
- Paired tests (B minus A on the same examples): exact McNemar with a Newcombe hybrid score
  interval for 0/1 scores; a sign-flip permutation test (exact enumeration up to 16 non-zero
  differences, else 20,000 seeded draws) with a BCa interval for continuous scores; a paired
  permutation test of the macro-F1 difference with a paired BCa interval for macro-F1.
- Power of the exact binomial test against "true quality = bar + margin".

Skipped: Wilcoxon signed-rank, studentized bootstrap, prediction-powered inference. The
percentile helpers `bootstrap_mean` / `bootstrap_stat` stay for descriptive numbers only
(sub-scores); no decision uses them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.stats import binom, norm

RESAMPLES = 4000      # BCa resamples: enough for one-sided tails of 0.05 / 12
PERMUTATIONS = 20000  # Monte Carlo sign-flip / swap permutations
EXACT_UP_TO = 16      # non-zero paired differences enumerated exactly (2**16 sign patterns)
_CHUNK = 2_000_000    # resampled cells per block (memory bound)


@dataclass
class Interval:
    value: float | None
    low: float | None
    high: float | None
    n: int
    method: str = ""

    def as_dict(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}


# ---- 0/1 scores: exact binomial ---------------------------------------------------------

def is_binary(values: Sequence[float]) -> bool:
    return all(v in (0.0, 1.0) for v in values)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> Interval:
    """Exact two-sided interval for k successes in n trials (each tail ≤ (1 - level) / 2)."""
    if n == 0:
        return Interval(None, None, None, 0, "exact binomial (Clopper–Pearson)")
    a = (1 - level) / 2
    low = 0.0 if k == 0 else float(_beta_ppf(a, k, n - k + 1))
    high = 1.0 if k == n else float(_beta_ppf(1 - a, k + 1, n - k))
    return Interval(k / n, low, high, n, "exact binomial (Clopper–Pearson)")


def _beta_ppf(q: float, a: float, b: float) -> float:
    from scipy.stats import beta

    return float(beta.ppf(q, a, b))


def p_above_binary(k: int, n: int, bar: float) -> float:
    """One-sided exact p-value of "true quality ≤ bar" given k of n right: P(X ≥ k | bar)."""
    if n == 0:
        return 1.0
    return float(binom.sf(k - 1, n, bar))


# ---- BCa bootstrap ----------------------------------------------------------------------

RowStat = Callable[[np.ndarray], np.ndarray]  # (rows, n) example indices -> (rows,) values


@dataclass
class Bca:
    """A BCa bootstrap of one statistic: the estimate, the resampled values, the bias
    correction z0 and the acceleration a (from the jackknife)."""

    theta: float
    boot: np.ndarray
    z0: float
    a: float
    n: int

    @property
    def degenerate(self) -> bool:
        return bool(np.all(self.boot == self.boot[0]))

    def _adjust(self, z: float) -> float:
        w = self.z0 + z
        return float(norm.cdf(self.z0 + w / (1 - self.a * w)))

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        if self.degenerate:
            return self.theta, self.theta
        q = (1 - level) / 2
        lo = self._adjust(float(norm.ppf(q)))
        hi = self._adjust(float(norm.ppf(1 - q)))
        return float(np.quantile(self.boot, lo)), float(np.quantile(self.boot, hi))

    def p_greater(self, bar: float) -> float:
        """One-sided p-value of "true value ≤ bar": the α at which the BCa lower bound
        (level 1 − α) equals the bar, so p ≤ α exactly when that bound clears the bar."""
        if self.degenerate:
            return 0.0 if self.theta > bar else 1.0
        b = self.boot.size
        g = (np.sum(self.boot < bar) + 0.5 * np.sum(self.boot == bar)) / b
        g = min(max(g, 0.5 / b), 1 - 0.5 / b)
        u = float(norm.ppf(g)) - self.z0
        denom = 1 + self.a * u
        if denom <= 0:
            return 1.0 if u > 0 else 0.0
        return float(min(1.0, max(0.0, norm.cdf(u / denom - self.z0))))


def resampled(stat: RowStat, n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """`stat` on `resamples` bootstrap resamples of n example indices (in memory-bound blocks)."""
    rows = max(1, _CHUNK // max(n, 1))
    out = []
    for start in range(0, resamples, rows):
        m = min(rows, resamples - start)
        out.append(stat(rng.integers(0, n, size=(m, n))))
    return np.concatenate(out)


def bca(stat: RowStat, n: int, resamples: int = RESAMPLES, seed: int = 0) -> Bca:
    """BCa bootstrap of a statistic over n examples; `stat` maps index rows to values."""
    theta = float(stat(np.arange(n)[None, :])[0])
    boot = resampled(stat, n, resamples, np.random.default_rng(seed))
    prop = (np.sum(boot < theta) + 0.5 * np.sum(boot == theta)) / boot.size
    prop = min(max(prop, 0.5 / boot.size), 1 - 0.5 / boot.size)
    z0 = float(norm.ppf(prop))
    a = 0.0
    if n > 2:
        jack_idx = np.array([np.delete(np.arange(n), i) for i in range(n)]) if n <= 2000 \
            else None
        if jack_idx is not None:
            jack = stat(jack_idx)
            d = jack.mean() - jack
            den = 6 * float(np.sum(d**2)) ** 1.5
            a = float(np.sum(d**3)) / den if den > 0 else 0.0
        else:  # large n: acceleration is O(1/sqrt(n)); skip the O(n²) jackknife
            a = 0.0
    return Bca(theta, boot, z0, a, n)


def mean_rows(x: np.ndarray) -> RowStat:
    return lambda idx: x[idx].mean(axis=1)


# ---- quality of one run, and its test against the bar ----------------------------------

@dataclass
class Quality:
    """A run's quality: the interval, and the one-sided p-value of "quality ≤ bar"."""

    interval: Interval
    p_bar: float | None  # None without a bar or without scores


def mean_quality(values: Sequence[float], bar: float | None = None, level: float = 0.95,
                 seed: int = 0) -> Quality:
    """Exact binomial when every score is 0 or 1, otherwise BCa on the mean."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Quality(Interval(None, None, None, 0, "none"), None)
    if is_binary(values):
        k = int(x.sum())
        iv = clopper_pearson(k, x.size, level)
        return Quality(iv, None if bar is None else p_above_binary(k, x.size, bar))
    b = bca(mean_rows(x), x.size, seed=seed)
    low, high = b.interval(level)
    method = "BCa bootstrap" + (" (approximate below 30 examples)" if x.size < 30 else "")
    return Quality(Interval(float(x.mean()), low, high, int(x.size), method),
                   None if bar is None else b.p_greater(bar))


def stat_quality(stat: RowStat, n: int, bar: float | None = None, level: float = 0.95,
                 seed: int = 0, method: str = "BCa bootstrap") -> Quality:
    """BCa interval and bar p-value of a corpus statistic (e.g. macro-F1) over n examples."""
    if n == 0:
        return Quality(Interval(None, None, None, 0, "none"), None)
    b = bca(stat, n, seed=seed)
    low, high = b.interval(level)
    return Quality(Interval(b.theta, low, high, n, method),
                   None if bar is None else b.p_greater(bar))


# ---- which predictions count, and a run's quality from its stored predictions ----------

def failed_generation(p: Mapping[str, Any]) -> bool:
    """The model produced no answer: an error is stored, or it was unscored for that reason."""
    return bool(p.get("error")) or (p.get("score") is None and str(
        p.get("score_reason") or "").startswith("generation failed"))


def counted_score(p: Mapping[str, Any], metric: Any = None) -> float | None:
    """The score the decision counts: a failed generation is wrong (0.0) unless its reference
    cannot be scored (`metric.score("", reference)` is unscored); otherwise the stored score.
    None only when the reference makes the example unscorable (or another stored reason)."""
    if failed_generation(p):
        if metric is not None and metric.score("", str(p.get("reference") or "")).value is None:
            return None
        return 0.0
    return p.get("score")


def run_quality(preds: Sequence[Mapping[str, Any]], metric: Any, bar: float | None = None,
                seed: int = 0) -> tuple[Quality, dict[str, int]]:
    """Quality of one run from its predictions, failures counted as wrong, and the counts
    {"counted", "failed", "unscored"}. A metric with `encode` (macro-F1) is bootstrapped as a
    corpus statistic over its fixed label set; any other on the mean of its scores."""
    counted = [(p, v) for p in preds if (v := counted_score(p, metric)) is not None]
    counts = {"counted": len(counted), "failed": sum(1 for p, _ in counted
                                                     if failed_generation(p)),
              "unscored": len(preds) - len(counted)}
    if hasattr(metric, "encode") and getattr(metric, "corpus", None) is not None and counted:
        outs = ["" if failed_generation(p) else str(p.get("output") or "") for p, _ in counted]
        ref, got, labels = metric.encode(outs, [str(p["reference"]) for p, _ in counted])
        q = stat_quality(macro_f1_rows(np.asarray(ref), np.asarray(got), len(labels)),
                         len(counted), bar, seed=seed,
                         method=f"BCa bootstrap of macro-F1 over {len(labels)} labels")
        return q, counts
    return mean_quality([float(v) for _, v in counted], bar, seed=seed), counts


# ---- macro-F1 over a fixed label set, vectorized ----------------------------------------

def macro_f1_rows(ref: np.ndarray, got: np.ndarray, n_labels: int) -> RowStat:
    """Macro-F1 over labels 0..n_labels-1 for resampled rows of examples. `ref[i]` is the
    reference label index, `got[i]` the predicted one (n_labels = no label of the set). A label
    with no reference and no prediction in a resample has F1 0 (the label set never changes)."""
    r, g = np.asarray(ref, dtype=np.int64), np.asarray(got, dtype=np.int64)
    return lambda idx: macro_f1_table(r[idx], g[idx], n_labels)


def macro_f1_table(ref_rows: np.ndarray, got_rows: np.ndarray, n_labels: int) -> np.ndarray:
    """Macro-F1 of each row: references and predictions as label indices, shape (rows, n)."""
    got_rows = np.broadcast_to(got_rows, np.broadcast_shapes(ref_rows.shape, got_rows.shape))
    ref_rows = np.broadcast_to(ref_rows, got_rows.shape)
    rows = got_rows.shape[0]
    k = n_labels + 1
    flat = (np.arange(rows)[:, None] * (n_labels * k) + ref_rows * k + got_rows).ravel()
    conf = np.bincount(flat, minlength=rows * n_labels * k).reshape(rows, n_labels, k)
    diag = np.arange(n_labels)
    tp = conf[:, diag, diag].astype(float)
    fn = conf.sum(axis=2) - tp
    fp = conf[:, :, :n_labels].sum(axis=1) - tp
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.zeros_like(tp), where=den > 0).mean(axis=1)


# ---- paired tests between two runs on the same test examples ---------------------------

@dataclass
class Paired:
    """B minus A on the same examples: the difference with its 95% interval, the two-sided
    p-value of the named test and its one-sided p-value for "B is better"."""

    test: str            # "mcnemar", "sign-flip permutation", "permutation (macro-F1)"
    n: int               # examples in both runs
    mean_a: float | None
    mean_b: float | None
    diff: float | None   # value(b) - value(a)
    low: float | None
    high: float | None
    p_value: float
    a_only: int = 0      # binary: A right, B wrong (B broke it)
    b_only: int = 0      # binary: A wrong, B right (B fixed it)
    p_greater: float = 1.0  # one-sided: B better than A
    interval: str = ""   # how low/high were computed

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05

    def as_dict(self) -> dict:
        return {"test": self.test, "n": self.n, "mean_a": self.mean_a, "mean_b": self.mean_b,
                "diff": self.diff, "low": self.low, "high": self.high,
                "p_value": self.p_value, "significant": self.significant,
                "a_only": self.a_only, "b_only": self.b_only, "p_greater": self.p_greater,
                "interval": self.interval}


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


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_paired(both: int, b_only: int, a_only: int, neither: int,
                    level: float = 0.95) -> tuple[float, float]:
    """Newcombe (1998, method 10) hybrid score interval for mean(B) − mean(A) on paired 0/1
    scores: Wilson intervals of each proportion combined with the phi correlation."""
    n = both + b_only + a_only + neither
    if n == 0:
        return -1.0, 1.0
    z = float(norm.ppf(1 - (1 - level) / 2))
    pb, pa = (both + b_only) / n, (both + a_only) / n
    lb, ub = wilson(both + b_only, n, z)
    la, ua = wilson(both + a_only, n, z)
    margins = (both + b_only) * (a_only + neither) * (both + a_only) * (b_only + neither)
    phi = (both * neither - b_only * a_only) / math.sqrt(margins) if margins > 0 else 0.0
    d = pb - pa
    low = d - math.sqrt(max(0.0, (pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa)
                            + (ua - pa) ** 2))
    high = d + math.sqrt(max(0.0, (ub - pb) ** 2 - 2 * phi * (ub - pb) * (pa - la)
                             + (pa - la) ** 2))
    return max(-1.0, low), min(1.0, high)


def sign_flip(d: Sequence[float], seed: int = 0,
              permutations: int = PERMUTATIONS) -> tuple[float, float]:
    """Sign-flip permutation test of mean(d) = 0: (two-sided p, one-sided p for mean > 0).
    Exact over all sign patterns of the non-zero differences up to EXACT_UP_TO of them."""
    x = np.asarray(d, dtype=float)
    x = x[np.abs(x) > 1e-12]
    if x.size == 0:
        return 1.0, 1.0
    obs = float(x.sum())
    eps = 1e-9 * max(1.0, float(np.abs(x).sum()))
    if x.size <= EXACT_UP_TO:
        signs = 1 - 2 * ((np.arange(2**x.size)[:, None] >> np.arange(x.size)) & 1)
        sums = signs @ x
        return (float(np.mean(np.abs(sums) >= abs(obs) - eps)),
                float(np.mean(sums >= obs - eps)))
    rng = np.random.default_rng(seed)
    sums = np.concatenate([
        (rng.integers(0, 2, size=(m, x.size)) * 2 - 1) @ x
        for m in _blocks(permutations, x.size)])
    r = sums.size
    return ((int(np.sum(np.abs(sums) >= abs(obs) - eps)) + 1) / (r + 1),
            (int(np.sum(sums >= obs - eps)) + 1) / (r + 1))


def _blocks(total: int, width: int) -> list[int]:
    rows = max(1, _CHUNK // max(width, 1))
    return [min(rows, total - s) for s in range(0, total, rows)]


def paired_test(a: Sequence[float], b: Sequence[float], seed: int = 0) -> Paired:
    """Exact McNemar (Newcombe interval) when both runs' scores are all 0/1, otherwise the
    sign-flip permutation test (BCa interval on the mean difference)."""
    if len(a) != len(b):
        raise ValueError(f"paired scores differ in length: {len(a)} vs {len(b)}")
    if not len(a):
        return Paired("none", 0, None, None, None, None, None, 1.0)
    mean_a, mean_b = float(np.mean(a)), float(np.mean(b))
    if is_binary(a) and is_binary(b):
        p, a_only, b_only = mcnemar_exact(a, b)
        both = sum(1 for x, y in zip(a, b, strict=True) if x == 1 and y == 1)
        low, high = newcombe_paired(both, b_only, a_only, len(a) - both - a_only - b_only)
        one = float(binom.sf(b_only - 1, a_only + b_only, 0.5)) if a_only + b_only else 1.0
        return Paired("mcnemar", len(a), mean_a, mean_b, mean_b - mean_a, low, high, p,
                      a_only, b_only, one, "Newcombe hybrid score")
    x = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    two, one = sign_flip(x, seed)
    low, high = bca(mean_rows(x), x.size, seed=seed).interval()
    return Paired("sign-flip permutation", len(a), mean_a, mean_b, float(x.mean()), low, high,
                  two, p_greater=one, interval="BCa bootstrap")


def paired_macro_f1(ref: Sequence[int], got_a: Sequence[int], got_b: Sequence[int],
                    n_labels: int, seed: int = 0, permutations: int = PERMUTATIONS) -> Paired:
    """Macro-F1(B) − macro-F1(A) on the same examples: a paired permutation test (each
    example's two predictions swapped with probability 1/2) and a paired BCa interval."""
    r = np.asarray(ref, dtype=np.int64)
    ga, gb = np.asarray(got_a, dtype=np.int64), np.asarray(got_b, dtype=np.int64)
    n = r.size
    if n == 0:
        return Paired("none", 0, None, None, None, None, None, 1.0)
    fa, fb = macro_f1_rows(r, ga, n_labels), macro_f1_rows(r, gb, n_labels)
    whole = np.arange(n)[None, :]
    va, vb = float(fa(whole)[0]), float(fb(whole)[0])
    obs = vb - va
    rng = np.random.default_rng(seed)
    two = one = 1
    r_total = 0
    eps = 1e-12
    for m in _blocks(permutations, 2 * n):
        swap = rng.integers(0, 2, size=(m, n)).astype(bool)
        pa = np.where(swap, gb, ga)
        pb = np.where(swap, ga, gb)
        diff = macro_f1_table(r[None, :], pb, n_labels) - macro_f1_table(r[None, :], pa, n_labels)
        two += int(np.sum(np.abs(diff) >= abs(obs) - eps))
        one += int(np.sum(diff >= obs - eps))
        r_total += m
    p_two, p_one = (two / (r_total + 1), one / (r_total + 1)) if obs != 0 else (1.0, 1.0)
    boot = bca(lambda idx: fb(idx) - fa(idx), n, seed=seed)
    low, high = boot.interval()
    return Paired("permutation (macro-F1)", n, va, vb, obs, low, high, p_two,
                  p_greater=p_one, interval="paired BCa bootstrap")


# ---- power of the exact test against the bar --------------------------------------------

def critical_k(n: int, bar: float, alpha: float) -> int | None:
    """Fewest right answers of n whose exact one-sided p-value against the bar is ≤ alpha."""
    if n == 0:
        return None
    k = int(binom.isf(alpha, n, bar)) + 1  # first guess; the tail is then checked exactly
    k = min(max(k, 0), n + 1)
    while k > 0 and binom.sf(k - 2, n, bar) <= alpha:
        k -= 1
    while k <= n and binom.sf(k - 1, n, bar) > alpha:
        k += 1
    return k if k <= n else None


def power_one_sided(n: int, bar: float, margin: float, alpha: float) -> float:
    """Probability that the exact one-sided binomial test at level alpha declares a rung
    above the bar when its true quality is bar + margin, with n test examples."""
    k = critical_k(n, bar, alpha)
    true = min(1.0, bar + margin)
    return 0.0 if k is None else float(binom.sf(k - 1, n, true))


def min_margin(n: int, bar: float, alpha: float, power: float = 0.8) -> float | None:
    """Smallest true margin above the bar confirmed with at least `power` (None: none is)."""
    if n == 0 or power_one_sided(n, bar, 1 - bar, alpha) < power:
        return None
    lo, hi = 0.0, 1.0 - bar
    for _ in range(50):
        mid = (lo + hi) / 2
        if power_one_sided(n, bar, mid, alpha) >= power:
            hi = mid
        else:
            lo = mid
    return hi


@lru_cache(maxsize=4096)
def n_needed(bar: float, margin: float, alpha: float, power: float = 0.8,
             limit: int = 100_000) -> int | None:
    """Fewest test examples giving the exact test at least `power` at bar + margin (binary
    search over n, treating power as increasing in n; the binomial saw-tooth can make a
    slightly smaller n work too). None when the margin is impossible or beyond `limit`."""
    if margin <= 0 or bar + margin > 1:
        return None
    if power_one_sided(limit, bar, margin, alpha) < power:
        return None
    hi = 1
    while power_one_sided(hi, bar, margin, alpha) < power:
        hi = min(limit, hi * 2)
    lo = 0  # power at 0 examples is 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if power_one_sided(mid, bar, margin, alpha) >= power:
            hi = mid
        else:
            lo = mid
    return hi


# ---- descriptive percentile bootstrap (sub-scores only; never used for a decision) ------

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
    """Percentile interval for a statistic of resampled example indices (descriptive)."""
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
