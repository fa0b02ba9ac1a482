"""Retrieval end to end on a small real corpus with the embedded MiniLM: load, chunk, store,
then dense, BM25 and hybrid must each rank the right topic first."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llm_ladder.errors import LadderError
from llm_ladder.rag.chunking import Chunk, HFTokens, structured_chunks
from llm_ladder.rag.loaders import load_corpus
from llm_ladder.rag.retrieve import BM25Index, Hit, Retriever, dense, fuse, light_stem
from llm_ladder.rag.stores import LanceStore

os.environ["HF_HUB_OFFLINE"] = "1"

TOPICS = {
    "bees": "# Beekeeping\n\nA honey bee colony has one queen, thousands of worker bees and a "
            "few drones. Beekeepers inspect the hive frames for brood and honey in spring.",
    "volcanoes": "# Volcanoes\n\nA volcano erupts when magma rises through the crust. Lava "
                 "flows and ash clouds from eruptions can bury towns.",
    "sourdough": "# Sourdough bread\n\nSourdough is leavened with a starter of wild yeast and "
                 "lactic acid bacteria. Feed the starter with flour and water before baking.",
    "chess": "# Chess openings\n\nThe Sicilian Defence answers 1.e4 with c5. White often "
             "plays the Open Sicilian with Nf3 and d4 to fight for the centre.",
    "tides": "# Ocean tides\n\nTides are caused by the gravitational pull of the Moon and the "
             "Sun on the oceans. Spring tides happen at full and new moon.",
    "tax": "# Income tax returns\n\nFile your income tax return by the deadline and keep "
           "receipts for deductions such as work travel and home office costs.",
    "vaccines": "# Vaccination\n\nA vaccine trains the immune system to recognise a pathogen "
                "by presenting an antigen, so antibodies form without illness.",
    "guitar": "# Guitar tuning\n\nStandard guitar tuning from the lowest string is E A D G B E. "
              "Use a clip-on tuner and tune each string up to pitch.",
    "compost": "# Composting\n\nA compost heap turns kitchen scraps and garden waste into "
               "humus. Mix green and brown material and turn the pile for air.",
    "satellites": "# Satellite orbits\n\nA geostationary satellite orbits 35,786 km above the "
                  "equator, matching Earth's rotation so it stays over one spot.",
}
QUERIES = {
    "bees": "how many queens live in a beehive colony",
    "volcanoes": "what happens when magma reaches the surface in an eruption",
    "sourdough": "how do I feed my sourdough starter",
    "chess": "what is the Sicilian defence in chess",
    "tides": "why does the moon cause tides",
    "tax": "when is the deadline for my income tax return",
    "vaccines": "how does a vaccine make antibodies",
    "guitar": "what notes are the strings in standard guitar tuning",
    "compost": "how to make compost from kitchen scraps",
    "satellites": "how high is a geostationary satellite orbit",
}


@pytest.fixture(scope="module")
def embedder():
    from llm_ladder.embedding import Embedder

    return Embedder()


@pytest.fixture(scope="module")
def retriever(embedder, tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for name, text in TOPICS.items():
        (root / f"{name}.md").write_text(text, encoding="utf-8")
    corpus = load_corpus(root)
    assert not corpus.problems
    chunks = structured_chunks(corpus.documents, HFTokens(embedder.model.tokenizer))
    store = LanceStore(Path(root) / ".index", embedder.name, embedder.dim)
    store.add(chunks, embedder.embed([c.text for c in chunks]))
    yield Retriever(store, embedder.embed)
    store.close()


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_each_topic_ranks_first(retriever: Retriever, mode: str) -> None:
    for topic, query in QUERIES.items():
        hits = retriever.search(query, k=3, mode=mode)
        assert hits, (mode, query)
        assert hits[0].chunk.source == f"{topic}.md", (mode, query, hits[0].chunk.source)
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
        assert all(h.mode == mode for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_filters_apply_in_every_mode(retriever: Retriever) -> None:
    for mode in ("dense", "bm25", "hybrid"):
        hits = retriever.search(QUERIES["bees"], k=5, mode=mode, where={"source": "tax.md"})
        assert {h.chunk.source for h in hits} <= {"tax.md"}
    # "return" and "tax" occur only in tax.md: the filter leaves BM25 nothing to match.
    assert retriever.search("income tax return", k=5, mode="bm25",
                            where={"source": "bees.md"}) == []
    with pytest.raises(LadderError, match="unknown retrieval mode"):
        retriever.search("x", mode="sparse")
    with pytest.raises(LadderError, match="cannot filter"):
        retriever.bm25.search("x", where={"topic": "y"})


def test_bm25_returns_only_matching_chunks(retriever: Retriever) -> None:
    assert retriever.search("zyzzyva quux", k=5, mode="bm25") == []
    assert retriever.search("the and of", k=5, mode="bm25") == []  # stopwords only
    assert BM25Index([]).search("anything") == []
    hits = retriever.search("compost heaps", k=10, mode="bm25")  # plural matches via the stem
    assert [h.chunk.source for h in hits] == ["compost.md"]
    assert light_stem(["heaps", "glass", "bus", "is", "costs"]) == ["heap", "glass", "bus",
                                                                     "is", "cost"]


def test_dense_respects_k(retriever: Retriever) -> None:
    assert len(dense(retriever.store, retriever.embed, "anything", k=4)) == 4


def test_reciprocal_rank_fusion_by_hand() -> None:
    def hits(ids: list[str]) -> list[Hit]:
        return [Hit(Chunk(i, "d", "s", 0, i), 0.0, r, "x") for r, i in enumerate(ids, start=1)]

    fused = fuse([hits(["x", "y"]), hits(["y", "z"])], k=10)
    assert [h.chunk.id for h in fused] == ["y", "x", "z"]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)
    assert fused[1].score == pytest.approx(1 / 61)
    assert fused[2].score == pytest.approx(1 / 62)
    assert [(h.rank, h.mode) for h in fused] == [(1, "hybrid"), (2, "hybrid"), (3, "hybrid")]
    # Ties: equal fused scores go to the better single rank, then the id.
    tied = fuse([hits(["a", "b"]), hits(["b", "a"])], k=1)
    assert [h.chunk.id for h in tied] == ["a"]
    assert fuse([hits(["q", "r", "s"])], k=2, rrf_k=0)[1].score == pytest.approx(1 / 2)
