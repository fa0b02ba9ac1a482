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
