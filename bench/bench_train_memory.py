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
- trainer[-ckpt][-mN]: the like-for-like baseline, transformers' Trainer + PEFT on the same
             rows, LoRA, optimizer and completion-only labels (`bench_train.trainer_peft`),
             in the precision the recipe picks here; `-ckpt` turns on its gradient
             checkpointing and `-mN` runs N rows per forward with gradient accumulation up to
             the batch: the memory savings transformers itself offers
Variants alternate (A B C A B C) over `--repeats` so background load hits all alike.
Results go to bench/results/train_memory[-TAG].json and, without --tag or --quick, to the
train_memory section of docs/benchmarks.md. The code before a change is measured by
pointing PYTHONPATH at an export of that commit's src/ (`--tag head`).

    python bench/bench_train_memory.py [--steps 1] [--repeats 3] [--variants baseline,mem2]
    python bench/bench_train_memory.py --quick
    PYTHONPATH=/tmp/head/src python bench/bench_train_memory.py --variants baseline --tag head
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_train import trainer_peft
from benchlib import fmt, interleave, machine, peak_rss_mib, publish, spread

VARIANTS: dict[str, dict] = {
    "baseline": {}, "fp32": {"dtype": "float32"}, "eager": {},
    "ckpt": {"gradient_checkpointing": "on"}, "mem2": {"max_memory_gb": 2.0},
    "mem3": {"max_memory_gb": 3.0},
}


def trainer_setting(variant: str, batch: int) -> tuple[int, bool] | None:
    """(rows per forward, checkpointing) of a `trainer[-ckpt][-mN]` variant, else None."""
    m = re.fullmatch(r"trainer(-ckpt)?(?:-m(\d+))?", variant)
    if m is None:
        return None
    micro = int(m.group(2) or batch)
    if micro < 1 or batch % micro:
        raise SystemExit(f"{variant}: rows per forward must divide the batch of {batch}")
    return micro, m.group(1) is not None


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
    trainer = trainer_setting(variant, batch)
    if trainer is not None:
        from llm_ladder.finetune.lora import pick_precision

        micro, ckpt = trainer
        _, dtype, _ = pick_precision(FinetuneConfig())  # the precision ours trains in here
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        out = trainer_peft(folder, tok, [(r.input_ids, r.labels) for r in rows], dtype,
                           batch=batch, micro=micro, checkpointing=ckpt)
        return {"peak_rss_mib": peak_rss_mib(), "tokens_per_s": len(rows) * seq / out["seconds"],
                "plan": f"{micro} row(s) per forward, {batch // micro} accumulated"
                        + (", gradient checkpointing" if ckpt else ""),
                "seconds": out["seconds"], "steps": out["steps"], "dtype": dtype,
                "final_loss": out["final_loss"]}
    cfg = FinetuneConfig(epochs=1, batch_size=batch, max_seq_len=seq, save_every=10_000,
                         eval_every=10_000, **VARIANTS[variant])
    with tempfile.TemporaryDirectory() as d:
        result, _ = train(folder, cfg, rows, [], 0, Path(d) / "work", Path(d) / "out")
    plan = result.memory or {}
    return {"peak_rss_mib": peak_rss_mib(), "tokens_per_s": result.tokens_per_s,
            "plan": plan.get("note", "") + (f", {plan['micro_tokens']}-token micro-batches"
                                            if plan.get("micro_tokens") else ""),
            "seconds": result.seconds, "steps": result.steps, "dtype": result.dtype,
            "final_loss": result.history[-1]["loss"], "memory_plan": plan}


LABELS = {
    "baseline": "recipe defaults, whole batches",
    "ckpt": "activation checkpointing on, whole batches",
    "mem2": "`max_memory_gb = 2` (the recipe plans micro-batches / checkpointing)",
    "mem3": "`max_memory_gb = 3`", "fp32": "float32 (no bf16 autocast)",
    "eager": "eager attention instead of sdpa",
}


def table(summary: dict, ratios: dict, a: argparse.Namespace) -> str:
    rows = [f"LoRA (the recipe's defaults: r 16, all seven projections) on SmolLM2-135M, "
            f"{a.steps} optimizer steps of {a.batch} rows x {a.seq} tokens ({a.completion} of "
            "them the completion); peak resident memory (VmHWM) of the training process, "
            "median (min–max) of "
            f"{a.repeats} interleaved repeats. Goal (issue 13): under 2 GiB (2,048 MiB) without "
            "losing the training speed goal.", "",
            "| variant | peak MiB | under 2 GiB | train tok/s | plan |", "|---|---:|:--:|---:|---|"]
    for v, s in summary.items():
        peak = s["peak_rss_mib"]
        rows.append(f"| {label(v, a.batch)} | {fmt(peak, 0)} | "
                    f"{'yes' if peak['max'] < 2048 else 'no'} | {fmt(s['tokens_per_s'])} | "
                    f"{s['plan']} |")
    for v, r in ratios.items():
        rows += ["", f"Ours with `max_memory_gb = 2` over {label(v, a.batch)}, train tokens/s per "
                 f"repeat: **{fmt(r, 2)}x**."]
    return "\n".join(rows)


def label(variant: str, batch: int) -> str:
    """A variant's row label; Trainer variants spelled out from their setting."""
    setting = trainer_setting(variant, batch)
    if variant in LABELS or setting is None:
        return LABELS.get(variant, variant)
    micro, ckpt = setting
    return ("transformers `Trainer` + PEFT" + (", gradient checkpointing" if ckpt else "")
            + (f", {micro} row(s) per forward with gradient accumulation" if micro != batch
               else ", whole batches"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--completion", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    # the target's rows: max_memory_gb = 2 (the fix) and the like-for-like baseline for its
    # speed, Trainer + PEFT with transformers' own memory savings at their most frugal
    # (checkpointing, one row per forward). `baseline` (the recipe's defaults: the problem,
    # ~11 GB at every run so far) and `ckpt` (checkpointing without micro-batches) cost ~3
    # min each on 2 cores and run only when asked for (`make bench` has a 30-minute budget)
    ap.add_argument("--variants", default="mem2,trainer-ckpt-m1")
    ap.add_argument("--quick", action="store_true", help="1 step of 2 x 128 tokens, 1 repeat, "
                    "no docs")
    ap.add_argument("--tag", default="", help="results file suffix (e.g. 'head' for a run "
                    "with PYTHONPATH pointing at an older checkout); no docs written")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.quick:
        a.steps, a.seq, a.completion, a.batch, a.repeats = 1, 128, 32, 2, 1
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
                   "dtype": rs[0]["dtype"], "plan": rs[0]["plan"]} for v, rs in results.items()}
    for v, s in summary.items():
        print(f"{v:10s} peak {s['peak_rss_mib']['median']:7.0f} MiB  "
              f"{s['tokens_per_s']['median']:7.1f} tok/s  ({s['dtype']}; {s['plan']})")
    # like for like under the limit: ours with max_memory_gb = 2 over each Trainer + PEFT
    # variant, per repeat (the repeats ran side by side)
    ratios = {v: spread([o["tokens_per_s"] / t["tokens_per_s"] for o, t in zip(
        results["mem2"], rs, strict=True)]) for v, rs in results.items()
        if "mem2" in results and trainer_setting(v, a.batch) is not None}
    doc = {"steps": a.steps, "seq": a.seq, "completion": a.completion, "batch": a.batch,
           "repeats": a.repeats, "results": results, "summary": summary,
           "mem2_over_trainer": ratios}
    publish("train_memory" + (f"-{a.tag}" if a.tag else ""), doc, table(summary, ratios, a),
            machine(),
            write_docs=not (a.quick or a.tag))


if __name__ == "__main__":
    main()
