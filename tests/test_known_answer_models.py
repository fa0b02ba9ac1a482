"""Known-answer tests where the right decision is a choice of model (issue 14).

Two real local models: `default` = SmolLM2-135M-Instruct (backend local, transformers, the
model LoRA tunes) and `gemma` = Gemma 3 270M base (Q4_K_M GGUF, backend llamacpp, prompted as
a plain transcript). `ladder run --models default,gemma --all` climbs rung × model cells;
the decision must come out right:

(e) tune the small model: tests/test_known_answer_finetune.py, test (c/e) (the opaque-label
    task, climbed on both models).
(f) prompt the larger model: the capital city of a country, with only six train examples.
    Gemma 3 270M knows far more capitals than SmolLM2-135M; six examples teach LoRA the
    answer format, not the capitals of other countries. Measured before writing the test
    (2026-11-27, /tmp/h14_probe.py: the same four shots as a chat, greedy, 8 tokens, both
    GGUFs on llama.cpp, over 48 countries): SmolLM2-135M 10/48 = 0.208, Gemma 3 270M 39/48 =
    0.812. The decision must recommend `few-shot-nearest@gemma`, and `lora@default` (run with
    --all) must not be significantly better than it.

Measured by this test (2026-11-27, accuracy, exact 95% intervals): few-shot-nearest@gemma
0.967 [0.828, 0.999], few-shot-nearest@default 0.300, lora@default 0.200. It was seen to
fail when the decision is wrong (docs/models.md, "Known-answer tests: which model to
ship"). Cost: 694 s on 2 cores at load average ~15 (shared): the real models, one LoRA.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import ladder_json
from test_known_answer_finetune import TWO_MODELS as MODELS


def jsonl(path: Path, items: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")


def cells(doc: dict) -> dict[str, float | None]:
    return {c["cell"]: c["quality"] for c in doc["cells"]}


def comparison(rec: dict, a: str, b: str) -> dict:
    return next(c for c in rec["comparisons"] if c["a"] == a and c["b"] == b)


CAPITALS = {  # (country, capital); the first six are the whole train split
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Egypt": "Cairo",
    "Mexico": "Mexico City", "Kenya": "Nairobi",
    "Spain": "Madrid", "Germany": "Berlin", "Russia": "Moscow", "China": "Beijing",
    "Greece": "Athens", "Portugal": "Lisbon", "Austria": "Vienna", "Poland": "Warsaw",
    "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki", "Denmark": "Copenhagen",
    "Ireland": "Dublin", "Hungary": "Budapest", "Peru": "Lima", "Chile": "Santiago",
    "Argentina": "Buenos Aires", "Cuba": "Havana", "Thailand": "Bangkok", "Vietnam": "Hanoi",
    "Indonesia": "Jakarta", "Iran": "Tehran", "Iraq": "Baghdad", "Syria": "Damascus",
    "Belgium": "Brussels", "Netherlands": "Amsterdam", "Romania": "Bucharest",
    "Bulgaria": "Sofia", "Serbia": "Belgrade", "Venezuela": "Caracas",
}


@pytest.mark.slow
def test_f_prompt_the_larger_model(tmp_path):
    root = tmp_path / "capitals"
    items = [{"id": f"c{i:02d}", "input": c, "output": cap}
             for i, (c, cap) in enumerate(CAPITALS.items())]
    jsonl(root / "data" / "train.jsonl", items[:6])
    jsonl(root / "data" / "test.jsonl", items[6:])
    (root / "task.toml").write_text(f"""
name = "capitals"
description = "Answer with the capital city of the country."
bar = 0.5
[data]
examples = ["data/train.jsonl"]
test = "data/test.jsonl"
[split]
train = 1.0
dev = 0.0
test = 0.0
[metric]
name = "normalized_match"
[generation]
max_tokens = 8
[prompt]
few_shot_k = 4
[rungs]
include = ["few-shot-nearest", "lora"]
[ladder]
models = ["default", "gemma"]
calibrate_n = 2
[serve]
latency_probe = 0    # no latency budget here: the served-latency probe would only cost time
[finetune]
epochs = 3
batch_size = 2
learning_rate = 0.002
r = 8
alpha = 16
eval_every = 1000
save_every = 1000
min_examples = 4
{MODELS}""", encoding="utf-8")
    doc = ladder_json("run", root, "--all", "--no-report", timeout=1200)
    q = cells(doc)
    rec = doc["recommendation"]
    assert set(q) == {"few-shot-nearest@default", "few-shot-nearest@gemma", "lora@default"}, q
    assert rec["rung"] == "few-shot-nearest@gemma", (q, rec["reason"])
    assert q["few-shot-nearest@gemma"] > q["few-shot-nearest@default"], q
    vs = comparison(rec, "few-shot-nearest@gemma", "lora@default")  # mean_b: lora's
    assert not (vs["mean_b"] > vs["mean_a"] and vs["p_value"] < 0.05), (q, vs)
