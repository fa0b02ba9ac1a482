"""Split documents into chunks that fit the embedder: fixed token windows, or structure-aware.

Tokens are counted with the embedder's own tokenizer, passed in as a `Tokens` (count and
character spans), so a chunk's limit is the one the embedder really has; the count includes
the special tokens the embedder adds ([CLS]/[SEP] for MiniLM). Every chunk is a verbatim slice
of its document (`meta['start']`/`meta['end']` are character offsets), so nothing is
lower-cased or re-spaced by decoding, and no chunk is ever truncated: a piece over the limit is
re-split by the fixed window, and each window is checked with a real count and shrunk until
it fits. A chunk's id is sha256(doc_id, text)[:16], so re-chunking an unchanged document gives
the same ids; a text repeated verbatim in one document is kept once (`meta['repeats']`).
Skipped here: semantic (embedding-based) splitting, setext headings, token-exact overlap
across structure-aware chunks.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from llm_ladder.errors import LadderError
from llm_ladder.rag.loaders import Document

MINILM_MAX_TOKENS = 256
DEFAULT_OVERLAP = 32


@dataclass
class Chunk:
    id: str
    doc_id: str
    source: str
    position: int  # order within its document, from 0
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


class Tokens(Protocol):
    def count(self, text: str) -> int:
        """Tokens the embedder sees for `text`, special tokens included."""

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character (start, end) of each token of `text`, special tokens excluded."""


class HFTokens:
    """`Tokens` from a Hugging Face fast tokenizer (e.g. `Embedder(...).model.tokenizer`)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.overhead = len(self._encode("", specials=True)["input_ids"])

    def _encode(self, text: str, specials: bool, offsets: bool = False) -> dict[str, Any]:
        return self.tokenizer(text, add_special_tokens=specials, truncation=False,
                              padding=False, return_offsets_mapping=offsets, verbose=False)

    def count(self, text: str) -> int:
        return len(self._encode(text, specials=True)["input_ids"])

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [tuple(s) for s in self._encode(text, specials=False, offsets=True)
                ["offset_mapping"]]


def chunk_id(doc_id: str, text: str) -> str:
    return hashlib.sha256(f"{doc_id}\0{text}".encode()).hexdigest()[:16]


def fixed_chunks(docs: Iterable[Document], tokens: Tokens, max_tokens: int = MINILM_MAX_TOKENS,
                 overlap: int | None = None) -> list[Chunk]:
    """Windows of at most `max_tokens` tokens; consecutive windows share `overlap` tokens
    (default: 32, or a quarter of the window when that is smaller)."""
    overlap = _check_limits(tokens, max_tokens, overlap)
    out: list[Chunk] = []
    for doc in docs:
        spans = _windows(doc.text, 0, len(doc.text), tokens, max_tokens, overlap)
        out.extend(_make_chunks(doc, [(s, e, {}) for s, e in spans], tokens, max_tokens))
    return out


def structured_chunks(docs: Iterable[Document], tokens: Tokens,
                      max_tokens: int = MINILM_MAX_TOKENS,
                      overlap: int | None = None) -> list[Chunk]:
    """Split on markdown headings, then paragraphs, then sentences, packing neighbours up to
    `max_tokens`; a sentence still too long is split into fixed windows (`overlap` tokens)."""
    overlap = _check_limits(tokens, max_tokens, overlap)
    out: list[Chunk] = []
    for doc in docs:
        pieces: list[tuple[int, int, dict[str, Any]]] = []
        for start, end, headings in _sections(doc.text):
            for s, e in _pack(doc.text, start, end, tokens, max_tokens, overlap, level=0):
                pieces.append((s, e, {"headings": headings} if headings else {}))
        out.extend(_make_chunks(doc, pieces, tokens, max_tokens))
    return out


def _check_limits(tokens: Tokens, max_tokens: int, overlap: int | None) -> int:
    """The overlap to use, after checking both limits."""
    room = max_tokens - tokens.count("")
    if room < 1:
        raise LadderError(f"max_tokens={max_tokens} leaves no room after special tokens")
    if overlap is None:
        return min(DEFAULT_OVERLAP, room // 4)
    if not 0 <= overlap < room:
        raise LadderError(f"overlap={overlap} must be at least 0 and below {room} "
                          f"(max_tokens minus special tokens)")
    return overlap


def _make_chunks(doc: Document, pieces: list[tuple[int, int, dict[str, Any]]],
                 tokens: Tokens, max_tokens: int) -> list[Chunk]:
    chunks: list[Chunk] = []
    seen: dict[str, Chunk] = {}
    for start, end, extra in pieces:
        while start < end and doc.text[start].isspace():
            start += 1
        while end > start and doc.text[end - 1].isspace():
            end -= 1
        text = doc.text[start:end]
        if not text or not tokens.spans(text):
            continue
        cid = chunk_id(doc.id, text)
        if cid in seen:
            seen[cid].meta["repeats"] = seen[cid].meta.get("repeats", 1) + 1
            continue
        n = tokens.count(text)
        if n > max_tokens:  # only reachable when one token span alone is over the limit
            raise LadderError(f"{doc.id}: cannot split {text[:40]!r}... below {max_tokens} "
                              f"tokens ({n})")
        meta = {"start": start, "end": end, "tokens": n, **extra}
        chunk = Chunk(cid, doc.id, doc.source, len(chunks), text, meta)
        seen[cid] = chunk
        chunks.append(chunk)
    return chunks


def _windows(text: str, start: int, end: int, tokens: Tokens, max_tokens: int,
             overlap: int) -> list[tuple[int, int]]:
    """Character spans of token windows over text[start:end], each checked to fit."""
    spans = [(s + start, e + start) for s, e in tokens.spans(text[start:end])]
    size = max_tokens - tokens.count("")
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(spans):
        j = min(i + size, len(spans))
        # Re-tokenizing a slice can differ from the slice of the tokens (a cut inside a word),
        # so count the slice itself and shrink until it fits.
        while j > i + 1 and tokens.count(text[spans[i][0]:spans[j - 1][1]]) > max_tokens:
            j -= 1
        out.append((spans[i][0], spans[j - 1][1]))
        if j >= len(spans):
            break
        i = max(j - overlap, i + 1)
    return out


_HEADING = re.compile(r"^(#{1,6})[ \t]+(.*?)[ \t#]*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_SENTENCE_END = re.compile(r"[.!?。！？][\"')\]]*(\s+)")  # group 1: the gap


def _sections(text: str) -> list[tuple[int, int, list[str]]]:
    """(start, end, heading path) of each markdown section; headings in code fences ignored."""
    out: list[tuple[int, int, list[str]]] = []
    path: list[tuple[int, str]] = []
    start, pos, fenced = 0, 0, False
    current: list[str] = []
    for line in text.splitlines(keepends=True):
        if _FENCE.match(line):
            fenced = not fenced
        m = None if fenced else _HEADING.match(line.rstrip("\n"))
        if m:
            heading_only = _HEADING.match(text[start:pos].strip()) is not None
            if pos > start and not heading_only:
                out.append((start, pos, current))
            level = len(m.group(1))
            path = [(lv, h) for lv, h in path if lv < level] + [(level, m.group(2).strip())]
            current = [h for _, h in path]
            if not heading_only:
                start = pos
        pos += len(line)
    if pos > start:
        out.append((start, pos, current))
    return out


def _split(text: str, start: int, end: int, pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    """Spans between the separators `pattern` matches (its group 1 if it has one)."""
    pieces, s = [], start
    for m in pattern.finditer(text, start, end):
        gap = 1 if pattern.groups else 0
        if m.start(gap) > s:
            pieces.append((s, m.start(gap)))
        s = m.end(gap)
    if end > s:
        pieces.append((s, end))
    return [(a, b) for a, b in pieces if text[a:b].strip()]


def _pack(text: str, start: int, end: int, tokens: Tokens, max_tokens: int, overlap: int,
          level: int) -> list[tuple[int, int]]:
    """Spans covering text[start:end], each within `max_tokens`: split by paragraphs (level 0)
    or sentences (level 1), packing neighbours; windows as the last resort."""
    if tokens.count(text[start:end]) <= max_tokens:
        return [(start, end)]
    if level >= 2:
        return _windows(text, start, end, tokens, max_tokens, overlap)
    pattern = _PARAGRAPH_BREAK if level == 0 else _SENTENCE_END
    parts = _split(text, start, end, pattern)
    if len(parts) <= 1:
        return _pack(text, start, end, tokens, max_tokens, overlap, level + 1)
    fitted: list[tuple[int, int]] = []
    for s, e in parts:
        fitted.extend(_pack(text, s, e, tokens, max_tokens, overlap, level + 1))
    packed: list[tuple[int, int]] = []
    for s, e in fitted:
        if packed and tokens.count(text[packed[-1][0]:e]) <= max_tokens:
            packed[-1] = (packed[-1][0], e)
        else:
            packed.append((s, e))
    return packed


def tokens_from_callable(count_tokens: Callable[[str], int]) -> Tokens:
    """A `Tokens` for a plain `count_tokens(text) -> int`: tokens are approximated by words
    (whitespace-separated runs) for splitting, but every chunk is still checked with
    `count_tokens`, so the limit holds as long as one word fits."""
    return _CallableTokens(count_tokens)


class _CallableTokens:
    def __init__(self, count_tokens: Callable[[str], int]):
        self._count = count_tokens

    def count(self, text: str) -> int:
        return self._count(text)

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in re.finditer(r"\S+", text)]
