"""The LanceDB ANN index: same answers as exact search on clustered data, filters still
enforced inside the query, bad parameters refused."""

import numpy as np
import pytest

from llm_ladder.errors import LadderError
from llm_ladder.rag.chunking import Chunk
from llm_ladder.rag.stores import LanceStore

DIM = 32


def clustered(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centroids = rng.normal(size=(40, DIM))
    labels = rng.integers(0, 40, size=n)
    x = centroids[labels] + 0.05 * rng.normal(size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), centroids


def test_ann_index_matches_exact_and_keeps_filters(tmp_path):
    x, centroids = clustered(4000)
    chunks = [Chunk(f"c{i:05d}", f"d{i}", "tenant-a.md" if i % 2 else "tenant-b.md", 0,
                    f"text {i}") for i in range(len(x))]
    store = LanceStore(tmp_path / "idx", "test-embedder", DIM)
    store.add(chunks, x)
    assert store.ann_index() is None
    info = store.build_ann_index("ivf_sq", num_partitions=16)
    assert info["rows"] == 4000 and store.ann_index() is not None

    rng = np.random.default_rng(1)
    hits = total = 0
    for c in centroids[:10]:
        q = c + 0.05 * rng.normal(size=DIM)
        q /= np.linalg.norm(q)
        ann = [ch.id for ch, _ in store.search(q, k=10)]
        sims = x @ q.astype(np.float32)
        exact_scores = [s for _, s in store.search(q, k=10, exact=True)]
        # exact search returns the true top-10 similarities (ids may swap on near-ties)
        assert np.allclose(exact_scores, np.sort(sims)[::-1][:10], atol=1e-5)
        truth = [f"c{i:05d}" for i in np.argsort(-sims)[:10]]
        hits += len(set(ann) & set(truth))
        total += 10
        filtered = store.search(q, k=5, where={"source": "tenant-a.md"}, nprobes=1)
        assert len(filtered) == 5 and all(ch.source == "tenant-a.md" for ch, _ in filtered)
    assert hits / total >= 0.95

    with pytest.raises(LadderError):
        store.build_ann_index("no-such-kind")
    with pytest.raises(LadderError):
        store.search(x[0], k=5, nprobes=0)
    store.close()


def test_ann_index_refuses_tiny_tables(tmp_path):
    x, _ = clustered(50)
    store = LanceStore(tmp_path / "idx", "test-embedder", DIM)
    store.add([Chunk(f"c{i}", "d", "s.md", i, "t") for i in range(50)], x)
    with pytest.raises(LadderError):
        store.build_ann_index()
    store.close()


def _ids(store: LanceStore, queries: np.ndarray, **kw) -> list[list[str]]:
    return [[ch.id for ch, _ in store.search(q, k=10, **kw)] for q in queries]


def test_default_probes_scale_with_the_partitions_recorded_in_the_table(tmp_path):
    # uniform data: IVF recall depends on the share of partitions probed, so a fixed 40 of
    # 400 partitions finds visibly less than the default quarter (100)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4000, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    queries = x[rng.choice(4000, size=30, replace=False)] + 0.3 * rng.normal(size=(30, DIM))
    store = LanceStore(tmp_path / "idx", "test-embedder", DIM)
    store.add([Chunk(f"c{i:05d}", "d", "s.md", i, "t") for i in range(len(x))], x)
    info = store.build_ann_index("ivf_sq", num_partitions=400)
    assert (info["num_partitions"], info["nprobes"]) == (400, 100)
    store.close()

    truth = [[f"c{i:05d}" for i in np.argsort(-(x @ q.astype(np.float32)))[:10]]
             for q in queries]

    def recall(found: list[list[str]]) -> float:
        return sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True)) / 300

    reader = LanceStore(tmp_path / "idx", "test-embedder", DIM, create=False)  # a new reader
    assert reader.ann_partitions() == 400  # recorded by the build, not sqrt(4000) = 63
    default = _ids(reader, queries)
    assert default == _ids(reader, queries, nprobes=100)
    assert recall(default) >= recall(_ids(reader, queries, nprobes=40)) + 0.05
    # the store's own setting (the task's [retrieval] nprobes) replaces the default ...
    fixed = LanceStore(tmp_path / "idx", "test-embedder", DIM, create=False, nprobes=40,
                       refine_factor=0)
    assert _ids(fixed, queries) == _ids(reader, queries, nprobes=40, refine_factor=0)
    assert (reader.info()["ann"]["nprobes"], fixed.info()["ann"]["nprobes"]) == (100, 40)
    assert (reader.info()["ann"]["partitions"], fixed.info()["ann"]["refine_factor"]) == (400, 0)
    # ... and a search's argument replaces both
    assert _ids(fixed, queries, nprobes=100, refine_factor=10) == default
    with pytest.raises(LadderError, match="nprobes must be an integer >= 1"):
        LanceStore(tmp_path / "idx", "test-embedder", DIM, nprobes=0)


def test_probe_rule():
    from llm_ladder.rag.stores import default_nprobes, default_partitions

    assert [default_nprobes(p) for p in (1, 30, 100, 316, 1000)] == [1, 30, 40, 79, 250]
    assert [default_partitions(n) for n in (256, 100_000, 10**6, 10**8)] == [16, 316, 1000,
                                                                              4096]
