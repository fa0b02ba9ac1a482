"""llama.cpp backend throughput as a ratio to llama.cpp's own `llama-bench`, same file.

llama-bench measures prefill (pp) and decode (tg) tokens/s for the GGUF with the same
threads. From those, the time llama.cpp itself would need for our workload is
sum(prompt tokens)/pp + sum(generated tokens)/tg; ratio = that time / our measured time
(1.0 = no overhead from our backend: templating, tokenizing, Python).

    bash bench/build_llama_bench.sh && python bench/bench_llamacpp.py [--n 24]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def llama_bench(gguf: Path, p: int, n: int, threads: int) -> dict[str, float]:
    exe = subprocess.run(["bash", str(ROOT / "bench/build_llama_bench.sh")], check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    out = subprocess.run([exe, "-m", str(gguf), "-p", str(p), "-n", str(n), "-t", str(threads),
                          "-r", "3", "-o", "json"], check=True, capture_output=True,
                         text=True).stdout
    res = {}
    for row in json.loads(out):
        kind = "pp" if row["n_prompt"] and not row["n_gen"] else "tg"
        res[kind] = row["avg_ts"]
    return res


from faq_prompts import faq_prompts  # noqa: E402  (bench/ is on sys.path when run)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()

    from llm_ladder.models.base import GenParams
    from llm_ladder.models.llamacpp import LlamaCppModel
    from llm_ladder.models.local import smollm2_gguf

    prompts = faq_prompts(args.n)
    model = LlamaCppModel(threads=args.threads)
    params = GenParams(max_tokens=args.max_tokens)
    model.generate(prompts[:1], params)  # warm-up
    t0 = time.perf_counter()
    gens = model.generate(prompts, params)
    ours_s = time.perf_counter() - t0
    tin = sum(g.tokens_in for g in gens)
    tout = sum(g.tokens_out for g in gens)

    ref = llama_bench(smollm2_gguf(), p=round(tin / len(gens)), n=args.max_tokens,
                      threads=args.threads)
    expected_s = tin / ref["pp"] + tout / ref["tg"]
    print(json.dumps({
        "bench": "llamacpp", "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "threads": args.threads, "requests": args.n, "prompt_tokens": tin,
        "generated_tokens": tout, "ours_s": ours_s,
        "llama_bench_pp_tok_s": ref["pp"], "llama_bench_tg_tok_s": ref["tg"],
        "llama_bench_expected_s": expected_s, "ratio": expected_s / ours_s,
        "ours_gen_tok_s": tout / ours_s,
    }, indent=2))


if __name__ == "__main__":
    main()
