"""Build and update a task's index: load the corpus, chunk, embed only what changed, store.

Chunk ids hash (document id, chunk text), so an unchanged chunk keeps its id and is never
re-embedded. A run adds the chunks the store lacks, then deletes the ones whose documents
changed or disappeared, and reports documents added / updated / removed / unchanged. Each
store write is atomic (a LanceDB version, a PostgreSQL transaction), so a killed run leaves a
usable index and the next run completes it. Skipped: scheduling, watching folders.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llm_ladder.errors import LadderError
from llm_ladder.rag.chunking import Chunk, HFTokens, fixed_chunks, structured_chunks
from llm_ladder.rag.loaders import Document, SourceProblem, load_corpus
from llm_ladder.rag.stores import VectorStore
from llm_ladder.task import Task

EMBED_BATCH = 256


@dataclass
class IndexReport:
    documents: int = 0
    chunks: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    chunks_embedded: int = 0
    chunks_deleted: int = 0
    problems: list[SourceProblem] = field(default_factory=list)
    hidden_text: list[str] = field(default_factory=list)
    store: dict[str, Any] = field(default_factory=dict)
    ann: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        d = dict(vars(self))
        d["problems"] = [str(p) for p in self.problems]
        return d


def corpus_documents(task: Task) -> tuple[list[Document], list[SourceProblem]]:
    """Every document of the task's corpus, from folders, SQL queries and URLs."""
    cfg = task.corpus
    if cfg is None:
        raise LadderError(f"{task.root / 'task.toml'}: no [corpus] section; add one to use RAG")
    docs: list[Document] = []
    problems: list[SourceProblem] = []
    for spec in cfg.paths:
        c = load_corpus(task.path(spec), cfg.include, text_field=cfg.text_field,
                        max_bytes=int(cfg.max_file_mb * 1024 * 1024),
                        parse_timeout_s=cfg.parse_timeout_s,
                        parse_memory_mb=cfg.parse_memory_mb)
        if len(cfg.paths) > 1:  # keep ids unique across roots
            for d in c.documents:
                d.id = f"{spec.rstrip('/')}/{d.id}"
        docs += c.documents
        problems += c.problems
    if cfg.sql or cfg.urls:
        from llm_ladder.rag import sources

        for q in cfg.sql:
            url = os.path.expandvars(q.url)
            d, p = sources.load_sql(url, q.query, q.text_column, q.id_column,
                                    q.meta_columns, q.max_rows)
            docs += d
            problems += p
        if cfg.urls:
            d, p = sources.load_urls(cfg.urls, allow=cfg.url_allow,
                                     parse_timeout_s=cfg.parse_timeout_s,
                                     parse_memory_mb=cfg.parse_memory_mb)
            docs += d
            problems += p
    return docs, problems


def open_store(task: Task, embedder: str, dim: int, create: bool = True) -> VectorStore:
    cfg = task.corpus
    assert cfg is not None
    if cfg.store == "lancedb":
        from llm_ladder.rag.stores import LanceStore

        return LanceStore(task.state_dir / "index", embedder, dim, create=create,
                          nprobes=task.retrieval.nprobes,
                          refine_factor=task.retrieval.refine_factor)
    if cfg.store == "pgvector":
        from llm_ladder.rag.pgvector_store import PgVectorStore

        if not cfg.pg_url_env or not os.environ.get(cfg.pg_url_env):
            raise LadderError("corpus.store = 'pgvector' needs corpus.pg_url_env naming an "
                              "environment variable that holds the PostgreSQL URL")
        return PgVectorStore(os.environ[cfg.pg_url_env], cfg.collection, embedder, dim)
    raise LadderError(f"unknown corpus.store {cfg.store!r}; use 'lancedb' or 'pgvector'")


def chunk_documents(task: Task, docs: list[Document], tokenizer: Any) -> list[Chunk]:
    cfg = task.corpus
    assert cfg is not None
    chunker = structured_chunks if cfg.chunker == "structured" else fixed_chunks
    return chunker(docs, HFTokens(tokenizer), cfg.chunk_tokens, cfg.chunk_overlap)


def _settings_key(task: Task) -> str:
    cfg = task.corpus
    assert cfg is not None
    return f"{cfg.chunker}:{cfg.chunk_tokens}:{cfg.chunk_overlap}"


def build_index(task: Task, embedder: Any, progress: Callable[[int, int], None] | None = None
                ) -> IndexReport:
    """Bring the index in line with the corpus; `progress(done, total)` after each batch."""
    docs, problems = corpus_documents(task)
    report = IndexReport(documents=len(docs), problems=problems)
    report.hidden_text = [d.id for d in docs if d.meta.get("hidden_chars")]
    store = open_store(task, embedder.name, embedder.dim)
    try:
        existing = store.chunks()
        before: dict[str, str] = {c.id: c.doc_id for c in existing}
        stored: dict[str, list[Chunk]] = {}
        for c in existing:
            stored.setdefault(c.doc_id, []).append(c)
        # a document whose text and chunk settings are unchanged, and whose chunks are all
        # stored, is not even re-chunked
        key = _settings_key(task)
        changed_docs, kept, hash_of = [], set(), {}
        for d in docs:
            h = hashlib.sha256(f"{key}\0{d.text}".encode()).hexdigest()[:16]
            if _complete(stored.get(d.id, []), h):
                kept.update(c.id for c in stored[d.id])
            else:
                hash_of[d.id] = h
                changed_docs.append(d)
        chunks = chunk_documents(task, changed_docs, embedder.model.tokenizer)
        expected: dict[str, set[str]] = {}
        for c in chunks:
            expected.setdefault(c.doc_id, set()).add(c.id)
        for c in chunks:
            c.meta = {**c.meta, "doc_hash": hash_of[c.doc_id],
                      "doc_chunks": len(expected[c.doc_id])}
        report.chunks = len(kept) + len(chunks)
        now_ids = kept | {c.id for c in chunks}
        # longest first by the chunker's token count: each EMBED_BATCH slice then holds
        # chunks of similar length, which the embedder batches by tokens again and pads
        # little (slices of the corpus order padded every batch to its longest chunk)
        todo = sorted((c for c in chunks if c.id not in before),
                      key=lambda c: (-c.meta.get("tokens", 0), -len(c.text)))
        stale = [i for i in before if i not in now_ids]
        docs_before = set(before.values())
        docs_now = {c.doc_id for c in chunks} | {before[i] for i in kept}
        touched = {c.doc_id for c in todo} | {before[i] for i in stale}
        report.added = len(docs_now - docs_before)
        report.removed = len(docs_before - docs_now)
        report.updated = len((docs_now & docs_before) & touched)
        report.unchanged = len(docs_now & docs_before) - report.updated
        for start in range(0, len(todo), EMBED_BATCH):
            batch = todo[start : start + EMBED_BATCH]
            store.add(batch, embedder.embed([c.text for c in batch]))
            report.chunks_embedded += len(batch)
            if progress:
                progress(report.chunks_embedded, len(todo))
        if stale:
            report.chunks_deleted = store.delete(stale)
        build_ann = getattr(store, "build_ann_index", None)
        if build_ann and (todo or stale) and store.count() >= task.corpus.ann_min_chunks:
            report.ann = build_ann()  # below ~10^5 chunks exact search is fast enough
        report.store = store.info() | {"count": store.count(),
                                       "embedder_dtype": getattr(embedder, "dtype", None)}
    finally:
        close = getattr(store, "close", None)
        if close:
            close()
    return report


def _complete(stored: list[Chunk], doc_hash: str) -> bool:
    """Whether a document's stored chunks are all of the current version and all there: every
    chunk carries `doc_hash` and the count of distinct chunk ids written with it. A run killed
    between two commits leaves a document with fewer chunks than that count, so the next run
    re-chunks it and embeds only the missing ones. Chunks from an index built before the count
    was recorded lack it and are re-checked the same way (re-chunked, nothing re-embedded)."""
    if not stored:
        return False
    counts = {c.meta.get("doc_chunks") for c in stored}
    hashes = {c.meta.get("doc_hash") for c in stored}
    return (hashes == {doc_hash} and len(counts) == 1
            and counts == {len({c.id for c in stored})})
