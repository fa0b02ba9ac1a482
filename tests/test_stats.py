"""Paired tests between runs, checked against scipy's reference implementations."""

import numpy as np
import pytest
from scipy.stats import binomtest

from llm_ladder.stats import (
    binom_two_sided_half,
    bootstrap_mean,
    mcnemar_exact,
    paired_bootstrap,
    paired_test,
)


@pytest.mark.parametrize("k,n", [(0, 0), (0, 1), (1, 1), (0, 5), (2, 9), (3, 10), (5, 10),
                                 (7, 10), (1, 20), (12, 40), (30, 31), (50, 100)])
def test_binomial_p_matches_scipy(k, n):
    want = binomtest(k, n, 0.5).pvalue if n else 1.0
    assert binom_two_sided_half(k, n) == pytest.approx(want, rel=1e-12)


def test_mcnemar_counts_only_discordant_pairs():
    # A right/B wrong twice, A wrong/B right 9 times, 20 ties either way
    a = [1] * 2 + [0] * 9 + [1] * 10 + [0] * 10
    b = [0] * 2 + [1] * 9 + [1] * 10 + [0] * 10
    p, a_only, b_only = mcnemar_exact(a, b)
    assert (a_only, b_only) == (2, 9)
    assert p == pytest.approx(binomtest(9, 11, 0.5).pvalue)
    assert p == pytest.approx(0.065430, abs=1e-6)  # 2 * (1 + 11 + 55) / 2**11


def test_paired_test_picks_mcnemar_for_binary_and_bootstrap_otherwise():
    a, b = [0, 1, 0, 1, 1, 0], [1, 1, 1, 1, 1, 0]
    t = paired_test(a, b)
    assert t.test == "mcnemar" and t.n == 6 and t.b_only == 2 and t.a_only == 0
    assert t.p_value == pytest.approx(0.5) and not t.significant
    assert t.diff == pytest.approx(2 / 6) and t.low <= t.diff <= t.high
    f = paired_test([0.2, 0.5, 0.1], [0.3, 0.5, 0.4])
    assert f.test == "paired-bootstrap" and f.diff == pytest.approx(0.4 / 3)


def test_paired_bootstrap_is_significant_only_for_a_real_shift():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, 200)
    shifted = np.clip(a + 0.1 + rng.normal(0, 0.05, 200), 0, 1)
    d, low, high, p = paired_bootstrap(a, shifted)
    assert 0 < low < d < high and p < 0.001
    noise = np.clip(a + rng.normal(0, 0.05, 200), 0, 1)
    d, low, high, p = paired_bootstrap(a, noise)
    assert low < 0 < high and p > 0.05
    assert paired_bootstrap(a, a)[3] == 1.0


def test_paired_bootstrap_interval_matches_a_direct_computation():
    a = [0.0, 0.5, 1.0, 0.25, 0.75, 0.0, 1.0, 0.5]
    b = [0.5, 0.5, 1.0, 0.75, 0.75, 0.25, 1.0, 1.0]
    d, low, high, _ = paired_bootstrap(a, b, resamples=4000, seed=3)
    # the same percentile interval, computed independently on the differences
    diffs = np.asarray(b) - np.asarray(a)
    rng = np.random.default_rng(3)
    means = diffs[rng.integers(0, 8, size=(4000, 8))].mean(axis=1)
    assert d == pytest.approx(diffs.mean())
    assert (low, high) == pytest.approx((np.quantile(means, 0.025), np.quantile(means, 0.975)))


def test_empty_and_mismatched_inputs():
    assert paired_test([], []).p_value == 1.0 and paired_test([], []).diff is None
    with pytest.raises(ValueError, match="differ in length"):
        paired_test([1, 0], [1])
    assert bootstrap_mean([]).value is None
