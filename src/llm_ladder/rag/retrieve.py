"""Retrieval: dense top-k from a vector store, lexical BM25 (`bm25s`), and hybrid by
reciprocal-rank fusion (RRF, k=60). Every mode returns ranked `Hit`s, rank 1 first.

BM25 lower-cases, drops English stopwords and strips a plural -s (no PyStemmer needed); chunks
with no query term in common score 0 and are not returned. Filters (`where`, equality on the
store's filterable columns) are applied inside both searches: as a prefilter in the store and
as a weight mask in BM25. A `Retriever` pins a LanceDB store to the version current when it
is made, so its BM25 snapshot and its dense searches read the same chunks even while
`ladder index` writes a new version (pgvector has no versions: not pinned). Skipped here:
rerankers, query rewriting, persisting the BM25 index (it is rebuilt from the chunks, which
takes well under a second for 10^4 chunks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llm_ladder.errors import LadderError, require
from llm_ladder.rag.chunking import Chunk
from llm_ladder.rag.stores import FILTER_KEYS, VectorStore

RRF_K = 60
MODES = ("dense", "bm25", "hybrid")


@dataclass
class Hit:
    chunk: Chunk
    score: float
    rank: int  # 1 = best
    mode: str  # dense | bm25 | hybrid


def light_stem(words: list[str]) -> list[str]:
    """'permits' -> 'permit'; leaves 'glass', 'is', 'bus' alone. Enough for English plurals."""
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is"))
            else w for w in words]


def dense(store: VectorStore, embed: Callable[[list[str]], Any], query: str, k: int = 10,
          where: dict[str, Any] | None = None) -> list[Hit]:
    """Top-k by cosine similarity; `embed` is e.g. `Embedder().embed` (the index's embedder)."""
    vector = np.asarray(embed([query]))[0]
    return [Hit(chunk, score, rank, "dense")
            for rank, (chunk, score) in enumerate(store.search(vector, k, where), start=1)]


class BM25Index:
    """BM25 over a fixed list of chunks (e.g. `store.chunks()`)."""

    def __init__(self, chunks: Sequence[Chunk],
                 stemmer: Callable[[list[str]], list[str]] | None = light_stem):
        self.bm25s = require("bm25s", "rag")
        self.chunks = list(chunks)
        self.stemmer = stemmer
        self.retriever = None
        if self.chunks:
            tokens = self._tokenize([c.text for c in self.chunks])
            self.retriever = self.bm25s.BM25()
            self.retriever.index(tokens, show_progress=False)

    def _tokenize(self, texts: list[str], ids: bool = True) -> Any:
        return self.bm25s.tokenize(texts, stopwords="en", stemmer=self.stemmer,
                                   return_ids=ids, show_progress=False)

    def search(self, query: str, k: int = 10, where: dict[str, Any] | None = None) -> list[Hit]:
        unknown = set(where or {}) - set(FILTER_KEYS)
        if unknown:
            raise LadderError(f"cannot filter on {sorted(unknown)}; "
                              f"filterable: {', '.join(FILTER_KEYS)}")
        if self.retriever is None or k < 1:
            return []
        query_tokens = self._tokenize([query], ids=False)
        if not query_tokens[0]:
            return []
        mask = None
        if where:
            mask = np.array([all(_matches(getattr(c, key), value) for key, value in where.items())
                             for c in self.chunks], dtype=np.float32)
        found, scores = self.retriever.retrieve(query_tokens, k=min(k, len(self.chunks)),
                                                show_progress=False, weight_mask=mask)
        ranked = [(int(i), float(s)) for i, s in zip(found[0], scores[0], strict=True) if s > 0]
        return [Hit(self.chunks[i], s, rank, "bm25")
                for rank, (i, s) in enumerate(ranked, start=1)]


def _matches(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, list | tuple | set):
        return actual in wanted
    return actual == wanted


def fuse(rankings: Sequence[Sequence[Hit]], k: int = 10, rrf_k: int = RRF_K) -> list[Hit]:
    """Reciprocal-rank fusion: score = sum over rankings of 1 / (rrf_k + rank). Ties go to the
    chunk with the better best rank, then to the smaller id, so the order is deterministic."""
    scores: dict[str, float] = {}
    best: dict[str, int] = {}
    chunks: dict[str, Chunk] = {}
    for hits in rankings:
        for hit in hits:
            cid = hit.chunk.id
            scores[cid] = scores.get(cid, 0.0) + 1.0 / (rrf_k + hit.rank)
            best[cid] = min(best.get(cid, hit.rank), hit.rank)
            chunks[cid] = hit.chunk
    order = sorted(scores, key=lambda c: (-scores[c], best[c], c))[:k]
    return [Hit(chunks[c], scores[c], rank, "hybrid") for rank, c in enumerate(order, start=1)]


class Retriever:
    """One entry point for the three modes over one store (and its chunks for BM25)."""

    def __init__(self, store: VectorStore, embed: Callable[[list[str]], Any],
                 bm25: BM25Index | None = None):
        self.store = store
        self.embed = embed
        self._bm25 = bm25
        # one version for both searches: BM25 is a snapshot of the chunks, so dense search
        # must not read a newer version written by a concurrent `ladder index`
        pin = getattr(store, "pin", None)
        self.version = pin() if pin is not None else None

    @property
    def bm25(self) -> BM25Index:
        if self._bm25 is None:
            self._bm25 = BM25Index(self.store.chunks())
        return self._bm25

    def search(self, query: str, k: int = 10, mode: str = "hybrid",
               where: dict[str, Any] | None = None, candidates: int | None = None) -> list[Hit]:
        """`candidates`: how deep each list goes before fusion (default max(3k, 30))."""
        if mode == "dense":
            return dense(self.store, self.embed, query, k, where)
        if mode == "bm25":
            return self.bm25.search(query, k, where)
        if mode == "hybrid":
            depth = candidates or max(3 * k, 30)
            return fuse([dense(self.store, self.embed, query, depth, where),
                         self.bm25.search(query, depth, where)], k)
        raise LadderError(f"unknown retrieval mode {mode!r}; choose from {', '.join(MODES)}")
