"""LanceStore query latency and recall at 10^4, 10^5 and 10^6 stored vectors.

For each size N: N synthetic unit vectors (dim 384, float32) are inserted into a `LanceStore`
in a temporary folder (batches of 20,000 through `add`, dummy chunk texts), then 200 queries
are timed through `LanceStore.search(k=10)`:

- exact: the flat scan the store does without an index (at N >= 10^6 only the first 20
  queries, `--exact-queries`, since each one reads every vector);
- ann: after `build_ann_index()` (default IVF_SQ with ~sqrt(N) partitions; its build time is
  reported), with the store's default nprobes/refine_factor, plus a small sweep of others;
- numpy: brute force `X @ q` + argpartition on the same vectors in memory, one query at a
  time, as a baseline.

Recall@10 is the overlap of each top-10 with the numpy ground truth, averaged over queries.
Latencies are wall-clock per call in ms (p50/p95), after 5 warm-up queries that are not
counted (the first, cold query is reported separately).

The vectors are clustered, not uniform: 1000 random centroids (`--clusters`), each a mix of
one of 30 random "topic" directions (`--topics`) and its own direction, and every vector is
its centroid plus Gaussian noise (`--noise`, per dimension), normalized. Real sentence
embeddings are clustered like this; uniform random vectors in 384 dimensions are a
pathological case for any ANN index (all distances nearly equal, no structure for the
partitions to follow) and say little about real corpora (`--clusters 0` gives them anyway).
A query is the centroid of a random stored vector's cluster plus fresh noise, normalized, so
it resembles a new member of that cluster rather than a copy of a stored vector.

    python bench/bench_vectors.py [--sizes 10000,100000,1000000] [--queries 200]
        [--kind ivf_sq] [--out bench/results/vectors.json]

Prints one JSON document; writes nothing into the repository except `--out` if given
(bench/results/ is git-ignored). The 10^6 run takes a few minutes and ~4 GiB of memory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

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


def ms(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 2),
            "p95_ms": round(float(np.percentile(a, 95)), 2),
            "mean_ms": round(float(a.mean()), 2), "n": len(samples)}


def rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


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


def bench_size(n: int, args: argparse.Namespace) -> dict:
    from llm_ladder.rag.chunking import Chunk
    from llm_ladder.rag.stores import LanceStore

    res: dict = {"n": n}
    t = time.perf_counter()
    cent, labels, x = clustered(n, args.clusters, args.topics, args.noise)
    qs = queries(args.queries, cent, labels, n, args.noise)
    res["generate_s"] = round(time.perf_counter() - t, 2)

    # numpy ground truth (batched, bounded memory) and the one-query-at-a-time baseline
    truth = np.empty((len(qs), K), np.int64)
    for s in range(0, len(qs), 20):
        sims = qs[s:s + 20] @ x.T
        part = np.argpartition(-sims, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1)
        truth[s:s + 20] = np.take_along_axis(part, order, axis=1)
        del sims
    lat = []
    for q in qs:
        t = time.perf_counter()
        top_k(x, q)
        lat.append(time.perf_counter() - t)
    res["numpy"] = ms(lat)

    tmp = Path(tempfile.mkdtemp(prefix="bench_vectors_"))
    try:
        store = LanceStore(tmp / "index", "synthetic-384", DIM)
        t = time.perf_counter()
        for s in range(0, n, BATCH):
            e = min(n, s + BATCH)
            store.add([Chunk(id=f"v{i}", doc_id=f"doc{i // 100}", source=f"doc{i // 100}.md",
                             position=i % 100, text=f"synthetic chunk {i}") for i in range(s, e)],
                      x[s:e])
        res["insert_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        store.optimize()
        res["optimize_s"] = round(time.perf_counter() - t, 2)

        n_exact = len(qs) if n < 1_000_000 else min(len(qs), args.exact_queries)
        res["exact"] = timed_search(store, qs[:n_exact], truth[:n_exact])

        t = time.perf_counter()
        res["index"] = store.build_ann_index(args.kind, args.num_partitions)
        res["index"]["build_s"] = round(time.perf_counter() - t, 2)
        res["index"]["disk_mib"] = round(
            sum(f.stat().st_size for f in (tmp / "index").rglob("*") if f.is_file()) / 2**20, 1)

        t = time.perf_counter()
        store.search(qs[0], k=K)
        res["ann_cold_first_query_ms"] = round((time.perf_counter() - t) * 1000, 2)
        kw = {}
        if args.nprobes is not None:
            kw["nprobes"] = args.nprobes
        if args.refine_factor is not None:
            kw["refine_factor"] = args.refine_factor
        res["ann"] = timed_search(store, qs, truth, **kw)
        res["ann"]["params"] = kw or "store defaults"
        if not args.no_sweep:
            res["ann_sweep"] = [
                {"nprobes": p, "refine_factor": r} | timed_search(store, qs, truth, nprobes=p,
                                                                  refine_factor=r)
                for p, r in SWEEP]
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["peak_rss_mib_so_far"] = rss_mib()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000",
                    help="comma-separated numbers of stored vectors")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--exact-queries", type=int, default=20,
                    help="queries timed for exact search at N >= 1M")
    ap.add_argument("--kind", default="ivf_sq", help="LanceStore.build_ann_index kind")
    ap.add_argument("--num-partitions", type=int, default=None, help="default: ~sqrt(N)")
    ap.add_argument("--nprobes", type=int, default=None, help="default: the store's")
    ap.add_argument("--refine-factor", type=int, default=None, help="default: the store's")
    ap.add_argument("--clusters", type=int, default=1000, help="0: uniform random vectors")
    ap.add_argument("--topics", type=int, default=30)
    ap.add_argument("--noise", type=float, default=0.06, help="per-dimension std")
    ap.add_argument("--no-sweep", action="store_true", help="skip the nprobes/refine sweep")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()

    from llm_ladder.rag import stores

    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    doc = {
        "bench": "vectors", "dim": DIM, "k": K, "queries": args.queries,
        "data": {"clusters": args.clusters, "topics": args.topics, "noise": args.noise},
        "kind": args.kind,
        "store_defaults": {"nprobes": stores.DEFAULT_NPROBES,
                           "refine_factor": stores.DEFAULT_REFINE_FACTOR},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "lancedb": __import__("lancedb").__version__,
                    "numpy": np.__version__, "loadavg_start": os.getloadavg()},
        "results": [],
    }
    for n in sizes:
        doc["results"].append(bench_size(n, args))
    doc["machine"]["loadavg_end"] = os.getloadavg()
    doc["peak_rss_mib"] = rss_mib()
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
