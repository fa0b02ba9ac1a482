"""Vector stores: the `VectorStore` protocol and an embedded, persistent LanceDB implementation.

`LanceStore` keeps one table (`chunks`) in a folder. The embedder's name and dimension are
written into the table's schema metadata when the index is created, and opening or writing it
with another embedder or dimension is a LadderError naming both. Vectors are validated
(shape, dimension, NaN/inf after the cast to float32) before anything is written. `add` is an
upsert by chunk id (`merge_insert`), so re-adding unchanged chunks adds nothing. Every write is
a new LanceDB version that becomes visible only when its manifest is committed, so a process
killed during `add` leaves the previous version readable; an index killed before its first
commit is recreated, and one that has commits but will not open is reported, never
overwritten. Metadata filters (`where`) are compiled to a LanceDB prefilter, applied inside
the vector search rather than to its top-k.

Writers: LanceDB itself takes no lock (it commits optimistically and retries or fails on
conflicts), so the first write of a `LanceStore` takes a non-blocking `fcntl.flock` on
`<folder>/.write.lock` and holds it until `close()`; a second writer gets a LadderError with
the holder's pid. Readers never lock and see the latest committed version.

Searches are exact (a flat scan) until `build_ann_index()` builds an approximate index on the
vectors (IVF_SQ by default: ~sqrt(n) k-means partitions, 8-bit scalar-quantized vectors,
cosine); then `search` probes `nprobes` partitions (default: a quarter of them, at least 40;
the build records the partition count in the table so every reader scales alike) and re-ranks
`refine_factor * k` candidates with the full float32 vectors. Chunks added after the build are
searched exactly alongside the index until `optimize()` folds them in. A filtered search that
finds fewer than k chunks through the index (a selective filter whose matches lie outside the
probed partitions) is re-run exactly, so filters never lose matches. `bench/bench_vectors.py`
measures latency and recall@10 at 10^5..10^6 synthetic vectors, `bench/bench_vectors_real.py`
on real MiniLM embeddings of text. Skipped here: pgvector and remote stores, locking on
platforms without `fcntl`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from llm_ladder.errors import LadderError, require
from llm_ladder.rag.chunking import Chunk

TABLE = "chunks"
LOCK_FILE = ".write.lock"
FILTER_KEYS = ("id", "doc_id", "source", "position")
_META_EMBEDDER = b"llm_ladder.embedder"
_META_DIM = b"llm_ladder.dim"
# ANN defaults: about sqrt(n) partitions; probe a quarter of them, at least 40; re-rank 10*k
# full vectors. Measured on real MiniLM embeddings of text (bench/bench_vectors_real.py,
# docstring paragraphs, 2 cores): a fixed 40 probes is a shrinking share of the partitions and
# recall@10 fell from 0.976 at 10k to 0.936 at 100k (316 partitions); a quarter of them gave
# 0.965-0.981 from 10k to 100k (0.971-0.976 at 100k in two runs), and each extra probe costs
# little next to LanceDB's fixed cost per query. The earlier 20/5, chosen on synthetic
# clusters, gave 0.919 at 50k.
ANN_KINDS = ("ivf_sq", "ivf_hnsw_sq", "ivf_pq", "ivf_flat")
ANN_MIN_ROWS = 256
MIN_NPROBES = 40
NPROBES_SHARE = 0.25
DEFAULT_REFINE_FACTOR = 10
_META_PARTITIONS = "llm_ladder.ann_partitions"  # on the vector field, written by the build


def default_partitions(rows: int) -> int:
    """IVF partitions for `rows` vectors: about sqrt(rows), at most 4096."""
    return min(4096, max(1, round(rows ** 0.5)))


def default_nprobes(partitions: int) -> int:
    """Partitions a search probes by default: a quarter of them, at least MIN_NPROBES (all of
    them when there are fewer)."""
    return min(partitions, max(MIN_NPROBES, math.ceil(partitions * NPROBES_SHARE)))


def _search_setting(name: str, value: Any, least: int) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < least):
        raise LadderError(f"{name} must be an integer >= {least}, not {value!r}")
    return value


def as_float32(vectors: Any, n: int, dim: int, embedder: str) -> np.ndarray:
    """`vectors` as an (n, dim) float32 array, or a LadderError; NaN/inf are the caller's
    check (overflow to inf happens in the cast)."""
    try:
        arr = np.asarray(vectors, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise LadderError(f"vectors are not numeric arrays: {e}") from None
    if arr.ndim != 2 or arr.shape != (n, dim):
        raise LadderError(f"vectors have shape {arr.shape}; expected ({n}, {dim}) "
                          f"for {n} chunk(s) from {embedder!r}")
    with np.errstate(over="ignore"):
        return arr.astype(np.float32)


@runtime_checkable
class VectorStore(Protocol):
    def add(self, chunks: Sequence[Chunk], vectors: Any) -> int:
        """Upsert chunks with their vectors by chunk id; returns how many ids were new."""

    def delete(self, ids: Sequence[str]) -> int:
        """Delete chunks by id; returns how many were removed."""

    def ids(self) -> set[str]: ...

    def chunks(self, where: dict[str, Any] | None = None) -> list[Chunk]: ...

    def search(self, vector: Any, k: int = 10,
               where: dict[str, Any] | None = None) -> list[tuple[Chunk, float]]:
        """The k nearest chunks (cosine similarity, best first) among those matching `where`."""

    def count(self) -> int: ...

    def info(self) -> dict[str, Any]:
        """At least {'embedder': name, 'dim': int}."""


class LanceStore:
    """A LanceDB table in `path`; created on first open when `create` is true."""

    def __init__(self, path: str | Path, embedder: str, dim: int, create: bool = True, *,
                 nprobes: int | None = None, refine_factor: int | None = None):
        """`nprobes` and `refine_factor` set this store's ANN search defaults (None: a quarter
        of the index's partitions, at least 40; and 10)."""
        self.nprobes = _search_setting("nprobes", nprobes, 1)
        self.refine_factor = _search_setting("refine_factor", refine_factor, 0)
        self._partitions: int | None = None  # of the ANN index, read once from its metadata
        self.lancedb = require("lancedb", "rag")
        self.pa = require("pyarrow", "rag")
        self.path = Path(path)
        self.embedder = embedder
        self.dim = int(dim)
        self._lock_fd: int | None = None
        if self.dim < 1:
            raise LadderError(f"embedding dimension must be positive, not {dim}")
        if not create and not self.path.is_dir():
            raise LadderError(f"no index at {self.path}; build one first")
        self.path.mkdir(parents=True, exist_ok=True)
        # read_consistency_interval=0: every read sees the latest committed version.
        self.db = self.lancedb.connect(str(self.path), read_consistency_interval=timedelta(0))
        table = self._open()
        if table is None:
            if not create:
                raise LadderError(f"no index at {self.path}; build one first")
            self._lock()
            table = self._open()  # another process may have created it meanwhile
        if table is None:
            # Never committed: a new index, or one whose creation was killed. "overwrite"
            # replaces only that uncommitted debris; a table that opens is never overwritten.
            table = self.db.create_table(TABLE, schema=self._schema(), mode="overwrite")
        self.table = table
        self._check_embedder()

    def _open(self) -> Any:
        """The table, or None when it has no committed version; a LadderError when it has one
        but cannot be opened."""
        try:
            return self.db.open_table(TABLE)
        except Exception as e:  # lancedb raises ValueError/RuntimeError/OSError here
            if self._committed():
                raise LadderError(f"cannot open the index at {self.path}: {e}") from None
            return None

    def _committed(self) -> bool:
        """Whether the table has at least one committed version (manifest)."""
        versions = self.path / f"{TABLE}.lance" / "_versions"
        return versions.is_dir() and any(versions.glob("*.manifest"))

    def _schema(self) -> Any:
        pa = self.pa
        return pa.schema([
            pa.field("id", pa.string(), nullable=False),
            pa.field("doc_id", pa.string()),
            pa.field("source", pa.string()),
            pa.field("position", pa.int64()),
            pa.field("text", pa.string()),
            pa.field("meta", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), self.dim)),
        ], metadata={_META_EMBEDDER: self.embedder.encode(), _META_DIM: str(self.dim).encode()})

    def _check_embedder(self) -> None:
        meta = self.table.schema.metadata or {}
        if _META_EMBEDDER not in meta or _META_DIM not in meta:
            raise LadderError(f"{self.path} is not an llm-ladder index (no embedder recorded)")
        name, dim = meta[_META_EMBEDDER].decode(), int(meta[_META_DIM])
        if (name, dim) != (self.embedder, self.dim):
            raise LadderError(
                f"the index at {self.path} was built with embedder {name!r} (dim {dim}); "
                f"this uses {self.embedder!r} (dim {self.dim}); rebuild the index (delete "
                f"{self.path} and run `ladder index` again) or use {name!r}")

    # -- writing ---------------------------------------------------------------------------

    def _lock(self) -> None:
        if self._lock_fd is not None:
            return
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        lock_path = self.path / LOCK_FILE
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LadderError(f"the index at {self.path} is being written by another process "
                              f"(pid {holder}); wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def close(self) -> None:
        """Release the write lock (if held). Reading still works after close."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def __enter__(self) -> LanceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _vectors(self, vectors: Any, n: int) -> np.ndarray:
        return as_float32(vectors, n, self.dim, self.embedder)

    def add(self, chunks: Sequence[Chunk], vectors: Any) -> int:
        chunks = list(chunks)
        arr = self._vectors(vectors, len(chunks))
        bad = ~np.isfinite(arr).all(axis=1)
        if bad.any():
            ids = [c.id for c, b in zip(chunks, bad, strict=True) if b]
            raise LadderError(f"{len(ids)} vector(s) contain NaN or infinity (after float32), "
                              f"e.g. chunk {ids[0]}; nothing was written")
        seen: set[str] = set()
        dupes = {c.id for c in chunks if c.id in seen or seen.add(c.id)}
        if dupes:
            raise LadderError(f"duplicate chunk ids in one add: {sorted(dupes)[:3]}")
        if not chunks:
            return 0
        self._lock()
        self._check_embedder()
        data = self.pa.Table.from_pylist([{
            "id": c.id, "doc_id": c.doc_id, "source": c.source, "position": c.position,
            "text": c.text, "meta": json.dumps(c.meta, ensure_ascii=False, default=str),
            "vector": v} for c, v in zip(chunks, arr, strict=True)], schema=self._schema())
        result = (self.table.merge_insert("id").when_matched_update_all()
                  .when_not_matched_insert_all().execute(data))
        return int(result.num_inserted_rows)

    def delete(self, ids: Sequence[str]) -> int:
        ids = list(dict.fromkeys(ids))
        if not ids:
            return 0
        self._lock()
        before = self.count()
        for i in range(0, len(ids), 500):
            self.table.delete(_in_list("id", ids[i:i + 500]))
        return before - self.count()

    def optimize(self) -> None:
        """Compact the many small fragments that batched adds leave (old versions are kept);
        chunks added since `build_ann_index()` are folded into the index."""
        self._lock()
        self.table.optimize()

    def build_ann_index(self, kind: str = "ivf_sq",
                        num_partitions: int | None = None) -> dict[str, Any]:
        """Build (or replace) an approximate index on the vectors, cosine metric; searches use
        it from then on. `kind`: ivf_sq (default: ~1 min for 10^6 x 384 on 2 cores, codes 1/4
        of the float32 size, recall@10 >= 0.99 with the default refine), ivf_hnsw_sq (a graph
        per partition: slower to build, no faster to search at these sizes), ivf_pq (smallest;
        recall@10 ~0.8 even at refine_factor 10), ivf_flat (full vectors, no quantization).
        `num_partitions` defaults to about sqrt(count)."""
        from lancedb import index as ix

        configs = {"ivf_sq": ix.IvfSq, "ivf_hnsw_sq": ix.HnswSq, "ivf_pq": ix.IvfPq,
                   "ivf_flat": ix.IvfFlat}
        if kind not in ANN_KINDS:
            raise LadderError(f"unknown ANN index kind {kind!r}; one of: {', '.join(ANN_KINDS)}")
        self._lock()
        self._check_embedder()
        n = self.count()
        if n < ANN_MIN_ROWS:
            raise LadderError(f"an ANN index needs at least {ANN_MIN_ROWS} chunks, not {n}; "
                              f"exact search is fast at this size")
        parts = int(num_partitions or default_partitions(n))
        if not 1 <= parts <= n // 4:
            raise LadderError(f"num_partitions must be between 1 and {n // 4} for {n} chunks, "
                              f"not {parts}")
        params: dict[str, Any] = {"distance_type": "cosine", "num_partitions": parts}
        if kind == "ivf_pq":  # 8 dimensions per sub-vector, the finest that divides dim
            params["num_sub_vectors"] = next(
                s for s in (self.dim // 8, self.dim // 4, self.dim // 2, self.dim, 1)
                if s and self.dim % s == 0)
        self.table.create_index("vector", config=configs[kind](**params), replace=True)
        # recorded in the table (a new version) so that every reader's default probes scale
        # with the partitions actually built
        self.table.update_field_metadata(
            {"path": "vector", "metadata": {_META_PARTITIONS: str(parts)}})
        self._partitions = parts
        return {"kind": kind, "num_partitions": parts, "rows": n,
                "nprobes": self.search_settings()[0]}

    def search_settings(self) -> tuple[int, int]:
        """(nprobes, refine_factor) of an ANN search that passes neither: this store's
        settings, else a quarter of the index's partitions (at least 40) and 10."""
        probes = self.nprobes or default_nprobes(self.ann_partitions() or 1)
        refine = DEFAULT_REFINE_FACTOR if self.refine_factor is None else self.refine_factor
        return probes, refine

    def ann_partitions(self) -> int | None:
        """The ANN index's partition count as recorded at its build; for an index built before
        it was recorded, the default for its indexed rows. None without an index. Read once
        per store object: a rebuild by another process is seen after reopening."""
        if self._partitions is None:
            field = self.table.schema.field("vector")
            recorded = (field.metadata or {}).get(_META_PARTITIONS.encode())
            if recorded:
                self._partitions = int(recorded)
            else:
                info = self.ann_index()
                if info is None:
                    return None
                self._partitions = default_partitions(int(info["indexed"] or self.count()))
        return self._partitions

    def ann_index(self) -> dict[str, Any] | None:
        """The ANN index on the vectors: {'name', 'type', 'indexed', 'unindexed'}, or None."""
        for index in self.table.list_indices():
            if list(index.columns) == ["vector"]:
                stats = self.table.index_stats(index.name)
                return {"name": index.name, "type": stats.index_type if stats else None,
                        "indexed": stats.num_indexed_rows if stats else None,
                        "unindexed": stats.num_unindexed_rows if stats else None}
        return None

    def _has_ann_index(self) -> bool:
        return any(list(index.columns) == ["vector"] for index in self.table.list_indices())

    # -- reading ---------------------------------------------------------------------------

    def count(self) -> int:
        return int(self.table.count_rows())

    def ids(self) -> set[str]:
        if not self.count():
            return set()
        return set(self.table.search().select(["id"]).limit(None).to_arrow()
                   .column("id").to_pylist())

    def chunks(self, where: dict[str, Any] | None = None) -> list[Chunk]:
        query = self.table.search().select(["id", "doc_id", "source", "position", "text",
                                            "meta"])
        if where:
            query = query.where(_where_sql(where))
        rows = query.limit(None).to_list()
        return sorted((_chunk(r) for r in rows), key=lambda c: (c.doc_id, c.position, c.id))

    def search(self, vector: Any, k: int = 10, where: dict[str, Any] | None = None, *,
               nprobes: int | None = None, refine_factor: int | None = None,
               exact: bool = False) -> list[tuple[Chunk, float]]:
        """With an ANN index (and not `exact`), probe `nprobes` partitions and re-rank
        `refine_factor * k` candidates exactly (0: no re-ranking); None: the store's settings,
        else a quarter of the partitions (at least 40) and 10."""
        vec = self._vectors([vector], 1)[0]
        if not np.isfinite(vec).all():
            raise LadderError("the query vector contains NaN or infinity")
        nprobes = _search_setting("nprobes", nprobes, 1)
        refine_factor = _search_setting("refine_factor", refine_factor, 0)
        n = self.count()
        if k < 1 or not n:
            return []
        ann = not exact and self._has_ann_index()
        rows = self._query(vec, k, where, ann, nprobes, refine_factor)
        if ann and len(rows) < (k if where else min(k, n)):
            rows = self._query(vec, k, where, False, None, None)  # the index missed some
        return [(_chunk(r), 1.0 - float(r["_distance"])) for r in rows]

    def _query(self, vec: np.ndarray, k: int, where: dict[str, Any] | None, ann: bool,
               nprobes: int | None, refine_factor: int | None) -> list[dict[str, Any]]:
        query = self.table.search(vec, vector_column_name="vector").distance_type("cosine")
        if ann:
            probes, refine = self.search_settings()
            query = query.nprobes(nprobes or probes)
            refine = refine if refine_factor is None else refine_factor
            if refine:
                query = query.refine_factor(refine)
        else:
            query = query.bypass_vector_index()
        if where:
            query = query.where(_where_sql(where), prefilter=True)
        return query.select(["id", "doc_id", "source", "position", "text", "meta",
                             "_distance"]).limit(k).to_list()

    def pin(self) -> int:
        """From now on read the version that is current now: `search`, `chunks`, `ids` and
        `count` all see it, and a concurrent re-index is not seen (reopen to see it). For
        readers (a retriever), so BM25's snapshot and dense search agree; returns the
        version."""
        version = int(self.table.version)
        self.table.checkout(version)
        return version

    def info(self) -> dict[str, Any]:
        """The embedder, size and version; with an ANN index also how it is searched."""
        out: dict[str, Any] = {"embedder": self.embedder, "dim": self.dim, "backend": "lancedb",
                               "path": str(self.path), "version": int(self.table.version),
                               "count": self.count()}
        ann = self.ann_index()
        if ann is not None:
            probes, refine = self.search_settings()
            out["ann"] = {"type": ann["type"], "partitions": self.ann_partitions(),
                          "nprobes": probes, "refine_factor": refine,
                          "unindexed": ann["unindexed"]}
        return out


def _chunk(row: dict[str, Any]) -> Chunk:
    return Chunk(id=row["id"], doc_id=row["doc_id"], source=row["source"],
                 position=int(row["position"]), text=row["text"],
                 meta=json.loads(row["meta"] or "{}"))


def _literal(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise LadderError(f"filter values must be strings or integers, not {value!r}")
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


def _in_list(column: str, values: Sequence[Any]) -> str:
    return f"{column} IN ({', '.join(_literal(v) for v in values)})"


def _where_sql(where: dict[str, Any]) -> str:
    """{'source': 'a.md'} -> "source = 'a.md'"; a list value means any of them."""
    parts = []
    for key, value in where.items():
        if key not in FILTER_KEYS:
            raise LadderError(f"cannot filter on {key!r}; filterable: {', '.join(FILTER_KEYS)}")
        if isinstance(value, list | tuple | set):
            if not value:
                return "false"
            parts.append(_in_list(key, sorted(value, key=str)))
        else:
            parts.append(f"{key} = {_literal(value)}")
    return " AND ".join(parts) or "true"
