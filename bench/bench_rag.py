"""RAG benchmarks on the construction-FAQ corpus (CC BY 4.0): indexing speed and retrieval.

1. Indexing throughput: `build_index` (load files, chunk with the embedder's tokenizer, embed,
   write to LanceDB) in chunks/s, as a ratio to calling `SentenceTransformer.encode` directly
   on the same chunk texts with the same batch size, in the same run (target >= 0.9).
2. Incremental re-index after changing 1% of the documents, as a share of the full index
   time (target <= 5%).
3. Retrieval quality: each of the 503 questions must retrieve its own answer file (the
   question text is not in the corpus): recall@1/5/10, MRR and nDCG@10 for dense, BM25 and
   hybrid (RRF) retrieval.

    python bench/bench_rag.py                      # 504 documents, with retrieval quality
    python bench/bench_rag.py --copies 8 --no-quality   # speed on 8 x 504 documents

With --copies N the corpus is replicated N times, each copy's text prefixed with its number
so that every chunk is distinct; fixed costs (opening the store, loading models) weigh less.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LANCE_LOG", "error")
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "construction-faq-rag"


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=1)
    ap.add_argument("--no-quality", action="store_true")
    args = ap.parse_args()

    from llm_ladder.embedding import Embedder
    from llm_ladder.rag import rag_metrics
    from llm_ladder.rag.index import build_index, chunk_documents, corpus_documents, open_store
    from llm_ladder.rag.retrieve import Retriever
    from llm_ladder.task import load_task

    tmp = Path(tempfile.mkdtemp(prefix="ladder-bench-"))
    try:
        work = tmp / "task"
        shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns(".ladder"))
        originals = sorted((work / "corpus").glob("*.md"))
        for k in range(1, args.copies):
            for f in originals:
                (f.parent / f"{f.stem}-copy{k}.md").write_text(
                    f"Copy {k}. " + f.read_text(encoding="utf-8"), encoding="utf-8")
        task = load_task(work)
        embedder = Embedder()
        embedder.embed(["warm up"])

        # baseline: the embedder alone on the same chunk texts
        docs, _ = corpus_documents(task)
        chunks = chunk_documents(task, docs, embedder.model.tokenizer)
        texts = [c.text for c in chunks]
        t0 = time.perf_counter()
        embedder.model.encode(texts, batch_size=embedder.batch_size, normalize_embeddings=True,
                              convert_to_numpy=True, show_progress_bar=False)
        encode_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        full = build_index(task, embedder)
        index_s = time.perf_counter() - t0

        files = sorted((work / "corpus").glob("*.md"))
        changed = files[::100][: max(1, len(files) // 100)]  # 1% of the documents
        for f in changed:
            f.write_text(f.read_text(encoding="utf-8") + "\nUpdated.\n", encoding="utf-8")
        t0 = time.perf_counter()
        inc = build_index(task, embedder)
        incremental_s = time.perf_counter() - t0

        store = open_store(task, embedder.name, embedder.dim, create=False)
        retriever = Retriever(store, embedder.embed)
        rows = [json.loads(x) for x in (work / "data" / "qa.jsonl").read_text().splitlines()]
        quality = {}
        for mode in () if args.no_quality else ("dense", "bm25", "hybrid"):
            scores: dict[str, list[float]] = {k: [] for k in
                                              ("recall@1", "recall@5", "recall@10", "mrr",
                                               "ndcg@10")}
            t0 = time.perf_counter()
            for r in rows:
                ranked = [h.chunk.doc_id for h in retriever.search(r["input"], k=10, mode=mode)]
                gold = r["meta"]["gold_sources"]
                for k in (1, 5, 10):
                    scores[f"recall@{k}"].append(rag_metrics.recall_at_k(ranked, gold, k).value)
                scores["mrr"].append(rag_metrics.mrr(ranked, gold).value)
                scores["ndcg@10"].append(rag_metrics.ndcg_at_k(ranked, gold, 10).value)
            per_query_ms = (time.perf_counter() - t0) / len(rows) * 1000
            quality[mode] = {k: sum(v) / len(v) for k, v in scores.items()}
            quality[mode]["ms_per_query"] = per_query_ms
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(json.dumps({
        "bench": "rag", "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "documents": full.documents, "chunks": full.chunks,
        "encode_only_chunks_s": len(texts) / encode_s,
        "build_index_chunks_s": full.chunks_embedded / index_s,
        "indexing_ratio": (full.chunks_embedded / index_s) / (len(texts) / encode_s),
        "full_index_s": index_s, "incremental": {
            "documents_changed": len(changed), "chunks_embedded": inc.chunks_embedded,
            "seconds": incremental_s, "share_of_full": incremental_s / index_s},
        "queries": len(rows), "retrieval": quality,
    }, indent=2))


if __name__ == "__main__":
    main()
