"""The learning curve (llm_ladder.curve, `ladder curve`): nested stratified subsets, the
weighted log-linear fit, the "more data" advice and the recommendation quoting a stored
curve; end to end with the real SmolLM2-135M: two tiny LoRA trainings scored on dev, the
curve stored with the adapter."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import write_task
from test_decide import answers, make_task, store_run

from llm_ladder import curve
from llm_ladder.data import Example
from llm_ladder.decide import decide
from llm_ladder.store import Store
from llm_ladder.task import load_task
from llm_ladder.tuning import learning_curve


def ex(i: int, label: str) -> Example:
    return Example(f"id{i}", f"question {i}", label)


def test_subsets_are_nested_stratified_and_reproducible():
    train = [ex(i, "a") for i in range(40)] + [ex(100 + i, "b") for i in range(8)] + [ex(999,
                                                                                           "c")]
    parts = curve.subsets(train, (0.25, 0.5, 1.0), stratify=True)
    assert [len(p) for p in parts] == [10 + 2 + 1, 20 + 4 + 1, 49]
    assert {e.id for e in parts[0]} <= {e.id for e in parts[1]} <= {e.id for e in parts[2]}
    assert all({e.output for e in p} == {"a", "b", "c"} for p in parts)  # every label kept
    again = curve.subsets(list(reversed(train)), (1.0, 0.5, 0.25), stratify=True)
    assert [[e.id for e in p] for p in again] == [[e.id for e in p] for p in parts]
    with pytest.raises(Exception, match="fractions"):
        curve.subsets(train, (0.0, 1.0))


def pts(scores: list[float], ns=(100, 200, 400), half_width: float = 0.05) -> list[dict]:
    return [{"n": n, "score": s, "low": s - half_width, "high": s + half_width, "dev_n": 50}
            for n, s in zip(ns, scores, strict=True)]


def test_fit_recovers_a_log_linear_curve_and_extrapolates():
    a, b = 0.1, 0.06
    f = curve.fit(pts([a + b * math.log(n) for n in (100, 200, 400)], half_width=0.01))
    assert f is not None
    assert f["a"] == pytest.approx(a, abs=1e-6) and f["b"] == pytest.approx(b, abs=1e-6)
    assert f["gain_per_doubling"] == pytest.approx(b * math.log(2))
    assert curve.needed_n(f, 0.5) == pytest.approx(math.exp((0.5 - a) / b), rel=1e-4)
    assert not curve.is_flat(f)
    assert curve.fit(pts([0.3], ns=(100,))) is None  # one size: no curve


def test_advice_extrapolates_refuses_far_and_says_flat():
    rising = curve.build("lora", pts([0.40, 0.46, 0.52], half_width=0.02), "accuracy", "s")
    text = curve.advice(rising, 0.6)
    assert text is not None
    need = curve.needed_n(rising["fit"], 0.6)
    assert f"at about {math.ceil(need - 400):,} more train examples" in text
    assert "rough guide" in text and "dev scores 0.400, 0.460, 0.520" in text
    assert "more than 10x" in (curve.advice(rising, 0.95) or "")
    noisy = curve.build("lora", pts([0.40, 0.43, 0.42], half_width=0.12), "accuracy", "s")
    assert "flat" in (curve.advice(noisy, 0.6) or "")  # a rise inside the noise is flat
    falling = curve.build("lora", pts([0.5, 0.45, 0.4]), "accuracy", "s")
    assert "flat" in (curve.advice(falling, 0.6) or "")
    assert "already reaches the bar" in (curve.advice(rising, 0.5) or "")
    assert curve.advice(rising, None) is None


def test_stored_curve_is_found_through_the_run_config(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "manifest.json").write_text(json.dumps({"id": "x"}))
    doc = curve.build("lora", pts([0.40, 0.46, 0.52], half_width=0.02), "accuracy", "s")
    curve.save(adapter, doc)
    assert curve.load(adapter) == json.loads(json.dumps(doc))
    summaries = [{"rung": "zero-shot", "run_id": "r0"}, {"rung": "lora", "run_id": "r1"}]
    configs = {"r0": {"settings": {}}, "r1": {"settings": {"adapter_path": str(adapter)}}}
    [text] = curve.advice_for(0.6, summaries, configs)
    assert text.startswith("Learning curve of lora")
    assert curve.advice_for(0.6, summaries, {"r1": {"settings": {}}}) == []



def test_the_recommendation_quotes_the_stored_curve_of_the_tuned_rung(tmp_path):
    """decide(): no rung meets the bar; lora's run config points at an adapter whose
    manifest holds a curve, so the suggestions say how much more data would reach it."""
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "manifest.json").write_text(json.dumps({"id": "x"}))
    curve.save(adapter, curve.build("lora", pts([0.40, 0.46, 0.52], half_width=0.02),
                                    "accuracy", "s"))
    task = load_task(make_task(tmp_path / "t", bar=0.95))
    store = Store(task.state_dir / "runs.db")
    runs = [store_run(store, task, "zero-shot", answers(30, set(range(15)))),
            store_run(store, task, "lora", answers(30, set(range(8))),
                      settings={"rung": "lora", "adapter_path": str(adapter)})]
    configs = {r["run_id"]: (store.get_run(r["run_id"]) or {})["config"] for r in runs}
    doc = decide(task, runs, store.predictions, configs)
    assert doc["meets_bar"] is False
    assert [s for s in doc["suggestions"] if s.startswith("Learning curve of lora")]
    (adapter / "manifest.json").write_text(json.dumps({"id": "x"}))  # no curve: no sentence
    doc = decide(task, runs, store.predictions, configs)
    assert not [s for s in doc["suggestions"] if s.startswith("Learning curve")]


FINETUNE = """
[finetune]
epochs = 1
batch_size = 4
eval_every = 4
learning_rate = 0.002
r = 4
alpha = 8
target_modules = ["q_proj", "v_proj"]
min_examples = 4
"""


@pytest.mark.slow
def test_learning_curve_end_to_end_on_the_dev_split(tmp_path: Path):
    """Real LoRA on about 8 train rows (one or two steps each), each adapter scored on the
    few dev rows, the curve stored in the 100% adapter's manifest."""
    task = write_task(tmp_path, n_rows=16, extra=FINETUNE, max_test=2)
    toml = (task / "task.toml").read_text().replace("bar = 0.5\n", "bar = 0.99\n")
    (task / "task.toml").write_text(toml.replace("train = 0.7\ndev = 0.0\ntest = 0.3",
                                                 "train = 0.5\ndev = 0.25\ntest = 0.25"))
    doc = learning_curve(task, "lora", (0.5, 1.0))
    assert [p["fraction"] for p in doc["points"]] == [0.5, 1.0]
    small, full = doc["points"]
    assert small["n"] < full["n"] and small["dev_n"] == full["dev_n"] > 0
    assert small["adapter"] != full["adapter"]
    assert doc["fit"] is not None and doc["scored_on"] == "dev"
    assert doc["advice"].startswith("Learning curve of lora")
    manifest = json.loads((Path(doc["adapter_path"]) / "manifest.json").read_text())
    assert manifest["metrics"]["curve"]["points"] == doc["points"]
    store = Store(task / ".ladder" / "runs.db")
    scored = {p["example_id"] for p in store.predictions(full["run_id"])}
    assert len(scored) == full["dev_n"]  # scored on dev ...
    assert not scored & set(manifest["data"]["train_ids"])  # ... never on what it trained on
    run = store.get_run(full["run_id"]) or {}
    assert run["split"] == "dev" and run["config"]["split"].endswith(":dev")
