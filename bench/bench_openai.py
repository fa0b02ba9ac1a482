"""The runner against an OpenAI-compatible server: is the server the bottleneck?

Starts llama.cpp's OpenAI-compatible server (llama-cpp-python[server]) on 127.0.0.1 with the
embedded GGUF. First the server's saturation throughput is measured with a bare load
generator (raw httpx posts from `--concurrency` threads, no parsing beyond JSON); then our
OpenAIModel (openai client, retries, usage accounting) sends the same requests at the same
concurrency. ratio = our requests/s / saturation requests/s (1.0: the client adds nothing).

    python bench/bench_openai.py [--n 24] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


from faq_prompts import faq_prompts  # noqa: E402  (bench/ is on sys.path when run)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()

    import httpx
    from servers import llama_server

    from llm_ladder.models.base import GenParams
    from llm_ladder.models.openai import OpenAIModel

    prompts = faq_prompts(args.n)
    with llama_server(threads=os.cpu_count() or 2) as base:
        client = httpx.Client(timeout=120)

        def raw(msgs):
            r = client.post(f"{base}/chat/completions", json={
                "model": "smollm2", "messages": msgs, "max_tokens": args.max_tokens,
                "temperature": 0, "seed": 0})
            r.raise_for_status()
            return r.json()["usage"]["completion_tokens"]

        raw(prompts[0])  # warm-up
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            raw_tokens = sum(pool.map(raw, prompts))
        raw_s = time.perf_counter() - t0

        model = OpenAIModel("smollm2", base_url=base, concurrency=args.concurrency)
        t0 = time.perf_counter()
        gens = model.generate(prompts, GenParams(max_tokens=args.max_tokens))
        ours_s = time.perf_counter() - t0
    errors = sum(1 for g in gens if g.error)
    print(json.dumps({
        "bench": "openai", "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "server": "llama-cpp-python[server] (llama.cpp), embedded GGUF",
        "requests": args.n, "concurrency": args.concurrency, "max_tokens": args.max_tokens,
        "saturation_req_s": args.n / raw_s, "ours_req_s": args.n / ours_s,
        "saturation_tokens": raw_tokens, "ours_tokens": sum(g.tokens_out for g in gens),
        "errors": errors, "ratio": raw_s / ours_s,
    }, indent=2))


if __name__ == "__main__":
    main()
