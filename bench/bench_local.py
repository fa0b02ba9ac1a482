"""Local backend throughput on the FAQ test split, against its former batching and the
matmul limit; packed against stock kernels and a plain loop on request (`--kernels`, `--loop`).

Workload: construction-FAQ questions answered in free text (max 64 new tokens, greedy),
chat template applied.

First part, with `--kernels` or `--loop` only (left out of `make bench` for its 30-minute
budget; not a target of its own): `--n` questions. Ours: `TransformersModel.generate`
(length-sorted, left-padded batches) with its default oneDNN-packed weights
(models/packed.py), against the same with `packed_weights=False` (PyTorch's default CPU
kernels: MKL), which is what packing alone gives (~1.5 min). `--loop` adds the plain loop
the ratios were first taken against: `model.generate` on one request at a time, as a
notebook would, on a stock transformers model (~4.5 min more on 2 cores). All use the same
weights file and the same prompts; output tokens per second is the figure, as the median
(min-max) of `--repeats` interleaved repeats, with the ratio per repeat, the share of the
decode ceiling (weights bytes streamed once per decode step of a batch: measured bandwidth /
model bytes x batch), and the process's peak RSS. `--anti-loop` adds ours with the anti-loop
defaults (no-repeat 3-grams) timed against ours without (not a target; 0.97x when last
measured).

Second part (always), the FAQ test split (the 60 test questions of examples/construction-faq, its
own seeded split), float32: the backend's batching as it was before 2026-11-28 (batches of
16, every row running the whole prompt) against the default (batches of up to 64 within the
KV-cache budget, the prompt prefix the rows share run once), with the step between them (64
rows, no prefix sharing), one model object whose two settings change between variants,
interleaved: output tokens/s, ratios per repeat, the share of the matmul limit (2 FLOP per
weight per generated token at the measured float32 GFLOP/s), identical answers.

Third part, on a CPU with native bf16 only: the same test split with float32 against
bfloat16 weights (`[models.x] dtype`), one batch of `--split-batch` each, interleaved: output
tokens/s and their ratio per repeat, how many greedy answers are identical, and the quality
effect of the ones that differ as token F1 against the FAQ's answer text, paired (sign-flip
permutation test, BCa interval on the mean difference: llm_ladder.stats.paired_test).

    python bench/bench_local.py [--n 16] [--batch 16] [--max-tokens 64] [--repeats 3]
                                [--split-batch 64] [--kernels] [--loop] [--anti-loop]
                                [--prefix-alone] [--quick]

Results: bench/results/local.json and its section of docs/benchmarks.md (benchlib).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


from benchlib import fmt, interleave, machine, peak_rss_mib, publish, spread  # noqa: E402
from faq_prompts import faq_prompts  # noqa: E402  (bench/ is on sys.path when run)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--split-batch", type=int, default=64)
    ap.add_argument("--prefix-alone", action="store_true",
                    help="also time the default's batches without the shared prefix (what "
                    "prefix sharing alone gives; ~1 min more)")
    ap.add_argument("--kernels", action="store_true",
                    help="also time --n questions in batches with packed weights against "
                    "PyTorch's default kernels (~1.5 min more: not a target)")
    ap.add_argument("--loop", action="store_true",
                    help="that, and the plain one-at-a-time loop (~4.5 min more: not a "
                    "target)")
    ap.add_argument("--anti-loop", action="store_true",
                    help="also time the anti-loop defaults (no-repeat 3-grams) against ours")
    ap.add_argument("--quick", action="store_true", help="4 prompts, 8 tokens, 1 repeat, no docs")
    args = ap.parse_args()
    split_limit = None
    if args.quick:
        args.n, args.batch, args.max_tokens, args.repeats = 4, 4, 8, 1
        args.split_batch, split_limit = 8, 8
    m = machine()

    from llm_ladder.models.base import GenParams
    from llm_ladder.models.local import TransformersModel

    model = TransformersModel(batch_size=args.batch)  # packed weights: the default
    # like for like with the plain loop: no anti-loop processor; the defaults timed apart
    params = GenParams(max_tokens=args.max_tokens, no_repeat_ngram_size=0)
    model.generate(faq_prompts(2), params)  # warm-up
    first = (kernels_part(args, model, params, m)
             if args.kernels or args.loop or args.anti_loop else None)
    split32 = test_split_batching(args, params, split_limit, m, model)
    split = test_split_bf16(args, params, split_limit, m)
    md = "\n".join((first["markdown"] if first else [])
                    + batching_markdown(split32, args, first is not None)
                    + (split_markdown(split) if split else []))
    publish("local", {"args": vars(args), "kernels": first and {
        k: v for k, v in first.items() if k != "markdown"},
        "test_split_batching": split32, "test_split_bf16": split}, md, m,
        write_docs=not args.quick)


def kernels_part(args, model, params, m: dict) -> dict:
    """The 16 questions in batches: packed weights (`model`) against PyTorch's default
    kernels, and the plain one-at-a-time loop with `--loop`; interleaved."""
    import torch

    from llm_ladder.models.base import GenParams
    from llm_ladder.models.local import TransformersModel

    prompts = faq_prompts(args.n)
    stock = TransformersModel(batch_size=args.batch, packed_weights=False)
    defaults = GenParams(max_tokens=args.max_tokens)
    stock.generate(prompts[:2], params)  # warm-up
    tok, hf = stock.tokenizer, stock.model
    eos = tok.eos_token_id
    outputs: dict[str, list[list[int]]] = {}

    def baseline() -> dict:
        """The plain loop: `model.generate` on one request at a time."""
        t0 = time.perf_counter()
        n_tokens, texts = 0, []
        with torch.inference_mode():
            for p in prompts:
                enc = tok.apply_chat_template(p, add_generation_prompt=True,
                                              return_tensors="pt", return_dict=True)
                out = hf.generate(**enc, max_new_tokens=args.max_tokens, do_sample=False,
                                  pad_token_id=eos)
                new = out[0, enc["input_ids"].shape[1]:].tolist()
                new = new[:new.index(eos)] if eos in new else new
                n_tokens += len(new) + (1 if len(new) < args.max_tokens else 0)
                texts.append(tok.decode(new, skip_special_tokens=True).strip())
        s_ = time.perf_counter() - t0
        outputs["baseline"] = texts
        return {"seconds": s_, "tokens": n_tokens, "tok_s": n_tokens / s_}

    def ours(p: GenParams, key: str, which=model):
        return lambda: timed_generate(which, prompts, p, outputs, key)

    variants = {**({"baseline": baseline} if args.loop else {}),
                "ours_stock": ours(params, "ours_stock", stock), "ours": ours(params, "ours")}
    if args.anti_loop:
        variants["ours_anti_loop"] = ours(defaults, "ours_anti_loop")
    runs = interleave(variants, args.repeats)
    weights_bytes = sum(p.numel() * p.element_size() for p in hf.parameters())
    ceiling = m["bandwidth_gb_s"] * 1e9 / weights_bytes * args.batch  # tokens/s
    same_stock = sum(a == b for a, b in zip(outputs["ours_stock"], outputs["ours"],
                                            strict=True))
    per_repeat = {k: [r["tok_s"] for r in v] for k, v in runs.items()}
    summary = {"ours_tok_s": spread(per_repeat["ours"]),
               "ours_stock_tok_s": spread(per_repeat["ours_stock"]),
               "packed_over_stock": spread([o / s for o, s in zip(
                   per_repeat["ours"], per_repeat["ours_stock"], strict=True)]),
               "same_outputs_packed_vs_stock": same_stock,
               "decode_ceiling_tok_s": ceiling,
               "share_of_ceiling": spread([r["tok_s"] / ceiling for r in runs["ours"]]),
               "peak_rss_mib": peak_rss_mib(), "torch_threads": torch.get_num_threads()}
    if args.loop:
        summary |= {
            "baseline_tok_s": spread(per_repeat["baseline"]),
            "ratio": spread([o / b for o, b in zip(per_repeat["ours"], per_repeat["baseline"],
                                                   strict=True)]),
            "ours_stock_ratio": spread([o / b for o, b in zip(
                per_repeat["ours_stock"], per_repeat["baseline"], strict=True)]),
            "same_outputs": sum(a == b for a, b in zip(outputs["baseline"], outputs["ours"],
                                                       strict=True))}
    if args.anti_loop:
        summary["anti_loop_tok_s"] = spread([r["tok_s"] for r in runs["ours_anti_loop"]])
        summary["anti_loop_ratio"] = spread([a["tok_s"] / o["tok_s"] for a, o in zip(
            runs["ours_anti_loop"], runs["ours"], strict=True)])
    summary["runs"] = runs
    summary["markdown"] = first_table(args, summary, weights_bytes)
    return summary


def first_table(args, summary: dict, weights_bytes: int) -> list[str]:
    """The 16 questions: batched with and without packed weights (and the plain loop with
    `--loop`), ratios to the first row."""
    loop = "baseline_tok_s" in summary
    first = ("`model.generate` on one request at a time on a stock transformers model "
             "(PyTorch's default CPU kernels)" if loop else
             "the same batched generation on PyTorch's default CPU kernels "
             "(`packed_weights = false`)")
    stock = (f"| `TransformersModel.generate`, batches of {args.batch}, PyTorch's default "
             f"kernels (`packed_weights = false`) | {fmt(summary['ours_stock_tok_s'])} | ")
    ceiling = summary["decode_ceiling_tok_s"]
    rows = ([f"| plain loop (baseline) | {fmt(summary['baseline_tok_s'])} | 1 | |",
             stock + f"{fmt(summary['ours_stock_ratio'], 2)}x | |"] if loop else
            [stock + "1 | |"])
    ours = (f"**{fmt(summary['ratio'], 2)}x**; {fmt(summary['packed_over_stock'], 2)}x the "
            "row above" if loop else f"**{fmt(summary['packed_over_stock'], 2)}x**")
    same = (f"{summary['same_outputs']} of {args.n} (plain loop and packed batches), "
            if loop else "")
    return [
        f"{args.n} construction-FAQ questions answered in free text (greedy, ≤ "
        f"{args.max_tokens} new tokens, chat template), float32; median (min–max) of "
        f"{args.repeats} interleaved repeats. Baseline: {first}, same weights file, same "
        "prompts." + ("" if loop else " The plain one-at-a-time loop: `--loop` (not run here)."),
        "",
        "| | output tokens/s | ratio (per repeat) | share of the decode ceiling |",
        "| --- | --- | --- | --- |",
        *rows,
        f"| `TransformersModel.generate`, batches of {args.batch}, oneDNN-packed weights "
        f"(the default) | {fmt(summary['ours_tok_s'])} | {ours} | "
        f"{summary['share_of_ceiling']['median']:.0%} of {ceiling:.0f} tok/s |",
    ] + ([f"| the same with the anti-loop defaults (no-repeat 3-grams) | "
          f"{fmt(summary['anti_loop_tok_s'])} | {fmt(summary['anti_loop_ratio'], 2)}x of the "
          "row above | |"] if "anti_loop_tok_s" in summary else []) + [
        "",
        f"Identical outputs: {same}{summary['same_outputs_packed_vs_stock']} of {args.n} "
        f"(packed and default kernels, both batched). Peak RSS "
        f"{summary['peak_rss_mib']:.0f} MiB (this process holds both models). "
        f"The decode ceiling streams the {weights_bytes / 2**20:.0f} MiB of weights once per "
        f"step of a batch of {args.batch} at the measured copy bandwidth.",
    ]


def timed_generate(model, prompts, params, texts: dict, key: str) -> dict:
    """One timed `generate` over all prompts; the answers go to texts[key]."""
    t0 = time.perf_counter()
    gens = model.generate(prompts, params)
    s_ = time.perf_counter() - t0
    texts[key] = [g.text.strip() for g in gens]
    n_tokens = sum(g.tokens_out for g in gens)
    return {"seconds": s_, "tokens": n_tokens, "tok_s": n_tokens / s_}


def split_prompts(limit: int | None) -> tuple[list, list[str]]:
    """The FAQ test split's questions as chat requests, and the FAQ's answer texts."""
    from llm_ladder.session import prepare
    from llm_ladder.task import load_task

    test = prepare(load_task(ROOT / "examples" / "construction-faq")).splits.test[:limit]
    return ([[{"role": "user", "content": e.input_text()}] for e in test],
            [str(e.meta["answer"]) for e in test])


# (key, batch_size, share_prefix, label): the batching before 2026-11-28, the step between,
# and the default (batch_size None: the backend's own, with its KV-cache budget)
BATCHINGS = [("former", 16, False, "batches of 16, the whole prompt per row (before "
              "2026-11-28)"),
             ("rows", None, False, "the default's batches, the whole prompt per row"),
             ("default", None, True, "the default: batches of up to 64 within the KV-cache "
              "budget, the shared prompt prefix run once")]


def test_split_batching(args, params, limit: int | None, m: dict, model) -> dict:
    """The FAQ test split in float32 under the former and the current batching (one model
    object, its `batch_size` and `share_prefix` set per variant), interleaved."""
    from llm_ladder.models.local import DEFAULT_BATCH_SIZE, batches, shared_prefix

    prompts, _ = split_prompts(limit)
    texts: dict[str, list[str]] = {}

    def run(size: int | None, share: bool, key: str):
        def go() -> dict:
            model.batch_size, model.share_prefix = size or DEFAULT_BATCH_SIZE, share
            return timed_generate(model, prompts, params, texts, key)
        return go

    chosen = [b for b in BATCHINGS if b[0] != "rows" or args.prefix_alone]
    runs = interleave({k: run(size, share, k) for k, size, share, _ in chosen}, args.repeats)
    model.batch_size, model.share_prefix = args.batch, True
    ids = [model._ids(p) for p in prompts]
    groups = batches([len(i) for i in ids], params.max_tokens, DEFAULT_BATCH_SIZE,
                     model.batch_tokens)
    n_params = sum(p.numel() for p in model.model.parameters())
    limit_tok_s = m["matmul_gflop_s"]["float32"] * 1e9 / (2 * n_params)
    tok_s = {k: [r["tok_s"] for r in runs[k]] for k in runs}
    return {"questions": len(prompts), "runs": runs, "matmul_limit_tok_s": limit_tok_s,
            "tok_s": {k: spread(v) for k, v in tok_s.items()},
            "share_of_matmul_limit": {k: spread([x / limit_tok_s for x in v])
                                      for k, v in tok_s.items()},
            "ratio": {k: spread([a / b for a, b in zip(v, tok_s["former"], strict=True)])
                      for k, v in tok_s.items()},
            "prefix_alone": spread([a / b for a, b in zip(tok_s["default"], tok_s["rows"],
                                                          strict=True)])
            if "rows" in tok_s else None,
            "default_batches": [len(g) for g in groups],
            "shared_prefix": [shared_prefix([ids[i] for i in g]) for g in groups],
            "identical": {k: sum(a == b for a, b in zip(texts[k], texts["former"],
                                                        strict=True)) for k in texts}}


def batching_markdown(s: dict, args, after_first: bool) -> list[str]:
    rows = [f"| {label} | {fmt(s['tok_s'][k])} | "
            + ("1" if k == "former" else f"**{fmt(s['ratio'][k], 2)}x**" if k == "default"
               else f"{fmt(s['ratio'][k], 2)}x")
            + f" | {s['share_of_matmul_limit'][k]['median']:.0%} | {s['identical'][k]} of "
            f"{s['questions']} |" for k, _, _, label in BATCHINGS if k in s["tok_s"]]
    return [
        "",
        f"**The FAQ test split in float32** ({s['questions']} test questions of "
        "examples/construction-faq answered in free text, "
        + ("same settings as above" if after_first else f"greedy, ≤ {args.max_tokens} new "
           f"tokens, chat template, median (min–max) of {args.repeats} interleaved repeats")
        + "), batching "
        "before and after 2026-11-28, one model object, interleaved.",
        "",
        "| batching | output tokens/s | ratio to the first row (per repeat) | share of the "
        "matmul limit | answers identical to the first row's |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
        (f"Prefix sharing alone (third row over second): {fmt(s['prefix_alone'], 2)}x. "
         if s["prefix_alone"] else "Prefix sharing alone: `--prefix-alone` (not run here). ")
        + f"The default ran the split as {len(s['default_batches'])} batch(es) of "
        f"{', '.join(map(str, s['default_batches']))} with a shared prefix of "
        f"{', '.join(map(str, s['shared_prefix']))} tokens. The matmul limit, "
        f"{s['matmul_limit_tok_s']:.0f} tok/s, is 2 FLOP per weight per generated token at "
        "the float32 GFLOP/s probed at the start (prefill and attention not counted, so no "
        "run reaches it).",
    ]


def test_split_bf16(args, params, limit: int | None, m: dict) -> dict | None:
    """float32 vs bfloat16 weights on the FAQ test split: speed, identical answers, token F1."""
    from llm_ladder.hardware import cpu_has_bf16
    from llm_ladder.metrics import TokenF1
    from llm_ladder.models.local import TransformersModel
    from llm_ladder.stats import paired_test

    if not cpu_has_bf16():
        return None
    prompts, refs = split_prompts(limit)
    models = {d: TransformersModel(batch_size=args.split_batch, dtype=d)
              for d in ("float32", "bfloat16")}
    texts: dict[str, list[str]] = {}

    def run(dtype: str):
        return lambda: timed_generate(models[dtype], prompts, params, texts, dtype)

    for model in models.values():
        model.generate(prompts[:2], params)  # warm-up
    runs = interleave({d: run(d) for d in models}, args.repeats)
    f1 = TokenF1()
    scores = {d: [f1.score(t, r).value for t, r in zip(texts[d], refs, strict=True)]
              for d in models}
    paired = paired_test(scores["float32"], scores["bfloat16"])
    # the matmul limit: 2 FLOP per weight per token at the measured GFLOP/s of that dtype
    n_params = sum(p.numel() for p in models["float32"].model.parameters())
    limit_tok_s = {d: m["matmul_gflop_s"][d] * 1e9 / (2 * n_params) for d in models}
    return {"questions": len(prompts), "batch": args.split_batch, "runs": runs,
            "matmul_limit_tok_s": limit_tok_s,
            "share_of_matmul_limit": {d: spread([r["tok_s"] / limit_tok_s[d] for r in runs[d]])
                                      for d in models},
            "tok_s": {d: spread([r["tok_s"] for r in runs[d]]) for d in models},
            "ratio": spread([b["tok_s"] / f["tok_s"] for b, f in zip(
                runs["bfloat16"], runs["float32"], strict=True)]),
            "identical": sum(a == b for a, b in zip(texts["float32"], texts["bfloat16"],
                                                    strict=True)),
            "token_f1": paired.as_dict(), "peak_rss_mib": peak_rss_mib()}


def split_markdown(s: dict) -> list[str]:
    t, p = s["token_f1"], s["token_f1"]
    return [
        "",
        f"**The FAQ test split in bfloat16** ({s['questions']} test questions of "
        "examples/construction-faq answered in free text, same settings as above, one batch "
        f"of {s['batch']}; `[models.x] dtype`): float32 against bfloat16 weights, "
        "interleaved.",
        "",
        "| weights | output tokens/s | ratio (per repeat) | share of the matmul limit |",
        "| --- | --- | --- | --- |",
        f"| float32 (the default, the reference) | {fmt(s['tok_s']['float32'])} | 1 | "
        f"{_share(s, 'float32')} |",
        f"| bfloat16 | **{fmt(s['tok_s']['bfloat16'])}** | {fmt(s['ratio'], 2)}x | "
        f"{_share(s, 'bfloat16')} |",
        "",
        f"Identical greedy answers: {s['identical']} of {s['questions']}. Token F1 against "
        f"the FAQ's answer text: float32 {t['mean_a']:.3f}, bfloat16 {t['mean_b']:.3f}; "
        f"bfloat16 minus float32 {t['diff']:+.3f} [{p['low']:+.3f}, {p['high']:+.3f}] "
        f"({p['interval']}), {p['test']} p = {p['p_value']:.2f}. The matmul limit is 2 FLOP "
        "per weight per generated token at the measured GFLOP/s of that dtype (at batch 64 "
        "decoding is compute-bound, not bandwidth-bound).",
    ]


def _share(s: dict, dtype: str) -> str:
    return (f"{s['share_of_matmul_limit'][dtype]['median']:.0%} of "
            f"{s['matmul_limit_tok_s'][dtype]:.0f} tok/s")


if __name__ == "__main__":
    main()
