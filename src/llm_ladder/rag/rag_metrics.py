"""Retrieval and grounding metrics for one query: recall@k, MRR, nDCG@k (binary relevance),
citation validity and lexical answer support. Each returns `metrics.Score`; `value is None`
with a reason where it cannot score (no gold ids, no citations), never NaN.

Ids are whatever the caller ranks (chunk ids, or doc ids for document-level scoring);
repeated ids in a ranking count once, at their first rank, so several chunks of one document
cannot inflate a doc-level score. Citations are `[n]` or `[n, m]` markers numbering the
retrieved passages from 1. Answer support is lexical: a sentence is supported when at least
half of its content words (lower-cased; stopwords and single letters dropped; plural -s
stripped) occur in the passages it cites, or, when it cites none, in all passages the answer
cites.
Skipped here: graded relevance, judge models, entailment, ranges such as [1-3].
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence

from llm_ladder.metrics import Score
from llm_ladder.rag.retrieve import light_stem

SUPPORT_THRESHOLD = 0.5
_CITATION = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"\w+")
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from
further had has have having he her here hers herself him himself his how i if in into is it
its itself just me more most my myself no nor not now of off on once only or other our ours
ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself yourselves
""".split())


def _ranking(retrieved: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(retrieved))


def _gold(gold: Iterable[str]) -> set[str]:
    return {g for g in gold if g}


def recall_at_k(retrieved: Sequence[str], gold: Iterable[str], k: int = 10) -> Score:
    """Share of the gold ids found in the first k retrieved."""
    wanted = _gold(gold)
    if not wanted:
        return Score(None, "no gold ids")
    if k < 1:
        return Score(None, f"k must be at least 1, not {k}")
    found = wanted & set(_ranking(retrieved)[:k])
    return Score(len(found) / len(wanted), details={"found": sorted(found), "k": k})


def mrr(retrieved: Sequence[str], gold: Iterable[str]) -> Score:
    """1 / rank of the first gold id (0 when none is retrieved)."""
    wanted = _gold(gold)
    if not wanted:
        return Score(None, "no gold ids")
    for rank, rid in enumerate(_ranking(retrieved), start=1):
        if rid in wanted:
            return Score(1.0 / rank, details={"first_rank": rank})
    return Score(0.0, details={"first_rank": None})


def ndcg_at_k(retrieved: Sequence[str], gold: Iterable[str], k: int = 10) -> Score:
    """Binary-relevance nDCG: sum of 1/log2(rank+1) over gold hits in the top k, divided by
    the same sum for an ideal ranking of min(|gold|, k) gold ids."""
    wanted = _gold(gold)
    if not wanted:
        return Score(None, "no gold ids")
    if k < 1:
        return Score(None, f"k must be at least 1, not {k}")
    dcg = sum(1.0 / math.log2(rank + 1)
              for rank, rid in enumerate(_ranking(retrieved)[:k], start=1) if rid in wanted)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(wanted), k) + 1))
    return Score(dcg / ideal, details={"k": k})


def citations(text: str) -> list[int]:
    """The passage numbers cited in `text`, in order of first appearance."""
    found: list[int] = []
    for m in _CITATION.finditer(text):
        found.extend(int(n) for n in re.split(r"\s*[,;]\s*", m.group(1)))
    return list(dict.fromkeys(found))


def citation_validity(answer: str, retrieved: int | Collection[int]) -> Score:
    """Share of the distinct cited numbers that name a retrieved passage; `retrieved` is how
    many passages were shown (numbered 1..n) or the valid numbers. details: cited, invalid."""
    valid = set(range(1, retrieved + 1)) if isinstance(retrieved, int) else set(retrieved)
    cited = citations(answer)
    if not cited:
        return Score(None, "the answer cites nothing")
    invalid = [n for n in cited if n not in valid]
    return Score((len(cited) - len(invalid)) / len(cited),
                 details={"cited": cited, "invalid": invalid})


def content_words(text: str) -> set[str]:
    words = [w for w in _WORD.findall(_CITATION.sub(" ", text).lower())
             if w not in STOPWORDS and not (len(w) == 1 and w.isalpha())]  # it's -> it, s
    return set(light_stem(words))


def answer_support(answer: str, passages: Mapping[int, str] | Sequence[str]) -> Score:
    """Share of answer sentences (with content words) whose content words are at least half
    present in the passages they cite; `passages` are numbered from 1 (a sequence) or keyed
    by their number. details: per-sentence coverage and the unsupported sentences."""
    numbered = dict(passages) if isinstance(passages, Mapping) else \
        {i: p for i, p in enumerate(passages, start=1)}
    words = {n: content_words(p) for n, p in numbered.items()}
    answer_cites = [n for n in citations(answer) if n in words]
    if not answer_cites:
        return Score(None, "the answer cites none of the retrieved passages")
    sentences = [s for s in _SENTENCE_END.split(answer.strip()) if s.strip()]
    coverage: list[dict[str, object]] = []
    supported = 0
    for sentence in sentences:
        own = content_words(sentence)
        if not own:
            continue
        cited = [n for n in citations(sentence) if n in words] or answer_cites
        source = set().union(*(words[n] for n in cited))
        share = len(own & source) / len(own)
        ok = share >= SUPPORT_THRESHOLD
        supported += ok
        coverage.append({"sentence": sentence, "cites": cited, "share": share,
                         "supported": ok})
    if not coverage:
        return Score(None, "the answer has no content words")
    return Score(supported / len(coverage),
                 details={"sentences": coverage,
                          "unsupported": [c["sentence"] for c in coverage if not c["supported"]]})


def mean(scores: Iterable[Score]) -> Score:
    """Average of the scored values; None when nothing was scored."""
    scores = list(scores)
    values = [s.value for s in scores if s.value is not None]
    if not values:
        return Score(None, f"none of {len(scores)} queries could be scored")
    return Score(sum(values) / len(values),
                 details={"scored": len(values), "unscored": len(scores) - len(values)})
