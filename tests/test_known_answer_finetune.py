"""Known-answer task (c/e): a label set only training teaches, so tuning the small model must
win, against the same model prompted and against a prompted larger model.

Support tickets name one of six invented products; the route is an opaque code fixed per
product (blorvex -> Q1, ...). Nothing in the task says which code goes with which product, so
zero-shot and the system prompt cannot know it. The tickets come from the same sentence
templates for every product, so the nearest train examples (MiniLM embeddings) mostly share
the template rather than the product, and a few shots cannot teach all six codes. LoRA on the
train split sees every product many times. The ladder climbs the rungs on two real local
models (`default` = SmolLM2-135M-Instruct, which LoRA tunes; `gemma` = Gemma 3 270M base on
llama.cpp, prompted) with --all so every cell is measured, and must recommend `lora@default`,
better than every prompting cell and significantly better (the decision's paired exact
McNemar) than the prompted Gemma: "tune the small model" (issue 14 (e)). Measured by this
test's earlier one-model form and by H14's two-model version (2026-11-27): lora 0.938
[0.698, 0.998], few-shot-nearest@default 0.312, few-shot-nearest@gemma 0.250, lora vs Gemma
p = 0.00098.
"""

from __future__ import annotations

import json
import random
import subprocess

from helpers import LADDER

PRODUCTS = {"blorvex": "Q1", "tramzil": "Q2", "quoddle": "Q3", "fennix": "Q4",
            "sprovant": "Q5", "keldrum": "Q6"}
TEMPLATES = ["My {p} arrived broken, what now?", "The {p} will not turn on after the update.",
             "How do I reset my {p} to factory settings?", "Can I return the {p} I bought?",
             "Is there a newer model of the {p}?", "The {p} makes a loud noise at night.",
             "Where do I find the manual for the {p}?", "My {p} battery dies within an hour.",
             "I was charged twice for the {p}.", "The {p} app keeps crashing on my phone.",
             "Does the {p} work outside in the rain?", "Who repairs a {p} near Lyon?",
             "The screen of my {p} is cracked.", "Can two people share one {p} account?"]

# the two real local models of the model-choice tests (also tests/test_known_answer_models.py)
TWO_MODELS = """
[models.default]
backend = "local"
name = "smollm2-135m"
batch_size = 16
[models.gemma]
backend = "llamacpp"
name = "gemma3-270m"
context_length = 1024
"""


def rows() -> list[dict]:
    out = []
    for p, code in PRODUCTS.items():
        for i, t in enumerate(TEMPLATES):
            out.append({"id": f"{p}-{i:02d}", "input": t.format(p=p), "output": code})
    random.Random(0).shuffle(out)
    return out


def test_c_e_a_label_set_only_training_teaches_so_tune_the_small_model(tmp_path):
    root = tmp_path / "routes"
    (root / "data").mkdir(parents=True)
    (root / "data" / "tickets.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows()), encoding="utf-8")
    (root / "task.toml").write_text("""
name = "product-routes"
description = "Route the support ticket to its product queue."
bar = 0.6
[data]
examples = ["data/tickets.jsonl"]
[split]
train = 0.65
dev = 0.1
test = 0.25
seed = 3
max_test = 16
[metric]
name = "accuracy"
[generation]
max_tokens = 4
[prompt]
few_shot_k = 3
[rungs]
include = ["zero-shot", "system-prompt", "few-shot-nearest", "lora"]
[finetune]
epochs = 4
batch_size = 8
learning_rate = 0.002
r = 8
alpha = 16
eval_every = 10
save_every = 1000
min_examples = 20
[ladder]
models = ["default", "gemma"]
calibrate_n = 2
[serve]
latency_probe = 0    # no latency budget here: the served-latency probe would only cost time
""" + TWO_MODELS, encoding="utf-8")
    proc = subprocess.run([*LADDER, "run", str(root), "--all", "--no-report", "--json"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    q = {c["cell"]: c["quality"] for c in doc["cells"]}
    rec = doc["recommendation"]
    prompted = {f"{r}@{m}" for r in ("zero-shot", "system-prompt", "few-shot-nearest")
                for m in ("default", "gemma")}
    assert set(q) == prompted | {"lora@default"}, q
    assert rec["rung"] == "lora@default", (q, rec["reason"])
    assert q["lora@default"] > max(q[c] for c in prompted), q
    vs = next(c for c in rec["comparisons"]
              if c["a"] == "lora@default" and c["b"] == "few-shot-nearest@gemma")
    assert vs["mean_a"] > vs["mean_b"] and vs["p_value"] < 0.05, (q, vs)  # mean_a: lora's
    lora = next(r for r in doc["rungs"] if r["rung"] == "lora@default")
    assert lora["one_time"]["seconds"] > 0  # the training is counted as a one-time cost
