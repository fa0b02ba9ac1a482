"""Baselines, failures counted, the unscored-share limit, Holm over planned rungs, early
stopping, the confirmation slice and break-even in both directions (issue 11)."""

from __future__ import annotations

import numpy as np
import pytest

from llm_ladder.costs import Ownership, break_even, break_even_interval, break_even_sentence
from llm_ladder.data import Example
from llm_ladder.decide import (
    baselines,
    compare_alpha,
    confirmation,
    decide,
    holm,
    planned_count,
    rung_alpha,
    should_stop,
)
from llm_ladder.metrics import LabelAccuracy
from llm_ladder.splits import split_examples
from llm_ladder.task import Task

LABELS = ["yes", "no"]


def task(bar: float | None = 0.8, metric: str = "accuracy", **extra) -> Task:
    return Task.model_validate({"name": "t", "bar": bar, "data": {"examples": ["x.jsonl"]},
                                "metric": {"name": metric, "labels": LABELS, **extra}})


def run(rung: str, outputs: list[str | None], refs: list[str]) -> tuple[dict, list[dict]]:
    """A summary-less run: predictions (None output = failed generation) and its summary."""
    from llm_ladder.evaluate import summarize

    m = LabelAccuracy(labels=LABELS)
    preds = []
    for i, (out, ref) in enumerate(zip(outputs, refs, strict=True)):
        s = m.score(out or "", ref)
        failed = out is None
        preds.append({"example_id": f"e{i:03d}", "output": "" if failed else out,
                      "reference": ref,
                      "score": None if failed else s.value,
                      "score_reason": "generation failed: context overflow" if failed
                      else s.reason, "details": s.details, "latency_s": 0.1,
                      "error": "context overflow" if failed else None, "tokens_in": 10,
                      "tokens_out": 1})
    summary = summarize(preds, m, None, bar=0.8)
    return {**summary, "rung": rung, "run_id": rung, "model": None}, preds


def test_holm_steps_down_over_the_planned_family():
    # m = 4: levels 0.0125, 0.01667, 0.025 (capped), 0.025 (capped)
    assert holm([0.01, 0.016, 0.02, 0.5], 4) == [True, True, True, False]
    assert holm([0.013, 0.001], 4) == [True, True]  # step 2: 0.013 ≤ 0.05 / 3
    assert holm([0.02, 0.001], 4) == [False, True]  # step 2: 0.02 > 0.05 / 3
    assert holm([0.0124, 0.016, None], 4) == [True, True, False]
    assert holm([0.02], 1) == [True] and holm([0.03], 1) == [False]  # capped at 0.025
    assert holm([0.013], 4) == [False]  # the family is the planned 4, not the 1 tested
    assert rung_alpha(10) == 0.005 and rung_alpha(1) == 0.025 and compare_alpha(3) == 0.025
    assert compare_alpha(11) == 0.005
    assert planned_count([{"planned_rungs": 7}, {}]) == 7
    assert planned_count([{}, {}], planned=5) == 5 and planned_count([{}, {}]) == 2


def test_should_stop_uses_the_planned_family_and_decide_agrees():
    t = task()
    refs = ["yes"] * 60
    s, preds = run("few", ["yes"] * 55 + ["no"] * 5, refs)  # p = P(X >= 55 | 60, 0.8)
    from scipy.stats import binom

    p = binom.sf(54, 60, 0.8)
    assert 0.01 < p < 0.0125
    assert should_stop(t, [s], planned=2) and should_stop(t, [s], planned=4)
    assert not should_stop(t, [s], planned=5)  # 0.05 / 5 = 0.01 < p
    assert should_stop(t, [s])  # planned defaults to the summaries (1): capped at 0.025
    assert decide(t, [s], planned=4)["meets_bar"]
    assert not should_stop(t, [{**s, "planned_rungs": 12}])
    rec = decide(t, [s], planned=12)
    assert not rec["meets_bar"] and "Holm over 12 planned rungs" in " ".join(rec["notes"])
    assert not should_stop(task(bar=None), [s])


def test_failed_generations_count_as_wrong_for_the_bar():
    refs = ["yes"] * 40
    # 30 right, 10 failed generations: 30/40 = 0.75, not 30/30
    s, preds = run("rag", ["yes"] * 30 + [None] * 10, refs)
    assert s["quality"]["value"] == pytest.approx(0.75) and s["failed"] == 10
    assert s["unscored"] == 0 and s["quality"]["n"] == 40
    rec = decide(task(), [s], lambda _: preds, planned=1)
    assert not rec["meets_bar"]
    assert rec["error_analysis"]["categories"] == {"generation failed": 10}
    assert "10 generation(s) of rag failed" in rec["suggestions"][0]


def test_a_rung_over_the_unscored_share_cannot_be_recommended():
    refs = ["yes"] * 57 + ["maybe"] * 3  # "maybe" is not a label: unscorable reference
    s, preds = run("few", ["yes"] * 60, refs)
    assert s["unscored"] == 3 and s["unscored_share"] == pytest.approx(0.05)
    assert decide(task(), [s], planned=1)["meets_bar"]  # 5% is allowed
    rec = decide(task(max_unscored_share=0.04), [s], planned=1)
    assert not rec["meets_bar"]
    assert any("could not be scored, over the 4% allowed" in n for n in rec["notes"])


def test_baselines_from_the_train_distribution():
    train = ["yes"] * 65 + ["no"] * 35
    refs = {f"e{i:03d}": ("yes" if i < 39 else "no") for i in range(60)}
    rows = baselines(train, refs, "accuracy", LABELS)
    maj, uni = rows
    assert maj["baseline"] == "majority" and maj["rung"] == "baseline: majority class (yes)"
    assert maj["quality"]["value"] == pytest.approx(39 / 60) and maj["train_share"] == 0.65
    assert maj["quality"]["method"].startswith("exact binomial")
    assert uni["baseline"] == "uniform" and 0.2 < uni["quality"]["value"] < 0.8
    assert baselines(train, refs, "accuracy", LABELS) == rows  # seeded
    assert baselines(train, refs, "token_f1") == []
    assert baselines(train, list(refs.values()), "macro_f1", LABELS)[0]["quality"]["value"] \
        == pytest.approx((2 * 39 / (2 * 39 + 21) + 0) / 2)


def test_a_rung_must_beat_the_majority_baseline():
    t = task(bar=0.6)
    refs = ["yes"] * 52 + ["no"] * 8
    train = ["yes"] * 90 + ["no"] * 10
    ids = {f"e{i:03d}": r for i, r in enumerate(refs)}
    base = baselines(train, ids, "accuracy", LABELS)
    always_yes, p1 = run("zero-shot", ["yes"] * 60, refs)  # 52/60 = 0.867 ≥ bar 0.6
    store = {"zero-shot": p1}
    rec = decide(t, [always_yes], store.__getitem__, planned=1, baselines=base)
    assert not rec["meets_bar"]
    assert any("not shown better than the majority-class baseline" in n for n in rec["notes"])
    good, p2 = run("few", refs, refs)  # all right: beats the baseline on 8 discordant pairs
    store["few"] = p2
    rec = decide(t, [always_yes, good], store.__getitem__, planned=2, baselines=base)
    assert rec["meets_bar"] and rec["rung"] == "few"
    assert "beats the majority-class baseline" in rec["reason"]
    assert [b["baseline"] for b in rec["baselines"]] == ["majority", "uniform"]
    assert all("predictions" not in b for b in rec["baselines"])
    # without stored predictions the paired test is impossible: not recommended
    assert not decide(t, [good], None, planned=1, baselines=base)["meets_bar"]


def test_macro_f1_pairs_on_macro_f1():
    t = Task.model_validate({"name": "t", "bar": 0.3, "data": {"examples": ["x.jsonl"]},
                             "metric": {"name": "macro_f1", "labels": LABELS}})
    refs = ["yes"] * 40 + ["no"] * 20
    a, pa = run("a", ["yes"] * 60, refs)
    b, pb = run("b", refs, refs)
    store = {"a": pa, "b": pb}
    rec = decide(t, [a, b], store.__getitem__, planned=2)
    comp = next(c for c in rec["comparisons"] if c["b"] == "b")
    assert comp["test"] == "permutation (macro-F1)"
    assert comp["diff"] == pytest.approx(1.0 - (2 * 40 / (2 * 40 + 20)) / 2)


def test_confirmation_slice_keeps_the_capped_rows():
    data = [Example(f"x{i}", f"q{i}", "yes") for i in range(300)]
    s = split_examples(data, 0.6, 0.1, 0.3, seed=2, max_test=25)
    assert len(s.test) == 25 and s.capped_test == len(s.confirm) > 50
    assert not {e.id for e in s.test} & {e.id for e in s.confirm}
    assert {e.id for e in s.train} .isdisjoint({e.id for e in s.confirm})
    full = split_examples(data, 0.6, 0.1, 0.3, seed=2)
    assert sorted(e.id for e in s.test + s.confirm) == sorted(e.id for e in full.test)
    summary, preds = run("few", ["yes"] * 30, ["yes"] * 30)
    doc = confirmation(task(), summary, preds)
    assert doc["confirmed"] and doc["p_bar"] == pytest.approx(0.8**30)
    weak, wp = run("few", ["yes"] * 10, ["yes"] * 10)
    assert not confirmation(task(), weak, wp)["confirmed"]  # 0.8**10 = 0.107


def test_break_even_both_directions_and_interval():
    prompt = Ownership("few-shot", per_request_usd=0.002)
    tuned = Ownership("lora", per_request_usd=0.0005, one_time_usd=3.0, one_time_what="t")
    be = break_even(prompt, tuned, None)
    assert be["overtaker"] == "lora" and be["requests"] == pytest.approx(2000)
    assert "lora repays its extra one-time cost against few-shot" in break_even_sentence(be)
    back = break_even(tuned, prompt, None)
    assert back["overtaker"] == "lora" and back["requests"] == pytest.approx(2000)
    assert "never" not in break_even_sentence(back)
    dear = Ownership("dear", per_request_usd=0.003, one_time_usd=1.0, one_time_what="t")
    assert break_even(prompt, dear, None)["requests"] is None
    assert "never repays" in break_even_sentence(break_even(prompt, dear, None))
    free = Ownership("free", per_request_usd=0.001)
    assert break_even_sentence(break_even(prompt, free, None)) == (
        "free costs less than few-shot from the first request")
    assert break_even_sentence(break_even(free, prompt, None)) == (
        "free costs less than few-shot from the first request")
    rng = np.random.default_rng(0)
    ca = rng.normal(0.002, 0.0005, 200)
    cb = rng.normal(0.0005, 0.0002, 200)
    iv = break_even_interval(prompt, tuned, ca, cb, None)
    assert iv["requests_low"] < 3.0 / (ca.mean() - cb.mean()) < iv["requests_high"]
    noisy = break_even_interval(prompt, tuned, [0.002, 0.0], [0.0005, 0.0025], None)
    assert noisy["requests_high"] is None  # the saving may vanish: possibly never
    assert "possibly never" in break_even_sentence({**be, **noisy})
