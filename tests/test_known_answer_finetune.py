"""Known-answer task (c): a label set only training teaches, so fine-tuning must win.

Support tickets name one of six invented products; the route is an opaque code fixed per
product (blorvex -> Q1, ...). Nothing in the task says which code goes with which product, so
zero-shot and the system prompt cannot know it. The tickets come from the same sentence
templates for every product, so the nearest train examples (MiniLM embeddings) mostly share
the template rather than the product, and a few shots cannot teach all six codes. LoRA on the
train split sees every product many times. The ladder (run with --all so every rung is
measured) must recommend `lora`, significantly better than the best prompting rung.
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


def rows() -> list[dict]:
    out = []
    for p, code in PRODUCTS.items():
        for i, t in enumerate(TEMPLATES):
            out.append({"id": f"{p}-{i:02d}", "input": t.format(p=p), "output": code})
    random.Random(0).shuffle(out)
    return out


def test_c_a_label_set_only_training_teaches(tmp_path):
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
[models.default]
backend = "local"
name = "smollm2-135m"
batch_size = 16
""", encoding="utf-8")
    proc = subprocess.run([*LADDER, "run", str(root), "--all", "--no-report", "--json"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    q = {r["rung"]: r["quality"]["value"] for r in doc["rungs"]}
    rec = doc["recommendation"]
    assert rec["rung"] == "lora", (q, rec)
    assert q["lora"] > max(q["zero-shot"], q["system-prompt"], q["few-shot-nearest"])
    lora = next(r for r in doc["rungs"] if r["rung"] == "lora")
    assert lora["one_time"]["seconds"] > 0  # the training is counted as a one-time cost
