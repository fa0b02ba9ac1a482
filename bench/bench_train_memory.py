"""Peak resident memory of LoRA training (issue 13): batch 8 x 512 tokens on SmolLM2-135M.

Each variant trains `--steps` optimizer steps with `llm_ladder.finetune.lora.train` in its own
subprocess and reports that process's VmHWM (peak resident set, /proc/self/status) and its
train tokens/s. The rows are synthetic: every one exactly `--seq` tokens (random ids from the
vocabulary), the last `--completion` of them the completion (the loss positions), so every
batch is a full 8 x 512 block and the numbers do not depend on a data set's lengths.

Variants (`--variants a,b,...`), each a FinetuneConfig plus at most one loader switch:
- baseline:  the recipe's defaults at batch 8 (bf16 autocast where the CPU has it)
- fp32:      dtype = float32 (no autocast: are the bf16 copies what costs memory?)
- eager:     attention implementation "eager" instead of the default "sdpa"
- ckpt:      gradient_checkpointing = "on" (activation checkpointing, use_reentrant=False)
- mem2:      max_memory_gb = 2 (the recipe picks micro-batch and checkpointing to fit)
Variants alternate (A B C A B C) over `--repeats` so background load hits all alike.
Results go to bench/results/train_memory[-TAG].json only (docs/finetune.md quotes them by
hand, with this command). The code before a change is measured by pointing PYTHONPATH at an
export of that commit's src/ (`--tag head`).

    python bench/bench_train_memory.py [--steps 2] [--repeats 1] [--variants baseline,mem2]
    PYTHONPATH=/tmp/head/src python bench/bench_train_memory.py --variants baseline --tag head
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import interleave, machine, peak_rss_mib, publish, spread

VARIANTS: dict[str, dict] = {
    "baseline": {}, "fp32": {"dtype": "float32"}, "eager": {},
    "ckpt": {"gradient_checkpointing": "on"}, "mem2": {"max_memory_gb": 2.0},
    "mem3": {"max_memory_gb": 3.0},
}


def one(variant: str, steps: int, seq: int, completion: int, batch: int) -> dict:
    import random

    import torch
    import transformers

    from llm_ladder.finetune.data import IGNORE, TrainRow
    from llm_ladder.finetune.lora import train
    from llm_ladder.models.local import resolve_weights
    from llm_ladder.task import FinetuneConfig

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    if variant == "eager":  # the loader's attention implementation, nothing else changed
        load = transformers.AutoModelForCausalLM.from_pretrained

        def eager(*a, **k):
            return load(*a, **{**k, "attn_implementation": "eager"})

        transformers.AutoModelForCausalLM.from_pretrained = eager
    folder = resolve_weights("smollm2-135m", None)
    rng = random.Random(0)
    rows = []
    for i in range(steps * batch):
        ids = [rng.randrange(100, 49000) for _ in range(seq)]
        rows.append(TrainRow(f"r{i}", ids, [IGNORE] * (seq - completion) + ids[-completion:]))
    cfg = FinetuneConfig(epochs=1, batch_size=batch, max_seq_len=seq, save_every=10_000,
                         eval_every=10_000, **VARIANTS[variant])
    with tempfile.TemporaryDirectory() as d:
        result, _ = train(folder, cfg, rows, [], 0, Path(d) / "work", Path(d) / "out")
    return {"peak_rss_mib": peak_rss_mib(), "tokens_per_s": result.tokens_per_s,
            "seconds": result.seconds, "steps": result.steps, "dtype": result.dtype,
            "final_loss": result.history[-1]["loss"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--completion", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--variants", default="baseline,fp32,eager,ckpt,mem2")
    ap.add_argument("--tag", default="", help="results file suffix (e.g. 'head' for a run "
                    "with PYTHONPATH pointing at an older checkout)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print("RESULT " + json.dumps(one(a.one, a.steps, a.seq, a.completion, a.batch)))
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

    def variant(v: str):
        def run() -> dict:
            p = subprocess.run([sys.executable, __file__, "--one", v, "--steps", str(a.steps),
                                "--seq", str(a.seq), "--completion", str(a.completion),
                                "--batch", str(a.batch)],
                               capture_output=True, text=True, env=env)
            if p.returncode != 0:
                raise SystemExit(f"variant {v} failed:\n{p.stderr[-2000:]}")
            line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")][-1]
            return json.loads(line[7:])
        return run

    results = interleave({v: variant(v) for v in a.variants.split(",")}, a.repeats)
    summary = {v: {"peak_rss_mib": spread([r["peak_rss_mib"] for r in rs]),
                   "tokens_per_s": spread([r["tokens_per_s"] for r in rs]),
                   "dtype": rs[0]["dtype"]} for v, rs in results.items()}
    for v, s in summary.items():
        print(f"{v:10s} peak {s['peak_rss_mib']['median']:7.0f} MiB  "
              f"{s['tokens_per_s']['median']:7.1f} tok/s  ({s['dtype']})")
    doc = {"steps": a.steps, "seq": a.seq, "completion": a.completion, "batch": a.batch,
           "repeats": a.repeats, "results": results, "summary": summary}
    publish("train_memory" + (f"-{a.tag}" if a.tag else ""), doc, "", machine(),
            write_docs=False)


if __name__ == "__main__":
    main()
