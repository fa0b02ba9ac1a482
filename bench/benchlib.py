"""What every benchmark shares: the machine it ran on, interleaved repeats, results files,
and the section of docs/benchmarks.md it rewrites between its own markers.

A benchmark measures, then calls `publish(name, doc, markdown)`: the JSON (with the machine
and the command) goes to `bench/results/<name>.json`, and the markdown replaces what sits
between `<!-- bench:<name> -->` and `<!-- /bench:<name> -->` in docs/benchmarks.md, so no
figure in the docs is copied by hand. The machine block is measured, not named: CPU model
and flags from /proc/cpuinfo, the cores this process may use, memory bandwidth from a large
numpy copy and fp32/bf16 matmul GFLOP/s from torch, each the best of a few tries (a busy
machine measures lower; the block says so only through its numbers).
Skipped: GPUs (this file runs on the CPU box; a GPU benchmark adds its own device line).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()  # the benchmark's wall time runs from here (import)
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
PACKAGES = ("torch", "transformers", "peft", "numpy", "llama_cpp_python", "lancedb",
            "sentence-transformers", "llguidance")


def _cpuinfo() -> tuple[str, set[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), set()
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
    return (model.group(1).strip() if model else platform.machine(),
            set(flags.group(1).split()) if flags else set())


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def bandwidth_gb_s(mb: int = 512, tries: int = 5) -> float:
    """Copy bandwidth (bytes read + written per second) of a large numpy array, best try."""
    import numpy as np

    a = np.ones(mb * 2**20 // 8)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(tries):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return 2 * a.nbytes / best / 1e9


def matmul_gflop_s(dtype: str = "float32", n: int = 1024, tries: int = 5,
                   budget_s: float = 1.0) -> float | None:
    """Square matmul throughput with torch on this process's threads, best try.

    Tries stop once `budget_s` is spent; a warm-up that alone takes longer than the budget is
    the measurement (emulated bf16 on a CPU without it: ~1 GFLOP/s, 2 s per 1024^3 matmul,
    where five more tries would only confirm the order of magnitude).
    """
    try:
        import torch
    except ImportError:
        return None
    dt_ = getattr(torch, dtype)
    a = torch.randn(n, n).to(dt_)
    b = torch.randn(n, n).to(dt_)
    t0 = time.perf_counter()
    a @ b  # warm-up
    best = time.perf_counter() - t0
    if best > budget_s:
        return 2 * n**3 / best / 1e9
    best, spent = float("inf"), 0.0
    for _ in range(tries):
        t0 = time.perf_counter()
        a @ b
        took = time.perf_counter() - t0
        best, spent = min(best, took), spent + took
        if spent > budget_s:
            break
    return 2 * n**3 / best / 1e9


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


MACHINE_ENV = "LADDER_BENCH_MACHINE"  # run_all.py probes once and hands it to each step


def machine() -> dict[str, Any]:
    """The machine as measured now (~10 s), or as `run_all.py` probed it at the start of the
    tier (passed in $LADDER_BENCH_MACHINE) with the load average read now."""
    if probed := os.environ.get(MACHINE_ENV):
        m = json.loads(probed)
        return {**m, "load_avg": [round(x, 2) for x in os.getloadavg()],
                "probed_at_tier_start": True}
    model, flags = _cpuinfo()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return {
        "cpu": model, "cores": cores,
        "flags": sorted(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
                        if f in flags),
        "memory_gib": _mem_total_gib(), "os": f"{platform.system()} {platform.machine()}",
        "bandwidth_gb_s": round(bandwidth_gb_s(), 1),
        "matmul_gflop_s": {d: round(v, 1) for d in ("float32", "bfloat16")
                           if (v := matmul_gflop_s(d)) is not None},
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "versions": versions(),
    }


def machine_line(m: dict[str, Any]) -> str:
    flops = ", ".join(f"{v:.0f} GFLOP/s {k}" for k, v in m["matmul_gflop_s"].items())
    libs = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    when = " at the start of the tier" if m.get("probed_at_tier_start") else ""
    return (f"*Machine:* {m['cpu']}, {m['cores']} cores ({' '.join(m['flags']) or 'no AVX2'}), "
            f"{m['memory_gib']} GiB; measured{when} {m['bandwidth_gb_s']:.0f} GB/s copy "
            f"bandwidth, {flops}; load average {m['load_avg'][0]} at the start; {libs}.")


def spread(values: list[float]) -> dict[str, float]:
    """Median with min and max of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def fmt(s: dict[str, float], digits: int = 1) -> str:
    """'median (min–max)' of a `spread`."""
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def interleave(variants: dict[str, Callable[[], dict[str, Any]]], repeats: int,
               log: Callable[[str], None] = print) -> dict[str, list[dict[str, Any]]]:
    """Run A B C A B C ... so background load hits every variant alike."""
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in variants}
    for rep in range(repeats):
        for name, fn in variants.items():
            r = fn()
            out[name].append(r)
            log(f"repeat {rep + 1}/{repeats} {name}: "
                + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in r.items() if not isinstance(v, list | dict)))
    return out


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def replace_section(text: str, name: str, body: str) -> str:
    """`text` with the part between bench:name's markers replaced by `body`."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise SystemExit(f"docs/benchmarks.md has no {start} ... {end} markers; add them "
                         "where the section belongs")
    return text[:i + len(start)] + "\n" + body.strip() + "\n" + text[j:]


def publish(name: str, doc: dict[str, Any], markdown: str, m: dict[str, Any] | None = None,
            write_docs: bool = True) -> Path:
    """Write bench/results/<name>.json and regenerate the section in docs/benchmarks.md."""
    m = m or machine()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python " + " ".join(["bench/" + Path(sys.argv[0]).name] + sys.argv[1:])
    wall_s = round(time.perf_counter() - STARTED, 1)
    full = {"bench": name, "measured": now, "command": command, "wall_s": wall_s, "machine": m,
            **doc}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(full, indent=2), encoding="utf-8")
    if write_docs:
        section = (f"```\n{command}\n```\n\n{markdown.strip()}\n\n"
                   f"Measured {now}; the benchmark took {wall_s / 60:.1f} min. {machine_line(m)} "
                   f"Raw: `bench/results/{name}.json`.")
        DOC.write_text(replace_section(DOC.read_text(encoding="utf-8"), name, section),
                       encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)}" + (f" and its section of {DOC.relative_to(ROOT)}"
                                               if write_docs else ""))
    return path
