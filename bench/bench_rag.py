"""RAG benchmarks on the construction-FAQ corpus (CC BY 4.0): indexing speed and retrieval.

1. Indexing throughput: `build_index` (load files, chunk with the embedder's tokenizer, embed,
   write to LanceDB) in chunks/s, as a ratio to calling `SentenceTransformer.encode` directly
   on the same chunk texts with the same batch size and weights dtype (target >= 0.9). Each
   repeat encodes the texts (baseline) and then indexes a fresh copy of the corpus (ours),
   alternating, once with float32 weights, once with bfloat16 (the `auto` default on a CPU
   with native bf16) and once with int8 weights on ONNX Runtime (`embedder_dtype = "int8"`,
   when the `onnx` extra is installed; its "encode only" baseline is the same int8 model
   called directly on the same batches, sorted by characters as `encode` sorts them); the
   bf16 and int8 indexes are also set against the float32 `encode` (what a user calling
   sentence-transformers gets), the "faster than raw encode" figures.
2. Incremental re-index after changing 1% of the documents, as a share of the same repeat's
   full index time (target <= 5%).
3. Retrieval quality: each of the 503 questions must retrieve its own answer file (the
   question text is not in the corpus): recall@1/5/10, MRR and nDCG@10 for dense, BM25 and
   hybrid (RRF) retrieval, on the 504-document corpus, dense and hybrid once per embedder
   dtype (each on its own index), every question once; ms/query from interleaved passes over
   the first 168 questions (checked to rank as the scored pass did: retrieval is
   deterministic).

With `--copies 1,2` the corpus is also indexed at 2x its size (each copy's text prefixed
with its number so that every chunk is distinct; fixed costs weigh less at 2x); the default
is the shipped corpus alone, the size the target names (2x added 2-3 min to `make bench`).
Everything is the median (min-max) of `--repeats` interleaved repeats; peak RSS is the process's.
On a CPU without native bf16, bf16 is not measured (it would be emulated, slower).
Skipped: pgvector (needs a server; tests/test_pgvector*.py), GPU embedding, torch's own dynamic
int8 quantization (tried once: faster, but more than a point of recall@1 lost; not offered).

    python bench/bench_rag.py [--copies 1] [--repeats 3] [--no-quality] [--quick]

Results: bench/results/rag.json and its section of docs/benchmarks.md (benchlib).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LANCE_LOG", "error")
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "construction-faq-rag"
METRICS = ("recall@1", "recall@5", "recall@10", "mrr", "ndcg@10")
# ms/query is timed over the first questions only (every question is scored once, untimed):
# a third of the 503 keeps `make bench` under 30 minutes with the int8 rows
TIMED_QUERIES = 168

from benchlib import fmt, interleave, machine, peak_rss_mib, publish, spread  # noqa: E402


def corpus_copy(dest: Path, copies: int) -> Path:
    """The RAG example task in `dest`, its corpus replicated `copies` times."""
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(".ladder"))
    originals = sorted((dest / "corpus").glob("*.md"))
    for k in range(1, copies):
        for f in originals:
            (f.parent / f"{f.stem}-copy{k}.md").write_text(
                f"Copy {k}. " + f.read_text(encoding="utf-8"), encoding="utf-8")
    return dest


def indexing(tmp: Path, copies: int, repeats: int, embedders: dict, log) -> dict:
    """Encode-only vs build_index per dtype, then the 1% incremental re-index, interleaved."""
    from llm_ladder.rag.index import build_index, chunk_documents, corpus_documents
    from llm_ladder.task import load_task

    base = corpus_copy(tmp / f"base-{copies}", copies)
    task = load_task(base)
    docs, _ = corpus_documents(task)
    first = next(iter(embedders.values()))
    texts = [c.text for c in chunk_documents(task, docs, first.model.tokenizer)]
    fresh = iter(range(repeats * len(embedders)))

    def encode(embedder):
        def run() -> dict:
            t0 = time.perf_counter()
            if embedder.dtype == "int8":  # the int8 model alone, batched as `encode` batches
                order = sorted(texts, key=len, reverse=True)
                for start in range(0, len(order), embedder.batch_size):
                    embedder._int8.encode(order[start:start + embedder.batch_size])
            else:
                embedder.model.encode(texts, batch_size=embedder.batch_size,
                                      normalize_embeddings=True, convert_to_numpy=True,
                                      show_progress_bar=False)
            s_ = time.perf_counter() - t0
            return {"seconds": s_, "chunks_s": len(texts) / s_}
        return run

    def index(embedder):
        return lambda: index_once(embedder)

    def index_once(embedder) -> dict:
        work = tmp / f"run-{copies}-{next(fresh)}"
        shutil.copytree(base, work)
        t = load_task(work)
        t0 = time.perf_counter()
        full = build_index(t, embedder)
        full_s = time.perf_counter() - t0
        files = sorted((work / "corpus").glob("*.md"))
        changed = files[::100][: max(1, len(files) // 100)]  # 1% of the documents
        for f in changed:
            f.write_text(f.read_text(encoding="utf-8") + "\nUpdated.\n", encoding="utf-8")
        t0 = time.perf_counter()
        inc = build_index(t, embedder)
        inc_s = time.perf_counter() - t0
        return {"seconds": full_s, "chunks_s": full.chunks_embedded / full_s,
                "documents": full.documents, "chunks": full.chunks,
                "changed_documents": len(changed), "incremental_chunks": inc.chunks_embedded,
                "incremental_s": inc_s, "incremental_share": inc_s / full_s,
                "folder": str(work)}

    variants = {}
    for dtype, emb in embedders.items():
        variants[f"encode:{dtype}"] = encode(emb)
        variants[f"build_index:{dtype}"] = index(emb)
    runs = interleave(variants, repeats, log)
    out: dict = {"copies": copies, "runs": runs, "dtypes": {}}
    for dtype in embedders:
        ours, base_ = runs[f"build_index:{dtype}"], runs[f"encode:{dtype}"]
        ratios = [i["chunks_s"] / e["chunks_s"] for i, e in zip(ours, base_, strict=True)]
        out.update(documents=ours[-1]["documents"], chunks=ours[-1]["chunks"],
                   changed_documents=ours[-1]["changed_documents"])
        out["dtypes"][dtype] = {
            "encode_chunks_s": spread([r["chunks_s"] for r in base_]),
            "build_index_chunks_s": spread([r["chunks_s"] for r in ours]),
            "ratio": spread(ratios), "full_s": spread([r["seconds"] for r in ours]),
            "incremental_s": spread([r["incremental_s"] for r in ours]),
            "incremental_share": spread([r["incremental_share"] for r in ours])}
    out["vs_f32_encode"] = {  # the "faster than raw encode" figures, per repeat
        dtype: spread([i["chunks_s"] / e["chunks_s"] for i, e in zip(
            runs[f"build_index:{dtype}"], runs["encode:float32"], strict=True)])
        for dtype in embedders if dtype != "float32" and "float32" in embedders}
    return out


def quality(folders: dict[str, Path], embedders: dict, repeats: int, limit: int | None,
            log) -> dict:
    """Retrieval scores per mode and embedder dtype (each dtype on the 1x corpus indexed with
    it); BM25 once (no embedder); ms/query over interleaved passes."""
    from llm_ladder.rag import rag_metrics
    from llm_ladder.rag.index import open_store
    from llm_ladder.rag.retrieve import Retriever
    from llm_ladder.task import load_task

    some = next(iter(folders.values()))
    rows = [json.loads(x) for x in (some / "data" / "qa.jsonl").read_text().splitlines()]
    rows = rows[:limit] if limit else rows
    stores, retrievers = [], {}
    for dtype, folder in folders.items():
        emb = embedders[dtype]
        stores.append(open_store(load_task(folder), emb.name, emb.dim, create=False))
        retrievers[dtype] = Retriever(stores[-1], emb.embed)
    scores: dict[str, dict[str, float]] = {}
    ranked: dict[str, list[list[str]]] = {}
    timed = rows[:TIMED_QUERIES]

    def search(mode: str, dtype: str, questions: list[dict]) -> list[list[str]]:
        return [[h.chunk.doc_id for h in retrievers[dtype].search(r["input"], k=10, mode=mode)]
                for r in questions]

    def score(mode: str, dtype: str, name: str) -> None:
        """Every question once, untimed: the scores."""
        ranked[name] = search(mode, dtype, rows)
        got: dict[str, list[float]] = {k: [] for k in METRICS}
        for r, ranks in zip(rows, ranked[name], strict=True):
            gold = r["meta"]["gold_sources"]
            for k in (1, 5, 10):
                got[f"recall@{k}"].append(rag_metrics.recall_at_k(ranks, gold, k).value)
            got["mrr"].append(rag_metrics.mrr(ranks, gold).value)
            got["ndcg@10"].append(rag_metrics.ndcg_at_k(ranks, gold, 10).value)
        scores[name] = {k: sum(v) / len(v) for k, v in got.items()}

    def mode_pass(mode: str, dtype: str, name: str):
        def run() -> dict:
            t0 = time.perf_counter()
            again = search(mode, dtype, timed)
            s_ = time.perf_counter() - t0
            if again != ranked[name][:len(timed)]:
                raise SystemExit(f"{name} retrieval ranked differently in two passes")
            return {"ms_per_query": s_ / len(timed) * 1000}
        return run

    passes = {}
    for mode in ("dense", "bm25", "hybrid"):
        for dtype in folders:
            name = mode if mode == "bm25" else f"{mode}:{dtype}"
            if name not in passes:
                score(mode, dtype, name)
                passes[name] = mode_pass(mode, dtype, name)
    try:
        runs = interleave(passes, repeats, log)
    finally:
        for store in stores:
            store.close()
    out = {"queries": len(rows), "timed_queries": len(timed), "runs": runs,
           "modes": {m: {**scores[m], "ms_per_query": spread([r["ms_per_query"]
                                                               for r in runs[m]])}
                     for m in runs}}
    # the largest score change from float32, per dtype, in points
    out["max_diff_points"] = {
        dtype: max(abs(scores[f"{m}:float32"][k] - scores[f"{m}:{dtype}"][k]) * 100
                   for m in ("dense", "hybrid") for k in METRICS)
        for dtype in folders if dtype != "float32" and "float32" in folders}
    return out


def markdown(idx: list[dict], qual: dict | None, repeats: int) -> str:
    lines = [
        f"Median (min–max) of {repeats} interleaved repeats. Baseline: "
        "`SentenceTransformer.encode` alone on the same chunk texts, same batch size, same "
        "weights dtype, right before each `build_index` of a fresh copy (load files, chunk "
        "with the embedder's tokenizer, embed, write to LanceDB). Then 1% of the documents "
        "change and `build_index` re-indexes; the share is that time over the same repeat's "
        "full index.",
        "",
        "| corpus | embedder weights | encode only, chunks/s | `build_index`, chunks/s "
        "| ratio (target ≥ 0.9) | full index, s | 1% changed: re-index, s "
        "| share (target ≤ 5%) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in idx:
        for dtype, d in r["dtypes"].items():
            lines.append(
                f"| {r['documents']} docs ({r['chunks']} chunks) | {dtype} | "
                f"{fmt(d['encode_chunks_s'])} | {fmt(d['build_index_chunks_s'])} | "
                f"**{fmt(d['ratio'], 2)}** | {fmt(d['full_s'], 2)} | "
                f"{fmt(d['incremental_s'], 3)} ({r['changed_documents']} docs) | "
                f"**{fmt(_pct(d['incremental_share']), 1)}%** |")
    labels = {"bfloat16": "bfloat16 weights (the `auto` default on this CPU)",
              "int8": "int8 weights on ONNX Runtime (`embedder_dtype = \"int8\"`)"}
    for dtype, label in labels.items():
        faster = [(r["documents"], r["vs_f32_encode"][dtype]) for r in idx
                  if dtype in r.get("vs_f32_encode", {})]
        if faster:
            lines += ["", f"`build_index` with {label} against float32 `encode` (plain "
                      "sentence-transformers), per repeat: "
                      + "; ".join(f"{n} docs **{fmt(s_, 2)}x**" for n, s_ in faster) + "."]
    if qual:
        lines += [
            "",
            f"Retrieval quality: each of {qual['queries']} construction-FAQ questions must "
            "retrieve its own answer file from the 504-document corpus, which holds the "
            "answers only (all-MiniLM-L6-v2, structure-aware chunks of ≤ 200 tokens, exact "
            "search; dense and hybrid once per weights dtype, each on an index built in that "
            f"dtype). Scores are over all {qual['queries']} questions, one pass; ms/query is "
            f"the median (min–max) of {repeats} interleaved passes over the first "
            f"{qual['timed_queries']}, which ranked the same as the scored pass every time.",
            "",
            "| mode | recall@1 | recall@5 | recall@10 | MRR | nDCG@10 | ms/query |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        names = {"dense": "dense", "bm25": "BM25 (`bm25s`)", "hybrid": "hybrid (RRF, k = 60)"}
        for name, s_ in qual["modes"].items():
            mode, _, dtype = name.partition(":")
            label = names[mode] + (f", {dtype}" if dtype else "")
            lines.append(f"| {label} | " + " | ".join(f"{s_[k]:.3f}" for k in METRICS)
                         + f" | {fmt(s_['ms_per_query'], 2)} |")
        for dtype, diff in qual.get("max_diff_points", {}).items():
            lines += ["", f"Largest difference between the float32 and {dtype} rows of one "
                      f"mode, over the five scores: **{diff:.1f} points** (target: within 1)."]
    return "\n".join(lines)


def _pct(s: dict) -> dict:
    return {k: (v * 100 if k != "n" else v) for k, v in s.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", default="1", help="corpus sizes, as multiples of 504 docs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-quality", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="1x corpus, 1 repeat, 50 questions, no docs")
    args = ap.parse_args()
    limit = None
    if args.quick:
        args.copies, args.repeats, limit = "1", 1, 50
    copies = [int(c) for c in args.copies.split(",") if c.strip()]
    m = machine()

    from llm_ladder.embedding import Embedder
    from llm_ladder.hardware import cpu_has_bf16
    from llm_ladder.rag.index import build_index
    from llm_ladder.task import load_task

    dtypes = ["float32", "bfloat16"] if cpu_has_bf16() else ["float32"]
    if importlib.util.find_spec("onnxruntime"):
        dtypes.append("int8")
    embedders = {d: Embedder(dtype=d) for d in dtypes}
    for emb in embedders.values():
        emb.embed(["warm up"])
    tmp = Path(tempfile.mkdtemp(prefix="ladder-bench-rag-"))
    try:
        idx = [indexing(tmp, c, args.repeats, embedders, print) for c in copies]
        qual = None
        if 1 in copies and not args.no_quality:
            folders = {}
            for dtype, emb in embedders.items():
                # the last repeat's index of this dtype, its 1% edits undone so the corpus
                # is the original
                work = Path(idx[copies.index(1)]["runs"][f"build_index:{dtype}"][-1]["folder"])
                for f in sorted((work / "corpus").glob("*.md")):
                    text = f.read_text(encoding="utf-8")
                    if text.endswith("\nUpdated.\n"):
                        f.write_text(text.removesuffix("\nUpdated.\n"), encoding="utf-8")
                build_index(load_task(work), emb)
                folders[dtype] = work
            qual = quality(folders, embedders, args.repeats, limit, print)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for r in idx:
        for key, runs in r["runs"].items():
            if key.startswith("build_index"):
                for run in runs:
                    run.pop("folder", None)
    doc = {"args": vars(args), "dtypes": dtypes, "indexing": idx, "retrieval": qual,
           "peak_rss_mib": peak_rss_mib()}
    md = markdown(idx, qual, args.repeats) + f"\n\nPeak RSS {doc['peak_rss_mib']:.0f} MiB."
    publish("rag", doc, md, m, write_docs=not args.quick)


if __name__ == "__main__":
    main()
