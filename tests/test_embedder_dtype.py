"""The embedder's dtype: bfloat16 weights where the CPU has native bf16, float32 elsewhere;
vectors are unit length in float32 either way and an index built in one dtype is searched
with the other. Real MiniLM from its package, real LanceDB."""

from __future__ import annotations

import os

import numpy as np
import pytest

from llm_ladder import embedding
from llm_ladder.errors import LadderError
from llm_ladder.rag.chunking import HFTokens, structured_chunks
from llm_ladder.rag.loaders import load_corpus
from llm_ladder.rag.retrieve import Retriever
from llm_ladder.rag.stores import LanceStore
from llm_ladder.task import CorpusConfig

os.environ["HF_HUB_OFFLINE"] = "1"

TEXTS = [
    "How far from the property line may I build a garage without a permit?",
    "A honey bee colony has one queen, thousands of workers and a few drones.",
    "Sourdough is leavened with a starter of wild yeast and lactic acid bacteria.",
    "Standard guitar tuning from the lowest string is E A D G B E.",
    "Tides are caused by the gravitational pull of the Moon and the Sun.",
] * 3


@pytest.fixture(scope="module")
def both():
    return (embedding.Embedder(dtype="float32"), embedding.Embedder(dtype="bfloat16"))


def test_auto_follows_the_cpu_and_bad_values_are_refused(monkeypatch) -> None:
    monkeypatch.setattr(embedding, "cpu_has_bf16", lambda: True)
    assert embedding.resolve_dtype("auto") == "bfloat16"
    monkeypatch.setattr(embedding, "cpu_has_bf16", lambda: False)
    assert embedding.resolve_dtype("auto") == "float32"
    assert embedding.resolve_dtype("bfloat16") == "bfloat16"
    assert embedding.resolve_dtype("int8") == "int8"  # tests/test_embedder_int8.py
    with pytest.raises(LadderError, match="embedder dtype 'int4'"):
        embedding.resolve_dtype("int4")
    cfg = CorpusConfig(paths=["corpus"], embedder_dtype="float32")
    assert cfg.embedder_dtype == "float32"
    with pytest.raises(ValueError):
        CorpusConfig(paths=["corpus"], embedder_dtype="fp8")


def test_bf16_vectors_are_unit_length_float32_and_close_to_float32(both) -> None:
    f32, bf16 = both
    assert next(bf16.model.parameters()).dtype.__str__() == "torch.bfloat16"
    assert next(f32.model.parameters()).dtype.__str__() == "torch.float32"
    a, b = f32.embed(TEXTS), bf16.embed(TEXTS)
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape == (15, 384)
    # normalized after the cast to float32: bf16's own normalization is off by ~1e-3
    assert np.abs(np.linalg.norm(b, axis=1) - 1).max() < 1e-5
    cos = np.sum(a * b, axis=1)
    assert cos.min() > 0.995, cos
    assert bf16.embed([]).shape == (0, 384)


def test_an_index_built_in_float32_is_searched_with_bf16(both, tmp_path) -> None:
    f32, bf16 = both
    root = tmp_path / "corpus"
    root.mkdir()
    for i, text in enumerate(TEXTS[:5]):
        (root / f"doc{i}.md").write_text(f"# Doc {i}\n\n{text}\n", encoding="utf-8")
    corpus = load_corpus(root)
    chunks = structured_chunks(corpus.documents, HFTokens(f32.model.tokenizer))
    store = LanceStore(tmp_path / "index", f32.name, f32.dim)
    try:
        store.add(chunks, f32.embed([c.text for c in chunks]))
        queries = {"doc1.md": "how many queens does a beehive have",
                   "doc3.md": "which notes do guitar strings have",
                   "doc4.md": "why does the moon cause tides"}
        for emb in both:
            retriever = Retriever(store, emb.embed)
            for doc, q in queries.items():
                assert retriever.search(q, k=1, mode="dense")[0].chunk.doc_id == doc
    finally:
        store.close()


def test_the_task_setting_reaches_the_embedder() -> None:
    cfg = CorpusConfig(paths=["corpus"], embedder_dtype="float32")
    assert embedding.build_embedder(cfg).dtype == "float32"
    cfg = CorpusConfig(paths=["corpus"], embedder_dtype="bfloat16")
    assert embedding.build_embedder(cfg).dtype == "bfloat16"


def test_batches_are_formed_by_tokens_and_vectors_keep_the_input_order() -> None:
    """Digits cost a token per character, a long word few: sorted by characters (what
    `encode` does) these mix in one batch and pad to the digits' length; by tokens they
    do not. Each vector still belongs to its own text, in the caller's order."""
    emb = embedding.Embedder(dtype="float32", batch_size=2)
    long_digits = "1 2 3 4 5 6 7 8 9 0 " * 4    # 80 characters, 42 tokens
    long_word = "internationalization " * 4     # 84 characters, 10 tokens
    mid_digits = "9 8 7 6 5 4 3 2 1 0 " * 2     # 40 characters, 22 tokens
    short = "3 1 4 1 5 9 2 6"                   # 15 characters, 10 tokens
    texts = [short, long_word, mid_digits, long_digits]
    ntok = [len(emb.model.tokenizer(t)["input_ids"]) for t in texts]

    def padded(batches: list[list[int]]) -> int:
        return sum(len(b) * max(ntok[i] for i in b) for b in batches)

    by_chars = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    char_batches = [by_chars[s:s + 2] for s in range(0, len(texts), 2)]
    ours = emb.batches(texts)
    assert sorted(i for b in ours for i in b) == list(range(len(texts)))
    assert padded(ours) < padded(char_batches), (ours, char_batches, ntok)
    alone = np.stack([emb.model.encode([t], normalize_embeddings=True) [0] for t in texts])
    assert np.abs(emb.embed(texts) - alone).max() < 1e-5
