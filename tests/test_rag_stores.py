"""LanceStore: embedder/dimension guard, vector validation, filters inside the query, upsert,
the writer lock, and a process killed with SIGKILL in the middle of adds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from llm_ladder.errors import LadderError
from llm_ladder.rag.chunking import Chunk
from llm_ladder.rag.stores import LanceStore, VectorStore

DIM = 8


def chunk(i: int, source: str = "a.md", text: str | None = None) -> Chunk:
    return Chunk(id=f"c{i}", doc_id=source, source=source, position=i,
                 text=text or f"chunk number {i}", meta={"n": i, "headings": ["H"]})


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return unit(np.random.default_rng(seed).normal(size=(n, DIM))).astype(np.float32)


@pytest.fixture
def store(tmp_path: Path):
    s = LanceStore(tmp_path / "index", "test-embedder", DIM)
    yield s
    s.close()


def test_add_search_roundtrip(store: LanceStore, tmp_path: Path) -> None:
    assert isinstance(store, VectorStore)
    chunks = [chunk(i) for i in range(10)]
    vecs = vectors(10)
    assert store.add(chunks, vecs) == 10
    assert store.count() == 10
    assert store.ids() == {f"c{i}" for i in range(10)}
    hits = store.search(vecs[3], k=3)
    assert hits[0][0] == chunks[3]  # meta and all fields come back
    assert hits[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [h[1] for h in hits] == sorted((h[1] for h in hits), reverse=True)
    assert store.info() | {"path": None} == {"embedder": "test-embedder", "dim": DIM,
                                             "backend": "lancedb", "path": None,
                                             "version": store.table.version, "count": 10}
    reopened = LanceStore(tmp_path / "index", "test-embedder", DIM, create=False)
    assert reopened.count() == 10
    assert [c.id for c in reopened.chunks()] == [f"c{i}" for i in range(10)]
    assert store.delete(["c1", "c2", "missing"]) == 2
    assert reopened.count() == 8  # readers see the latest committed version
    assert store.search(vecs[0], k=0) == []


def test_missing_index_is_not_created_for_readers(tmp_path: Path) -> None:
    with pytest.raises(LadderError, match="no index at"):
        LanceStore(tmp_path / "nothing", "test-embedder", DIM, create=False)
    assert not (tmp_path / "nothing").exists()


def test_a_creation_killed_before_its_first_commit_is_recreated(tmp_path: Path) -> None:
    debris = tmp_path / "index" / "chunks.lance"
    (debris / "data").mkdir(parents=True)
    (debris / "_versions").mkdir()
    (debris / "data" / ".tmpXYZ").write_bytes(b"half a file")
    with pytest.raises(LadderError, match="no index at"):
        LanceStore(tmp_path / "index", "test-embedder", DIM, create=False)
    with LanceStore(tmp_path / "index", "test-embedder", DIM) as store:
        assert store.count() == 0
        assert store.add([chunk(0)], vectors(1)) == 1
    assert LanceStore(tmp_path / "index", "test-embedder", DIM, create=False).count() == 1


def test_a_corrupt_index_is_reported_not_overwritten(store: LanceStore, tmp_path: Path) -> None:
    store.add([chunk(0)], vectors(1))
    store.close()
    manifests = sorted((tmp_path / "index" / "chunks.lance" / "_versions").glob("*.manifest"))
    for m in manifests:
        m.write_bytes(b"junk" * 10)
    with pytest.raises(LadderError, match="cannot open the index at"):
        LanceStore(tmp_path / "index", "test-embedder", DIM)
    assert all(m.read_bytes() == b"junk" * 10 for m in manifests)  # left for the user


def test_refuses_another_embedder_or_dimension(store: LanceStore, tmp_path: Path) -> None:
    store.add([chunk(0)], vectors(1))
    with pytest.raises(LadderError, match="'test-embedder' \\(dim 8\\).*'other-model' \\(dim 8\\)"):
        LanceStore(tmp_path / "index", "other-model", DIM)
    with pytest.raises(LadderError, match="dim 8\\).*dim 16\\)"):
        LanceStore(tmp_path / "index", "test-embedder", 16)
    assert store.count() == 1


@pytest.mark.parametrize("bad, message", [
    (np.full((2, DIM), np.nan), "NaN or infinity"),
    (np.array([[0.1] * DIM, [np.inf] + [0.0] * (DIM - 1)]), "NaN or infinity"),
    (np.full((2, DIM), 1e39), "NaN or infinity"),  # finite in float64, inf in float32
    (np.zeros((2, DIM + 1)), r"shape \(2, 9\); expected \(2, 8\)"),
    (np.zeros((3, DIM)), r"shape \(3, 8\); expected \(2, 8\)"),
    (np.zeros(DIM), r"shape \(8,\)"),
    ([["x"] * DIM] * 2, "not numeric"),
])
def test_bad_vectors_are_rejected_before_any_write(store: LanceStore, bad, message) -> None:
    store.add([chunk(9)], vectors(1))
    version = store.table.version
    with pytest.raises(LadderError, match=message):
        store.add([chunk(0), chunk(1)], bad)
    assert store.count() == 1
    assert store.table.version == version
    with pytest.raises(LadderError, match="NaN or infinity|shape"):
        store.search(np.full(DIM, np.nan) if "NaN" in message else np.zeros(DIM + 1), k=1)


def test_duplicate_ids_in_one_add(store: LanceStore) -> None:
    with pytest.raises(LadderError, match="duplicate chunk ids"):
        store.add([chunk(0), chunk(0)], vectors(2))
    assert store.count() == 0


def test_filter_is_applied_inside_the_query(store: LanceStore) -> None:
    query = unit(np.ones(DIM))
    near = unit(np.ones((30, DIM)) + np.random.default_rng(1).normal(0, 0.01, (30, DIM)))
    far = unit(-np.ones((1, DIM)))  # the opposite direction: the worst match of all
    store.add([chunk(i, "a.md") for i in range(30)] + [chunk(99, "b.md")],
              np.vstack([near, far]))
    # A post-filter of the global top-1 (an a.md chunk) would return nothing.
    hits = store.search(query, k=1, where={"source": "b.md"})
    assert [h[0].id for h in hits] == ["c99"]
    assert hits[0][1] == pytest.approx(-1.0, abs=1e-5)
    assert {h[0].source for h in store.search(query, k=50, where={"source": "a.md"})} == {"a.md"}
    assert len(store.search(query, k=50, where={"source": ["a.md", "b.md"]})) == 31
    assert [h[0].id for h in store.search(query, k=5, where={"position": 99})] == ["c99"]
    assert store.search(query, k=5, where={"source": "it's'; DROP"}) == []
    assert [c.id for c in store.chunks(where={"source": "b.md"})] == ["c99"]
    with pytest.raises(LadderError, match="cannot filter on 'color'"):
        store.search(query, k=1, where={"color": "red"})


def test_add_is_an_upsert_by_id(store: LanceStore) -> None:
    chunks = [chunk(i) for i in range(5)]
    assert store.add(chunks, vectors(5)) == 5
    assert store.add(chunks, vectors(5)) == 0
    assert store.count() == 5
    changed = chunk(2, text="new text for two")
    assert store.add([changed, chunk(5)], vectors(2, seed=7)) == 1
    assert store.count() == 6
    assert {c.id: c.text for c in store.chunks()}["c2"] == "new text for two"
    store.optimize()
    assert store.count() == 6
    assert store.search(vectors(2, seed=7)[1], k=1)[0][0].id == "c5"


def test_second_writer_is_refused_with_the_pid(tmp_path: Path) -> None:
    path = tmp_path / "index"
    first = LanceStore(path, "test-embedder", DIM)
    first.add([chunk(0)], vectors(1))
    second = LanceStore(path, "test-embedder", DIM)
    assert second.search(vectors(1)[0], k=1)[0][0].id == "c0"  # reading needs no lock
    with pytest.raises(LadderError, match=f"being written by another process \\(pid {os.getpid()}"):
        second.add([chunk(1)], vectors(1, seed=1))
    first.close()
    assert second.add([chunk(1)], vectors(1, seed=1)) == 1
    second.close()


def test_writer_lock_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "index"
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, numpy as np
        from llm_ladder.rag.chunking import Chunk
        from llm_ladder.rag.stores import LanceStore
        s = LanceStore({str(path)!r}, "test-embedder", {DIM})
        s.add([Chunk("x", "d", "d", 0, "t", {{}})], np.ones((1, {DIM})) / {DIM ** 0.5})
        print("locked", flush=True)
        sys.stdin.readline()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        mine = LanceStore(path, "test-embedder", DIM)
        with pytest.raises(LadderError, match=f"another process \\(pid {child.pid}\\)"):
            mine.add([chunk(0)], vectors(1))
    finally:
        child.communicate("done\n", timeout=30)
    assert mine.add([chunk(0)], vectors(1)) == 1
    mine.close()


KILLED_WRITER = """
import sys, numpy as np
from llm_ladder.rag.chunking import Chunk
from llm_ladder.rag.stores import LanceStore

def batch_of(b, batch, dim):
    vecs = np.random.default_rng(b).normal(size=(batch, dim))
    return ([Chunk(f"b{b}-{j}", f"doc{b}", f"doc{b}.md", j, f"text {b} {j}", {}) for j in
             range(batch)], vecs / np.linalg.norm(vecs, axis=1, keepdims=True))

if __name__ == "__main__":
    path, batch, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = LanceStore(path, "test-embedder", dim)
    for b in range(100000):
        store.add(*batch_of(b, batch, dim))
        print(store.count(), flush=True)
"""


def test_sigkill_during_adds_leaves_a_readable_committed_version(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER, encoding="utf-8")
    path, batch = tmp_path / "index", 25
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen([sys.executable, str(script), str(path), str(batch), str(DIM)],
                             stdout=subprocess.PIPE, text=True, env=env)
    committed = []
    try:
        while len(committed) < 6:
            line = child.stdout.readline()
            assert line, "the writer died before it was killed"
            committed.append(int(line))
        time.sleep(np.random.default_rng().uniform(0, 0.05))  # land somewhere inside an add
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    committed += [int(line) for line in child.stdout.read().split()]  # printed before the kill

    store = LanceStore(path, "test-embedder", DIM, create=False)
    n = store.count()
    # The count is a committed version: the last one printed, or one batch newer (committed
    # but killed before printing); never a part of a batch.
    assert n % batch == 0 and n in (committed[-1], committed[-1] + batch)
    batches = n // batch
    assert store.ids() == {f"b{b}-{j}" for b in range(batches) for j in range(batch)}
    assert len(store.search(vectors(1)[0], k=5)) == 5

    sys.path.insert(0, str(tmp_path))
    try:
        import writer  # the same deterministic batches
    finally:
        sys.path.remove(str(tmp_path))
    for b in range(batches):  # re-adding what survived adds nothing
        assert store.add(*writer.batch_of(b, batch, DIM)) == 0
    assert store.count() == n
    # ... and the writer's lock died with it.
    assert store.add(*writer.batch_of(batches, batch, DIM)) == batch
    store.close()
