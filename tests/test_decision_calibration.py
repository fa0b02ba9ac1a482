"""The decision's error rates, proven by simulation (fast, no model).

Synthetic ladders with known true qualities (Bernoulli draws for 0/1 scores, a zero-inflated
Beta for token-F1-like scores, multinomial label draws with a known confusion model for
macro-F1) go through the real `summarize` and `decide`. Each rate is asserted with binomial
tolerance: the observed rate's 99% Clopper–Pearson interval must include or lie below the
target (≤ targets) or include or lie above it (≥ targets). Seeded; well under a minute.

`python tests/test_decision_calibration.py` prints the table in docs/decision.md.
"""

from __future__ import annotations

import inspect
import sys
from functools import cache

import numpy as np
import pytest
from scipy.stats import binomtest

from llm_ladder.decide import decide
from llm_ladder.evaluate import summarize
from llm_ladder.metrics import MacroF1, build_metric
from llm_ladder.task import Task

try:  # new API; absent on the code before issue 11 (the power check then fails)
    from llm_ladder.decide import power_report
except ImportError:  # pragma: no cover
    power_report = None  # type: ignore[assignment]

BAR = 0.8
SIMS = 2000
NEW_SUMMARIZE = "bar" in inspect.signature(summarize).parameters
NEW_DECIDE = "planned" in inspect.signature(decide).parameters


def task(bar: float = BAR, metric: str = "accuracy", labels: list[str] | None = None) -> Task:
    return Task.model_validate({"name": "calibration", "bar": bar,
                                "data": {"examples": ["x.jsonl"]},
                                "metric": {"name": metric, "labels": labels or ["yes", "no"]}})


def preds_from_scores(scores: np.ndarray) -> list[dict]:
    return [{"example_id": f"e{i}", "score": float(v), "score_reason": None, "output": "",
             "reference": "", "latency_s": 0.1, "error": None, "tokens_in": 10,
             "tokens_out": 1, "details": {}} for i, v in enumerate(scores)]


def summary(preds: list[dict], metric, t: Task, rung: str) -> dict:
    s = summarize(preds, metric, None, "", bar=t.bar) if NEW_SUMMARIZE \
        else summarize(preds, metric, None, "")
    return {**s, "rung": rung, "run_id": None, "model": None}


def recommends(t: Task, summaries: list[dict], planned: int) -> bool:
    rec = decide(t, summaries, planned=planned) if NEW_DECIDE else decide(t, summaries)
    return rec["meets_bar"]


ACC = build_metric("accuracy", ["yes", "no"])


@cache
def binary_summary(k: int, n: int) -> dict:
    """The summary of a run with k of n right (it depends on nothing else)."""
    return summary(preds_from_scores(np.array([1.0] * k + [0.0] * (n - k))), ACC, task(), "r")


def within(count: int, sims: int, target: float, below: bool = True) -> tuple[bool, str]:
    ci = binomtest(count, sims).proportion_ci(confidence_level=0.99, method="exact")
    ok = ci.low <= target if below else ci.high >= target
    return ok, f"{count / sims:.4f} (99% CI {ci.low:.4f}–{ci.high:.4f}, target {target})"


# ---- (a) per-rung false pass at the bar ------------------------------------------------------

def false_pass_rate(n: int, sims: int = SIMS, seed: int = 0) -> tuple[int, int]:
    rng = np.random.default_rng(seed)
    ks = rng.binomial(n, BAR, size=sims)
    t = task()
    passed = {k: recommends(t, [{**binary_summary(int(k), n), "rung": "r"}], 1)
              for k in set(ks.tolist())}
    return sum(passed[k] for k in ks.tolist()), sims


@pytest.mark.parametrize("n", [8, 12, 30, 60, 200])
def test_per_rung_false_pass_at_the_bar_is_at_most_2_5_percent(n):
    count, sims = false_pass_rate(n)
    ok, text = within(count, sims, 0.025)
    print(f"false pass n={n}: {text}")
    assert ok, f"per-rung false pass at the bar, n={n}: {text}"


def continuous_scores(rng: np.random.Generator, mean: float, size: tuple[int, ...]
                      ) -> np.ndarray:
    """Token-F1-like: 0 with probability 0.2, else Beta with the mean making the total `mean`."""
    m = mean / 0.8
    conc = 6.0
    x = rng.beta(m * conc, (1 - m) * conc, size=size)
    return np.where(rng.random(size) < 0.2, 0.0, x)


@pytest.mark.parametrize("n", [30, 60, 200])
def test_continuous_false_pass_at_the_bar(n):
    rng = np.random.default_rng(n)
    t = task(bar=0.6, metric="token_f1")
    metric = build_metric("token_f1")
    sims = 300
    count = sum(recommends(t, [summary(preds_from_scores(row), metric, t, "r")], 1)
                for row in continuous_scores(rng, 0.6, (sims, n)))
    ok, text = within(count, sims, 0.025)
    print(f"continuous false pass n={n}: {text}")
    assert ok, f"continuous per-rung false pass, n={n}: {text}"


# ---- (b) family-wise false recommendation ----------------------------------------------------

@pytest.mark.parametrize("n", [8, 30, 60])
def test_family_wise_false_recommendation_with_10_rungs_at_the_bar(n):
    rng = np.random.default_rng(100 + n)
    t = task()
    ks = rng.binomial(n, BAR, size=(SIMS, 10))
    count = 0
    for row in ks:
        ladder = [{**binary_summary(int(k), n), "rung": f"r{i}"} for i, k in enumerate(row)]
        count += recommends(t, ladder, 10)
    ok, text = within(count, SIMS, 0.05)
    print(f"family-wise n={n}: {text}")
    assert ok, f"family-wise false recommendation, 10 rungs, n={n}: {text}"


# ---- (c) interval coverage ------------------------------------------------------------------

def coverage(intervals: list[tuple[float, float]], truth: float) -> int:
    return sum(lo <= truth <= hi for lo, hi in intervals)


@pytest.mark.parametrize("n,p", [(12, 0.8), (30, 0.7), (100, 0.9)])
def test_accuracy_interval_coverage(n, p):
    rng = np.random.default_rng(7)
    ks = rng.binomial(n, p, size=SIMS)
    ivs = [(binary_summary(int(k), n)["quality"]["low"], binary_summary(int(k), n)
            ["quality"]["high"]) for k in ks]
    ok, text = within(coverage(ivs, p), SIMS, 0.94, below=False)
    print(f"accuracy coverage n={n} p={p}: {text}")
    assert ok, f"accuracy coverage n={n}: {text}"


@pytest.mark.parametrize("n", [30, 100])
def test_continuous_interval_coverage(n):
    rng = np.random.default_rng(n)
    metric = build_metric("token_f1")
    sims = 300
    ivs = []
    for row in continuous_scores(rng, 0.6, (sims, n)):
        q = summarize(preds_from_scores(row), metric, None)["quality"]
        ivs.append((q["low"], q["high"]))
    ok, text = within(coverage(ivs, 0.6), sims, 0.94, below=False)
    print(f"token-F1-like coverage n={n}: {text}")
    assert ok, f"continuous coverage n={n}: {text}"


LABELS = ["a", "b", "c", "d"]
PRIOR = np.array([0.4, 0.3, 0.2, 0.1])
ACCURACY = np.array([0.9, 0.75, 0.7, 0.6])  # per true label; errors spread uniformly


def true_macro_f1() -> float:
    k = len(LABELS)
    conf = np.zeros((k, k))
    for i in range(k):
        conf[i] = PRIOR[i] * (1 - ACCURACY[i]) / (k - 1)
        conf[i, i] = PRIOR[i] * ACCURACY[i]
    tp = np.diag(conf)
    return float(np.mean(2 * tp / (2 * tp + (conf.sum(0) - tp) + (conf.sum(1) - tp))))


def label_run(rng: np.random.Generator, n: int) -> list[dict]:
    ref = rng.choice(len(LABELS), size=n, p=PRIOR)
    right = rng.random(n) < ACCURACY[ref]
    other = (ref + rng.integers(1, len(LABELS), size=n)) % len(LABELS)
    got = np.where(right, ref, other)
    return [{"example_id": f"e{i}", "score": float(r == g), "score_reason": None,
             "output": LABELS[g], "reference": LABELS[r], "latency_s": 0.1, "error": None,
             "tokens_in": 10, "tokens_out": 1, "details": {}} for i, (r, g) in
            enumerate(zip(ref, got, strict=True))]


def test_macro_f1_interval_coverage():
    rng = np.random.default_rng(3)
    metric = MacroF1(labels=LABELS)
    truth, sims, n = true_macro_f1(), 200, 200
    ivs = []
    for _ in range(sims):
        q = summarize(label_run(rng, n), metric, None)["quality"]
        ivs.append((q["low"], q["high"]))
    ok, text = within(coverage(ivs, truth), sims, 0.94, below=False)
    print(f"macro-F1 coverage n={n} (true {truth:.3f}): {text}")
    assert ok, f"macro-F1 coverage: {text}"


# ---- (d) the power reported before climbing matches the simulated power -----------------

@pytest.mark.parametrize("n,planned,margin", [(60, 10, 0.12), (200, 12, 0.07), (30, 5, 0.15)])
def test_reported_power_matches_simulated_power(n, planned, margin):
    assert power_report is not None, "no power_report in llm_ladder.decide"
    t = task()
    rep = power_report(t, n, planned, margins=[margin])
    reported = rep["margins"][0]["power"]
    rng = np.random.default_rng(11)
    ks = rng.binomial(n, BAR + margin, size=SIMS)
    # one rung of a ladder of `planned`, the others far below the bar (never pass)
    low = {**binary_summary(0, n), "rung": "low"}
    hits = sum(recommends(t, [{**binary_summary(int(k), n), "rung": "r"}]
                          + [low] * (planned - 1), planned) for k in ks)
    simulated = hits / SIMS
    print(f"power n={n} planned={planned} margin={margin}: reported {reported:.3f}, "
          f"simulated {simulated:.3f}")
    assert abs(reported - simulated) <= 0.05


def table() -> str:
    """The simulated error-rate table for docs/decision.md."""
    rows = ["| check | n | observed | target |", "| --- | --- | --- | --- |"]
    for n in (8, 12, 30, 60, 200):
        c, s = false_pass_rate(n)
        rows.append(f"| per-rung false pass, accuracy at the bar 0.8 | {n} | {c / s:.2%} "
                    f"({c}/{s}) | ≤ 2.5% |")
    rng = np.random.default_rng(5)
    t = task()
    for n in (8, 30, 60):
        ks = rng.binomial(n, BAR, size=(SIMS, 10))
        c = sum(recommends(t, [{**binary_summary(int(k), n), "rung": f"r{i}"}
                               for i, k in enumerate(row)], 10) for row in ks)
        rows.append(f"| family-wise false recommendation, 10 rungs at the bar | {n} | "
                    f"{c / SIMS:.2%} ({c}/{SIMS}) | ≤ 5% |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(print(table()))
