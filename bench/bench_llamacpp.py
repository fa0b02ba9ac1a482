"""llama.cpp backend throughput as a ratio to llama.cpp's own `llama-bench`, same GGUF.

Each repeat runs llama-bench (one repetition of prefill `pp` and decode `tg` tokens/s, same
threads, prompt length = our mean prompt length, `--max-tokens` generated) and then our
`LlamaCppModel.generate` on `--n` construction-FAQ chat requests, alternating. The time
llama.cpp itself would need for our workload is sum(prompt tokens)/pp + sum(generated
tokens)/tg, from the same repeat's llama-bench; ratio = that time / our measured time (1.0 = no
overhead from our backend: templating, tokenizing, Python). That row runs our backend one
request at a time (`batch_size = 1`), as llama-bench decodes one sequence. A third variant,
in the same repeats, is our default: `--batch` requests decoded as parallel sequences
(models/llamacpp.Batched); its ratio is to our one-at-a-time time of the same repeat, and
its answers are compared with the one-at-a-time answers. Reported: median (min-max) of
`--repeats` interleaved repeats, peak RSS of this process (our model) and of llama-bench.

llama-bench is built once per machine by bench/build_llama_bench.sh and cached outside the
repository (~/.cache/llm-ladder/llama-bench-<version>); the first run pays the build.
Skipped: GPU offload (this is the CPU backend's benchmark), sampling (greedy only).

    python bench/bench_llamacpp.py [--n 24] [--max-tokens 64] [--batch 8] [--repeats 3] [--quick]

Results: bench/results/llamacpp.json and its section of docs/benchmarks.md (benchlib).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]

from benchlib import fmt, interleave, machine, peak_rss_mib, publish, spread  # noqa: E402
from faq_prompts import faq_prompts  # noqa: E402  (bench/ is on sys.path when run)


def llama_bench_exe() -> tuple[str, float]:
    """The cached llama-bench binary (built on first use) and the seconds it took to get."""
    t0 = time.perf_counter()
    out = subprocess.run(["bash", str(ROOT / "bench/build_llama_bench.sh")], check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return out, time.perf_counter() - t0


def llama_bench(exe: str, gguf: Path, p: int, n: int, threads: int) -> dict[str, float]:
    """One llama-bench repetition: prefill and decode tokens/s."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([exe, "-m", str(gguf), "-p", str(p), "-n", str(n), "-t",
                             str(threads), "-r", "1", "-o", "json"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"llama-bench failed (exit {proc.returncode}): {exe}")
    res = {"seconds": time.perf_counter() - t0, "peak_rss_mib": usage.ru_maxrss / 1024}
    for row in json.loads(out):
        kind = "pp_tok_s" if row["n_prompt"] and not row["n_gen"] else "tg_tok_s"
        res[kind] = row["avg_ts"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="4 requests, 8 tokens, 1 repeat, no docs")
    args = ap.parse_args()
    if args.quick:
        args.n, args.max_tokens, args.repeats = 4, 8, 1
    m = machine()

    from llm_ladder.models.base import GenParams
    from llm_ladder.models.llamacpp import LlamaCppModel
    from llm_ladder.models.local import smollm2_gguf

    exe, build_s = llama_bench_exe()
    prompts = faq_prompts(args.n)
    model = LlamaCppModel(threads=args.threads, batch_size=1)
    params = GenParams(max_tokens=args.max_tokens)
    gens = model.generate(prompts, params)  # warm-up, and the prompt lengths for llama-bench
    mean_prompt = round(sum(g.tokens_in for g in gens) / len(gens))
    alone = [g.text for g in gens]
    gguf = smollm2_gguf()

    def ours(batch: int) -> dict:
        model.batch_size = batch  # the same weights and context, decoded 1 or `batch` at once
        t0 = time.perf_counter()
        out = model.generate(prompts, params)
        s_ = time.perf_counter() - t0
        return {"seconds": s_, "prompt_tokens": sum(g.tokens_in for g in out),
                "generated_tokens": sum(g.tokens_out for g in out),
                "errors": sum(1 for g in out if g.error),
                "same_as_alone": sum(g.text == a for g, a in zip(out, alone, strict=True))}

    runs = interleave({"llama_bench": lambda: llama_bench(exe, gguf, mean_prompt,
                                                          args.max_tokens, args.threads),
                       "ours": lambda: ours(1), "batched": lambda: ours(args.batch)},
                      args.repeats)
    expected = [o["prompt_tokens"] / b["pp_tok_s"] + o["generated_tokens"] / b["tg_tok_s"]
                for b, o in zip(runs["llama_bench"], runs["ours"], strict=True)]
    ratios = [e / o["seconds"] for e, o in zip(expected, runs["ours"], strict=True)]
    children_rss = max(b["peak_rss_mib"] for b in runs["llama_bench"])
    last = runs["ours"][-1]
    summary = {
        "pp_tok_s": spread([b["pp_tok_s"] for b in runs["llama_bench"]]),
        "tg_tok_s": spread([b["tg_tok_s"] for b in runs["llama_bench"]]),
        "expected_s": spread(expected),
        "ours_s": spread([o["seconds"] for o in runs["ours"]]),
        "ours_gen_tok_s": spread([o["generated_tokens"] / o["seconds"] for o in runs["ours"]]),
        "ratio": spread(ratios), "prompt_tokens": last["prompt_tokens"],
        "generated_tokens": last["generated_tokens"],
        "errors": sum(o["errors"] for o in runs["ours"] + runs["batched"]),
        "batched_s": spread([o["seconds"] for o in runs["batched"]]),
        "batched_gen_tok_s": spread([o["generated_tokens"] / o["seconds"]
                                     for o in runs["batched"]]),
        "batched_ratio": spread([o["seconds"] / b["seconds"] for o, b in
                                 zip(runs["ours"], runs["batched"], strict=True)]),
        "batched_same": min(o["same_as_alone"] for o in runs["batched"]),
        "peak_rss_mib": peak_rss_mib(), "llama_bench_peak_rss_mib": children_rss,
        "llama_bench_build_or_cache_s": build_s,
    }
    md = "\n".join([
        f"{args.n} construction-FAQ chat requests, greedy, ≤ {args.max_tokens} new tokens, "
        f"{args.threads} threads, the embedded SmolLM2-135M GGUF; median (min–max) of "
        f"{args.repeats} interleaved repeats. Each repeat runs llama-bench once (prompt "
        f"{mean_prompt} tokens, the mean of ours; {args.max_tokens} generated) and then our "
        "backend; the time llama.cpp alone would need for our workload is prompt tokens / pp + "
        "generated tokens / tg, and the ratio is that time over ours.",
        "",
        "| | prefill tok/s | decode tok/s | seconds for the workload | ratio (per repeat) |",
        "| --- | --- | --- | --- | --- |",
        f"| llama-bench (baseline) | {fmt(summary['pp_tok_s'], 0)} | "
        f"{fmt(summary['tg_tok_s'], 0)} | {fmt(summary['expected_s'])} (expected) | 1 |",
        f"| `LlamaCppModel.generate`, one at a time | | {fmt(summary['ours_gen_tok_s'], 0)} "
        f"(generated / wall time) | {fmt(summary['ours_s'])} | **{fmt(summary['ratio'], 2)}** |",
        f"| `LlamaCppModel.generate`, {args.batch} sequences per decode (the default) | | "
        f"{fmt(summary['batched_gen_tok_s'], 0)} | {fmt(summary['batched_s'])} | "
        f"**{fmt(summary['batched_ratio'], 2)}x** our one at a time |",
        "",
        f"Batched answers identical to one-at-a-time: {summary['batched_same']} of {args.n} "
        "(fewest in any repeat).",
        "",
        f"Workload: {summary['prompt_tokens']} prompt and {summary['generated_tokens']} "
        f"generated tokens; {summary['errors']} errors. Peak RSS: "
        f"{summary['peak_rss_mib']:.0f} MiB for this process (our model), "
        f"{children_rss:.0f} MiB for llama-bench.",
    ])
    publish("llamacpp", {"args": vars(args), "llama_bench": exe, "runs": runs,
                         "expected_s": expected, "summary": summary}, md, m,
            write_docs=not args.quick)


if __name__ == "__main__":
    main()
