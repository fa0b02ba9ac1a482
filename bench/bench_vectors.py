"""LanceStore query latency and recall at 10^5 (and, `--scale`, 10^6) stored SYNTHETIC vectors.

For each size N: N synthetic unit vectors (dim 384, float32) are made once, with 200 queries
and their exact top-10 (numpy, the ground truth). Each repeat then runs, alternating:

- numpy (baseline): brute force `X @ q` + argpartition on the vectors in memory, one query at
  a time;
- LanceStore (ours), in a fresh temporary folder: insert (batches of 20,000 through `add`,
  dummy chunk texts), the exact flat scan the store does without an index (the first
  `--exact-queries` queries, `--exact-queries-1m` at N >= 10^6, since each one reads every
  vector), `build_ann_index()` (default IVF_SQ with ~sqrt(N) partitions) and the ANN search
  with the store's default nprobes/refine_factor.

Recall@10 is the overlap of each top-10 with the ground truth, averaged over queries.
Latencies are wall-clock per call (p50/p95 ms) after 5 uncounted warm-up queries. Every
figure is the median (min-max) over `--repeats`; a sweep of other nprobes/refine_factor
settings runs once, on the last repeat's index. Peak RSS is the process's.

The data are synthetic, not embeddings of text: 1000 random centroids (`--clusters`), each a
mix of one of 30 random "topic" directions (`--topics`) and its own direction, and every
vector is its centroid plus Gaussian noise (`--noise`, per dimension), normalized; a query is
the centroid of a random stored vector's cluster plus fresh noise. Clustered data are what a
partition index is built for; on uniform random vectors (no structure) IVF recall collapses,
which `--uniform N` shows with an extra uniform run at N vectors (its exact scan is not timed:
the clustered run of the same size times it). It is not part of `make bench` (a minute of its
30): real MiniLM embeddings, which `bench_vectors_real.py` measures up to 100k, answer the
same question on data a user has.

    python bench/bench_vectors.py [--sizes 100000] [--repeats 3] [--uniform 100000] [--quick]
    python bench/bench_vectors.py --scale     # 10^6 vectors, no uniform run (make bench-scale)

Results: bench/results/vectors.json and its section of docs/benchmarks.md (benchlib);
`--scale` writes vectors_1m instead. The 10^6 size needs ~4 GiB of memory and ~6 minutes on
2 cores (three builds), which is why it is in `make bench-scale`, not `make bench`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import fmt, interleave, machine, peak_rss_mib, publish, spread

os.environ.setdefault("LANCE_LOG", "error")
DIM = 384
K = 10
BATCH = 20_000
WARMUP = 5
SWEEP = [(10, 0), (20, 0), (10, 5), (20, 10), (40, 10)]  # (nprobes, refine_factor)


def clustered(n: int, clusters: int, topics: int, noise: float, seed: int = 0):
    """(centroids, labels, vectors): unit float32 vectors around `clusters` centroids."""
    rng = np.random.default_rng(seed)
    if clusters == 0:  # uniform on the sphere
        x = rng.standard_normal((n, DIM), dtype=np.float32)
        return None, None, x / np.linalg.norm(x, axis=1, keepdims=True)
    cent = rng.standard_normal((clusters, DIM), dtype=np.float32)
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    if topics:
        top = rng.standard_normal((topics, DIM), dtype=np.float32)
        top /= np.linalg.norm(top, axis=1, keepdims=True)
        cent += top[rng.integers(0, topics, clusters)]
        cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    labels = rng.integers(0, clusters, n)
    out = np.empty((n, DIM), np.float32)
    for s in range(0, n, 100_000):  # bounded temporaries
        e = min(n, s + 100_000)
        x = cent[labels[s:e]] + noise * rng.standard_normal((e - s, DIM), dtype=np.float32)
        out[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return cent, labels, out


def queries(n_q: int, cent, labels, n: int, noise: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if cent is None:
        q = rng.standard_normal((n_q, DIM), dtype=np.float32)
    else:
        q = cent[labels[rng.integers(0, n, n_q)]]
        q = q + noise * rng.standard_normal((n_q, DIM), dtype=np.float32)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def top_k(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Indices of the K most similar rows of x to q (cosine: rows are unit), best first."""
    s = x @ q
    idx = np.argpartition(-s, K)[:K]
    return idx[np.argsort(-s[idx])]


def brute_force(x: np.ndarray, qs: np.ndarray) -> dict[str, float]:
    """The baseline: numpy's exact top-k one query at a time, latency after WARMUP queries."""
    for q in qs[:WARMUP]:
        top_k(x, q)
    lat = []
    for q in qs:
        t0 = time.perf_counter()
        top_k(x, q)
        lat.append(time.perf_counter() - t0)
    return ms(lat)


def ms(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 2),
            "p95_ms": round(float(np.percentile(a, 95)), 2),
            "mean_ms": round(float(a.mean()), 2), "n": len(samples)}


def timed_search(store, qs: np.ndarray, truth: np.ndarray | None, **kw) -> dict:
    """Latency (after WARMUP uncounted queries) and recall@K of store.search over qs."""
    for q in qs[:WARMUP]:
        store.search(q, k=K, **kw)
    lat, rec = [], []
    for i, q in enumerate(qs):
        t = time.perf_counter()
        hits = store.search(q, k=K, **kw)
        lat.append(time.perf_counter() - t)
        if truth is not None:
            got = {int(c.id[1:]) for c, _ in hits}
            rec.append(len(got & set(truth[i].tolist())) / K)
    out = ms(lat)
    if truth is not None:
        out["recall_at_10"] = round(float(np.mean(rec)), 4)
    return out


def bench_size(n: int, args: argparse.Namespace, clusters: int, sweep: bool) -> dict:
    """numpy vs LanceStore (insert, exact, index build, ANN) at n vectors, interleaved."""
    from llm_ladder.rag.chunking import Chunk
    from llm_ladder.rag.stores import LanceStore

    t = time.perf_counter()
    cent, labels, x = clustered(n, clusters, args.topics, args.noise)
    qs = queries(args.queries, cent, labels, n, args.noise)
    generate_s = time.perf_counter() - t
    truth = np.empty((len(qs), K), np.int64)  # batched, bounded memory
    for s in range(0, len(qs), 20):
        sims = qs[s:s + 20] @ x.T
        part = np.argpartition(-sims, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1)
        truth[s:s + 20] = np.take_along_axis(part, order, axis=1)
        del sims
    n_exact = min(len(qs), args.exact_queries if n < 1_000_000 else args.exact_queries_1m)
    n_exact = n_exact if clusters else 0  # uniform: the exact scan is timed on clustered data
    sweep_out: list[dict] = []
    left = iter(range(args.repeats, 0, -1))

    def numpy_pass() -> dict:
        return brute_force(x, qs)

    def lance_run() -> dict:
        last = next(left) == 1
        tmp = Path(tempfile.mkdtemp(prefix="bench_vectors_"))
        res: dict = {}
        try:
            store = LanceStore(tmp / "index", "synthetic-384", DIM)
            t0 = time.perf_counter()
            for s in range(0, n, BATCH):
                e = min(n, s + BATCH)
                store.add([Chunk(id=f"v{i}", doc_id=f"doc{i // 100}", source=f"doc{i // 100}.md",
                                 position=i % 100, text=f"synthetic chunk {i}")
                           for i in range(s, e)], x[s:e])
            store.optimize()
            res["insert_s"] = time.perf_counter() - t0
            if n_exact:
                res["exact"] = timed_search(store, qs[:n_exact], truth[:n_exact])
            t0 = time.perf_counter()
            res["index"] = store.build_ann_index(args.kind, args.num_partitions)
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
                      lambda s: print(f"N={n}{'' if clusters else ' uniform'}: {s}", flush=True))
    lance = runs["lance"]
    return {
        "n": n, "clusters": clusters, "generate_s": generate_s, "exact_queries": n_exact,
        "runs": runs, "sweep_last_repeat": sweep_out,
        "numpy_p50_ms": spread([r["p50_ms"] for r in runs["numpy"]]),
        "numpy_p95_ms": spread([r["p95_ms"] for r in runs["numpy"]]),
        "insert_s": spread([r["insert_s"] for r in lance]),
        "build_s": spread([r["build_s"] for r in lance]),
        "exact_p50_ms": spread([r["exact"]["p50_ms"] for r in lance]) if n_exact else None,
        "exact_p95_ms": spread([r["exact"]["p95_ms"] for r in lance]) if n_exact else None,
        "exact_recall": spread([r["exact"]["recall_at_10"] for r in lance]) if n_exact else None,
        "ann_p50_ms": spread([r["ann"]["p50_ms"] for r in lance]),
        "ann_p95_ms": spread([r["ann"]["p95_ms"] for r in lance]),
        "ann_recall": spread([r["ann"]["recall_at_10"] for r in lance]),
        "index": lance[-1]["index"], "peak_rss_mib_so_far": peak_rss_mib(),
    }


def _n(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


def markdown(results: list[dict], args: argparse.Namespace, defaults: tuple[int, int]) -> str:
    lines = [
        f"**Synthetic data, not text embeddings:** 384-dimensional unit vectors in "
        f"{args.clusters} clusters (centroids mixed from {args.topics} topic directions, noise "
        f"{args.noise} per dimension); {args.queries} queries (a cluster centroid plus fresh "
        "noise), k = 10, recall@10 against numpy brute force. ANN index: "
        f"{args.kind.upper()}, cosine, ~√N partitions, searched with the store's defaults "
        f"(nprobes: a quarter of the partitions, at least {defaults[0]}; refine_factor "
        f"{defaults[1]}). Median (min–max) of "
        f"{args.repeats} interleaved repeats (numpy, then a fresh LanceStore); p95 is the "
        "median of the repeats' p95s.",
        "",
        "| N | data | insert, s | index build, s | partitions / probed | exact p50 / p95, ms | "
        "ANN p50 / p95, ms | ANN recall@10 | numpy p50 / p95, ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        data = f"{r['clusters']} clusters" if r["clusters"] else "**uniform random**"
        exact = ("not timed" if not r["exact_queries"] else
                 f"{fmt(r['exact_p50_ms'])} / {r['exact_p95_ms']['median']:.1f}"
                 + (f" ({r['exact_queries']} queries)" if r["exact_queries"] < args.queries
                    else ""))
        lines.append(
            f"| {_n(r['n'])} | {data} | {fmt(r['insert_s'])} | {fmt(r['build_s'])} | "
            f"{r['index']['num_partitions']} / {r['index']['nprobes']} | {exact} | "
            f"**{fmt(r['ann_p50_ms'])}** / {r['ann_p95_ms']['median']:.1f} | "
            f"**{fmt(r['ann_recall'], 3)}** | {fmt(r['numpy_p50_ms'], 2)} / "
            f"{r['numpy_p95_ms']['median']:.1f} |")
    swept = [r for r in results if r["sweep_last_repeat"]]
    if swept:
        big = swept[-1]
        lines += ["", f"Other search settings on the last repeat's index at {_n(big['n'])} "
                  "(one pass each; refine_factor 0 = no exact re-ranking of the 8-bit codes):",
                  "", "| nprobes | refine_factor | p50 / p95, ms | recall@10 |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {s['nprobes']} | {s['refine_factor']} | {s['p50_ms']:.1f} / "
                  f"{s['p95_ms']:.1f} | {s['recall_at_10']:.3f} |"
                  for s in big["sweep_last_repeat"]]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000",
                    help="comma-separated numbers of stored vectors")
    ap.add_argument("--scale", action="store_true",
                    help="10^6 vectors, no uniform run; writes the vectors_1m section")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--exact-queries", type=int, default=50,
                    help="queries timed for exact search (each reads every vector)")
    ap.add_argument("--exact-queries-1m", type=int, default=10,
                    help="the same at N >= 1M")
    ap.add_argument("--kind", default="ivf_sq", help="LanceStore.build_ann_index kind")
    ap.add_argument("--num-partitions", type=int, default=None, help="default: ~sqrt(N)")
    ap.add_argument("--clusters", type=int, default=1000, help="0: uniform random vectors")
    ap.add_argument("--topics", type=int, default=30)
    ap.add_argument("--noise", type=float, default=0.06, help="per-dimension std")
    ap.add_argument("--uniform", type=int, default=0,
                    help="also run uniform random vectors at this N (0: skip)")
    ap.add_argument("--no-sweep", action="store_true", help="skip the nprobes/refine sweep")
    ap.add_argument("--quick", action="store_true",
                    help="10k clustered + 10k uniform, 50 queries, 1 repeat, no docs")
    args = ap.parse_args()
    if args.scale:
        args.sizes, args.uniform = "1000000", 0
    if args.quick:
        args.sizes, args.queries, args.repeats, args.uniform = "10000", 50, 1, 10_000
    m = machine()

    from llm_ladder.rag import stores

    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    results = [bench_size(n, args, args.clusters, sweep=not args.no_sweep) for n in sizes]
    if args.uniform and args.clusters:
        results.append(bench_size(args.uniform, args, 0, sweep=False))
    defaults = (stores.MIN_NPROBES, stores.DEFAULT_REFINE_FACTOR)
    doc = {"args": vars(args), "dim": DIM, "k": K,
           "store_defaults": {"min_nprobes": defaults[0], "nprobes_share": stores.NPROBES_SHARE,
                              "refine_factor": defaults[1]},
           "results": results, "peak_rss_mib": peak_rss_mib()}
    md = markdown(results, args, defaults) + f"\n\nPeak RSS {doc['peak_rss_mib']:.0f} MiB."
    if args.scale:
        publish("vectors_1m", doc, md, m, write_docs=not args.quick)
    else:
        publish("vectors", doc, md, m, write_docs=not args.quick)


if __name__ == "__main__":
    main()
