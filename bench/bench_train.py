"""Training throughput: our LoRA recipe vs a plain transformers Trainer + PEFT baseline.

Both train the same LoRA config (r=16 on all linear layers of SmolLM2-135M) for one epoch
over the same train examples (the construction-FAQ task, zero-shot prompt + label, as the
`lora` rung trains), batch 8, on the same machine. Each run is its own subprocess (so peak
memory is its own) and the variants alternate (A B A B ...) so background load hits both.

Like for like, in each precision (float32 and bfloat16 autocast):
- baseline: `Trainer` with the same learning rate, warmup, weight decay, gradient clipping
  and batch, the same completion-only labels (`DataCollatorForSeq2Seq`, -100 on the prompt),
  random batches padded to the longest, full-vocabulary logits at every position.
- ours: `llm_ladder.finetune.lora.train` (length-grouped batches, LM head only at completion
  positions, no attention mask on right-padded rows, the fused LoRA forward on CPU, and
  packing: a batch's rows as one sequence with their shared chat-template prefix once).
Both timers cover the training loop only (after model load and optimizer set-up; the
baseline's through a TrainerCallback on train begin/end).

Reported: train tokens/s (the examples' tokens / training wall time), the ratio
ours/baseline per repeat in the same precision, the positions each run put through the model
(padding included; ours packs a batch's rows with their shared prompt prefix once where that
is cheaper; `ours-padded`, ours with `packing = false`, shows what packing alone gives:
`--variants baseline:float32,ours-padded:float32,ours:float32`, left out of `make bench` for
its 30-minute budget), the share of the machine's matmul limit (4N FLOP per position run
over the matmul GFLOP/s of that precision, probed in this process right before each
repeat: the host's speed drifts within a `make bench` run, and a probe from the start of the
tier once put a run at 141% of its "limit") and peak RSS (VmHWM of each run's own process);
median (min-max) of interleaved repeats. Results: bench/results/train.json and docs/benchmarks.md.

    python bench/bench_train.py [--n 64] [--repeats 3] [--variants ...] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import fmt, interleave, machine, matmul_gflop_s, peak_rss_mib, publish, spread

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


def run_ours(n: int, dtype: str, packing: bool = True) -> dict:
    from llm_ladder.finetune.lora import train
    from llm_ladder.task import FinetuneConfig

    folder, tok, built = rows(n)
    cfg = FinetuneConfig(epochs=1, batch_size=8, dtype=dtype, save_every=10_000,
                         eval_every=10_000, packing=packing)
    with tempfile.TemporaryDirectory() as d:
        result, _ = train(folder, cfg, built, [], tok.eos_token_id, Path(d) / "work",
                          Path(d) / "out")
    return {"seconds": result.seconds, "tokens": sum(len(r.input_ids) for r in built),
            "positions": result.model_tokens, "steps": result.steps,
            "final_loss": result.history[-1]["loss"]}


def run_baseline(n: int, dtype: str) -> dict:
    """transformers' Trainer + PEFT on the same rows, loss, batch and precision as ours."""
    folder, tok, built = rows(n)
    out = trainer_peft(folder, tok, [(r.input_ids, r.labels) for r in built], dtype)
    return {**out, "tokens": sum(len(r.input_ids) for r in built)}


def trainer_peft(folder, tok, rows: list[tuple[list[int], list[int]]], dtype: str,
                 batch: int = 8, micro: int | None = None,
                 checkpointing: bool = False) -> dict:
    """One epoch of transformers' Trainer + PEFT over (input_ids, labels) rows, the recipe's
    LoRA and optimizer settings; `micro` rows per forward with gradient accumulation up to
    `batch` rows per update, and `checkpointing`: transformers' own way to save memory.
    Timed from train begin to train end (a TrainerCallback), as ours is timed."""
    import peft
    import torch
    import transformers

    from llm_ladder.task import FinetuneConfig

    micro = micro or batch
    cfg = FinetuneConfig()
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model = peft.get_peft_model(model, peft.LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules, task_type="CAUSAL_LM"))
    # the same objective: the completion-only labels our rows carry (-100 on the prompt)
    data = [{"input_ids": ids, "labels": labels} for ids, labels in rows]
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    clock: dict[str, float] = {}
    collator = transformers.DataCollatorForSeq2Seq(tok, label_pad_token_id=-100)
    positions = [0]

    def counting(features: list[dict]) -> dict:
        """The collator, counting the positions it hands the model (padding included)."""
        batch = collator(features)
        positions[0] += batch["input_ids"].numel()
        return batch

    class Clock(transformers.TrainerCallback):
        """Time the training loop only, as ours is timed (after model load and set-up)."""

        def on_train_begin(self, *a, **k):
            clock["t0"] = time.perf_counter()

        def on_train_end(self, *a, **k):
            clock["t1"] = time.perf_counter()

    with tempfile.TemporaryDirectory() as d:
        args = transformers.TrainingArguments(
            output_dir=d, per_device_train_batch_size=micro,
            gradient_accumulation_steps=batch // micro, num_train_epochs=1,
            gradient_checkpointing=checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
            learning_rate=cfg.learning_rate, save_strategy="no", report_to=[],
            logging_strategy="no", use_cpu=True, seed=0, bf16=dtype == "bfloat16",
            max_grad_norm=1.0, warmup_steps=float(cfg.warmup_ratio), weight_decay=cfg.weight_decay)
        trainer = transformers.Trainer(
            model=model, args=args, train_dataset=data, callbacks=[Clock()],
            data_collator=counting)
        out = trainer.train()
    return {"seconds": clock["t1"] - clock["t0"], "positions": positions[0],
            "steps": out.global_step, "final_loss": out.training_loss}


def one(variant: str, n: int) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    kind, dtype = variant.split(":")
    res = (run_baseline(n, dtype) if kind == "baseline"
           else run_ours(n, dtype, packing=kind != "ours-padded"))
    res["peak_rss_mb"] = peak_rss_mib()
    res["tokens_per_s"] = res["tokens"] / res["seconds"]
    print("RESULT " + json.dumps(res))


def flop_per_token() -> float:
    """LoRA training FLOP per token: forward 2N + backward through activations 2N (the frozen
    weights get no gradient), N = every parameter of the base (embeddings included)."""
    from safetensors import safe_open

    from llm_ladder.models.local import resolve_weights

    folder = resolve_weights("smollm2-135m", None)
    n = 0
    for f in folder.glob("*.safetensors"):
        with safe_open(f, "pt") as st:
            for k in st.keys():
                shape = st.get_slice(k).get_shape()
                size = 1
                for d in shape:
                    size *= d
                n += size
    return 4.0 * n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64, help="train examples (one epoch)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", default=None,
                    help="default: baseline and ours in float32, and in bfloat16 where the CPU "
                         "has native bf16 (emulated bf16 is several times slower than "
                         "float32); add ours-padded:<dtype> for what packing alone gives")
    ap.add_argument("--quick", action="store_true", help="16 examples, 1 repeat, no docs")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        one(a.one, a.n)
        return
    if a.quick:
        a.n, a.repeats = 16, 1
    if a.variants is None:
        from llm_ladder.hardware import cpu_has_bf16

        a.variants = "baseline:float32,ours:float32" + (
            ",baseline:bfloat16,ours:bfloat16" if cpu_has_bf16() else "")
    m = machine()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

    def variant(v: str):
        def run() -> dict:
            p = subprocess.run([sys.executable, __file__, "--one", v, "--n", str(a.n)],
                               capture_output=True, text=True, env=env, check=True)
            line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")][-1]
            return json.loads(line[7:])
        return run

    dtypes = sorted({v.split(":")[1] for v in a.variants.split(",")})
    probes = {f"probe:{d}": (lambda d=d: {"gflop_s": matmul_gflop_s(d)}) for d in dtypes}
    results = interleave({**probes, **{v: variant(v) for v in a.variants.split(",")}},
                         a.repeats)
    limits = {d: spread([r["gflop_s"] for r in results.pop(f"probe:{d}")]) for d in dtypes}
    fpt = flop_per_token()
    summary: dict[str, dict] = {}
    for v, rs in results.items():
        dtype = v.split(":")[1]
        tps = spread([r["tokens_per_s"] for r in rs])
        base = f"baseline:{dtype}"
        ratio = (spread([r["tokens_per_s"] / b["tokens_per_s"]
                         for r, b in zip(rs, results[base], strict=True)])
                 if base in results else None)
        limit = limits[dtype]["median"]
        pps = spread([r["positions"] / r["seconds"] for r in rs])
        summary[v] = {"tokens_per_s": tps, "ratio_to_baseline_same_precision": ratio,
                      "peak_rss_mib": spread([r["peak_rss_mb"] for r in rs]),
                      "steps": rs[0]["steps"], "tokens": rs[0]["tokens"],
                      "positions": rs[0]["positions"], "positions_per_s": pps,
                      "share_of_matmul_limit": (pps["median"] * fpt / 1e9 / limit
                                                if limit else None)}
    lines = ["| variant | train tokens/s | ratio to the baseline in the same precision "
             "(per repeat) | positions run (padding included, a shared prefix once) | "
             "share of the matmul limit (positions run) | peak RSS MiB |",
             "| --- | --- | --- | ---: | --- | --- |"]
    for v, s_ in summary.items():
        r = s_["ratio_to_baseline_same_precision"]
        share = s_["share_of_matmul_limit"]
        lines.append(f"| {v} | {fmt(s_['tokens_per_s'])} | "
                     f"{'**' + fmt(r, 2) + 'x**' if r and not v.startswith('baseline') else '1'}"
                     f" | {s_['positions']} | {f'{share:.0%}' if share is not None else '-'} | "
                     f"{fmt(s_['peak_rss_mib'], 0)} |")
    packing_gain = {d: spread([p["tokens_per_s"] / q["tokens_per_s"] for p, q in zip(
        results[f"ours:{d}"], results[f"ours-padded:{d}"], strict=True)])
        for d in dtypes if f"ours:{d}" in results and f"ours-padded:{d}" in results}
    for d, g in packing_gain.items():
        summary[f"ours:{d}"]["ratio_to_ours_padded"] = g
    md = (f"{a.n} construction-FAQ train examples ({summary[next(iter(summary))]['tokens']} "
          f"tokens), one epoch, batch 8, LoRA r = 16 on every linear layer, completion-only "
          f"loss in both; median (min–max) of {a.repeats} interleaved repeats, each in its own "
          f"process. The matmul limit is {fpt / 1e6:.0f} MFLOP per token (4N) against the "
          f"matmul GFLOP/s of that precision probed right before each repeat: "
          + ", ".join(f"{d} {fmt(limits[d], 0)} GFLOP/s" for d in dtypes) + "."
          + ("" if "bfloat16" in a.variants else
             " bfloat16 not run: this CPU has no native bf16 (AVX512-BF16 or AMX), where "
             "the recipe trains in float32.")
          + " `ours` packs a batch's rows into one sequence with their shared chat-template "
            "prefix once where that is estimated cheaper (same loss, docs/finetune.md); "
          + ("`ours-padded` is ours with `[finetune] packing = false`, each batch's rows "
             "padded to the longest." if "ours-padded" in a.variants else
             "what packing alone gives: `--variants baseline:float32,ours-padded:float32,"
             "ours:float32` (not run here).")
          + "\n\n" + "\n".join(lines)
          + "".join(f"\n\nPacking alone ({d}), ours / ours-padded per repeat: "
                    f"**{fmt(g, 2)}x**." for d, g in packing_gain.items()))
    publish("train", {"n": a.n, "repeats": a.repeats, "flop_per_token": fpt,
                      "matmul_gflop_s": limits, "results": results, "summary": summary},
            md, m, write_docs=not a.quick)


if __name__ == "__main__":
    main()
