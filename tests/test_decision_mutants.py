"""Fast tests of documented properties of the decision core (stats.py, decide.py, metrics.py)
that the older unit tests left unchecked; each group was written against mutants that
`make mutation` found alive (docs/decision.md, "Mutation testing"). The documents the decision
returns (power report, baseline rows, confirmation) are checked whole, because their keys and
sentences are what the CLI, the report and users read. No model; a few seconds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from test_baselines import LABELS, run, task

from llm_ladder.decide import (
    _request_costs,
    baselines,
    confirmation,
    more_data,
    power_report,
    should_stop,
    suggestions,
)
from llm_ladder.metrics import JsonMatch, MacroF1, TokenF1, parse_json, values_equal
from llm_ladder.stats import (
    Bca,
    Interval,
    Paired,
    Quality,
    bootstrap_mean,
    bootstrap_stat,
    mean_rows,
    min_margin,
    n_needed,
    p_above_binary,
    power_one_sided,
    sign_flip,
    stat_quality,
)

# ---- power before climbing ------------------------------------------------------------------


def test_power_report_is_the_documented_worked_example():
    """docs/decision.md quotes this sentence for 60 test examples and 7 planned rungs."""
    rep = power_report(task(0.8), 60, 7)
    a = 0.05 / 7
    assert rep == {
        "bar": 0.8, "metric": "accuracy", "n_test": 60, "planned_rungs": 7,
        "alpha_per_rung": a, "power": 0.8, "min_margin": min_margin(60, 0.8, a, 0.8),
        "margins": [{"margin": d, "power": power_one_sided(60, 0.8, d, a),
                     "n_needed": n_needed(0.8, d, a, 0.8)} for d in (0.05, 0.10, 0.15)],
        "sentence": (
            "With 60 test examples and 7 planned rungs (one-sided α = 0.00714 per rung), a "
            "rung is confirmed above the bar 0.800 with 80% power only if its true quality is "
            "at least 0.948 (margin 0.148). margin 0.05 needs 650 test examples; margin 0.10 "
            "needs 144 test examples; margin 0.15 needs 57 test examples.")}


def test_power_report_skips_only_margins_beyond_a_perfect_score():
    # 0.8 + 0.3 > 1 is skipped, the margins after it are still reported; 0.9 + 0.1 = 1 is kept
    rep = power_report(task(0.8), 100, 3, margins=(0.3, 0.05))
    assert [m["margin"] for m in rep["margins"]] == [0.05]
    rep = power_report(task(0.9), 100, 1, margins=(0.1,))
    assert [m["margin"] for m in rep["margins"]] == [0.1]
    assert rep["margins"][0]["n_needed"] is not None


def test_power_report_sentences_name_the_metric_kind():
    exact = "With 200 test examples and 2 planned rungs (one-sided α = 0.025 per rung), "
    for metric in ("accuracy", "exact_match", "normalized_match", "json_valid"):
        s = power_report(task(0.5, metric), 200, 2, margins=())["sentence"]
        assert s.startswith(exact) and s.endswith(")."), (metric, s)
        assert "conservative" not in s and "approximate" not in s
    s = power_report(task(0.5, "macro_f1"), 200, 2, margins=())["sentence"]
    assert s.endswith("(margin 0.102) (approximate for macro-F1).")
    s = power_report(task(0.5, "token_f1"), 200, 2, margins=())["sentence"]
    assert s.endswith(" (conservative for continuous scores).")
    # no margin fits under 1: the sentence ends after the first part, with nothing appended
    s = power_report(task(0.99), 2000, 1)["sentence"]
    assert s.endswith("(margin 0.005).") and "needs" not in s
    assert power_report(task(0.99), 2000, 1)["margins"] == []


def test_power_report_when_nothing_can_be_confirmed_or_no_bar():
    assert power_report(task(0.8), 12, 12)["sentence"] == (
        "With 12 test examples and 12 planned rungs (one-sided α = 0.00417 per rung), no rung "
        "can be confirmed above the bar 0.800 with 80% power, even a perfect one: the decision "
        "cannot be made. margin 0.05 needs 738 test examples; margin 0.10 needs 168 test "
        "examples; margin 0.15 needs 68 test examples.")
    doc = power_report(task(None), 50, 3)
    assert doc == {"bar": None, "metric": "accuracy", "n_test": 50, "planned_rungs": 3,
                   "alpha_per_rung": 0.05 / 3, "power": 0.8, "min_margin": None,
                   "margins": [], "sentence": "No quality bar set: nothing to confirm."}


# ---- trivial baselines --------------------------------------------------------------------


def test_baseline_rows_are_whole_documents():
    refs = {"e000": "yes", "e001": "no", "e002": "maybe", "e003": "yes"}  # "maybe": no label
    rows = baselines(["no", "no", "yes"], refs, "accuracy", LABELS)
    majority = {k: v for k, v in rows[0].items() if k != "predictions"}
    q = majority.pop("quality")
    assert majority == {"rung": "baseline: majority class (no)", "baseline": "majority",
                        "run_id": None, "metric": "accuracy", "n": 4, "scored": 3,
                        "failed": 0, "unscored": 1, "unscored_share": 0.25,
                        "train_share": 2 / 3}
    assert (q["value"], q["n"]) == (pytest.approx(1 / 3), 3)
    assert rows[0]["predictions"][1] == {
        "example_id": "e001", "output": "no", "reference": "no", "score": 1.0,
        "score_reason": None, "details": {"label": "no"}, "error": None}
    assert rows[0]["predictions"][2]["score"] is None
    assert rows[0]["predictions"][2]["score_reason"] == "reference 'maybe' is not one of the " \
        "task's labels"
    uniform = rows[1]
    assert uniform["rung"] == "baseline: uniform random label"
    assert uniform["baseline"] == "uniform" and uniform["train_share"] is None
    assert uniform["unscored"] == 1 and uniform["failed"] == 0
    # the default seed is 0: the same rows as an explicit seed 0, others differ somewhere
    assert baselines(["no"], refs, "accuracy", LABELS, seed=0) == \
        baselines(["no"], refs, "accuracy", LABELS)


def test_baseline_majority_ties_go_to_the_first_task_label():
    refs = {f"e{i}": "yes" for i in range(20)}
    assert baselines(["no", "yes"], refs, "accuracy", ["yes", "no"])[0]["rung"] == \
        "baseline: majority class (yes)"
    assert baselines(["no", "yes"], refs, "accuracy", ["no", "yes"])[0]["rung"] == \
        "baseline: majority class (no)"
    # a task label the train split never shows is still drawn by the uniform baseline
    outs = {p["output"] for p in
            baselines(["no"], refs, "accuracy", ["yes", "no", "maybe"])[1]["predictions"]}
    assert outs == {"yes", "no", "maybe"}


def test_baselines_without_task_labels_use_the_train_outputs():
    refs = {f"e{i}": r for i, r in enumerate(["b", "a", "b", "c"])}
    rows = baselines(["b", "a", "b"], refs, "accuracy")
    assert rows[0]["rung"] == "baseline: majority class (b)"
    assert rows[0]["quality"]["value"] == 0.5 and rows[0]["unscored"] == 0
    assert {p["output"] for p in rows[1]["predictions"]} <= {"a", "b"}
    # macro-F1 keeps the task's labels: a reference outside them is unscored
    mf = baselines(["yes"], {"e0": "yes", "e1": "maybe"}, "macro_f1", LABELS)
    assert mf[0]["unscored"] == 1 and mf[0]["metric"] == "macro_f1"
    assert baselines(["yes"], {}, "accuracy", LABELS) == []
    assert baselines([], refs, "accuracy") == []  # no labels and none seen


# ---- stopping the climb --------------------------------------------------------------------


def test_should_stop_applies_the_baseline_test_with_the_stored_predictions():
    t = task(bar=0.6)
    refs = ["yes"] * 52 + ["no"] * 8
    base = baselines(["yes"] * 90 + ["no"] * 10, {f"e{i:03d}": r for i, r in enumerate(refs)},
                     "accuracy", LABELS)
    always_yes, p1 = run("zero-shot", ["yes"] * 60, refs)  # at the majority baseline
    good, p2 = run("few", refs, refs)
    store = {"zero-shot": p1, "few": p2}.__getitem__
    assert not should_stop(t, [always_yes], 1, store, base)  # above the bar, not the baseline
    assert should_stop(t, [always_yes], 1, store, None)
    assert should_stop(t, [always_yes, good], 2, store, base)
    assert not should_stop(t, [good], 1, None, base)  # no predictions: no baseline test


# ---- the confirmation slice ---------------------------------------------------------------


def test_confirmation_tests_the_slice_predictions_not_the_summary():
    summary, _ = run("few", ["yes"] * 30, ["yes"] * 30)  # the climb's test rows: 30 of 30
    _, slice_preds = run("few", ["yes"] * 10, ["yes"] * 10)  # the held-back rows: 10 of 10
    doc = confirmation(task(), summary, slice_preds)
    assert doc == {
        "rung": "few", "confirmed": False, "p_bar": pytest.approx(0.8**10),
        "quality": {"value": 1.0, "low": pytest.approx(0.6915029), "high": 1.0, "n": 10,
                    "method": "exact binomial (Clopper–Pearson)"},
        "reason": "few on the confirmation slice: 1.000 [0.692, 1.000], one-sided p=0.107 "
                  "against the bar 0.800 — not confirmed."}
    # without slice predictions it falls back to the summary (30 of 30)
    doc = confirmation(task(), summary)
    assert doc["confirmed"] and doc["p_bar"] == pytest.approx(0.8**30)
    assert doc["reason"].endswith("one-sided p=0.00124 against the bar 0.800 — confirmed.")
    assert confirmation(task(), summary, [])["reason"] == \
        "no test possible on the confirmation slice"


def test_confirmation_level_is_inclusive_and_needs_a_test():
    one, preds = run("few", ["yes"], ["yes"])
    doc = confirmation(task(bar=0.025), one, preds)  # p = 0.025 exactly: p ≤ 0.025 passes
    assert doc["p_bar"] == 0.025 and doc["confirmed"]
    nobar = confirmation(task(bar=None), one, preds)
    assert nobar["p_bar"] is None and not nobar["confirmed"]
    assert nobar["reason"] == "no test possible on the confirmation slice"
    # a continuous summary without predictions or a stored p-value: no test
    cont = {"rung": "rag", "quality": {"value": 0.7, "low": 0.6, "high": 0.8, "n": 40,
                                       "method": "BCa bootstrap"}}
    doc = confirmation(task(bar=0.5), cont)
    assert doc["p_bar"] is None and not doc["confirmed"]
    assert doc["reason"] == "no test possible on the confirmation slice"


# ---- per-request costs for the break-even interval ------------------------------------------


def _priced(price: dict):
    from llm_ladder.task import Task

    return Task.model_validate({"name": "t", "bar": 0.8, "data": {"examples": ["x.jsonl"]},
                                "metric": {"name": "accuracy"},
                                "prices": {"default": price}})


def test_request_costs_price_each_request():
    s = {"model": "default"}
    tok = _priced({"input_per_1m": 1.0, "output_per_1m": 2.0})
    preds = [{"tokens_in": 100, "tokens_out": 10}, {"tokens_in": None, "tokens_out": 5},
             {"tokens_in": 40}]
    assert _request_costs(tok, s, preds) == pytest.approx([120e-6, 10e-6, 40e-6])
    hour = _priced({"usd_per_hour": 3600.0})  # $1 per compute second
    preds = [{"details": {"compute_s": 0.5}, "latency_s": 9.0}, {"latency_s": 2.0},
             {"details": None, "latency_s": None}]
    assert _request_costs(hour, s, preds) == pytest.approx([0.5, 2.0, 0.0])
    assert _request_costs(hour, s, []) is None
    assert _request_costs(hour, {"model": None}, preds) is None
    assert _request_costs(hour, {"model": "other"}, preds) is None  # no such model
    assert _request_costs(_priced({}), s, preds) is None  # no price: unknown, never guessed


# ---- "more test data" advice ------------------------------------------------------------------


def test_more_data_is_the_documented_sentence():
    s, _ = run("few-shot-random", ["yes"] * 55 + ["no"] * 5, ["yes"] * 60)
    t = task()
    assert more_data(t, s, s["quality"], 7) == [
        "few-shot-random's estimate 0.917 is above the bar but not confirmed with 60 test "
        "examples; if its quality holds, about 105 test examples give the corrected test "
        "(7 planned rungs) 80% power (more data)."]
    # a margin too small for 100,000 examples; the held-back rows are named
    tiny = {"value": 0.8001, "n": 60}
    assert more_data(t, s, tiny, 7, capped_test=74) == [
        "few-shot-random's estimate 0.800 is above the bar but not confirmed with 60 test "
        "examples; if its quality holds, more than 100,000 test examples give the corrected "
        "test (7 planned rungs) 80% power (more data). 74 test rows held back by "
        "split.max_test have not been looked at: use them as a fresh confirmation slice and "
        "decide on them alone, not pooled with these."]
    # n from the quality, else from the summary, else 0
    assert "with 40 test examples" in more_data(t, {"rung": "r", "n": 40}, {"value": 0.9}, 1)[0]
    assert "with 0 test examples" in more_data(t, {"rung": "r"}, {"value": 0.9}, 1)[0]
    # nothing to add at or below the bar, without a value, or without a bar
    assert more_data(t, s, {"value": 0.8, "n": 60}, 7) == []
    assert more_data(t, s, {"value": None, "n": 60}, 7) == []
    assert more_data(task(bar=None), s, s["quality"], 7) == []


def test_generation_failures_alone_give_one_suggestion():
    analysis = {"categories": {"generation failed": 10}, "failed": 10, "format_errors": 0,
                "truncated": 0, "unscored": {}}
    assert suggestions(task(), {"rung": "rag"}, analysis, ["rag"]) == [
        "10 generation(s) of rag failed (an error instead of an answer: context overflow, "
        "timeout, server error); they count as wrong. Check the stored errors: a shorter "
        "prompt, a larger context_length or more retries."]


# ---- BCa inversion, intervals of corpus statistics, descriptive bootstraps -------------------


def test_bca_p_value_formula_ties_and_clipping():
    boot = np.array([0.1, 0.2, 0.2, 0.3])
    plain = Bca(0.2, boot, 0.0, 0.0, 4)
    assert plain.p_greater(0.2) == pytest.approx(0.5)  # ties with the bar count half
    assert plain.p_greater(0.25) == pytest.approx(0.75)
    assert plain.p_greater(0.05) == pytest.approx(0.125)  # clipped at half a resample
    assert plain.p_greater(0.5) == pytest.approx(0.875)
    # bias correction and acceleration: p = Φ(u / (1 + a·u) − z0), u = Φ⁻¹(g) − z0
    for z0, a in ((0.1, 0.0), (0.1, 0.05), (-0.2, -0.1)):
        u = norm.ppf(0.75) - z0
        want = norm.cdf(u / (1 + a * u) - z0)
        assert Bca(0.2, boot, z0, a, 4).p_greater(0.25) == pytest.approx(want)
    # the bar beyond what the transformation reaches: 1 above (u > 0), 0 below (u < 0)
    assert Bca(0.2, boot, -0.5, -2.0, 4).p_greater(0.2) == 1.0  # u = 0.5, 1 + a·u = 0
    assert Bca(0.2, boot, -0.5, -4.0, 4).p_greater(0.2) == 1.0  # u = 0.5, 1 + a·u < 0
    assert Bca(0.2, boot, 1.0, 2.0, 4).p_greater(0.2) == 0.0   # u = -1, 1 + a·u < 0


def test_stat_quality_of_a_corpus_statistic():
    x = np.random.default_rng(3).beta(2, 3, 40)
    q = stat_quality(mean_rows(x), 40, bar=0.3)
    assert q == stat_quality(mean_rows(x), 40, bar=0.3, seed=0)  # seeded: stable reports
    assert q.interval.method == "BCa bootstrap" and q.interval.n == 40
    assert q.interval.value == pytest.approx(x.mean())
    assert q.interval.low < x.mean() < q.interval.high and q.p_bar is not None
    assert stat_quality(mean_rows(x), 40).p_bar is None  # no bar, no test
    assert stat_quality(mean_rows(x), 0, bar=0.3) == Quality(
        Interval(None, None, None, 0, "none"), None)
    one = stat_quality(mean_rows(np.array([0.7])), 1, bar=0.5, method="m")
    assert (one.interval.value, one.interval.n, one.interval.method, one.p_bar) == \
        (0.7, 1, "m", 0.0)


def _percentile_reference(x, resamples, level, seed):
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    return np.quantile(means, (1 - level) / 2), np.quantile(means, 1 - (1 - level) / 2)


def test_descriptive_percentile_bootstraps_follow_their_definition():
    """The percentile helpers (sub-scores only): 2,000 (mean) and 1,000 (statistic) seeded
    resamples, the (1 − level) / 2 quantiles of the resampled values."""
    x = np.random.default_rng(5).exponential(1.0, 25)
    iv = bootstrap_mean(list(x))
    assert (iv.low, iv.high) == pytest.approx(_percentile_reference(x, 2000, 0.95, 0))
    iv90 = bootstrap_mean(list(x), level=0.9, seed=2)
    assert (iv90.low, iv90.high) == pytest.approx(_percentile_reference(x, 2000, 0.9, 2))
    # every example can be drawn, the first one included
    assert bootstrap_mean([10.0, 0, 0, 0]).high > 0
    iv = bootstrap_stat(25, lambda idx: float(x[idx].mean()))
    rng = np.random.default_rng(0)
    draws = [x[rng.integers(0, 25, size=25)].mean() for _ in range(1000)]
    assert (iv.low, iv.high) == pytest.approx(tuple(np.quantile(draws, [0.025, 0.975])))
    assert iv.value == pytest.approx(x.mean()) and iv.n == 25
    assert bootstrap_stat(4, lambda idx: float(np.asarray([10.0, 0, 0, 0])[idx].mean())).high > 0
    # a statistic that is undefined on some resamples: those draws are left out
    none_on_zero = bootstrap_stat(3, lambda idx: None if 0 in idx else 1.0, resamples=50)
    assert (none_on_zero.low, none_on_zero.high) == (1.0, 1.0)


def test_min_margin_edges():
    assert min_margin(1, 0.01, 0.025) == pytest.approx(0.79)  # one example can decide
    assert min_margin(0, 0.5, 0.025) is None
    # power 1 is reached only near a perfect rung, but it is reached
    assert 0.19 < min_margin(100, 0.8, 0.005, power=1.0) <= 0.2


# ---- metrics: corpus macro-F1 encoding, token F1, JSON ---------------------------------------


def test_macro_f1_encoding_fixes_the_label_set():
    m = MacroF1(labels=["a", "b", "c"])
    # the task's labels that occur among references or predictions, in the task's order
    assert m.encode(["b", "a"], [" a ", "a"]) == ([0, 0], [1, 0], ["a", "b"])
    assert m.corpus(["b", "a"], ["a", "a"]) == pytest.approx((2 / 3 + 0) / 2)
    free = MacroF1()  # no task labels: the normalized references, sorted
    assert free.encode(["Yes", "maybe"], ["yes!", "No"]) == ([1, 0], [1, 2], ["no", "yes"])
    assert free.corpus([], []) is None


def test_token_f1_counts_repeated_tokens_once_each():
    f = TokenF1()
    assert f.score("the", "the the").value == pytest.approx(2 / 3)
    assert f.score("the the", "the the").value == 1.0
    assert f.score("the the cat", "the cat").value == pytest.approx(0.8)
    assert f.score("the the the", "the").value == pytest.approx(0.5)


def test_json_is_found_inside_prose():
    assert parse_json('The answer is {"a": {"b": 1}} as asked.') == ({"a": {"b": 1}}, None)
    assert parse_json('x{"a": 1} y') == ({"a": 1}, None)
    assert parse_json("Values: [1, 2] done") == ([1, 2], None)
    assert parse_json("no json here") == (None, "output is not valid JSON")


def test_values_equal_tolerances_and_types():
    assert values_equal(1e12, 1e12 + 1)  # relative tolerance for large numbers
    assert not values_equal(0.0, 1.5e-9)  # absolute 1e-9 near zero
    assert values_equal(0.0, 0.5e-9)
    assert not values_equal(["a"], "a") and not values_equal("a", ["a"])
    assert not values_equal({"a": 1}, ["a"]) and not values_equal(["a"], {"a": 1})
    assert values_equal([1, "X"], [1.0, "x"]) and not values_equal([1], [1, 1])


def test_json_match_reports_at_most_three_schema_errors():
    schema = {"type": "object", "properties": {k: {"type": "integer"} for k in "abcde"}}
    s = JsonMatch(schema=schema).score('{"a": "x", "b": "x", "c": "x", "d": "x", "e": "x"}',
                                       '{"a": 1}')
    assert s.value == 0.0 and len(s.details["schema_errors"]) == 3


# ---- suggestions when no rung meets the bar ---------------------------------------------------


def _analysis(categories: dict[str, int], fmt: int, truncated: int = 0,
              unscored: dict[str, int] | None = None) -> dict:
    return {"categories": categories, "failed": sum(categories.values()),
            "format_errors": fmt, "truncated": truncated, "unscored": unscored or {}}


def test_suggestions_when_half_or_more_failures_are_format_errors():
    few = {"rung": "few"}
    label_fmt = "format error (output names no label)"
    assert suggestions(task(), few, _analysis({label_fmt: 2, "wrong label": 2}, 2),
                       ["zero-shot"]) == [
        f"2 of 4 failures of few are format errors ({label_fmt}): the model does not produce "
        "the expected form; rungs that teach the form by example have not run yet: try "
        "few-shot-nearest or lora."]
    text = {"empty output": 1, "truncated (hit max_tokens)": 1, "wrong answer": 2}
    assert suggestions(task(metric="token_f1"), few, _analysis(text, 2, truncated=1),
                       ["few-shot-nearest", "lora"]) == [
        "2 of 4 failures of few are format errors (empty output, truncated (hit max_tokens)): "
        "the model does not produce the expected form; few-shot-nearest and lora ran and did "
        "not teach it: more or cleaner train examples (`ladder check` lists conflicting and "
        "likely mislabelled ones), or a larger model; truncated outputs need a larger "
        "generation.max_tokens."]
    # fewer than half: the failures are well-formed but wrong
    assert suggestions(task(), few, _analysis({label_fmt: 1, "wrong label": 2}, 1),
                       ["few-shot-nearest"]) == [
        "2 of 3 failures of few are well-formed but wrong answers: a mapping the model has not "
        "learned; try lora, which learn the mapping from the train examples."]


def test_suggestions_for_wrong_answers_follow_what_ran():
    few, wrong = {"rung": "few"}, _analysis({"wrong answer": 3}, 0)
    head = ("3 of 3 failures of few are well-formed but wrong answers: a knowledge gap or a "
            "mapping the model has not learned; ")
    learn = ("if they follow from examples, try few-shot-nearest or lora, which learn the "
             "mapping from the train examples.")
    t = task(metric="token_f1")
    assert suggestions(t, few, wrong, ["zero-shot"]) == [
        head + "if the answers are in documents, add a [corpus] and run the RAG rungs; " + learn]
    rag = head + "the RAG rungs did not close it, so check retrieval (recall@k); "
    assert suggestions(t, few, wrong, ["rag"]) == [rag + learn]
    assert suggestions(t, few, wrong, ["few-shot-rag", "few-shot-nearest", "lora"]) == [
        rag + "if they follow from examples, few-shot-nearest and lora ran: more labelled "
        "examples, or cleaner ones (`ladder check` lists conflicting and likely mislabelled "
        "ones)."]
    assert suggestions(task(), few, _analysis({}, 0, unscored={"reference is empty": 2,
                                                               "bad ref": 1}), []) == [
        "3 prediction(s) of few could not be scored (reference is empty: 2; bad ref: 1); fix "
        "that before trusting the comparison."]


# ---- the power computation's critical count --------------------------------------------------


def test_critical_k_is_the_smallest_count_whose_exact_tail_is_within_alpha():
    from scipy.stats import binom

    from llm_ladder.stats import critical_k

    def brute(n, bar, alpha):
        tails = binom.sf(np.arange(-1, n), n, bar)  # P(X ≥ k) for k = 0..n
        ok = np.nonzero(tails <= alpha)[0]
        return int(ok[0]) if ok.size else None

    cases = [(n, bar, alpha) for n in (1, 2, 3, 5, 8, 12, 30, 60, 200)
             for bar in (0.025, 0.3, 0.5, 0.8, 0.95)
             for alpha in (0.001, 0.00714, 0.025, 0.05, 0.25, 1.0)]
    cases += [(1, 0.025, 0.025), (2, 0.5, 0.25), (3, 0.5, 0.125)]  # α equal to a tail
    for n, bar, alpha in cases:
        assert critical_k(n, bar, alpha) == brute(n, bar, alpha), (n, bar, alpha)


# ---- the break-even interval in the recommendation --------------------------------------------


def test_break_even_interval_includes_the_retraining_upkeep(tmp_path):
    """Constant per-request costs: the resampled interval collapses onto the point estimate,
    which spreads the yearly re-training over the requests of a day (upkeep included)."""
    from test_decide import answers, make_task, store_run

    from llm_ladder.decide import decide
    from llm_ladder.store import Store
    from llm_ladder.task import load_task

    t = load_task(make_task(tmp_path / "t", budget="requests_per_day = 1000\n"
                                                   "base_model_upgrades_per_year = 2"))
    store = Store(t.state_dir / "runs.db")
    few = store_run(store, t, "few-shot-nearest", answers(200, set(range(24))), latency=0.5)
    lora = store_run(store, t, "lora", answers(200, set(range(4))), latency=0.1,
                     one_time={"seconds": 600.0, "usd": 0.5, "what": "LoRA training"})
    rec = decide(t, [few, lora], store.predictions,
                 {r["id"]: r["config"] for r in store.list_runs()})
    assert rec["rung"] == "lora"
    saving = (0.5 - 0.1) * 0.10 / 3600 - 2 * 0.5 / (365 * 1000)  # minus lora's upkeep
    point = f"{0.5 / saving:,.0f}"
    assert f"after {point} requests (95% interval {point} to {point})" in rec["reason"]


# ---- error analysis ---------------------------------------------------------------------------


def _p(i: int, score: float | None, out: str = "x", ref: str = "yes", **details) -> dict:
    return {"example_id": f"e{i:02d}", "output": out, "reference": ref, "score": score,
            "score_reason": details.pop("reason", None), "details": details, "error": None}


def test_correct_is_a_score_of_at_least_one_half():
    from llm_ladder.decide import correct

    assert correct(0.5) is True and correct(0.49) is False and correct(None) is None


def test_error_analysis_of_a_label_run_is_a_whole_document():
    from llm_ladder.decide import error_analysis

    preds = [_p(0, None, reason=None), _p(1, None, reason="bad reference")]
    preds += [_p(2, 1.0, label="yes"), _p(3, 0.0, label=None, finish_reason="length")]
    # seven wrong labels, six distinct confusions (one twice): the top five are kept
    wrong = ["no", "no", "a", "b", "c", "d", "e"]
    preds += [_p(4 + i, 0.0, ref="yes", label=w) for i, w in enumerate(wrong)]
    preds.append(_p(11, None, reason="bad reference"))
    doc = error_analysis(preds, "accuracy")
    assert doc == {
        "kind": "label", "n": 12, "failed": 8,
        "categories": {"format error (output names no label)": 1, "wrong label": 7},
        "examples": {"format error (output names no label)": ["e03"],
                     "wrong label": ["e04", "e05", "e06", "e07", "e08"]},
        "format_errors": 1, "truncated": 1,
        "unscored": {"no reason": 1, "bad reference": 2},
        "confusions": {"yes → no": 2, "yes → a": 1, "yes → b": 1, "yes → c": 1,
                       "yes → d": 1},
        "wrong_fields": {}}


def test_error_analysis_of_json_and_text_runs():
    from llm_ladder.decide import error_analysis

    fields = lambda bad: {f: f not in bad for f in "abcdef"}  # noqa: E731
    preds = [_p(0, 0.0, error="output is not valid JSON"),  # json_valid's details
             _p(1, 0.0, valid_json=False),
             _p(2, 0.0, valid_json=True, schema_errors=["x"]),
             _p(3, 0.4, valid_json=True, fields=fields("abcdef")),
             _p(4, 0.4, valid_json=True, fields=fields("abcde")),
             _p(5, 0.4, valid_json=True, fields=fields("ab"))]
    doc = error_analysis(preds, "json_match")
    assert doc["categories"] == {"invalid JSON": 2, "schema violation": 1, "wrong values": 3}
    assert doc["wrong_fields"] == {"a": 3, "b": 3, "c": 2, "d": 2, "e": 2}
    assert doc["confusions"] == {} and doc["format_errors"] == 3
    text = [_p(0, 0.0, out=" "), _p(1, 0.2, finish_reason="length"),
            _p(2, 0.0, finish_reason="length"), _p(3, 0.3), _p(4, 0.0),
            _p(5, 0.0, finish_reason="stop")]
    doc = error_analysis(text, "token_f1")
    assert doc["categories"] == {"empty output": 1, "truncated (hit max_tokens)": 2,
                                 "low overlap": 1, "wrong answer": 2}
    assert doc["truncated"] == 2 and doc["examples"]["wrong answer"] == ["e04", "e05"]


# ---- sign-flip permutation test ----------------------------------------------------------------


def _sign_flip_reference(x: np.ndarray, seed: int = 0, draws: int = 20000):
    """Exact enumeration up to 16 non-zero differences, else (hits + 1) / (draws + 1) over
    seeded random sign patterns; a permuted sum equal to the observed one counts as a hit."""
    obs = x.sum()
    if x.size <= 16:
        signs = 1 - 2 * ((np.arange(2**x.size)[:, None] >> np.arange(x.size)) & 1)
        sums = signs @ x
        return (np.mean(np.abs(sums) >= abs(obs) - 1e-9), np.mean(sums >= obs - 1e-9))
    sums = (np.random.default_rng(seed).integers(0, 2, size=(draws, x.size)) * 2 - 1) @ x
    return ((np.sum(np.abs(sums) >= abs(obs) - 1e-9) + 1) / (draws + 1),
            (np.sum(sums >= obs - 1e-9) + 1) / (draws + 1))


def test_sign_flip_counts_ties_and_uses_the_monte_carlo_formula():
    # integer differences: many permuted sums equal the observed one (ties are hits)
    big = np.array([1.0] * 14 + [-1.0] * 6 + [2.0] * 4)  # 24 non-zero: Monte Carlo
    assert sign_flip(big) == pytest.approx(_sign_flip_reference(big))
    assert sign_flip(big) == sign_flip(big, seed=0)
    sixteen = np.array([1.0] * 11 + [-1.0] * 5)  # exactly 16: still enumerated
    assert sign_flip(sixteen) == pytest.approx(_sign_flip_reference(sixteen))
    small = np.array([1.0, 1.0, -1.0, 2.0, 0.0])
    assert sign_flip(small) == pytest.approx(_sign_flip_reference(small[small != 0]))
    assert sign_flip([0.3]) == (1.0, 0.5)  # one difference: either sign, half the time
    assert sign_flip([0.0, 0.0]) == (1.0, 1.0)


def test_power_beyond_a_perfect_score_is_the_power_of_a_perfect_rung():
    assert power_one_sided(50, 0.9, 0.2, 0.05) == power_one_sided(50, 0.9, 0.1, 0.05) == 1.0


# ---- small documents and edge cases ------------------------------------------------------------


def test_cost_text_names_the_one_time_and_recurring_work():
    from llm_ladder.costs import Ownership
    from llm_ladder.decide import cost_text

    assert cost_text(Ownership("r", 0.0, one_time_s=300.0)) == "5 min of one-time work"
    assert cost_text(Ownership("r", 0.0, one_time_what="indexing (not measured)",
                               recurring_what="re-indexing")) == \
        "indexing (not measured) plus re-indexing"
    assert cost_text(Ownership("r", 0.0)) == ""


def test_paired_test_documents_and_the_binary_choice():
    from llm_ladder.stats import Paired, newcombe_paired, paired_test

    assert paired_test([], []) == Paired("none", 0, None, None, None, None, None, 1.0)
    # both runs must be 0/1 for McNemar; one continuous run gives the sign-flip test
    assert paired_test([1, 0, 1], [0.5, 0.2, 0.9]).test == "sign-flip permutation"
    assert paired_test([0.5, 0.2, 0.9], [1, 0, 1]).test == "sign-flip permutation"
    a = [1, 1, 1, 0, 0, 0, 1, 0, 1, 1]
    b = [1, 1, 0, 1, 1, 0, 1, 0, 1, 1]  # both 5, A only 1, B only 2, neither 2
    t = paired_test(a, b)
    assert (t.low, t.high) == newcombe_paired(5, 2, 1, 2)
    rng = np.random.default_rng(2)
    x, y = rng.uniform(0, 1, 40), rng.uniform(0, 1, 40)  # 40 differences: Monte Carlo
    assert paired_test(x, y) == paired_test(x, y, seed=0)


def test_more_data_counts_the_examples_of_the_quality():
    s = {"rung": "r", "n": 70}
    assert "with 60 test examples" in more_data(task(), s, {"value": 0.9, "n": 60}, 1)[0]


def test_output_kind_defaults_to_text():
    from llm_ladder.metrics import output_kind

    assert output_kind("token_f1") == "text" and output_kind("no-such-metric") == "text"
    assert output_kind("accuracy") == "label" and output_kind("json_match") == "json"


def test_macro_f1_keeps_case_sensitive_task_labels():
    assert MacroF1(labels=["Yes", "No"]).encode(["Yes"], [" Yes"]) == ([0], [0], ["Yes"])


def test_json_right_after_a_closing_brace_and_tolerance_boundary():
    assert parse_json('x{"a": 1}.') == ({"a": 1}, None)
    assert values_equal(0.0, 1e-9)  # the tolerance is inclusive


# ---- paired tests: the document, the one-sided p, and what `pair` counts -----------------

def test_paired_document_names_every_field():
    from llm_ladder.stats import paired_test

    t = paired_test([1, 0, 1, 0, 1, 1], [1, 1, 1, 1, 0, 1])
    d = t.as_dict()
    assert set(d) == {"test", "n", "mean_a", "mean_b", "diff", "low", "high", "p_value",
                      "significant", "a_only", "b_only", "p_greater", "interval"}
    assert (d["mean_a"], d["mean_b"], d["a_only"], d["b_only"]) == (4 / 6, 5 / 6, 1, 2)
    assert d["low"] < d["diff"] < d["high"] and d["interval"] == "Newcombe hybrid score"
    assert d["p_value"] == t.p_value and d["significant"] is t.significant


def test_one_sided_mcnemar_p_with_ties_and_without_discordant_pairs():
    from llm_ladder.stats import paired_test

    tied = paired_test([1, 0, 1], [0, 1, 1])  # one discordant pair each way
    assert tied.p_greater == pytest.approx(0.75)  # P(X >= 1), X ~ Bin(2, 1/2)
    same = paired_test([1, 0, 1], [1, 0, 1])  # no discordant pair: nothing favours B
    assert same.p_greater == 1.0 and same.p_value == 1.0


def test_test_text_names_each_test_and_passes_unknown_names_through():
    from llm_ladder.decide import test_text
    from llm_ladder.stats import Paired, paired_test

    assert test_text(paired_test([0.1, 0.5, 0.2], [0.4, 0.6, 0.9])).startswith(
        "sign-flip permutation test one-sided p=")
    base = dict(n=3, mean_a=0.1, mean_b=0.2, diff=0.1, low=-0.1, high=0.3, p_value=0.5,
                p_greater=0.25)
    assert test_text(Paired("permutation (macro-F1)", **base)).startswith(
        "paired permutation test of macro-F1 one-sided p=0.25 (two-sided p=0.5)")
    assert test_text(Paired("some new test", **base)).startswith("some new test one-sided")


def test_pair_counts_failed_generations_by_the_metric_and_scores_macro_f1_per_side():
    from llm_ladder.decide import pair

    def p(i, out, ref, score, error=None):
        return {"example_id": i, "output": out, "reference": ref, "score": score,
                "error": error, "finish_reason": "error" if error else "stop"}

    class Unscorable:  # a reference the metric cannot score: the failure is not counted
        def score(self, output, reference):
            return type("S", (), {"value": None})()

    a = [p("1", "x", "x", 1.0), p("2", "", "y", None, "boom")]
    b = [p("1", "x", "x", 1.0), p("2", "y", "y", 1.0)]
    assert pair(a, b).n == 2  # without a metric the failure counts as wrong
    assert pair(a, b, metric=Unscorable()).n == 1
    # macro-F1 of each side over the same examples; a failed generation predicts nothing
    refs = ["alpha", "beta", "alpha", "beta"]
    a = [p(str(i), r, r, 1.0) for i, r in enumerate(refs)]
    b = [p(str(i), "alpha", r, float(r == "alpha")) for i, r in enumerate(refs)]
    two = pair(a, b, "macro_f1", ["alpha", "beta"])
    assert two.test == "permutation (macro-F1)" and two.mean_a == 1.0
    assert two.mean_b == pytest.approx(1 / 3)  # F1(alpha) 2/3, F1(beta) 0
    failed = [p("0", "", "alpha", None, "boom")] + a[1:]
    assert pair(failed, b, "macro_f1", ["alpha", "beta"]).mean_a < two.mean_a


# ---- the whole recommendation: replacement, notes, comparisons, configs --------------------

FLIP = {"yes": "no", "no": "yes"}
REFS60 = ["yes"] * 30 + ["no"] * 30


def _wrong_on(wrong: set[int], refs: list[str] = REFS60) -> list[str]:
    return [FLIP[r] if i in wrong else r for i, r in enumerate(refs)]


def _climb():
    """Seven rungs on 60 examples (bar 0.6, 7 planned): zero-shot 48/60; few-shot 58/60 with
    its 2 errors among zero-shot's 12; rag passes without stored predictions; lora 59/60 (one
    discordant pair); distill = few-shot; other shares no example ids; weak 30/60."""
    from llm_ladder.decide import decide

    z, pz = run("zero-shot", _wrong_on(set(range(12))), REFS60)
    f, pf = run("few-shot", _wrong_on({0, 1}), REFS60)
    r, _ = run("rag", _wrong_on({0, 1, 2}), REFS60)
    lo, pl = run("lora", _wrong_on({0}), REFS60)
    d, pd = run("distill", _wrong_on({0, 1}), REFS60)
    o, po = run("other", REFS60, REFS60)
    w, pw = run("weak", _wrong_on(set(range(0, 60, 2))), REFS60)
    r["rag"] = True
    lo["one_time"] = {"seconds": 600, "what": "fine-tuning"}
    po = [{**p, "example_id": "x" + p["example_id"]} for p in po]
    store = {"zero-shot": pz, "few-shot": pf, "lora": pl, "distill": pd, "other": po,
             "weak": pw}
    configs = {"few-shot": {"model": {"key": "m"}, "settings": {"k": 4},
                            "params": {"temperature": 0}},
               "rag": {"index": {"count": 42}}}
    return decide(task(0.6), [z, f, r, lo, d, o, w], store.get, configs, planned=7)


def test_a_significantly_better_rung_replaces_the_cheapest_and_the_reason_says_why():
    doc = _climb()
    assert (doc["rung"], doc["run_id"], doc["meets_bar"]) == ("few-shot", "few-shot", True)
    assert (doc["model_info"], doc["settings"], doc["params"]) == (
        {"key": "m"}, {"k": 4}, {"temperature": 0})  # from the chosen run's config
    assert doc["reason"] == (
        "Ship few-shot on model None. zero-shot reaches 0.800 [0.677, 0.892] above the bar "
        "0.600 (one-sided p=0.00081, Holm over 7 planned rungs at family-wise α=0.05), no "
        "budget set; it is the cheapest rung that does. few-shot reaches 0.967 [0.885, 0.996] "
        "and is significantly better (McNemar one-sided p=0.000977 (two-sided p=0.00195), "
        "difference +0.167 [+0.076, +0.278] on 60 paired examples; needs p ≤ 0.00833), so the "
        "higher rung is worth it; break-even unknown (a one-time or per-request cost is not "
        "measured).")
    assert doc["decision"]["planned_rungs"] == 7
    assert doc["decision"]["alpha_compare"] == pytest.approx(0.05 / 6)


def test_dearer_rungs_that_do_not_replace_the_candidate_each_get_a_note():
    notes = _climb()["notes"]
    assert notes[1:] == [
        # no stored predictions: no paired test, the cheaper rung stays (and the later rungs
        # are still compared)
        "rag also meets the bar at 0.950 [0.861, 0.990]; no stored predictions to test the "
        "difference, so the cheaper few-shot stays and it costs indexing the corpus (42 "
        "chunks; time not measured: `ladder index` does not record it yet) plus re-indexing "
        "changed documents (only changed chunks are embedded).",
        # better, not significantly: no "no better"; its one-time cost is named
        "lora reaches 0.983 [0.911, 1.000] but is not shown better (McNemar one-sided p=0.5 "
        "(two-sided p=1), difference +0.017 [-0.041, +0.088] on 60 paired examples; needs "
        "p ≤ 0.00833) and it costs 10 min of fine-tuning plus re-training on every base-model "
        "upgrade (set budget.base_model_upgrades_per_year to count it); the cheaper few-shot "
        "wins.",
        # the same answers: a difference of 0 is "no better"; nothing to pay for, no cost text
        "distill reaches 0.967 [0.885, 0.996] but is not shown better (McNemar one-sided p=1 "
        "(two-sided p=1), difference +0.000 [-0.056, +0.056] on 60 paired examples; needs "
        "p ≤ 0.00833), and it is no better; the cheaper few-shot wins.",
        "other also meets the bar but shares no scored test examples with few-shot; the "
        "cheaper one stays."]
    assert notes[0].startswith("weak: 0.500 [0.368, 0.632] — not shown above the bar 0.600")


def test_the_chosen_rung_is_compared_once_with_every_rung_that_has_predictions():
    comps = _climb()["comparisons"]
    assert [(c["a"], c["b"], c["n"]) for c in comps] == [
        ("zero-shot", "few-shot", 60), ("few-shot", "lora", 60), ("few-shot", "distill", 60),
        ("few-shot", "other", 0), ("few-shot", "zero-shot", 60), ("few-shot", "weak", 60)]
    assert (comps[4]["a_only"], comps[4]["b_only"], comps[4]["diff"]) == (
        10, 0, pytest.approx(-1 / 6))


def test_the_reason_names_the_majority_baseline_test_after_the_bar_test():
    from llm_ladder.decide import decide

    refs = ["yes"] * 52 + ["no"] * 8
    base = baselines(["yes"] * 90 + ["no"] * 10, {f"e{i:03d}": r for i, r in enumerate(refs)},
                     "accuracy", LABELS)
    good, preds = run("few", refs, refs)
    doc = decide(task(0.6), [good], {"few": preds}.get, planned=1, baselines=base)
    assert doc["reason"] == (
        "Ship few on model None. few reaches 1.000 [0.940, 1.000] above the bar 0.600 "
        "(one-sided p=4.89e-14, Holm over 1 planned rungs at family-wise α=0.05), no budget "
        "set; it is the cheapest rung that does. It beats the majority-class baseline "
        "(one-sided p=0.00391).")  # 8 discordant pairs, all for the rung: 0.5 ** 8


# ---- no recommendation: the document, the closest rung, the advice -------------------------


def _two_short_rungs():
    z, pz = run("zero-shot", _wrong_on(set(range(20))), REFS60)  # 40/60
    f, pf = run("few-shot", _wrong_on(set(range(15))), REFS60)  # 45/60, errors among z's
    return [z, f], {"zero-shot": pz, "few-shot": pf}.get


def test_no_rung_meets_the_bar_document():
    from llm_ladder.decide import decide

    summaries, store = _two_short_rungs()
    doc = decide(task(0.7), summaries, store, planned=3, capped_test=40)
    assert (doc["rung"], doc["run_id"], doc["meets_bar"], doc["closest"]) == (
        None, None, False, "few-shot")
    assert doc["reason"] == ("No rung meets the bar with the corrected test within budget; "
                             "the closest is few-shot at 0.750 [0.621, 0.853] against the bar "
                             "0.700.")
    # the closest rung against the others, never against itself
    assert [(c["a"], c["b"], c["b_only"], c["a_only"]) for c in doc["comparisons"]] == [
        ("few-shot", "zero-shot", 0, 5)]
    more = ("few-shot's estimate 0.750 is above the bar but not confirmed with 60 test "
            "examples; if its quality holds, about {n} test examples give the corrected test "
            "(3 planned rungs) 80% power (more data).")
    need = n_needed(0.7, 0.75 - 0.7, 0.05 / 3, 0.8)
    held = (" 40 test rows held back by split.max_test have not been looked at: use them as "
            "a fresh confirmation slice and decide on them alone, not pooled with these.")
    assert doc["suggestions"] == [
        "15 of 15 failures of few-shot are well-formed but wrong answers: a mapping the model "
        "has not learned; try few-shot-nearest or lora, which learn the mapping from the train "
        "examples.", more.format(n=need) + held]
    # no capped rows (the default): nothing held back is mentioned
    assert decide(task(0.7), summaries, store, planned=3)["suggestions"][1] == \
        more.format(n=need)
    assert doc["decision"]["planned_rungs"] == 3 and doc["error_analysis"]["failed"] == 15


def test_no_bar_and_nothing_scored_reasons():
    from llm_ladder.decide import decide

    summaries, _ = _two_short_rungs()
    doc = decide(task(None), summaries, planned=3)
    assert doc["reason"] == ("No quality bar set in task.toml; showing the comparison only; "
                             "the closest is few-shot at 0.750 [0.621, 0.853].")
    assert doc["suggestions"] == [] and doc["comparisons"] == []
    empty = {"rung": "x", "run_id": None, "quality": {"value": None, "low": None,
                                                      "high": None, "n": 0}}
    doc = decide(task(0.8), [empty])
    assert (doc["closest"], doc["run_id"], doc["suggestions"]) == (None, None, [])
    assert doc["reason"] == "No rung meets the bar with the corrected test within budget."
    assert doc["notes"] == ["x: nothing could be scored"]


# ---- the per-rung checks: budgets, unscored share, judge trust -----------------------------


def _budget(**budget):
    from llm_ladder.task import Task

    return Task.model_validate({"name": "t", "bar": 0.6, "data": {"examples": ["x.jsonl"]},
                                "metric": {"name": "accuracy"}, "budget": budget})


def test_budgets_are_inclusive_and_their_sentences_name_both_numbers():
    from llm_ladder.decide import budget_check

    both = _budget(latency_p95_ms=2500, cost_per_1k_usd=0.01)
    assert budget_check(both, {"latency_p95_s": 2.0, "cost_per_1k_usd": 0.01}) == (
        True, "within budget (batch p95 2000 ms ≤ 2500 ms, this run having no served-latency "
        "probe, $0.0100 ≤ $0.0100 per 1k requests)")
    assert budget_check(both, {"latency_p95_s": 2.5, "cost_per_1k_usd": 0.002}) == (
        True, "within budget (batch p95 2500 ms ≤ 2500 ms, this run having no served-latency "
        "probe, $0.0020 ≤ $0.0100 per 1k requests)")
    assert budget_check(both, {"latency_p95_s": 2.6, "cost_per_1k_usd": 0.002}) == (
        False, "batch p95 latency 2600 ms is over the 2500 ms budget (this run has no "
        "served-latency probe, so its batch latency stands in)")
    assert budget_check(both, {"latency_p95_s": 2.0, "cost_per_1k_usd": 0.0125}) == (
        False, "$0.0125 per 1k requests is over the $0.0100 budget")
    # an unmeasured number is not held against the rung; no budget, nothing to check
    assert budget_check(both, {"latency_p95_s": 2.0}) == (
        True, "within budget (batch p95 2000 ms ≤ 2500 ms, this run having no served-latency "
        "probe)")
    assert budget_check(both, {"cost_per_1k_usd": 0.01}) == (
        True, "within budget ($0.0100 ≤ $0.0100 per 1k requests)")
    assert budget_check(task(0.6), {"latency_p95_s": 9.0, "cost_per_1k_usd": 9.0}) == (
        True, "no budget set")


def test_unscored_share_limit_with_and_without_the_stored_share():
    from llm_ladder.decide import unscored_check

    why = ("3 of 20 predictions (15%) could not be scored, over the 5% allowed "
           "(metric.max_unscored_share)")
    assert unscored_check(task(), {"n": 20, "unscored": 3, "unscored_share": 0.15}) == \
        (False, why)
    assert unscored_check(task(), {"n": 20, "unscored": 3}) == (False, why)  # older summary
    assert unscored_check(task(), {"n": 20, "unscored": 1}) == (True, "")  # 5%: allowed
    assert unscored_check(task(), {"n": 10, "unscored": 0}) == (True, "")
    assert unscored_check(task(), {"n": 10}) == (True, "")
    assert unscored_check(task(), {"n": 0, "unscored": 0}) == (True, "")  # nothing ran


def _judged(**judge):
    from llm_ladder.task import Task

    return Task.model_validate({"name": "t", "bar": 0.6, "data": {"examples": ["x.jsonl"]},
                                "metric": {"name": "judge"}, "judge": judge})


def test_a_judged_rung_needs_a_trusted_judge_and_the_refusal_is_the_reason():
    from llm_ladder.decide import decide, judge_trust_check

    s = {"rung": "zero-shot", "run_id": None, "n": 60,
         "quality": {"value": 0.9, "low": 0.8, "high": 0.95, "n": 60,
                     "method": "exact binomial (Clopper–Pearson)"}}
    t = _judged(agreement_floor=0.7)
    assert judge_trust_check(t, s) == (False, (
        "the judge is not trusted: no judge-check in this run's summary (agreement floor "
        "0.70); a judged rung is not recommended (`ladder judge-check`)"))
    assert judge_trust_check(t, {**s, "judge": {"ok": True}}) == (True, "")
    assert judge_trust_check(task(), s) == (True, "")  # not a judged metric
    doc = decide(t, [s, {**s, "rung": "rag", "judge": {"ok": False, "why": "position bias"}}],
                 planned=2)
    assert not doc["meets_bar"]
    why = ("the judge is not trusted: no judge-check in this run's summary (agreement floor "
           "0.70); a judged rung is not recommended (`ladder judge-check`)")
    assert doc["reason"] == (  # the first refused rung's cause
        "No rung meets the bar with the corrected test within budget; the closest is "
        "zero-shot at 0.900 [0.800, 0.950] against the bar 0.600. Refused: " + why + ".")
    assert doc["notes"] == [
        "zero-shot: 0.900 [0.800, 0.950] — " + why,
        "rag: 0.900 [0.800, 0.950] — the judge is not trusted: position bias (agreement floor "
        "0.70); a judged rung is not recommended (`ladder judge-check`)"]
    assert decide(t, [{**s, "judge": {"ok": True}}], planned=2)["rung"] == "zero-shot"
    # an unjudged ladder that recommends nothing has no "Refused" part
    assert "Refused" not in decide(task(0.95), [s], planned=2)["reason"]


# ---- the task's metric and labels are used when the decision re-scores ---------------------


def test_failed_generations_on_unscorable_references_are_left_out_of_quality_and_pairs():
    """A failed generation whose reference is not one of the task's labels cannot be scored
    either way: the decision re-scores with the task's labels and leaves it out (57 of 60),
    in the rung's quality and in the paired test."""
    from llm_ladder.decide import decide

    refs = REFS60[:57] + ["maybe"] * 3
    z, pz = run("zero-shot", _wrong_on(set(range(12)), refs)[:57] + [None] * 3, refs)
    f, pf = run("few-shot", refs[:57] + [None] * 3, refs)
    doc = decide(task(0.6), [z, f], {"zero-shot": pz, "few-shot": pf}.get, planned=2)
    assert doc["rung"] == "few-shot"
    assert doc["reason"].startswith(
        "Ship few-shot on model None. zero-shot reaches 0.789 [0.661, 0.886] above the bar")
    assert [(c["a"], c["b"], c["n"]) for c in doc["comparisons"]] == [
        ("zero-shot", "few-shot", 57), ("few-shot", "zero-shot", 57)]


def _label_preds(outputs: list[str], refs: list[str], error_at: set[int] = frozenset()):
    return [{"example_id": f"e{i:03d}", "output": o, "reference": r,
             "score": None if i in error_at else float(o == r),
             "score_reason": "generation failed: boom" if i in error_at else None,
             "error": "boom" if i in error_at else None, "details": {}}
            for i, (o, r) in enumerate(zip(outputs, refs, strict=True))]


def test_macro_f1_pairs_use_the_task_label_set_and_failed_outputs_name_no_label():
    """Macro-F1 is averaged over the task's labels that occur among the references or the
    predictions of both runs (MacroF1's fixed label set): a task label only predicted
    ("unsure") counts with F1 0 — for both runs, so the difference is over one label set.
    A failed generation names no label even when a partial output was stored."""
    from llm_ladder.decide import pair

    labels = ["yes", "no", "unsure"]
    refs = ["yes"] * 30 + ["no"] * 30
    a = _label_preds(refs, refs)
    b = _label_preds(["unsure"] * 6 + refs[6:], refs)
    t = pair(a, b, "macro_f1", labels)
    f1_yes = 2 * 24 / (2 * 24 + 6)
    assert t.mean_a == pytest.approx(2 / 3) and t.mean_b == pytest.approx((f1_yes + 1) / 3)
    # decide builds the same test from the task's labels
    from llm_ladder.decide import _Evidence
    from llm_ladder.task import Task

    mt = Task.model_validate({"name": "t", "bar": 0.3, "data": {"examples": ["x.jsonl"]},
                              "metric": {"name": "macro_f1", "labels": labels}})
    ev = _Evidence(mt, {"a": a, "b": b}.get)
    assert ev.pair({"run_id": "a"}, {"run_id": "b"}) == t
    # a failed generation whose stored output names the right label still names none
    failed = _label_preds(refs, refs, error_at={0})
    empty = [dict(p, output="") if p["error"] else p for p in failed]
    assert pair(failed, b, "macro_f1", labels) == pair(empty, b, "macro_f1", labels)
    assert pair(failed, b, "macro_f1", labels).mean_a < t.mean_a


# ---- break-even in the reason, and the learning-curve advice --------------------------------


def test_the_break_even_interval_needs_both_runs_requests_priced():
    """The replacement's reason gives the break-even point; its interval (from the spread of
    per-request costs) only when both runs' requests can be priced today."""
    from llm_ladder.decide import decide
    from llm_ladder.task import Task

    t = Task.model_validate({"name": "t", "bar": 0.6, "data": {"examples": ["x.jsonl"]},
                             "metric": {"name": "accuracy", "labels": LABELS},
                             "prices": {"default": {"input_per_1m": 1.0,
                                                    "output_per_1m": 0.0}}})
    z, pz = run("zero-shot", _wrong_on(set(range(12))), REFS60)
    lo, pl = run("lora", REFS60, REFS60)
    for i, p in enumerate(pz):
        p["tokens_in"] = 1500 + 1000 * (i % 2)  # $0.002 a request on average
    for p in pl:
        p["tokens_in"] = 500
    z.update(model="default", cost_per_1k_usd=2.0)
    lo.update(model="default", cost_per_1k_usd=0.5, one_time={"usd": 3.0, "what": "fine-tuning"})
    store = {"zero-shot": pz, "lora": pl}.get
    end = ("; lora repays its extra one-time cost against zero-shot through cheaper requests "
           "after 2,000 requests")
    assert decide(t, [z, lo], store, planned=2)["reason"].endswith(
        end + " (95% interval 1,837 to 2,169).")
    gone = {**z, "model": "retired"}  # its model is no longer priced: no interval
    assert decide(t, [gone, lo], store, planned=2)["reason"].endswith(end + ".")


def test_no_recommendation_quotes_the_stored_learning_curve(tmp_path):
    import json

    from llm_ladder import curve
    from llm_ladder.decide import decide

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "manifest.json").write_text(json.dumps({"id": "x"}))
    points = [{"n": n, "score": s, "low": s - 0.02, "high": s + 0.02, "dev_n": 50}
              for n, s in ((100, 0.40), (200, 0.46), (400, 0.52))]
    curve.save(adapter, curve.build("lora", points, "accuracy", "s"))
    summaries, store = _two_short_rungs()
    configs = {"few-shot": {"settings": {"adapter_path": str(adapter)}}}
    doc = decide(task(0.8), summaries, store, configs, planned=3)
    assert doc["suggestions"][-1] == curve.advice(curve.load(adapter), 0.8)
    assert doc["suggestions"][-1].startswith("Learning curve of lora (3 points at 100, 200, 400")


# ---- where a rung's quality and bar p-value come from ----------------------------------------


def test_quality_and_bar_p_value_sources_in_order():
    """PPI interval (human scores, same bar) > stored predictions > the summary's p-value made
    for this bar > the exact binomial test of a 0/1 summary > no test."""
    from llm_ladder.decide import _Evidence

    def quality(s, bar=0.8):  # one _Evidence per summary: it caches by the summary's id
        return _Evidence(task(bar), None).quality(s)

    ppi = {"value": 0.9, "low": 0.85, "high": 0.95, "n": 300, "method": "PPI", "bar": 0.8,
           "p_bar": 0.001, "extra": 1}
    binom_q = {"value": 0.9, "low": 0.7, "high": 0.98, "n": 20,
               "method": "exact binomial (Clopper–Pearson)"}
    s = {"rung": "judged", "quality": binom_q, "judge": {"ok": True, "ppi": ppi}}
    assert quality(s) == ({"value": 0.9, "low": 0.85, "high": 0.95, "n": 300,
                           "method": "PPI"}, 0.001)
    exact = p_above_binary(18, 20, 0.8)
    for other in ({**ppi, "bar": 0.7}, {**ppi, "value": None}):  # made for another bar; none
        assert quality({"quality": binom_q, "judge": {"ppi": other}}) == (binom_q, exact)
    bca_q = {"value": 0.9, "low": 0.85, "high": 0.95, "n": 40, "method": "BCa bootstrap"}
    assert quality({"quality": {**bca_q, "p_bar": 0.003, "bar": 0.8}})[1] == 0.003
    assert quality({"quality": {**bca_q, "p_bar": 0.003, "bar": 0.7}})[1] is None
    assert quality({"quality": bca_q})[1] is None
    assert quality({"quality": {**bca_q, "method": None}})[1] is None
    assert quality({"quality": binom_q}, bar=None) == (binom_q, None)
    empty = {"value": None, "low": None, "high": None, "n": 0,
             "method": "exact binomial (Clopper–Pearson)"}
    assert quality({"quality": empty}) == (empty, None)


def test_stored_predictions_are_rescored_with_the_task_metric():
    """Macro-F1 from the stored predictions is the corpus statistic over the task's labels,
    not the mean of the per-example scores."""
    from llm_ladder.decide import _Evidence
    from llm_ladder.task import Task

    mt = Task.model_validate({"name": "t", "bar": 0.5, "data": {"examples": ["x.jsonl"]},
                              "metric": {"name": "macro_f1", "labels": LABELS}})
    refs = ["yes"] * 40 + ["no"] * 20
    preds = _label_preds(["yes"] * 60, refs)  # accuracy 2/3, macro-F1 (0.8 + 0) / 2
    q, p = _Evidence(mt, {"r": preds}.get).quality({"run_id": "r", "quality": {}})
    assert q["value"] == pytest.approx(0.4) and q["method"].startswith("BCa bootstrap of "
                                                                       "macro-F1 over 2 labels")
    assert p is not None and p > 0.5  # below the bar 0.5 (accuracy 2/3 would be above)


# ---- which rungs pass: the notes of those that do not -------------------------------------------


def test_notes_for_rungs_that_cannot_be_tested():
    from llm_ladder.decide import decide

    nothing = {"rung": "broken", "run_id": None,
               "quality": {"value": None, "low": None, "high": None, "n": 0}}
    cont = {"rung": "rag", "run_id": None, "quality": {"value": 0.9, "low": 0.85, "high": 0.95,
                                                       "n": 40, "method": "BCa bootstrap"}}
    good, preds = run("few", REFS60, REFS60)
    doc = decide(task(0.6), [nothing, cont, good], {"few": preds}.get, planned=3)
    assert doc["rung"] == "few"  # a rung after one that scored nothing still passes
    assert doc["notes"] == [
        "broken: nothing could be scored",
        "rag: 0.900 [0.850, 0.950] — no test against the bar is possible (no stored "
        "predictions and no p-value in the summary)"]
    assert doc["decision"] == {
        "planned_rungs": 3, "alpha": 0.05, "alpha_per_rung": pytest.approx(0.05 / 3),
        "alpha_compare": 0.025, "p_bar": {"broken": None, "rag": None,
                                          "few": pytest.approx(0.6**60)},
        "baseline_tests": {}}


def test_a_rung_without_predictions_shared_with_the_majority_baseline_is_not_recommended():
    from llm_ladder.decide import decide

    refs = ["yes"] * 52 + ["no"] * 8
    base = baselines(["yes"] * 90 + ["no"] * 10, {f"e{i:03d}": r for i, r in enumerate(refs)},
                     "accuracy", LABELS)
    good, preds = run("few", refs, refs)
    moved = [{**p, "example_id": "x" + p["example_id"]} for p in preds]
    doc = decide(task(0.6), [good], {"few": moved}.get, planned=1, baselines=base)
    assert not doc["meets_bar"]
    assert doc["notes"] == ["few: 1.000 [0.940, 1.000] — no predictions to test it against "
                            "the majority-class baseline; it cannot be recommended"]


def test_judge_trust_sentences():
    from llm_ladder.decide import judge_trust_check

    t, bare = _judged(agreement_floor=0.7), _judged()
    tail = "; a judged rung is not recommended (`ladder judge-check`)"
    no_floor = _judged_without_table()
    s = {"rung": "r"}
    assert judge_trust_check(t, {**s, "judge": {"ok": False, "why": "position bias"}}) == (
        False, "the judge is not trusted: position bias (agreement floor 0.70)" + tail)
    assert judge_trust_check(t, {**s, "judge": {
        "ok": False, "why": "agreement 0.55 is below the floor 0.70"}}) == (
        False, "the judge is not trusted: agreement 0.55 is below the floor 0.70" + tail)
    assert judge_trust_check(bare, {**s, "judge": {"ok": True, "why": "x"}}) == (True, "")
    assert judge_trust_check(no_floor, s) == (
        False, "the judge is not trusted: no judge-check in this run's summary" + tail)


def _judged_without_table():  # a judged metric with no [judge] table: no floor to name
    from llm_ladder.task import Task

    return Task.model_validate({"name": "t", "bar": 0.6, "data": {"examples": ["x.jsonl"]},
                                "metric": {"name": "judge"}})


def test_the_bar_test_is_inclusive_and_the_family_has_at_least_one_member():
    from llm_ladder.decide import planned_count

    one, _ = run("few", ["yes"], ["yes"])  # 1 of 1 against the bar 0.025: p = 0.025 exactly
    assert should_stop(task(bar=0.025), [one], planned=1)
    assert planned_count([]) == 1 and planned_count([{}]) == 1
    assert planned_count([{"planned_rungs": None}, {"planned_rungs": 0}]) == 2


def test_labels_without_a_task_label_set_compare_normalized():
    from llm_ladder.metrics import LabelAccuracy

    assert LabelAccuracy().score("Yes.", " Yes ").value == 1.0
    assert LabelAccuracy().score("No", "yes").value == 0.0


def test_an_empty_exact_interval_names_its_method():
    from llm_ladder.stats import clopper_pearson

    assert clopper_pearson(0, 0) == Interval(None, None, None, 0,
                                             "exact binomial (Clopper–Pearson)")
    from llm_ladder.stats import mean_quality

    assert mean_quality([], bar=0.5) == Quality(Interval(None, None, None, 0, "none"), None)


# ---- the paired permutation test of macro-F1 ---------------------------------------------------


def test_paired_macro_f1_permutation_p_values():
    """p = (1 + permutations at least as extreme) / (20,000 + 1): never 0, 1 when nothing
    differs, and one example (each swap either keeps or reverses the difference) gives a
    two-sided p of exactly 1 and a one-sided p of about 1/2."""
    from llm_ladder.stats import PERMUTATIONS, paired_macro_f1

    assert paired_macro_f1([], [], [], 2) == Paired("none", 0, None, None, None, None, None, 1.0)
    one = paired_macro_f1([0], [1], [0], 2)
    assert (one.test, one.n, one.diff) == ("permutation (macro-F1)", 1, 0.5)
    assert one.p_value == 1.0 and one.p_greater == pytest.approx(0.5, abs=0.02)
    # B right on 30 examples A gets wrong: no swap pattern of 20,000 draws reaches the
    # observed difference (chance 2**-30 each), so both p-values are the smallest possible
    ref = [0] * 45 + [1] * 45
    a = [1] * 15 + [0] * 30 + [0] * 15 + [1] * 30
    clear = paired_macro_f1(ref, a, ref, 2)
    assert clear.n == 90 and clear.interval == "paired BCa bootstrap"
    assert clear.p_value == clear.p_greater == 1 / (PERMUTATIONS + 1)
    assert 0 < clear.low < clear.diff < clear.high
    # the same predictions: no difference, nothing favours B, a zero-width interval
    same = paired_macro_f1(ref, a, a, 2)
    assert (same.diff, same.p_value, same.p_greater, same.low, same.high) == (
        0.0, 1.0, 1.0, 0.0, 0.0)
    # seeded (the default seed is 0): reports are stable
    b = a[:40] + ref[40:50] + a[50:]
    noisy = paired_macro_f1(ref, a, b, 2)
    assert noisy == paired_macro_f1(ref, a, b, 2, seed=0)
    assert 0.0 < noisy.p_greater < 0.05 and noisy.p_value > noisy.p_greater


def test_paired_macro_f1_one_sided_p_against_exact_enumeration():
    """Few examples: the Monte Carlo p-values are within Monte Carlo error of the exact
    permutation p-values (all 2**n swap patterns)."""
    import itertools

    from llm_ladder.stats import macro_f1_table, paired_macro_f1

    ref = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    ga = np.array([1, 0, 0, 1, 1, 1, 0, 0])
    gb = np.array([0, 0, 1, 1, 0, 1, 1, 1])
    obs = (macro_f1_table(ref[None], gb[None], 2) - macro_f1_table(ref[None], ga[None], 2))[0]
    diffs = []
    for swap in itertools.product([False, True], repeat=ref.size):
        s = np.array(swap)
        pa, pb = np.where(s, gb, ga), np.where(s, ga, gb)
        diffs.append((macro_f1_table(ref[None], pb[None], 2)
                      - macro_f1_table(ref[None], pa[None], 2))[0])
    diffs = np.array(diffs)
    t = paired_macro_f1(ref, ga, gb, 2)
    assert t.diff == pytest.approx(obs)
    assert t.p_greater == pytest.approx(np.mean(diffs >= obs - 1e-12), abs=0.015)
    assert t.p_value == pytest.approx(np.mean(np.abs(diffs) >= abs(obs) - 1e-12), abs=0.015)


def test_an_output_naming_two_labels_names_none_and_the_longest_label_wins():
    from llm_ladder.metrics import match_label

    assert match_label("yes no", ["yes", "no"]) is None
    assert match_label("it is income tax", ["tax", "income tax"]) == "income tax"


def test_build_metric_passes_the_declared_resources():
    from llm_ladder.metrics import build_metric

    judge = object()
    assert build_metric("judge", judge=judge).judge is judge


def test_mean_quality_of_continuous_scores_is_a_seeded_bca_interval():
    from llm_ladder.stats import clopper_pearson, mean_quality

    rng = np.random.default_rng(4)
    x = list(rng.uniform(0.2, 0.9, 30))
    q = mean_quality(x, bar=0.5)
    assert (q.interval.value, q.interval.n, q.interval.method) == (
        pytest.approx(float(np.mean(x))), 30, "BCa bootstrap")  # 30: not "approximate"
    assert q.interval.low < q.interval.value < q.interval.high and q.p_bar < 0.05
    assert mean_quality(x) == Quality(q.interval, None)  # no bar, no test
    assert mean_quality(x, bar=0.5) == mean_quality(x, bar=0.5, seed=0)  # default seed 0
    assert mean_quality(x, seed=3).interval != q.interval  # the seed is the one used
    assert mean_quality(x[:29]).interval.method == \
        "BCa bootstrap (approximate below 30 examples)"
    # 0/1 scores: the exact interval at the level asked for
    assert mean_quality([1, 0, 1, 1], level=0.9).interval == clopper_pearson(3, 4, 0.9)


def test_run_quality_is_seeded_and_a_failed_generation_names_no_label():
    from llm_ladder.metrics import TokenF1
    from llm_ladder.stats import run_quality

    rng = np.random.default_rng(5)
    cont = [{"example_id": str(i), "output": "o", "reference": "r", "score": float(s),
             "error": None} for i, s in enumerate(rng.uniform(0, 1, 40))]
    q, _ = run_quality(cont, TokenF1(), bar=0.5)
    assert (q, _) == run_quality(cont, TokenF1(), bar=0.5, seed=0)  # default seed 0
    assert run_quality(cont, TokenF1(), bar=0.5, seed=3)[0].interval != q.interval
    refs = ["yes"] * 40 + ["no"] * 20
    preds = _label_preds(["yes"] * 60, refs)
    mf = MacroF1(labels=LABELS)
    q, counts = run_quality(preds, mf, bar=0.5)
    assert (q, counts) == run_quality(preds, mf, bar=0.5, seed=0)
    assert run_quality(preds, mf, bar=0.5, seed=3)[0].interval != q.interval
    # a failed generation counts as wrong even when a partial output names the right label
    failed = _label_preds(["yes"] * 60, refs, error_at={0})
    empty = [dict(p, output="") if p["error"] else p for p in failed]
    assert run_quality(failed, mf)[0] == run_quality(empty, mf)[0]
    assert run_quality(failed, mf)[0].interval.value < q.interval.value
    assert run_quality(failed, mf)[1] == {"counted": 60, "failed": 1, "unscored": 0}


def test_sign_flip_paired_document_and_its_seed():
    from llm_ladder.stats import paired_test

    rng = np.random.default_rng(6)
    a = rng.uniform(0, 1, 40)
    b = np.clip(a + 0.05 + rng.normal(0, 0.1, 40), 0, 1)
    t = paired_test(list(a), list(b))
    two, one = sign_flip(b - a, 0)
    assert (t.test, t.n, t.mean_a, t.mean_b, t.interval) == (
        "sign-flip permutation", 40, pytest.approx(a.mean()), pytest.approx(b.mean()),
        "BCa bootstrap")
    assert (t.p_value, t.p_greater) == (two, one)
    assert t.low < t.diff < t.high and t.diff == pytest.approx((b - a).mean())
    other = paired_test(list(a), list(b), seed=3)  # the seed reaches the test and interval
    assert other.p_greater != t.p_greater and (other.low, other.high) != (t.low, t.high)


def test_newcombe_interval_level_agreement_and_zero_marginals():
    from llm_ladder.stats import newcombe_paired, paired_test, wilson

    n95, n99 = newcombe_paired(10, 9, 2, 10), newcombe_paired(10, 9, 2, 10, level=0.99)
    assert n99[0] < n95[0] < n95[1] < n99[1]
    # two runs that agree on every example: no difference, and no uncertainty about it
    same = paired_test([1, 0], [1, 0])
    assert (same.low, same.high) == (0.0, 0.0)
    # a zero marginal (A always right): phi = 0 (Newcombe 1998, method 10)
    lb, ub = wilson(3, 5)
    la, _ = wilson(5, 5)
    low, high = newcombe_paired(3, 0, 2, 0)
    assert high == pytest.approx(-0.4 + ((ub - 0.6) ** 2 + (1 - la) ** 2) ** 0.5)
    assert low == pytest.approx(-0.4 - (0.6 - lb))


def test_paired_macro_f1_seed_reaches_the_interval():
    from llm_ladder.stats import paired_macro_f1

    ref = [0] * 45 + [1] * 45
    a = [1] * 15 + [0] * 30 + [0] * 15 + [1] * 30
    b = a[:40] + ref[40:50] + a[50:]
    t0, t3 = paired_macro_f1(ref, a, b, 2), paired_macro_f1(ref, a, b, 2, seed=3)
    assert (t0.low, t0.high) != (t3.low, t3.high) and t0.diff == t3.diff


def test_meets_bar_is_the_corrected_rule_for_one_rung():
    from llm_ladder.decide import meets_bar

    s, _ = run("few", ["yes"] * 55 + ["no"] * 5, ["yes"] * 60)  # one-sided p = 0.0110
    assert meets_bar(task(), s) and meets_bar(task(), s, planned=4)
    assert not meets_bar(task(), s, planned=5)  # 0.05 / 5 = 0.01 < p
    assert not meets_bar(task(0.9), s) and not meets_bar(task(None), s)


# ---- the BCa bootstrap itself ----------------------------------------------------------------


def test_bca_resamples_ties_and_one_sided_bias_correction():
    from llm_ladder.stats import RESAMPLES, bca

    x = np.array([0.0, 0.5, 1.0] * 10)  # many resampled means tie with the estimate
    b = bca(mean_rows(x), x.size)
    assert (b.theta, b.n, b.boot.size) == (0.5, 30, RESAMPLES)
    ties = np.sum(b.boot == b.theta)
    assert ties > 100  # bias correction counts a tie as half below, half above
    assert b.z0 == pytest.approx(norm.ppf((np.sum(b.boot < 0.5) + 0.5 * ties) / RESAMPLES))
    assert (b.z0, b.interval()) == (bca(mean_rows(x), 30, seed=0).z0,
                                    bca(mean_rows(x), 30, seed=0).interval())  # default seed 0
    # more examples than fit one memory block: still exactly RESAMPLES resamples
    assert bca(mean_rows(np.linspace(0, 1, 600)), 600).boot.size == RESAMPLES
    # every resample on one side of the estimate: z0 is clipped at half a resample
    distinct = lambda idx: np.array([len(set(r)) / idx.shape[1] for r in idx])  # noqa: E731
    above = bca(distinct, 50)  # the full sample has the most distinct examples
    assert above.z0 == pytest.approx(norm.ppf(1 - 0.5 / RESAMPLES))
    below = bca(lambda idx: -distinct(idx), 50)
    assert below.z0 == pytest.approx(norm.ppf(0.5 / RESAMPLES))
    assert np.isfinite(above.interval()).all() and np.isfinite(below.interval()).all()


def test_bca_acceleration_from_the_jackknife_between_3_and_2000_examples():
    from llm_ladder.stats import bca

    def jackknife_a(x):
        jack = np.array([np.delete(x, i).mean() for i in range(x.size)])
        d = jack.mean() - jack
        return np.sum(d**3) / (6 * np.sum(d**2) ** 1.5)

    for x in (np.array([0.0, 0.1, 1.0]), np.linspace(0, 1, 2000) ** 3):
        assert bca(mean_rows(x), x.size).a == pytest.approx(jackknife_a(x))
        assert bca(mean_rows(x), x.size).a != 0
    two = bca(mean_rows(np.array([0.2, 0.7])), 2)  # two examples: no acceleration
    assert two.a == 0.0 and two.interval()[0] < two.interval()[1]
    big = np.linspace(0, 1, 2001) ** 3  # above 2,000 the O(n²) jackknife is skipped
    assert bca(mean_rows(big), big.size).a == 0.0


def test_bca_endpoints_are_the_accelerated_percentiles():
    """Efron's BCa endpoints: the boot quantiles at Φ(z0 + (z0 + z) / (1 − a (z0 + z)))."""
    boot = np.linspace(0, 1, 1001)
    b = Bca(0.5, boot, 0.1, 0.05, 50)
    w_lo, w_hi = 0.1 + norm.ppf(0.025), 0.1 + norm.ppf(0.975)
    lo = norm.cdf(0.1 + w_lo / (1 - 0.05 * w_lo))
    hi = norm.cdf(0.1 + w_hi / (1 - 0.05 * w_hi))
    assert b.interval() == pytest.approx((np.quantile(boot, lo), np.quantile(boot, hi)))


def test_newcombe_interval_is_antisymmetric_at_any_level():
    from llm_ladder.stats import newcombe_paired

    for level in (0.9, 0.99):  # B 19 of 26 right, A 12 of 26
        low, high = newcombe_paired(10, 9, 2, 5, level=level)
        assert newcombe_paired(10, 2, 9, 5, level=level) == pytest.approx((-high, -low))


def test_equal_macro_f1_from_different_errors_favours_neither_run():
    from llm_ladder.stats import paired_macro_f1

    ref = [0] * 10 + [1] * 10
    a = [1] + [0] * 9 + [1] * 10  # one "0" example wrong
    b = [0] + [1] + [0] * 8 + [1] * 10  # another "0" example wrong: the same macro-F1
    t = paired_macro_f1(ref, a, b, 2)
    assert t.diff == 0.0 and (t.p_value, t.p_greater) == (1.0, 1.0)
