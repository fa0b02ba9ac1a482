"""The runner against an OpenAI-compatible server: is the server the bottleneck?

Starts llama.cpp's OpenAI-compatible server (llama-cpp-python[server]) on 127.0.0.1 with the
embedded GGUF, once. Each repeat sends the same `--n` chat requests twice, alternating: with
a bare load generator (raw httpx posts from `--concurrency` threads, no parsing beyond JSON:
the server's saturation throughput) and with our `OpenAIModel` (official openai client,
retries, usage accounting) at the same concurrency. ratio = our requests/s / saturation
requests/s of the same repeat (1.0: the client adds nothing). Reported: median (min-max) of
`--repeats` interleaved repeats, errors, peak RSS of this process (the clients) and of the
server process (the model).
Skipped: streaming, and servers other than llama.cpp's (tests/test_openai*.py cover those).

    python bench/bench_openai.py [--n 24] [--concurrency 4] [--repeats 3] [--quick]

Results: bench/results/openai.json and its section of docs/benchmarks.md (benchlib).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from benchlib import fmt, interleave, machine, peak_rss_mib, publish, spread  # noqa: E402
from faq_prompts import faq_prompts  # noqa: E402  (bench/ is on sys.path when run)


def children_peak_rss_mib() -> float | None:
    """Peak RSS (VmHWM) of this process's live children, MiB: the server's."""
    peaks = []
    for kids in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        for pid in kids.read_text().split():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peaks.append(int(line.split()[1]) / 1024)
            except OSError:
                pass
    return max(peaks) if peaks else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="4 requests, 8 tokens, 1 repeat, no docs")
    args = ap.parse_args()
    if args.quick:
        args.n, args.max_tokens, args.repeats = 4, 8, 1
    m = machine()

    import httpx
    from servers import llama_server

    from llm_ladder.models.base import GenParams
    from llm_ladder.models.openai import OpenAIModel

    prompts = faq_prompts(args.n)
    threads = len(os.sched_getaffinity(0))
    with llama_server(threads=threads) as base, httpx.Client(timeout=120) as client:

        def raw(msgs) -> tuple[int, int]:
            try:
                r = client.post(f"{base}/chat/completions", json={
                    "model": "smollm2", "messages": msgs, "max_tokens": args.max_tokens,
                    "temperature": 0, "seed": 0})
                r.raise_for_status()
                return r.json()["usage"]["completion_tokens"], 0
            except (httpx.HTTPError, KeyError, ValueError):
                return 0, 1

        def bare() -> dict:
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                done = list(pool.map(raw, prompts))
            s_ = time.perf_counter() - t0
            return {"seconds": s_, "req_s": args.n / s_, "tokens": sum(t for t, _ in done),
                    "errors": sum(e for _, e in done)}

        model = OpenAIModel("smollm2", base_url=base, concurrency=args.concurrency)
        params = GenParams(max_tokens=args.max_tokens)

        def ours() -> dict:
            t0 = time.perf_counter()
            gens = model.generate(prompts, params)
            s_ = time.perf_counter() - t0
            return {"seconds": s_, "req_s": args.n / s_,
                    "tokens": sum(g.tokens_out for g in gens),
                    "errors": sum(1 for g in gens if g.error)}

        raw(prompts[0])  # warm-up of both paths
        model.generate(prompts[:1], params)
        runs = interleave({"bare": bare, "ours": ours}, args.repeats)
        server_rss = children_peak_rss_mib()
    ratio = spread([o["req_s"] / b["req_s"] for o, b in zip(runs["ours"], runs["bare"],
                                                             strict=True)])
    summary = {"bare_req_s": spread([r["req_s"] for r in runs["bare"]]),
               "ours_req_s": spread([r["req_s"] for r in runs["ours"]]), "ratio": ratio,
               "bare_tokens": runs["bare"][-1]["tokens"], "ours_tokens": runs["ours"][-1]["tokens"],
               "bare_errors": sum(r["errors"] for r in runs["bare"]),
               "ours_errors": sum(r["errors"] for r in runs["ours"]),
               "peak_rss_mib": peak_rss_mib(), "server_peak_rss_mib": server_rss}
    server_mem = f"{server_rss:.0f} MiB" if server_rss is not None else "not readable"
    md = "\n".join([
        f"llama.cpp's OpenAI-compatible server (`llama-cpp-python[server]`, {threads} threads) "
        f"on 127.0.0.1 serving the embedded SmolLM2-135M GGUF; {args.n} construction-FAQ chat "
        f"requests, ≤ {args.max_tokens} tokens, concurrency {args.concurrency}; median "
        f"(min–max) of {args.repeats} interleaved repeats. Saturation (baseline): a bare load "
        "generator (raw httpx posts from as many threads). Ours: `OpenAIModel.generate` "
        "(official `openai` client, retries, usage accounting) at the same concurrency.",
        "",
        "| | requests/s | ratio (per repeat) | tokens (last repeat) | errors (all repeats) |",
        "| --- | --- | --- | --- | --- |",
        f"| server saturation (bare client) | {fmt(summary['bare_req_s'], 3)} | 1 | "
        f"{summary['bare_tokens']} | {summary['bare_errors']} |",
        f"| llm-ladder runner | {fmt(summary['ours_req_s'], 3)} | **{fmt(ratio, 2)}** | "
        f"{summary['ours_tokens']} | {summary['ours_errors']} |",
        "",
        f"Peak RSS: {summary['peak_rss_mib']:.0f} MiB for the benchmark process (both "
        f"clients), {server_mem} for the server (the model). Client and server share the "
        "same cores.",
    ])
    publish("openai", {"args": vars(args), "runs": runs, "summary": summary}, md, m,
            write_docs=not args.quick)


if __name__ == "__main__":
    main()
