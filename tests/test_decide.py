"""The decision rule, error analysis and cost of ownership on synthetic runs stored in a real
SQLite run store (summaries made by the real `summarize`, scores by the real metrics)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_ladder.costs import Ownership, break_even, ownership
from llm_ladder.decide import decide, error_analysis
from llm_ladder.errors import LadderError
from llm_ladder.evaluate import summarize
from llm_ladder.ladder import recommend
from llm_ladder.metrics import build_metric
from llm_ladder.store import Store
from llm_ladder.task import load_task

LABELS = ["yes", "no"]


def make_task(root: Path, bar: float | None = 0.8, budget: str = "",
              metric: str = "accuracy") -> Path:
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "x.jsonl").write_text('{"id": "a", "input": "q", "output": "yes"}\n')
    labels = 'labels = ["yes", "no"]' if metric == "accuracy" else ""
    (root / "task.toml").write_text(
        'name = "synthetic"\n' + (f"bar = {bar}\n" if bar is not None else "")
        + f'[data]\nexamples = ["data/x.jsonl"]\n[metric]\nname = "{metric}"\n{labels}\n'
        + f"[budget]\n{budget}\n")
    return root


def store_run(store: Store, task, rung: str, outputs: list[str], refs: list[str] | None = None,
              latency: float = 0.1, one_time: dict | None = None, ladder_id: str = "L1",
              model: str = "default", settings: dict | None = None,
              finish: list[str] | None = None) -> dict:
    """One finished run: `outputs[i]` answers example e{i} whose reference is refs[i]."""
    refs = refs or ["yes"] * len(outputs)
    metric = build_metric(task.metric.name, LABELS if task.metric.name == "accuracy" else None)
    config = {"rung": rung, "settings": settings or {"rung": rung},
              "model": {"backend": "local", "name": "smollm2-135m"}}
    run_id = store.create_run(task.name, rung, model, "test", config, {}, ladder_id)
    rows = []
    for i, (out, ref) in enumerate(zip(outputs, refs, strict=True)):
        s = metric.score(out, ref)
        rows.append({"example_id": f"e{i:03d}", "input": f"question {i}",
                     "messages": [{"role": "user", "content": f"question {i}"}],
                     "raw_output": out, "output": out, "reference": ref, "score": s.value,
                     "score_reason": s.reason,
                     "details": {**s.details, "compute_s": latency,
                                 "finish_reason": (finish or ["stop"] * len(outputs))[i]},
                     "tokens_in": 50, "tokens_out": 2, "latency_s": latency, "error": None})
    store.add_predictions(run_id, rows)
    summary = summarize(store.predictions(run_id), metric, task.prices.get("default")
                        or _cpu(), "test price")
    summary.update(run_id=run_id, rung=rung, model=model)
    if one_time:
        summary["one_time"] = one_time
    store.finish_run(run_id, summary)
    return summary


def _cpu():
    from llm_ladder.task import Price

    return Price(usd_per_hour=0.10)


def answers(n: int, wrong: set[int], bad: str = "no") -> list[str]:
    return [bad if i in wrong else "yes" for i in range(n)]


@pytest.fixture
def setup(tmp_path):
    def make(**kw):
        root = make_task(tmp_path / "t", **kw)
        task = load_task(root)
        return task, Store(task.state_dir / "runs.db")
    return make


def test_cheaper_rung_wins_when_the_difference_is_not_significant(setup):
    task, store = setup(budget="requests_per_day = 1000\nbase_model_upgrades_per_year = 2")
    zero = store_run(store, task, "zero-shot", answers(60, set(range(30))))
    few = store_run(store, task, "few-shot-nearest", answers(60, {1, 2, 3, 4}))
    # lora fixes three of few-shot's four errors and breaks one other: McNemar 3 vs 1
    lora = store_run(store, task, "lora", answers(60, {4, 9}),
                     one_time={"seconds": 840.0, "usd": None, "what": "LoRA training"},
                     settings={"adapter": "adapters/lora-1"})
    rec = recommend(task, [zero, few, lora], store)
    assert rec["meets_bar"] and rec["rung"] == "few-shot-nearest"
    assert rec["run_id"] == few["run_id"] and rec["model"] == "default"
    assert rec["reason"].startswith("Ship few-shot-nearest on model default.")
    assert "0.933 [" in rec["reason"] and "above the bar 0.800 (one-sided p=" in rec["reason"]
    assert "Holm over 3 planned rungs" in rec["reason"]
    note = next(n for n in rec["notes"] if n.startswith("lora"))
    # one-sided McNemar 3 vs 1: P(X >= 3 | 4, 1/2) = 5/16; two-sided 0.625
    assert "not shown better (McNemar one-sided p=0.312 (two-sided p=0.625)" in note
    assert "14 min of LoRA training" in note and "re-training 2× a year" in note
    assert "the cheaper few-shot-nearest wins" in note
    comp = next(c for c in rec["comparisons"] if c["b"] == "lora")
    assert (comp["a_only"], comp["b_only"], comp["test"]) == (1, 3, "mcnemar")
    # one-time cost priced from the measured training time × the machine price
    own = rec["ownership"]["lora"]
    assert own["one_time_usd"] == pytest.approx(840 * 0.10 / 3600)
    assert own["recurring_per_year_usd"] == pytest.approx(2 * 840 * 0.10 / 3600)


def test_a_dearer_rung_wins_when_significantly_better(setup):
    task, store = setup(budget="requests_per_day = 1000")
    few = store_run(store, task, "few-shot-nearest", answers(200, set(range(24))),
                    latency=0.5)
    lora = store_run(store, task, "lora", answers(200, set(range(4))), latency=0.1,
                     one_time={"seconds": 600.0, "usd": 0.5, "what": "LoRA training"})
    rec = decide(task, [few, lora], store.predictions,
                 {r["id"]: r["config"] for r in store.list_runs()})
    assert rec["rung"] == "lora" and rec["settings"] == {"rung": "lora"}
    assert "significantly better (McNemar one-sided p=" in rec["reason"]
    assert "+0.100 [" in rec["reason"]  # 0.98 - 0.88
    assert "re-training on every base-model upgrade" in rec["reason"]
    # cheaper requests (0.1 s vs 0.5 s of a $0.10/h machine) repay $0.50 of training
    per_saving = (0.5 - 0.1) * 0.10 / 3600
    assert (f"lora repays its extra one-time cost against few-shot-nearest through cheaper "
            f"requests after {0.5 / per_saving:,.0f} requests") in rec["reason"]
    # every request of a run costs the same here, so the bootstrap interval is a point
    assert f"(95% interval {0.5 / per_saving:,.0f} to {0.5 / per_saving:,.0f})" in rec["reason"]
    assert f", {0.5 / per_saving / 1000:,.1f} days" in rec["reason"]


def test_budget_excludes_a_rung_that_meets_the_quality_bar(setup):
    task, store = setup(budget="latency_p95_ms = 1000")
    slow = store_run(store, task, "zero-shot", answers(40, set()), latency=3.0)
    ok = store_run(store, task, "system-prompt", answers(40, {0}), latency=0.2)
    rec = recommend(task, [slow, ok], store)
    assert rec["rung"] == "system-prompt"
    assert any("p95 latency 3000 ms is over the 1000 ms budget" in n for n in rec["notes"])
    assert "within budget (batch p95 200 ms ≤ 1000 ms" in rec["reason"]


def test_no_rung_meets_the_bar_explains_failures(setup):
    task, store = setup(bar=0.9)
    refs = ["yes", "no"] * 20
    # zero-shot: prose instead of labels (format errors); few-shot: 30/40 right, wrong labels
    zero = store_run(store, task, "zero-shot",
                     ["I think so"] * 30 + refs[30:], refs)
    few_out = [("no" if r == "yes" else "yes") if i < 10 else r for i, r in enumerate(refs)]
    few = store_run(store, task, "few-shot-random", few_out, refs)
    rec = recommend(task, [zero, few], store)
    assert not rec["meets_bar"] and rec["rung"] is None and rec["closest"] == "few-shot-random"
    assert rec["reason"].startswith("No rung meets the bar")
    a = rec["error_analysis"]
    assert a["categories"] == {"wrong label": 10} and a["confusions"] == {"yes → no": 5,
                                                                         "no → yes": 5}
    assert "well-formed but wrong answers" in rec["suggestions"][0]
    zero_a = error_analysis(store.predictions(zero["run_id"]), "accuracy")
    assert zero_a["categories"] == {"format error (output names no label)": 30}
    assert zero_a["format_errors"] == 30
    # the closest rung is compared with the others on the same examples
    comp = rec["comparisons"][0]
    assert comp["a"] == "few-shot-random" and comp["b"] == "zero-shot" and comp["n"] == 40


def test_format_errors_and_too_few_examples_suggestions(setup):
    task, store = setup(bar=0.75)
    # 9 of 10 right: estimate 0.9 above the bar, interval too wide with 10 examples
    run = store_run(store, task, "system-prompt", ["yes"] * 9 + ["maybe later"],
                    finish=["stop"] * 9 + ["length"])
    rec = recommend(task, [run], store)
    assert not rec["meets_bar"]
    text = " ".join(rec["suggestions"])
    assert "1 of 1 failures of system-prompt are format errors" in text
    assert "larger generation.max_tokens" in text
    assert "about" in text and "test examples give the corrected test" in text


def test_json_and_text_failure_kinds(tmp_path):
    task = load_task(make_task(tmp_path / "j", metric="json_match"))
    metric = build_metric("json_match", None, {"type": "object", "required": ["a"],
                                                "properties": {"a": {"type": "integer"}}})
    rows = []
    for i, out in enumerate(['{"a": 1}', 'not json', '{"a": "x"}', '{"a": 2}']):
        s = metric.score(out, '{"a": 1}')
        rows.append({"example_id": f"e{i}", "output": out, "reference": '{"a": 1}',
                     "score": s.value, "score_reason": s.reason, "details": s.details})
    a = error_analysis(rows, task.metric.name)
    assert a["categories"] == {"invalid JSON": 1, "schema violation": 1, "wrong values": 1}
    assert a["wrong_fields"] == {"a": 1}
    text = [{"example_id": "t0", "output": "", "score": 0.0, "details": {}},
            {"example_id": "t1", "output": "the long", "score": 0.2,
             "details": {"finish_reason": "length"}},
            {"example_id": "t2", "output": "other words", "score": 0.1, "details": {}},
            {"example_id": "t3", "output": "x", "score": None, "score_reason": "empty ref",
             "details": {}},
            {"example_id": "t4", "output": "right", "score": 0.9, "details": {}}]
    a = error_analysis(text, "token_f1")
    assert a["categories"] == {"empty output": 1, "truncated (hit max_tokens)": 1,
                               "low overlap": 1}
    assert a["unscored"] == {"empty ref": 1} and a["failed"] == 3


def test_without_predictions_the_cheaper_rung_stays(setup):
    task, store = setup()
    a = store_run(store, task, "zero-shot", answers(50, set()))
    b = store_run(store, task, "system-prompt", answers(50, set()))
    rec = recommend(task, [a, b])  # no store: no paired test possible
    assert rec["rung"] == "zero-shot"
    assert any("no stored predictions to test the difference" in n for n in rec["notes"])


def test_no_bar_shows_the_comparison_only(setup):
    task, store = setup(bar=None)
    a = store_run(store, task, "zero-shot", answers(10, {1}))
    rec = recommend(task, [a], store)
    assert not rec["meets_bar"] and rec["reason"].startswith("No quality bar set")


def test_break_even_by_hand():
    prompt = Ownership("few-shot", per_request_usd=0.002)
    tuned = Ownership("lora", per_request_usd=0.0005, one_time_usd=3.0,
                      one_time_what="training", recurring_per_year_usd=3.0 * 4)
    be = break_even(prompt, tuned, 100)
    # upkeep: $12/year over 36,500 requests adds 0.000328767 per request
    saving = 0.002 - (0.0005 + 12 / 36500)
    assert be["requests"] == pytest.approx(3.0 / saving)
    assert be["days"] == pytest.approx(3.0 / saving / 100)
    # issue 11: the other direction is not "never": tuned (dearer up front, cheaper per
    # request) overtakes prompt after the same number of requests
    back = break_even(tuned, prompt, 100)
    assert back["overtaker"] == "lora" and back["requests"] == pytest.approx(3.0 / saving)
    assert break_even(prompt, tuned, 100)["overtaker"] == "lora"
    unknown = Ownership("rag", per_request_usd=0.001, one_time_what="indexing (not measured)")
    assert break_even(prompt, unknown, 100) is None
    assert prompt.cumulative_usd(1000, None) == pytest.approx(2.0)


def test_rag_ownership_names_indexing_and_budget_field_is_validated(tmp_path):
    task = load_task(make_task(tmp_path / "r"))
    summary = {"rung": "rag", "cost_per_1k_usd": 0.02, "tokens_in_mean": 300,
               "tokens_out_mean": 10, "rag": {"recall_at_k": 1.0}}
    o = ownership(task, summary, {"index": {"count": 37}})
    assert "indexing the corpus (37 chunks; time not measured" in o.one_time_what
    assert o.one_time_usd is None and o.tokens_per_request == 310
    plain = ownership(task, summary | {"rag": {}}, {"index": {"count": 37}})
    assert plain.one_time_what == ""  # a rung that did not retrieve pays no indexing
    toml = tmp_path / "r" / "task.toml"
    toml.write_text(toml.read_text() + "base_model_upgrades_per_year = -1\n")
    with pytest.raises(LadderError, match="base_model_upgrades_per_year"):
        load_task(tmp_path / "r")


def test_recommendation_is_json_serialisable(setup):
    task, store = setup()
    a = store_run(store, task, "zero-shot", answers(20, set()))
    json.dumps(recommend(task, [a], store))


def _analysis(failed: int, fmt: int) -> dict:
    return {"categories": {"wrong label": failed - fmt}
            | ({"format error (output names no label)": fmt} if fmt else {}),
            "failed": failed, "format_errors": fmt, "truncated": 0, "unscored": {}}


def test_advice_knows_what_ran_and_what_the_task_is(tmp_path):
    from llm_ladder.decide import suggestions
    from llm_ladder.testing import write_task

    rows = [{"id": f"r{i}", "input": f"q {i}", "output": "ab"[i % 2]} for i in range(10)]
    label = load_task(write_task(tmp_path / "label", rows, metric="accuracy"))
    text = load_task(write_task(tmp_path / "text", rows, metric="token_f1"))
    best = {"rung": "zero-shot"}
    early = " ".join(suggestions(label, best, _analysis(10, 8), ["zero-shot"]))
    assert "try few-shot-nearest or lora" in early
    late = " ".join(suggestions(label, best, _analysis(10, 8),
                                ["zero-shot", "few-shot-nearest", "lora"]))
    assert "try" not in late and "ran and did not teach it" in late
    wrong = " ".join(suggestions(label, best, _analysis(10, 0), ["zero-shot", "lora"]))
    assert "[corpus]" not in wrong and "try few-shot-nearest," in wrong  # a closed label set
    facts = " ".join(suggestions(text, best, _analysis(10, 0), ["zero-shot"]))
    assert "add a [corpus]" in facts
