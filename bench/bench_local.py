"""Local backend throughput vs a plain one-request-at-a-time transformers loop, same run.

Workload: construction-FAQ questions answered in free text (max 64 new tokens, greedy),
chat template applied. Baseline: `model.generate` on one request at a time, as a notebook
would. Ours: `TransformersModel.generate` (length-sorted, left-padded batches). Both use
the same weights object and the same prompts; output tokens per second is the figure.

    python bench/bench_local.py [--n 32] [--batch 16] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


from faq_prompts import faq_prompts  # noqa: E402  (bench/ is on sys.path when run)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()

    import torch

    from llm_ladder.models.base import GenParams
    from llm_ladder.models.local import TransformersModel

    prompts = faq_prompts(args.n)
    model = TransformersModel(batch_size=args.batch)
    params = GenParams(max_tokens=args.max_tokens)
    model.generate(prompts[:2], params)  # warm-up

    # baseline: the plain loop
    tok, hf = model.tokenizer, model.model
    t0 = time.perf_counter()
    base_tokens = 0
    eos = tok.eos_token_id
    with torch.inference_mode():
        for p in prompts:
            enc = tok.apply_chat_template(p, add_generation_prompt=True, return_tensors="pt",
                                          return_dict=True)
            out = hf.generate(**enc, max_new_tokens=args.max_tokens, do_sample=False,
                              pad_token_id=eos)
            new = out[0, enc["input_ids"].shape[1]:].tolist()
            base_tokens += new.index(eos) + 1 if eos in new else len(new)
    base_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    gens = model.generate(prompts, params)
    ours_s = time.perf_counter() - t0
    ours_tokens = sum(g.tokens_out for g in gens)

    result = {
        "bench": "local", "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "torch_threads": torch.get_num_threads(), "requests": args.n, "batch": args.batch,
        "max_tokens": args.max_tokens,
        "baseline_tok_s": base_tokens / base_s, "ours_tok_s": ours_tokens / ours_s,
        "baseline_s": base_s, "ours_s": ours_s,
        "baseline_tokens": base_tokens, "ours_tokens": ours_tokens,
    }
    result["ratio"] = result["ours_tok_s"] / result["baseline_tok_s"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
