"""Training throughput: our LoRA recipe vs a plain transformers Trainer + PEFT baseline.

Both train the same LoRA config (r=16 on all linear layers of SmolLM2-135M) for one epoch
over the same train examples (the construction-FAQ task, zero-shot prompt + label, as the
`lora` rung trains), batch 8, on the same machine. Each run is its own subprocess (so peak
memory is its own) and the variants alternate (A B A B ...) so background load hits both.

- baseline: `Trainer` with default arguments, `DataCollatorForLanguageModeling(mlm=False)`
  (random batches padded to the longest, loss on every token), float32.
- ours: `llm_ladder.finetune.lora.train` (length-grouped batches, LM head only at completion
  positions, loss on the completion), at the dtype given.

Reported: train tokens/s (real, non-padding tokens divided by training wall time, model
loading excluded), seconds, peak RSS, and the ratio ours/baseline.

    python bench/bench_train.py --n 192 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASK = ROOT / "examples" / "construction-faq"


def rows(n: int):
    from transformers import AutoTokenizer

    from llm_ladder.finetune.data import build_rows
    from llm_ladder.models.local import resolve_weights
    from llm_ladder.rungs.base import RungContext, get_rung
    from llm_ladder.session import prepare
    from llm_ladder.task import load_task

    task = load_task(TASK)
    prep = prepare(task)
    pipe = get_rung("zero-shot").build(RungContext(task, prep.splits.train, prep.labels))
    folder = resolve_weights("smollm2-135m", None)
    tok = AutoTokenizer.from_pretrained(folder)
    built, _ = build_rows(prep.splits.train[:n], lambda i: pipe.prepare(i)[0], tok, 512, 1)
    return folder, tok, built


def run_ours(n: int, dtype: str) -> dict:
    from llm_ladder.finetune.lora import train
    from llm_ladder.task import FinetuneConfig

    folder, tok, built = rows(n)
    cfg = FinetuneConfig(epochs=1, batch_size=8, dtype=dtype, save_every=10_000,
                         eval_every=10_000)
    with tempfile.TemporaryDirectory() as d:
        result, _ = train(folder, cfg, built, [], tok.eos_token_id, Path(d) / "work",
                          Path(d) / "out")
    return {"seconds": result.seconds, "tokens": sum(len(r.input_ids) for r in built),
            "steps": result.steps, "final_loss": result.history[-1]["loss"]}


def run_baseline(n: int) -> dict:
    import peft
    import torch
    import transformers

    from llm_ladder.task import FinetuneConfig

    folder, tok, built = rows(n)
    cfg = FinetuneConfig()
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model = peft.get_peft_model(model, peft.LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules, task_type="CAUSAL_LM"))
    data = [{"input_ids": r.input_ids} for r in built]
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    with tempfile.TemporaryDirectory() as d:
        args = transformers.TrainingArguments(
            output_dir=d, per_device_train_batch_size=8, num_train_epochs=1,
            learning_rate=cfg.learning_rate, save_strategy="no", report_to=[],
            logging_strategy="no", use_cpu=True, seed=0)
        trainer = transformers.Trainer(
            model=model, args=args, train_dataset=data,
            data_collator=transformers.DataCollatorForLanguageModeling(tok, mlm=False))
        t0 = time.perf_counter()
        out = trainer.train()
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "tokens": sum(len(r.input_ids) for r in built),
            "steps": out.global_step, "final_loss": out.training_loss}


def one(variant: str, n: int) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    res = run_baseline(n) if variant == "baseline" else run_ours(n, variant.split(":")[1])
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["tokens_per_s"] = res["tokens"] / res["seconds"]
    print("RESULT " + json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=192, help="train examples (one epoch)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--variants", default="baseline,ours:float32,ours:bfloat16")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        one(a.one, a.n)
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    results: dict[str, list[dict]] = {}
    for rep in range(a.repeats):
        for v in a.variants.split(","):
            p = subprocess.run([sys.executable, __file__, "--one", v, "--n", str(a.n)],
                               capture_output=True, text=True, env=env, check=True)
            line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")][-1]
            r = json.loads(line[7:])
            results.setdefault(v, []).append(r)
            print(f"rep {rep} {v:16s} {r['tokens_per_s']:7.1f} tok/s  {r['seconds']:6.1f} s  "
                  f"peak {r['peak_rss_mb']:.0f} MB  loss {r['final_loss']:.3f}", flush=True)
    base = statistics.median(r["tokens_per_s"] for r in results["baseline"])
    summary = {}
    for v, rs in results.items():
        tps = statistics.median(r["tokens_per_s"] for r in rs)
        summary[v] = {"tokens_per_s": tps, "ratio": tps / base,
                      "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                      "steps": rs[0]["steps"], "tokens": rs[0]["tokens"]}
        print(f"{v:16s} median {tps:7.1f} tok/s = {tps / base:.2f}x baseline, peak "
              f"{summary[v]['peak_rss_mb']:.0f} MB")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "train.json").write_text(json.dumps({"n": a.n, "results": results,
                                                "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
