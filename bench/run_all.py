"""Run a tier of benchmarks back to back, each in its own process, and record the tier's wall
time as one uninterrupted run.

Tiers (`make bench`, `make bench-scale`, `make bench-quick`):
- core: every speed, memory and serving target of docs/benchmarks.md at the sizes its target
  names (the shipped corpus, 100k stored vectors, 8 x 512 training tokens, >= 500 requests).
  Goal: under 30 minutes on 2 cores.
- scale: retrieval at scale, which cannot fit that budget by its nature: 1M synthetic
  vectors built three times, and MiniLM embeddings of up to 100,200 real passages (embedded
  once per machine and cached; ~40 min in float32 on 2 cores, about half with native bf16).
- quick: every script of both tiers at tiny sizes, 1 repeat, no docs written (does it run?).

Each benchmark writes its own results file and docs section (benchlib.publish); this script
adds bench/results/make_bench[_scale].json and its section: the wall time of each step as
this run measured it, and the total. The machine is probed once, at the start of the tier
(bandwidth, matmul GFLOP/s: ~10 s), and handed to every step. A failing benchmark stops the
run with its exit status.
Skipped: vLLM (`make bench-vllm`: it needs its own venv).

    python bench/run_all.py [--tier core|scale] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchlib import MACHINE_ENV, machine, publish

HERE = Path(__file__).resolve().parent
TIERS: dict[str, list[list[str]]] = {
    "core": [["bench_local.py"], ["bench_train.py"], ["bench_train_memory.py"],
             ["bench_serve.py"], ["bench_llamacpp.py"], ["bench_openai.py"], ["bench_rag.py"],
             ["bench_vectors.py"], ["bench_audit.py"]],
    "scale": [["bench_vectors.py", "--scale"], ["bench_vectors_real.py"]],
}


def run(steps: list[list[str]], quick: bool, m: dict | None = None) -> list[dict]:
    """Each step in its own process; `m`, the machine probed once, is handed to every step
    (benchlib.machine reads it back and adds the load average of that moment)."""
    env = {**os.environ, **({MACHINE_ENV: json.dumps(m)} if m else {})}
    done = []
    for step in steps:
        cmd = [sys.executable, str(HERE / step[0]), *step[1:], *(["--quick"] if quick else [])]
        print(f"== {' '.join(['bench/' + step[0], *cmd[2:]])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=HERE.parent, env=env).returncode
        done.append({"step": " ".join(step), "seconds": round(time.perf_counter() - t0, 1)})
        if rc != 0:
            raise SystemExit(f"{step[0]} failed (exit status {rc}); the run stops here")
    return done


def markdown(tier: str, steps: list[dict]) -> str:
    total = sum(s["seconds"] for s in steps)
    lines = [f"The `{tier}` tier run back to back by `bench/run_all.py`, each benchmark in its "
             "own process (meant for an otherwise idle machine), the machine probed once at the "
             "start; wall time per step as this run measured it (model loads included).", "",
             "| step | minutes |", "| --- | ---: |"]
    lines += [f"| `bench/{s['step']}` | {s['seconds'] / 60:.1f} |" for s in steps]
    lines.append(f"| **total** | **{total / 60:.1f}** |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tier", choices=sorted(TIERS), default="core")
    ap.add_argument("--quick", action="store_true", help="both tiers at tiny sizes, no docs")
    a = ap.parse_args()
    if a.quick:
        steps = run([s for t in TIERS.values() for s in t], quick=True)
        print(f"all ran in {sum(s['seconds'] for s in steps) / 60:.1f} min")
        return
    m = machine()
    steps = run(TIERS[a.tier], quick=False, m=m)
    for s in steps:
        print(f"{s['step']:32} {s['seconds'] / 60:5.1f} min")
    print(f"{'total':32} {sum(s['seconds'] for s in steps) / 60:5.1f} min")
    doc = {"tier": a.tier, "steps": steps}
    if a.tier == "core":
        publish("make_bench", doc, markdown(a.tier, steps), m)
    else:
        publish("make_bench_scale", doc, markdown(a.tier, steps), m)


if __name__ == "__main__":
    main()
