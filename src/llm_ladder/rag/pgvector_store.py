"""`PgVectorStore`: the `VectorStore` protocol on PostgreSQL + pgvector, for indexes that
outgrow one machine or must be shared by several.

One table per collection (its name is checked as a plain identifier) holds
`id, doc_id, source, position, text, meta (json), embedding vector(dim)`; a small table
`llm_ladder_collections` records each collection's embedder name and dimension when it is
created, and opening or writing a collection with another embedder or dimension is a LadderError
naming both. Vectors are validated (shape, dimension, NaN/inf after the cast to float32, zero
norm) before anything is written. `add` is one transaction: the rows are copied into a
temporary table, then upserted with `INSERT ... ON CONFLICT (id) DO UPDATE`, so a failed or
killed writer leaves the previous state; writers of one collection are serialized by a
transaction-scoped advisory lock (they wait; they do not fail). Metadata filters (`where`) are
compiled into the WHERE clause of the search query itself, with every value sent as a bound
parameter, so a filtered search only ever sees the matching rows.

Searches are exact (a sequential scan) until `create_hnsw_index()` builds an HNSW index
(`vector_cosine_ops`); then they are approximate, with `hnsw.ef_search` raised to k and, on
pgvector >= 0.8, `hnsw.iterative_scan = strict_order` so that a filtered search still finds
up to k matching rows.

The connection URL is given to the constructor (e.g. read from an environment variable named in
the task's config with `PgVectorStore.from_env`); its password never appears in a repr, in
`info()` or in an error message.
Skipped here: connection pools, schemas other than the connection's default, halfvec/quantized
storage, vectors over 2,000 dimensions in the HNSW index.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from llm_ladder.errors import LadderError, require
from llm_ladder.errors import redact_url as _redact_url
from llm_ladder.rag.chunking import Chunk
from llm_ladder.rag.stores import FILTER_KEYS, as_float32

META_TABLE = "llm_ladder_collections"
HNSW_MAX_DIM = 2000  # pgvector's limit for indexing the `vector` type
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}")
_COLUMNS = ("id", "doc_id", "source", "position", "text", "meta")
_TEXT_KEYS = {"id", "doc_id", "source"}
_COPY_TYPES = ["text", "text", "text", "int8", "text", "text", "vector"]  # json: as text


class PgVectorStore:
    """The collection `collection` in the PostgreSQL database at `url` (a libpq URL or
    key=value string); created on first open when `create` is true."""

    def __init__(self, url: str, collection: str, embedder: str, dim: int,
                 create: bool = True, connect_timeout: int = 10):
        self.psycopg = require("psycopg", "rag")
        self.sql = require("psycopg.sql", "rag")
        self._register_vector = require("pgvector.psycopg", "rag").register_vector
        if not isinstance(collection, str) or not _NAME.fullmatch(collection):
            raise LadderError(f"collection name {collection!r} must be a lower-case identifier: "
                              "a letter or _, then letters, digits or _ (at most 48)")
        if collection == META_TABLE:
            raise LadderError(f"{META_TABLE!r} is reserved for llm-ladder's own metadata")
        self.url = url
        self.collection = collection
        self.embedder = embedder
        self.dim = int(dim)
        self.connect_timeout = int(connect_timeout)
        if self.dim < 1:
            raise LadderError(f"embedding dimension must be positive, not {dim}")
        self._secrets = _secrets(url)
        self._table = self.sql.Identifier(collection)
        self._conn: Any = None
        self._closed = False
        self._pgvector = ""
        try:
            with self._errors("cannot open"):
                self._connect()
                self._open(create)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_env(cls, variable: str, collection: str, embedder: str, dim: int,
                 **kwargs: Any) -> PgVectorStore:
        """The store whose URL is in the environment variable `variable`."""
        url = os.environ.get(variable, "").strip()
        if not url:
            raise LadderError(f"set the environment variable {variable} to the PostgreSQL URL "
                              "of the vector store (postgresql://user:password@host/db)")
        return cls(url, collection, embedder, dim, **kwargs)

    def __repr__(self) -> str:
        return (f"PgVectorStore({redact_url(self.url)!r}, collection={self.collection!r}, "
                f"embedder={self.embedder!r}, dim={self.dim})")

    # -- connection ------------------------------------------------------------------------

    def _where_am_i(self) -> str:
        return f"collection {self.collection!r} at {redact_url(self.url)}"

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """psycopg errors -> LadderError naming the collection, with the password scrubbed.
        The original exception is not chained (its text may hold the connection string)."""
        try:
            yield
        except self.psycopg.Error as e:
            message = self._scrub(str(e).strip()) or type(e).__name__
            raise LadderError(f"{doing} the pgvector {self._where_am_i()}: {message}") from None

    def _connect(self) -> None:
        self._conn = self.psycopg.connect(self.url, autocommit=True,
                                          connect_timeout=self.connect_timeout)

    def _db(self) -> Any:
        """The connection, reconnecting once if the server dropped it."""
        if self._closed:
            raise LadderError(f"the pgvector store ({self._where_am_i()}) is closed")
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._connect()
            self._register_vector(self._conn)
        return self._conn

    def _lock_key(self, name: str) -> Any:
        return self.sql.SQL("SELECT pg_advisory_xact_lock(hashtextextended({}, 0))").format(
            self.sql.Literal(f"llm_ladder:{name}"))

    def _open(self, create: bool) -> None:
        db, sql = self._conn, self.sql
        row = db.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        if row is None:
            if not create:
                raise LadderError(f"no pgvector extension in the database for "
                                  f"{self._where_am_i()}")
            try:
                db.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except self.psycopg.Error as e:
                raise LadderError(
                    f"the database for {self._where_am_i()} has no pgvector extension and it "
                    f"could not be created ({self._scrub(str(e).strip())}); ask an admin to run "
                    "CREATE EXTENSION vector") from None
            row = db.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        self._pgvector = row[0]
        self._register_vector(db)
        if self._recorded() is None:
            if not create:
                raise LadderError(f"no {self._where_am_i()}; build it first")
            with db.transaction():
                db.execute(self._lock_key(META_TABLE))
                db.execute(sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, embedder text NOT NULL,"
                    " dim integer NOT NULL, created timestamptz NOT NULL DEFAULT now())"
                ).format(sql.Identifier(META_TABLE)))
                db.execute(sql.SQL(
                    "INSERT INTO {} (name, embedder, dim) VALUES (%s, %s, %s) "
                    "ON CONFLICT (name) DO NOTHING").format(sql.Identifier(META_TABLE)),
                    (self.collection, self.embedder, self.dim))
                recorded = self._recorded()
                if recorded == (self.embedder, self.dim):  # ours (or a twin's): make the table
                    db.execute(sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} (id text PRIMARY KEY, doc_id text NOT NULL,"
                        " source text NOT NULL, position bigint NOT NULL, text text NOT NULL,"
                        " meta json NOT NULL, embedding vector({}) NOT NULL)"
                    ).format(self._table, sql.Literal(self.dim)))
                    for column in ("source", "doc_id"):
                        db.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                            sql.Identifier(f"{self.collection}_{column}"), self._table,
                            sql.Identifier(column)))
        self._check_embedder()

    def _recorded(self) -> tuple[str, int] | None:
        """(embedder, dim) recorded for this collection, or None."""
        exists = self._conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                                    (META_TABLE,)).fetchone()[0]
        if not exists:
            return None
        row = self._conn.execute(
            self.sql.SQL("SELECT embedder, dim FROM {} WHERE name = %s").format(
                self.sql.Identifier(META_TABLE)), (self.collection,)).fetchone()
        return None if row is None else (row[0], int(row[1]))

    def _check_embedder(self) -> None:
        recorded = self._recorded()
        if recorded is None:
            raise LadderError(f"no {self._where_am_i()} (it was dropped?)")
        name, dim = recorded
        if (name, dim) != (self.embedder, self.dim):
            raise LadderError(
                f"the {self._where_am_i()} was built with embedder {name!r} (dim {dim}); "
                f"this uses {self.embedder!r} (dim {self.dim}); rebuild the collection or use "
                f"{name!r}")
        exists = self._conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                                    (self.collection,)).fetchone()[0]
        if not exists:
            raise LadderError(f"the table of {self._where_am_i()} is missing; rebuild it")

    def close(self) -> None:
        """Close the connection; the store cannot be used afterwards."""
        self._closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> PgVectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- validation ------------------------------------------------------------------------

    def _vectors(self, vectors: Any, n: int) -> np.ndarray:
        return as_float32(vectors, n, self.dim, self.embedder)

    def _check_rows(self, chunks: list[Chunk], arr: np.ndarray) -> None:
        bad = ~np.isfinite(arr).all(axis=1)
        if bad.any():
            ids = [c.id for c, b in zip(chunks, bad, strict=True) if b]
            raise LadderError(f"{len(ids)} vector(s) contain NaN or infinity (after float32), "
                              f"e.g. chunk {ids[0]}; nothing was written")
        zero = ~np.any(arr != 0, axis=1)
        if zero.any():
            ids = [c.id for c, z in zip(chunks, zero, strict=True) if z]
            raise LadderError(f"{len(ids)} vector(s) are all zeros (cosine similarity is "
                              f"undefined), e.g. chunk {ids[0]}; nothing was written")
        seen: set[str] = set()
        dupes = {c.id for c in chunks if c.id in seen or seen.add(c.id)}
        if dupes:
            raise LadderError(f"duplicate chunk ids in one add: {sorted(dupes)[:3]}")
        for c in chunks:
            for name in ("id", "doc_id", "source", "text"):
                value = getattr(c, name)
                if not isinstance(value, str):
                    raise LadderError(f"chunk {c.id!r}: {name} must be a string, "
                                      f"not {value!r}")
                if "\x00" in value:  # PostgreSQL text cannot hold NUL
                    raise LadderError(f"chunk {c.id!r}: {name} contains a NUL character; "
                                      "nothing was written")
            if isinstance(c.position, bool) or not isinstance(c.position, int | np.integer):
                raise LadderError(f"chunk {c.id!r}: position must be an integer, "
                                  f"not {c.position!r}")

    # -- writing ---------------------------------------------------------------------------

    def add(self, chunks: Sequence[Chunk], vectors: Any) -> int:
        """Upsert in one transaction; returns how many ids were new."""
        chunks = list(chunks)
        arr = self._vectors(vectors, len(chunks))
        self._check_rows(chunks, arr)
        rows = [(c.id, c.doc_id, c.source, int(c.position), c.text,
                 json.dumps(c.meta, ensure_ascii=False, default=str), v)
                for c, v in zip(chunks, arr, strict=True)]
        if not rows:
            return 0
        sql = self.sql
        with self._errors("cannot write to"):
            db = self._db()
            with db.transaction():
                db.execute(self._lock_key(self.collection))
                self._check_embedder()
                db.execute(sql.SQL(
                    "CREATE TEMPORARY TABLE _ladder_stage ON COMMIT DROP AS "
                    "SELECT * FROM {} WITH NO DATA").format(self._table))
                with db.cursor() as cur:
                    with cur.copy(sql.SQL("COPY _ladder_stage (id, doc_id, source, position, "
                                          "text, meta, embedding) FROM STDIN (FORMAT BINARY)")
                                  ) as copy:
                        copy.set_types(_COPY_TYPES)
                        for row in rows:
                            copy.write_row(row)
                new = db.execute(sql.SQL(
                    "SELECT count(*) FROM _ladder_stage s WHERE NOT EXISTS "
                    "(SELECT 1 FROM {} t WHERE t.id = s.id)").format(self._table)).fetchone()[0]
                db.execute(sql.SQL(
                    "INSERT INTO {} (id, doc_id, source, position, text, meta, embedding) "
                    "SELECT id, doc_id, source, position, text, meta, embedding "
                    "FROM _ladder_stage ON CONFLICT (id) DO UPDATE SET doc_id = EXCLUDED.doc_id, "
                    "source = EXCLUDED.source, position = EXCLUDED.position, "
                    "text = EXCLUDED.text, meta = EXCLUDED.meta, "
                    "embedding = EXCLUDED.embedding").format(self._table))
        return int(new)

    def delete(self, ids: Sequence[str]) -> int:
        ids = list(dict.fromkeys(ids))
        if not ids:
            return 0
        for i in ids:
            if not isinstance(i, str):
                raise LadderError(f"chunk ids are strings, not {i!r}")
        with self._errors("cannot delete from"):
            db = self._db()
            with db.transaction():
                db.execute(self._lock_key(self.collection))
                cur = db.execute(self.sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(
                    self._table), (ids,))
                return int(cur.rowcount)

    def create_hnsw_index(self, m: int = 16, ef_construction: int = 64) -> None:
        """Build (if missing) an HNSW index with `vector_cosine_ops`; searches then become
        approximate. Building takes a while on large tables and blocks writers meanwhile."""
        if self.dim > HNSW_MAX_DIM:
            raise LadderError(f"pgvector's HNSW index takes at most {HNSW_MAX_DIM} dimensions; "
                              f"{self.embedder!r} has {self.dim} (searches stay exact)")
        for name, value, low, high in (("m", m, 2, 100),
                                       ("ef_construction", ef_construction, 4, 1000)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise LadderError(f"{name} must be an integer from {low} to {high}, "
                                  f"not {value!r}")
        if ef_construction < 2 * m:
            raise LadderError(f"ef_construction ({ef_construction}) must be at least 2*m ({2 * m})")
        sql = self.sql
        with self._errors("cannot index"):
            self._db().execute(sql.SQL(
                "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding vector_cosine_ops) "
                "WITH (m = {}, ef_construction = {})").format(
                    sql.Identifier(f"{self.collection}_hnsw"), self._table,
                    sql.Literal(m), sql.Literal(ef_construction)))

    def has_hnsw_index(self) -> bool:
        with self._errors("cannot read"):
            return bool(self._db().execute(
                "SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE tablename = %s "
                "AND indexdef ILIKE '%%USING hnsw%%')", (self.collection,)).fetchone()[0])

    # -- reading ---------------------------------------------------------------------------

    def count(self) -> int:
        with self._errors("cannot read"):
            return int(self._db().execute(
                self.sql.SQL("SELECT count(*) FROM {}").format(self._table)).fetchone()[0])

    def ids(self) -> set[str]:
        with self._errors("cannot read"):
            rows = self._db().execute(
                self.sql.SQL("SELECT id FROM {}").format(self._table)).fetchall()
        return {r[0] for r in rows}

    def chunks(self, where: dict[str, Any] | None = None) -> list[Chunk]:
        clause, params = self._where(where)
        query = self.sql.SQL("SELECT id, doc_id, source, position, text, meta::text FROM {} "
                             "WHERE {}").format(self._table, clause)
        with self._errors("cannot read"):
            rows = self._db().execute(query, params).fetchall()
        return sorted((_chunk(r) for r in rows), key=lambda c: (c.doc_id, c.position, c.id))

    def search(self, vector: Any, k: int = 10,
               where: dict[str, Any] | None = None) -> list[tuple[Chunk, float]]:
        """The k nearest chunks by cosine similarity (best first) among those matching
        `where`; the filter is part of the query, not applied to its top k."""
        vec = self._vectors([vector], 1)[0]
        if not np.isfinite(vec).all():
            raise LadderError("the query vector contains NaN or infinity")
        if not vec.any():
            raise LadderError("the query vector is all zeros (cosine similarity is undefined)")
        if isinstance(k, bool) or not isinstance(k, int | np.integer):
            raise LadderError(f"k must be an integer, not {k!r}")
        clause, params = self._where(where)
        if k < 1:
            return []
        query = self.sql.SQL(
            "SELECT id, doc_id, source, position, text, meta::text, embedding <=> %s AS distance "
            "FROM {} WHERE {} ORDER BY embedding <=> %s LIMIT %s").format(self._table, clause)
        with self._errors("cannot search"):
            db = self._db()
            with db.transaction():
                # Only used when an HNSW index exists: let it return k rows, and keep scanning
                # until k rows pass the filter (pgvector >= 0.8).
                settings = "SELECT set_config('hnsw.ef_search', %s, true)"
                if _version(self._pgvector) >= (0, 8):
                    settings += ", set_config('hnsw.iterative_scan', 'strict_order', true)"
                db.execute(settings, (str(min(max(int(k), 40), 1000)),))
                rows = db.execute(query, [vec, *params, vec, int(k)]).fetchall()
        return [(_chunk(r[:6]), 1.0 - float(r[6])) for r in rows]

    def info(self) -> dict[str, Any]:
        return {"embedder": self.embedder, "dim": self.dim, "backend": "pgvector",
                "url": redact_url(self.url), "collection": self.collection,
                "pgvector": self._pgvector, "hnsw": self.has_hnsw_index(),
                "count": self.count()}

    def drop(self) -> None:
        """Delete the collection: its table and its metadata row."""
        sql = self.sql
        with self._errors("cannot drop"):
            db = self._db()
            with db.transaction():
                db.execute(self._lock_key(self.collection))
                db.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._table))
                db.execute(sql.SQL("DELETE FROM {} WHERE name = %s").format(
                    sql.Identifier(META_TABLE)), (self.collection,))

    def _where(self, where: dict[str, Any] | None) -> tuple[Any, list[Any]]:
        """{'source': 'a.md', 'position': [0, 1]} -> ("source" = %s AND "position" = ANY(%s),
        params); values are always bound parameters."""
        sql = self.sql
        parts: list[Any] = []
        params: list[Any] = []
        for key, value in (where or {}).items():
            if key not in FILTER_KEYS:
                raise LadderError(f"cannot filter on {key!r}; "
                                  f"filterable: {', '.join(FILTER_KEYS)}")
            many = isinstance(value, list | tuple | set | frozenset)
            values = sorted(value, key=str) if many else [value]
            for v in values:
                ok = (isinstance(v, str) if key in _TEXT_KEYS
                      else isinstance(v, int | np.integer) and not isinstance(v, bool))
                if not ok:
                    kind = "strings" if key in _TEXT_KEYS else "integers"
                    raise LadderError(f"filter values for {key!r} must be {kind}, not {v!r}")
            if many:
                parts.append(sql.SQL("{} = ANY(%s)").format(sql.Identifier(key)))
                params.append([int(v) if key == "position" else v for v in values])
            else:
                parts.append(sql.SQL("{} = %s").format(sql.Identifier(key)))
                params.append(int(value) if key == "position" else value)
        if not parts:
            return sql.SQL("true"), []
        return sql.SQL(" AND ").join(parts), params


def _chunk(row: Sequence[Any]) -> Chunk:
    return Chunk(id=row[0], doc_id=row[1], source=row[2], position=int(row[3]), text=row[4],
                 meta=json.loads(row[5] or "{}"))


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def _secrets(url: str) -> list[str]:
    """The password in `url` in the spellings an error message might use."""
    found: set[str] = set()
    try:
        from psycopg.conninfo import conninfo_to_dict

        password = conninfo_to_dict(url).get("password")
        if password:
            found.add(str(password))
    except Exception:  # an unparsable URL: fall back to the regexes below
        pass
    for m in re.finditer(r"://[^:/?#@]*:([^/?#]*)@", url):
        found.add(m.group(1))
    for m in re.finditer(r"password=([^&\s]*)", url):
        found.add(m.group(1))
    found |= {urllib.parse.unquote(s) for s in found}
    found |= {urllib.parse.quote(s, safe="") for s in found}
    return sorted((s for s in found if s), key=len, reverse=True)


def redact_url(url: str) -> str:
    """`url` with its password and credential query values replaced by *** (errors.redact_url,
    the one redaction used everywhere)."""
    return _redact_url(url)
