"""Chunkers, checked with the real MiniLM tokenizer: limits, coverage, ids, structure."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from llm_ladder.errors import LadderError
from llm_ladder.rag.chunking import (
    MINILM_MAX_TOKENS,
    HFTokens,
    chunk_id,
    fixed_chunks,
    structured_chunks,
    tokens_from_callable,
)
from llm_ladder.rag.loaders import Document

os.environ["HF_HUB_OFFLINE"] = "1"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from llm_ladder.embedding import minilm_folder

    return AutoTokenizer.from_pretrained(str(minilm_folder()))


@pytest.fixture(scope="module")
def tokens(tokenizer) -> HFTokens:
    return HFTokens(tokenizer)


def real_count(tokenizer, text: str) -> int:
    """Tokens the embedder sees, counted independently of HFTokens."""
    return len(tokenizer(text, truncation=False)["input_ids"])


def real_docs() -> list[Document]:
    texts = {p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8")
             for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
    faq = ROOT / "examples" / "construction-faq" / "data" / "faq.jsonl"
    if faq.exists():
        texts["faq"] = faq.read_text(encoding="utf-8")[:30000]
    # Adversarial: no sentence ends, one 4000-character "word", CJK, symbols.
    texts["run-on"] = " ".join(f"clause{i} and then the inspector checked" for i in range(400))
    # (Not periodic: a window repeated verbatim in one document is kept once, by design.)
    texts["one-word"] = "".join(f"x{i}Yz" for i in range(1200))
    texts["cjk"] = "".join(f"建筑许可证{i}需要在开工前申请。" for i in range(80))
    texts["symbols"] = "# Weird\n\n" + " ".join(f"→∑ 🙂 ¶{i}" for i in range(500))
    return [Document(id=k, source=k, text=v) for k, v in texts.items()]


def covered(doc: Document, chunks) -> None:
    """Every non-space character of the document lies inside some chunk (nothing dropped).

    A window repeated verbatim in one document is stored once, by design (the chunk id is a
    hash of document and text), so a character also counts as covered when it lies in any
    occurrence of a stored chunk's text. Checked per character, not per uncovered run: a
    sentence repeated in two places may be split into windows whose copies are kept in
    different places (docs/benchmarks.md repeats its machine line per section)."""
    inside = bytearray(len(doc.text))
    for c in chunks:
        assert doc.text[c.meta["start"]:c.meta["end"]] == c.text  # verbatim slice
        inside[c.meta["start"]:c.meta["end"]] = b"\1" * (c.meta["end"] - c.meta["start"])
    for c in chunks:
        k = doc.text.find(c.text)
        while k != -1:
            inside[k:k + len(c.text)] = b"\1" * len(c.text)
            k = doc.text.find(c.text, k + 1)
    missing = [i for i, ch in enumerate(doc.text) if not ch.isspace() and not inside[i]]
    assert not missing, f"{doc.id}: dropped {doc.text[missing[0]:missing[0] + 40]!r}"


@pytest.mark.parametrize("chunker", [fixed_chunks, structured_chunks])
@pytest.mark.parametrize("max_tokens", [MINILM_MAX_TOKENS, 48])
def test_every_chunk_fits_and_nothing_is_lost(tokenizer, tokens, chunker, max_tokens) -> None:
    docs = real_docs()
    chunks = chunker(docs, tokens, max_tokens=max_tokens, overlap=8)
    assert len(chunks) > len(docs)
    for c in chunks:
        n = real_count(tokenizer, c.text)
        assert n <= max_tokens, (c.doc_id, n)
        assert c.meta["tokens"] == n
        assert c.id == chunk_id(c.doc_id, c.text)
    for doc in docs:
        mine = [c for c in chunks if c.doc_id == doc.id]
        assert [c.position for c in mine] == list(range(len(mine)))
        covered(doc, mine)
    # Case and spacing are the document's own, not a lower-cased decode.
    assert any(any(ch.isupper() for ch in c.text) for c in chunks)


def test_fixed_windows_overlap(tokens) -> None:
    doc = Document("d", "d", " ".join(f"word{i}" for i in range(600)))
    with_overlap = fixed_chunks([doc], tokens, max_tokens=64, overlap=16)
    assert len(with_overlap) > 3
    for a, b in zip(with_overlap, with_overlap[1:], strict=False):
        assert b.meta["start"] < a.meta["end"]  # shares text with the previous window
    without = fixed_chunks([doc], tokens, max_tokens=64, overlap=0)
    for a, b in zip(without, without[1:], strict=False):
        assert b.meta["start"] >= a.meta["end"]
    assert len(without) < len(with_overlap)


def test_structure_follows_headings_and_paragraphs(tokens) -> None:
    text = ("Intro line.\n\n# Roofs\n\n## Pitch\n\nA roof needs a pitch.\n\n"
            "```\n# not a heading inside code\n```\n\n# Walls\n\nWalls carry loads.\n")
    chunks = structured_chunks([Document("m", "m.md", text)], tokens)
    assert [c.text for c in chunks] == [
        "Intro line.",
        "# Roofs\n\n## Pitch\n\nA roof needs a pitch.\n\n"
        "```\n# not a heading inside code\n```",
        "# Walls\n\nWalls carry loads."]
    assert [c.meta.get("headings") for c in chunks] == [None, ["Roofs", "Pitch"], ["Walls"]]
    paragraphs = "\n\n".join(f"Paragraph {i} says something about topic {i}." for i in range(60))
    small = structured_chunks([Document("p", "p", paragraphs)], tokens, max_tokens=64)
    assert 1 < len(small) < 20  # ~14-token paragraphs are packed several to a chunk
    for a, b in zip(small, small[1:], strict=False):
        # packed at paragraph boundaries, never mid-paragraph, and greedily: the next
        # paragraph would not have fitted
        assert a.text.startswith("Paragraph ") and a.text.endswith(".")
        next_paragraph_end = b.meta["start"] + b.text.index("\n\n") if "\n\n" in b.text \
            else b.meta["end"]
        assert tokens.count(paragraphs[a.meta["start"]:next_paragraph_end]) > 64
    quoted = structured_chunks([Document("q", "q", 'He said "stop." Then left.')], tokens,
                               max_tokens=8)
    assert [c.text for c in quoted] == ['He said "stop."', "Then left."]


def test_ids_are_stable_and_repeats_kept_once(tokens) -> None:
    paragraphs = [f"Section {i}: the rules for item {i} are long enough to matter here." * 3
                  for i in range(12)]
    doc = Document("d", "d", "\n\n".join(paragraphs))
    first = structured_chunks([doc], tokens, max_tokens=64)
    assert [c.id for c in structured_chunks([doc], tokens, max_tokens=64)] == \
        [c.id for c in first]
    changed = paragraphs[-1].replace("item", "thing")  # same size: packing is unchanged
    edited = Document("d", "d", "\n\n".join(paragraphs[:-1] + [changed]))
    second = structured_chunks([edited], tokens, max_tokens=64)
    assert len(first) == len(second) == 12
    assert {c.id for c in first[:-1]} <= {c.id for c in second}
    assert first[-1].id not in {c.id for c in second}
    assert chunk_id("other", first[0].text) != first[0].id
    repeated = Document("r", "r", "Same boilerplate footer.\n\nBody.\n\nSame boilerplate footer.")
    chunks = structured_chunks([repeated], tokens, max_tokens=8)
    assert [c.text for c in chunks] == ["Same boilerplate footer.", "Body."]
    assert chunks[0].meta["repeats"] == 2


def test_bad_limits_and_plain_counters(tokens) -> None:
    doc = Document("d", "d", "one two three four five six seven eight nine ten")
    with pytest.raises(LadderError, match="overlap"):
        fixed_chunks([doc], tokens, max_tokens=16, overlap=14)
    with pytest.raises(LadderError, match="no room"):
        fixed_chunks([doc], tokens, max_tokens=2)
    words = tokens_from_callable(lambda t: len(t.split()))
    chunks = fixed_chunks([doc], words, max_tokens=4, overlap=1)
    assert [c.text for c in chunks] == ["one two three four", "four five six seven",
                                        "seven eight nine ten"]
    by_chars = tokens_from_callable(len)  # a "word" longer than the limit cannot be split
    with pytest.raises(LadderError, match="cannot split"):
        fixed_chunks([Document("w", "w", "abcdefghij")], by_chars, max_tokens=5, overlap=0)


def test_empty_and_invisible_documents_give_no_chunks(tokens) -> None:
    docs = [Document("e", "e", ""), Document("z", "z", "\u200b\u200b  \n")]
    assert fixed_chunks(docs, tokens) == []
    assert structured_chunks(docs, tokens) == []
    assert re.fullmatch(r"[0-9a-f]{16}", chunk_id("a", "b"))
