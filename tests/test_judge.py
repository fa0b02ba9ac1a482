"""Judge metrics (docs/judge.md): verdicts stored and never guessed, both orders asked, the
trust check and its refusal, and the prediction-powered interval's coverage.

Logic tests use scripted judges (llm_ladder.testing.ScriptedModel); the last test uses the
real embedded model as judge, which must be found untrustworthy and blocked.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llm_ladder import climb
from llm_ladder.decide import judge_trust_check
from llm_ladder.errors import LadderError
from llm_ladder.judge_check import judge_check, load_labels, trust
from llm_ladder.judging import (
    JudgeMetric,
    judge_pairs,
    position_bias,
    spearman,
    weighted_kappa,
)
from llm_ladder.ppi import mean_interval, ppi_mean
from llm_ladder.session import open_task, prepare
from llm_ladder.stats import clopper_pearson
from llm_ladder.task import JudgeConfig, load_task
from llm_ladder.testing import ScriptedModel, write_task

# ---- the prediction-powered interval -------------------------------------------------------


def test_ppi_covers_the_truth_where_the_plain_judge_interval_does_not():
    """A judge that over-scores by ~0.15 on average, 200 judged items, 30 human-scored ones:
    over 600 simulated draws the PPI interval covers the true mean at its nominal rate; the
    judge's own interval almost never does."""
    rng = np.random.default_rng(7)
    truth = 3 / (3 + 2)  # human scores ~ Beta(3, 2)
    draws, n_lab, n_unlab = 600, 30, 200
    cover_ppi = cover_plain = 0

    def judge(y):  # biased and noisy, still in [0, 1]
        return np.clip(y + 0.15 + rng.normal(0, 0.1, y.size), 0, 1)

    for _ in range(draws):
        y_lab, y_unlab = rng.beta(3, 2, n_lab), rng.beta(3, 2, n_unlab)
        iv = ppi_mean(judge(y_unlab), judge(y_lab), y_lab)
        cover_ppi += iv.low <= truth <= iv.high
        plain = mean_interval(judge(y_unlab))
        cover_plain += plain.low <= truth <= plain.high
    assert cover_ppi / draws >= 0.93, cover_ppi / draws
    assert clopper_pearson(cover_ppi, draws, 0.99).high >= 0.95  # nominal 95% within tolerance
    assert cover_plain / draws < 0.05, cover_plain / draws


def test_ppi_widens_when_the_judge_is_noise():
    rng = np.random.default_rng(1)
    y = rng.beta(3, 2, 30)
    good = ppi_mean(np.full(200, 0.6) + rng.normal(0, 0.05, 200), y + 0.01, y)
    bad = ppi_mean(rng.uniform(0, 1, 200), rng.uniform(0, 1, 30), y)
    assert bad.high - bad.low > 2 * (good.high - good.low)
    with pytest.raises(LadderError, match="pair up"):
        ppi_mean([0.5, 0.5], [0.5], [0.5, 0.4])


# ---- verdicts: parsed or unscored with the reason, both orders ----------------------------

def test_an_unparseable_verdict_is_unscored_with_its_reason():
    judge = ScriptedModel(answers={"fine answer": "Score: 4\nReason: close to the reference",
                                   "rambling": "I think this answer is quite nice overall",
                                   "too high": "Score: 9\nReason: great"})
    m = JudgeMetric(judge=judge, config=JudgeConfig())
    ok, bad, high, empty = m.score_many([("q1", "fine answer", "ref"), ("q2", "rambling", "ref"),
                                         ("q3", "too high", "ref"), ("q4", "", "ref")])
    assert ok.value == pytest.approx(0.75) and ok.reason is None
    assert bad.value is None and "no 'Score: N'" in bad.reason and "quite nice" in bad.reason
    assert high.value is None and "outside the scale 1–5" in high.reason
    assert empty.value == 0.0 and len(judge.calls) == 3  # an empty answer is not sent
    call = bad.details["judge"]["calls"][0]
    assert call["raw"] == "I think this answer is quite nice overall"
    assert "rambling" in call["messages"][-1]["content"] and call["parsed"] is None


def test_pairwise_asks_both_orders_and_a_first_answer_bias_cancels():
    judge = ScriptedModel(answers=["Winner: A\nReason: the first one"])  # always the first
    cfg = JudgeConfig(mode="pairwise")
    [v] = judge_pairs(judge, cfg, [("q", "answer one", "answer two", None)])
    first, second = (c["messages"][-1]["content"] for c in v.calls)
    assert first.index("answer one") < first.index("answer two")
    assert second.index("answer two") < second.index("answer one")
    assert [c["order"] for c in v.calls] == ["AB", "BA"]
    assert v.value == 0.5  # won once, lost once: a pure position bias scores a tie
    assert position_bias([v])["value"] == 1.0
    assert position_bias([v])["order_disagreement"]["value"] == 1.0
    m = JudgeMetric(judge=ScriptedModel(answers=["Winner: tie"]), config=cfg)
    assert m.score_many([("q", "x", "ref")])[0].value == 0.5


def test_kappa_and_spearman_match_sklearn_and_scipy():
    from scipy.stats import spearmanr
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(3)
    for _ in range(20):
        h = rng.integers(1, 6, 25)
        j = np.clip(h + rng.integers(-2, 3, 25), 1, 5)
        k = weighted_kappa(h, j, (1, 5))
        assert k["value"] == pytest.approx(
            cohen_kappa_score(h, j, labels=[1, 2, 3, 4, 5], weights="quadratic"))
        assert k["low"] <= k["value"] <= k["high"]
        assert spearman(h, j)["value"] == pytest.approx(spearmanr(h, j).statistic)
    assert weighted_kappa([1, 2, 3, 4, 5, 3], [1, 2, 3, 4, 5, 3], (1, 5))["value"] == 1.0
    assert weighted_kappa([1, 2, 3, 4, 5, 3], [4] * 6, (1, 5))["value"] == pytest.approx(0.0)


# ---- a judged ladder: stored calls, trust, PPI, refusal ------------------------------------

def _judged_task(tmp: Path, judge_answers: dict[str, str], labels: list[dict] | None,
                 floor: float = 0.6, bar: float = 0.5) -> Path:
    """20 questions; the scripted rung answers "good-i"; the scripted judge grades by map."""
    rows = [{"id": f"q{i:02d}", "input": f"question number {i}?", "output": f"reference {i}"}
            for i in range(40)]
    answers = {r["input"]: f"good-{i}" for i, r in enumerate(rows)}
    (tmp / "judge.json").parent.mkdir(parents=True, exist_ok=True)
    (tmp / "judge.json").write_text(json.dumps(judge_answers), encoding="utf-8")
    lab = ""
    if labels is not None:
        (tmp / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in labels),
                                          encoding="utf-8")
        lab = 'labels = "labels.jsonl"\n'
    extra = (f'[judge]\nmodel = "judge"\nagreement_floor = {floor}\n{lab}'
             '[rungs]\ninclude = ["zero-shot"]\n'
             f'[models.judge]\nbackend = "scripted"\npath = "{(tmp / "judge.json").as_posix()}"\n')
    return write_task(tmp, rows, metric="judge", bar=bar, answers=answers, extra=extra)


def _labels(n: int, human: list[int]) -> list[dict]:
    return [{"id": f"lab{k}", "input": f"labelled question {k}?", "output": f"lab reference {k}",
             "meta": {"answer": f"lab-answer-{k}", "human_score": human[k % len(human)]}}
            for k in range(n)]


def test_a_judged_run_stores_the_judge_calls_and_decides_on_the_ppi_interval(tmp_path):
    # the judge says 5 for every rung answer; on the labelled answers it agrees with humans
    humans = [5, 4, 3, 5, 2, 4]
    judge = {f"good-{i}": "Score: 5\nReason: matches" for i in range(40)}
    judge |= {f"lab-answer-{k}": f"Score: {humans[k % 6]}\nReason: as a human" for k in range(12)}
    # ... except that it over-scores the 4s by one: a bias PPI must correct
    judge |= {f"lab-answer-{k}": "Score: 5\nReason: generous" for k in range(12)
              if humans[k % 6] == 4}
    task = _judged_task(tmp_path, judge, _labels(12, humans), floor=0.5)
    res = climb(task, report=False)
    s = res.rungs[0]
    j = s["judge"]
    assert j["ok"], j["why"]
    assert j["trust"]["agreement"]["name"] == "weighted kappa"
    # plain judge interval: everything 1.0; PPI subtracts the bias on the 4s (4 of 12 → 0.0833)
    assert s["quality"]["value"] == pytest.approx(1.0)
    assert j["ppi"]["value"] == pytest.approx(1 - 4 / 12 * 0.25)
    assert j["ppi"]["rectifier"] == pytest.approx(-4 / 12 * 0.25)
    assert res.recommendation["rung"] == "zero-shot"
    assert f"reaches {j['ppi']['value']:.3f} [{j['ppi']['low']:.3f}" in \
        res.recommendation["reason"]  # the decision used the PPI interval
    _, store = open_task(task)
    assert store.get_run(s["run_id"])["config"]["judge"]["model"]["backend"] == "scripted"
    p = store.predictions(s["run_id"])[0]
    call = p["details"]["judge"]["calls"][0]
    assert call["raw"].startswith("Score: 5") and call["parsed"] == 5
    assert p["output"] in call["messages"][-1]["content"]
    assert "reference" in call["messages"][-1]["content"]
    cost = s["evaluation_cost"]
    assert cost["judge_calls"] == s["n"] and cost["judge_tokens_in"] > 0
    assert s["tokens_in_mean"] < cost["judge_tokens_in"] / s["n"]  # not the rung's cost


def test_a_judge_below_the_floor_or_without_human_scores_is_refused(tmp_path):
    judge = {f"good-{i}": "Score: 5\nReason: matches" for i in range(40)}
    judge |= {f"lab-answer-{k}": "Score: 5\nReason: always 5" for k in range(12)}  # no signal
    task = _judged_task(tmp_path / "below", judge, _labels(12, [1, 2, 3, 4, 5]))
    res = climb(task, report=False)
    rec = res.recommendation
    assert rec["rung"] is None and not rec["meets_bar"]
    assert "the judge is not trusted: weighted kappa 0.00" in rec["reason"]
    assert "below the floor 0.60" in rec["reason"]
    assert not judge_check(task)["ok"]
    task = _judged_task(tmp_path / "none", judge, None)
    rec = climb(task, report=False).recommendation
    assert rec["rung"] is None and "no human-scored answers" in rec["reason"]


def test_judge_trust_check_only_applies_to_judged_metrics(tmp_path):
    task, _ = open_task(write_task(tmp_path, [{"input": "a", "output": "b"}] * 1,
                                   metric="token_f1"))
    assert judge_trust_check(task, {}) == (True, "")


def test_human_labels_on_test_rows_are_refused(tmp_path):
    judge = {"x": "Score: 3"}
    labels = _labels(3, [3])
    labels[1]["input"] = "question number 1?"  # a question of the examples
    task = _judged_task(tmp_path, judge, labels)
    t, _ = open_task(task)
    test_ids = {e.id for e in prepare(t).splits.test}
    if "q01" not in test_ids:  # make it a test row whatever the split
        labels[1]["input"] = f"question number {int(sorted(test_ids)[0][1:])}?"
        (task / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in labels))
    with pytest.raises(LadderError, match="are test rows"):
        judge_check(task)


# ---- the real embedded model as judge -------------------------------------------------------

@pytest.mark.slow
def test_the_embedded_model_is_a_poor_judge_and_is_blocked(tmp_path, smol):
    """SmolLM2-135M judges 4 FAQ answers, two right (human 5) and two wrong (human 1); its
    agreement is below the floor (or unmeasurable), so the check fails and a judged rung is
    refused."""
    faq = [json.loads(x) for x in (Path(__file__).resolve().parents[1] / "examples"
                                   / "construction-faq-rag" / "data" / "qa.jsonl")
           .read_text(encoding="utf-8").splitlines()[:4]]
    labels = []
    for k, r in enumerate(faq):  # short answers keep the prompts (and the test) small
        good, ref = k % 2 == 0, r["output"].split(". ")[0] + "."
        labels.append({"id": f"lab{k}", "input": r["input"], "output": ref,
                       "meta": {"answer": ref if good else "Zaragoza AB sells furniture.",
                                "human_score": 5 if good else 1}})
    (tmp_path / "data").mkdir()
    rows = [{"id": f"x{i}", "input": f"unrelated question {i}?", "output": f"answer {i}"}
            for i in range(4)]
    (tmp_path / "data" / "ex.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in labels))
    (tmp_path / "task.toml").write_text("""
name = "real-judge"
description = "The embedded model judging FAQ answers. Data: CC BY 4.0 (construction FAQ)."
bar = 0.5
[data]
examples = ["data/ex.jsonl"]
[split]
train = 0.5
dev = 0.0
test = 0.5
[metric]
name = "judge"
[judge]
model = "default"
labels = "labels.jsonl"
max_tokens = 8
[models.default]
backend = "local"
name = "smollm2-135m"
batch_size = 4
""")
    task = load_task(tmp_path)
    doc = trust(task, smol, load_labels(task, prepare(task)))  # = judge_check, model shared
    assert doc["n"] == 4 and doc["cost"]["judge_calls"] == 4
    assert not doc["ok"], doc["why"]
    assert all(i["calls"][0]["raw"] is not None for i in doc["items"])
    ok, why = judge_trust_check(task, {"judge": doc})
    assert not ok and "the judge is not trusted" in why


def test_judge_check_pairwise_reports_accuracy_and_position_bias(tmp_path):
    """A judge that always prefers the first answer shown: every item a tie after both
    orders, so accuracy is the share of human ties, and position bias is 1.0."""
    labels = [{"id": f"lab{k}", "input": f"labelled question {k}?", "output": f"ref {k}",
               "meta": {"answer_a": f"lab-answer-{k}", "human_pref": ["a", "b", "tie"][k % 3]}}
              for k in range(9)]
    task = _judged_task(tmp_path, {"lab": "Winner: A\nReason: first"}, labels)
    toml = (task / "task.toml").read_text().replace('[judge]\n', '[judge]\nmode = "pairwise"\n')
    (task / "task.toml").write_text(toml)
    doc = judge_check(task)
    assert doc["agreement"]["name"] == "preference accuracy"
    assert doc["agreement"]["k"] == 3 and doc["agreement"]["n"] == 9  # the 3 human ties
    assert doc["position_bias"]["value"] == 1.0 and doc["cost"]["judge_calls"] == 18
    assert not doc["ok"] and "below the floor" in doc["why"]
    assert len(doc["labelled"]["judge"]) == 9  # answer_b = the reference: usable by PPI
