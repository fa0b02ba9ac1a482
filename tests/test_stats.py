"""Intervals, bar tests, paired tests and power, checked against scipy's reference
implementations and hand computations."""

import math

import numpy as np
import pytest
from scipy.stats import binom, binomtest, bootstrap, permutation_test

from llm_ladder.stats import (
    Bca,
    bca,
    binom_two_sided_half,
    bootstrap_mean,
    clopper_pearson,
    counted_score,
    critical_k,
    macro_f1_rows,
    macro_f1_table,
    mcnemar_exact,
    mean_quality,
    mean_rows,
    min_margin,
    n_needed,
    newcombe_paired,
    p_above_binary,
    paired_macro_f1,
    paired_test,
    power_one_sided,
    run_quality,
    sign_flip,
    stat_quality,
    wilson,
)


@pytest.mark.parametrize("k,n", [(0, 0), (0, 1), (1, 1), (0, 5), (2, 9), (3, 10), (5, 10),
                                 (7, 10), (1, 20), (12, 40), (30, 31), (50, 100)])
def test_binomial_p_matches_scipy(k, n):
    want = binomtest(k, n, 0.5).pvalue if n else 1.0
    assert binom_two_sided_half(k, n) == pytest.approx(want, rel=1e-12)


# ---- exact binomial ---------------------------------------------------------------------

@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (8, 8), (12, 12), (0, 12), (7, 10),
                                 (56, 60), (150, 200)])
def test_clopper_pearson_matches_scipy(k, n):
    want = binomtest(k, n).proportion_ci(method="exact")
    got = clopper_pearson(k, n)
    assert (got.low, got.high) == pytest.approx((want.low, want.high), abs=1e-12)
    assert got.value == k / n and got.n == n and got.method.startswith("exact binomial")


def test_small_perfect_runs_do_not_collapse():
    # issue 11: the percentile bootstrap gave [1, 1] for 8/8 and 12/12
    assert clopper_pearson(8, 8).low == pytest.approx(0.6306, abs=1e-4)
    assert clopper_pearson(12, 12).low == pytest.approx(0.7354, abs=1e-4)
    q = mean_quality([1.0] * 12, bar=0.8)
    assert q.interval.low == pytest.approx(0.7354, abs=1e-4)
    assert q.p_bar == pytest.approx(0.8**12)  # not below 0.025: 12/12 cannot clear 0.8
    assert clopper_pearson(0, 0).value is None


@pytest.mark.parametrize("k,n,bar", [(56, 60, 0.8), (8, 8, 0.8), (0, 5, 0.5), (30, 40, 0.7),
                                     (199, 200, 0.95)])
def test_bar_p_value_is_the_one_sided_exact_test_and_agrees_with_the_bound(k, n, bar):
    p = p_above_binary(k, n, bar)
    assert p == pytest.approx(binomtest(k, n, bar, alternative="greater").pvalue, rel=1e-9)
    lower = binomtest(k, n).proportion_ci(confidence_level=1 - 2 * p, method="exact").low \
        if 0 < p < 0.5 else None
    if lower is not None:  # the one-sided bound at level 1 - p sits exactly on the bar
        assert lower == pytest.approx(bar, abs=1e-6)
    assert p_above_binary(0, 0, bar) == 1.0


def test_wilson_matches_scipy():
    for k, n in [(3, 10), (0, 7), (7, 7), (40, 90)]:
        want = binomtest(k, n).proportion_ci(method="wilson")
        assert wilson(k, n) == pytest.approx((want.low, want.high), abs=1e-9)
    assert wilson(0, 0) == (0.0, 1.0)


# ---- BCa --------------------------------------------------------------------------------

def test_bca_matches_scipy_within_monte_carlo_error():
    rng = np.random.default_rng(0)
    for x in (rng.beta(2, 5, 40), rng.exponential(1, 25) / 5, rng.uniform(0, 1, 200)):
        got = bca(mean_rows(x), x.size, 20000, seed=1).interval()
        want = bootstrap((x,), np.mean, method="BCa", n_resamples=20000,
                         random_state=2).confidence_interval
        width = want.high - want.low
        assert got == pytest.approx((want.low, want.high), abs=0.03 * width)


def test_bca_acceleration_and_bias_by_hand():
    x = np.array([0.0, 0.1, 0.1, 0.2, 0.9, 1.0])
    b = bca(mean_rows(x), 6, 2000, seed=0)
    jack = np.array([np.delete(x, i).mean() for i in range(6)])
    d = jack.mean() - jack
    assert b.a == pytest.approx(np.sum(d**3) / (6 * np.sum(d**2) ** 1.5))
    assert b.a != 0  # skewed data: a non-zero acceleration
    assert b.theta == pytest.approx(x.mean())


def test_bca_p_value_inverts_the_interval():
    rng = np.random.default_rng(4)
    x = rng.beta(3, 2, 50)
    b = bca(mean_rows(x), 50, seed=0)
    for level in (0.9, 0.95, 0.99):
        low, _ = b.interval(level)
        # the one-sided p-value at the two-sided lower bound is (1 - level) / 2
        assert b.p_greater(low) == pytest.approx((1 - level) / 2, abs=0.004)
    assert b.p_greater(0.0) < 0.001 and b.p_greater(1.0) > 0.999


def test_degenerate_bootstrap():
    b = Bca(0.5, np.full(10, 0.5), 0.0, 0.0, 5)
    assert b.degenerate and b.interval() == (0.5, 0.5)
    assert b.p_greater(0.4) == 0.0 and b.p_greater(0.5) == 1.0


def test_mean_quality_picks_exact_for_binary_and_bca_otherwise():
    assert mean_quality([1, 0, 1, 1]).interval.method.startswith("exact")
    q = mean_quality([0.2, 0.5, 0.9, 0.4] * 5, bar=0.3)
    assert q.interval.method.startswith("BCa") and "approximate" in q.interval.method
    assert q.interval.low < 0.5 < q.interval.high and q.p_bar < 0.05
    assert mean_quality([]).interval.value is None and mean_quality([]).p_bar is None
    assert mean_quality([1, 0], bar=None).p_bar is None


# ---- failures count -----------------------------------------------------------------------

class _RefMetric:
    """Scores the empty answer 0 unless the reference is empty (then unscorable)."""

    class _S:
        def __init__(self, v):
            self.value = v

    def score(self, prediction, reference):
        return self._S(None if not reference else 0.0)


def test_failed_generations_count_as_wrong_unless_the_reference_is_unscorable():
    ok = {"score": 1.0, "error": None, "reference": "x"}
    failed = {"score": None, "score_reason": "generation failed: context overflow",
              "error": "context overflow", "reference": "x"}
    failed_no_error_field = {"score": None, "score_reason": "generation failed: 500",
                             "error": None, "reference": "x"}
    bad_ref = {"score": None, "score_reason": "reference is empty", "error": None,
               "reference": ""}
    failed_bad_ref = {**failed, "reference": ""}
    m = _RefMetric()
    assert counted_score(ok, m) == 1.0
    assert counted_score(failed, m) == 0.0 and counted_score(failed_no_error_field, m) == 0.0
    assert counted_score(bad_ref, m) is None and counted_score(failed_bad_ref, m) is None
    assert counted_score(failed_bad_ref) == 0.0  # without a metric: wrong
    q, counts = run_quality([ok, ok, failed, bad_ref], m)
    assert counts == {"counted": 3, "failed": 1, "unscored": 1}
    assert q.interval.value == pytest.approx(2 / 3) and q.interval.n == 3


# ---- macro-F1 -------------------------------------------------------------------------------

def test_macro_f1_table_by_hand_and_fixed_label_set():
    ref = np.array([[0, 0, 1, 1, 2, 2]])
    got = np.array([[0, 1, 1, 1, 2, 0]])
    # a: tp1 fp1 fn1 -> 1/2; b: tp2 fp1 fn0 -> 4/5; c: tp1 fp0 fn1 -> 2/3
    assert macro_f1_table(ref, got, 3)[0] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    # "no label" predictions (index 3) are misses; a label absent from a resample scores 0
    assert macro_f1_table(np.array([[0, 0]]), np.array([[0, 3]]), 2)[0] == pytest.approx(
        (2 / 3 + 0) / 2)
    stat = macro_f1_rows(ref[0], got[0], 3)
    assert stat(np.array([[0, 1, 2, 3, 4, 5], [0, 0, 0, 0, 0, 0]])) == pytest.approx(
        [(1 / 2 + 4 / 5 + 2 / 3) / 3, 1 / 3])


def test_macro_f1_quality_draws_are_never_dropped():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 5, 40)
    got = np.where(rng.random(40) < 0.7, ref, rng.integers(0, 6, 40))
    q = stat_quality(macro_f1_rows(ref, got, 5), 40, bar=0.3)
    assert q.interval.low < q.interval.value < q.interval.high
    assert q.p_bar is not None and 0 <= q.p_bar < 0.05


def test_paired_macro_f1_compares_macro_f1():
    rng = np.random.default_rng(2)
    ref = rng.integers(0, 4, 200)
    worse = np.where(rng.random(200) < 0.6, ref, rng.integers(0, 5, 200))
    better = np.where(rng.random(200) < 0.9, ref, rng.integers(0, 5, 200))
    t = paired_macro_f1(ref, worse, better, 4, permutations=4000)
    fa = macro_f1_table(ref[None], worse[None], 4)[0]
    fb = macro_f1_table(ref[None], better[None], 4)[0]
    assert t.test == "permutation (macro-F1)" and t.diff == pytest.approx(fb - fa)
    assert t.p_greater < 0.001 and t.low > 0 and t.low < t.diff < t.high
    same = paired_macro_f1(ref, worse, worse, 4, permutations=500)
    assert same.p_value == 1.0 and same.diff == 0
    back = paired_macro_f1(ref, better, worse, 4, permutations=4000)
    assert back.p_greater > 0.99 and back.p_value < 0.01
    assert paired_macro_f1([], [], [], 4).n == 0


def test_paired_macro_f1_false_positive_rate_under_the_null():
    rng = np.random.default_rng(9)
    hits = 0
    for _ in range(200):
        ref = rng.integers(0, 3, 30)
        a = np.where(rng.random(30) < 0.7, ref, rng.integers(0, 4, 30))
        b = np.where(rng.random(30) < 0.7, ref, rng.integers(0, 4, 30))
        hits += paired_macro_f1(ref, a, b, 3, seed=int(rng.integers(1e6)),
                                permutations=400).p_value < 0.05
    assert hits <= 22  # 5% of 200 is 10; 99% binomial upper tail is ~19


# ---- paired tests ---------------------------------------------------------------------------

def test_mcnemar_counts_only_discordant_pairs():
    # A right/B wrong twice, A wrong/B right 9 times, 20 ties either way
    a = [1] * 2 + [0] * 9 + [1] * 10 + [0] * 10
    b = [0] * 2 + [1] * 9 + [1] * 10 + [0] * 10
    p, a_only, b_only = mcnemar_exact(a, b)
    assert (a_only, b_only) == (2, 9)
    assert p == pytest.approx(binomtest(9, 11, 0.5).pvalue)
    assert p == pytest.approx(0.065430, abs=1e-6)  # 2 * (1 + 11 + 55) / 2**11
    t = paired_test(a, b)
    assert t.p_greater == pytest.approx(binomtest(9, 11, 0.5, alternative="greater").pvalue)


def test_newcombe_interval_by_hand():
    # both right 10, B-only 9, A-only 2, neither 10 (the McNemar example above)
    low, high = newcombe_paired(10, 9, 2, 10)
    n, pb, pa = 31, 19 / 31, 12 / 31
    lb, ub = wilson(19, 31)
    la, ua = wilson(12, 31)
    phi = (10 * 10 - 9 * 2) / math.sqrt(19 * 12 * 12 * 19)
    d = pb - pa
    assert low == pytest.approx(d - math.sqrt((pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa)
                                              + (ua - pa) ** 2))
    assert high == pytest.approx(d + math.sqrt((ub - pb) ** 2 - 2 * phi * (ub - pb) * (pa - la)
                                               + (pa - la) ** 2))
    # Newcombe is an asymptotic score interval: at this borderline (exact McNemar p = 0.065,
    # asymptotic McNemar p = 0.035) it just excludes 0; the decision uses the exact p-value
    assert 0 < low < d < high and n == 31
    assert newcombe_paired(10, 7, 3, 11)[0] < 0  # clearly not significant: contains 0
    strong = newcombe_paired(50, 30, 2, 18)
    assert strong[0] > 0  # McNemar p < 1e-6: the interval excludes 0
    assert newcombe_paired(0, 0, 0, 0) == (-1.0, 1.0)


def test_paired_test_picks_mcnemar_for_binary_and_sign_flip_otherwise():
    a, b = [0, 1, 0, 1, 1, 0], [1, 1, 1, 1, 1, 0]
    t = paired_test(a, b)
    assert t.test == "mcnemar" and t.n == 6 and t.b_only == 2 and t.a_only == 0
    assert t.p_value == pytest.approx(0.5) and not t.significant
    assert t.p_greater == pytest.approx(0.25)
    assert t.diff == pytest.approx(2 / 6) and t.low <= t.diff <= t.high
    assert t.interval == "Newcombe hybrid score"
    f = paired_test([0.2, 0.5, 0.1], [0.3, 0.5, 0.4])
    assert f.test == "sign-flip permutation" and f.diff == pytest.approx(0.4 / 3)
    # two non-zero differences, both positive: 1 of 4 sign patterns as large (one-sided)
    assert f.p_greater == pytest.approx(0.25) and f.p_value == pytest.approx(0.5)


def test_sign_flip_exact_matches_scipy_permutation_test():
    rng = np.random.default_rng(5)
    d = rng.normal(0.2, 1, 12)
    two, one = sign_flip(d)
    want = permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf,
                            alternative="greater")
    assert one == pytest.approx(want.pvalue, abs=1e-12)
    want2 = permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf,
                             alternative="two-sided")
    assert two == pytest.approx(want2.pvalue, abs=1e-12)


def test_sign_flip_monte_carlo_for_large_n_and_its_null_rate():
    rng = np.random.default_rng(6)
    d = rng.normal(0.3, 1, 100)
    two, one = sign_flip(d, seed=1)
    want = permutation_test((d,), np.mean, permutation_type="samples", n_resamples=20000,
                            alternative="greater", random_state=1).pvalue
    assert one == pytest.approx(want, abs=0.01) and two == pytest.approx(2 * one, abs=0.01)
    assert sign_flip(d, seed=1) == (two, one)  # seeded
    assert sign_flip([0.0, 0.0]) == (1.0, 1.0)
    # issue 11: the paired bootstrap rejected 10.5% at n = 8 under no difference
    hits = sum(sign_flip(rng.uniform(-1, 1, 8))[0] < 0.05 for _ in range(400))
    assert hits <= 32


def test_empty_and_mismatched_inputs():
    assert paired_test([], []).p_value == 1.0 and paired_test([], []).diff is None
    with pytest.raises(ValueError, match="differ in length"):
        paired_test([1, 0], [1])
    assert bootstrap_mean([]).value is None


# ---- power --------------------------------------------------------------------------------

def test_power_is_the_exact_binomial_tail_beyond_the_critical_count():
    n, bar, alpha = 60, 0.8, 0.005
    k = critical_k(n, bar, alpha)
    assert binom.sf(k - 1, n, bar) <= alpha < binom.sf(k - 2, n, bar)
    assert power_one_sided(n, bar, 0.1, alpha) == pytest.approx(binom.sf(k - 1, n, 0.9))
    assert power_one_sided(n, bar, 0.0, alpha) <= alpha
    assert critical_k(8, 0.8, 0.025) is None and power_one_sided(8, 0.8, 0.2, 0.025) == 0.0
    assert critical_k(0, 0.8, 0.05) is None


def test_min_margin_and_n_needed():
    m = min_margin(100, 0.8, 0.005)
    assert power_one_sided(100, 0.8, m, 0.005) >= 0.8 > power_one_sided(100, 0.8, m - 0.002,
                                                                          0.005)
    assert min_margin(8, 0.8, 0.025) is None  # 8/8 cannot clear 0.8 at 0.025
    n = n_needed(0.8, 0.1, 0.005)
    assert power_one_sided(n, 0.8, 0.1, 0.005) >= 0.8
    assert power_one_sided(n - 1, 0.8, 0.1, 0.005) < 0.8
    assert n_needed(0.8, 0.0, 0.005) is None and n_needed(0.8, 0.3, 0.005) is None
    assert n_needed(0.5, 0.05, 0.05) > n_needed(0.5, 0.1, 0.05)
