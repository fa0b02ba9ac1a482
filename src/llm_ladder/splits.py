"""Deterministic train/dev/test splits and train-test leakage detection.

An example's split depends only on the seed and its id (a hash), so adding rows never moves
existing ones. `split.max_test` caps the test split; the rows beyond the cap are not dropped
but kept as the confirmation slice (`Splits.confirm`), never looked at by the climb, for one
confirmation run of the recommended rung (docs/decision.md). Leakage checks compare
train+dev against test and the confirmation slice: exact duplicates (normalized text),
MinHash near-duplicates (Jaccard >= 0.8 on character 5-gram shingles, confirmed by the exact
Jaccard) and shared 13-word spans (as lm-eval-harness decontamination does). Only the
train side shrinks.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field

from llm_ladder.data import Example

_WS = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")


def normalize_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return _WS.sub(" ", _PUNCT.sub(" ", text)).strip()


def _unit(seed: int, ex_id: str) -> float:
    h = hashlib.sha256(f"{seed}:{ex_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


@dataclass
class Splits:
    train: list[Example]
    dev: list[Example]
    test: list[Example]
    capped_test: int = 0  # test examples held back by max_test (= len(confirm) when split here)
    leakage: LeakageReport | None = None
    confirm: list[Example] = field(default_factory=list)  # the held-back rows, never looked at

    def ids(self) -> dict[str, list[str]]:
        return {k: [e.id for e in getattr(self, k)] for k in ("train", "dev", "test")}


def split_examples(examples: list[Example], train: float, dev: float, test: float, seed: int,
                   test_examples: list[Example] | None = None,
                   max_test: int | None = None) -> Splits:
    """Split by hashing (seed, id). With explicit `test_examples`, the rest is train/dev."""
    tr, dv, te = [], [], []
    if test_examples is not None:
        te = list(test_examples)
        total = train + dev or 1.0
        train, dev = train / total, dev / total
    for ex in examples:
        u = _unit(seed, ex.id)
        if test_examples is None and u >= train + dev:
            te.append(ex)
        elif u < train:
            tr.append(ex)
        else:
            dv.append(ex)
    confirm: list[Example] = []
    if max_test is not None and len(te) > max_test:
        te.sort(key=lambda e: _unit(seed + 1, e.id))
        te, confirm = te[:max_test], te[max_test:]  # held back, never moved to train
    key = lambda e: e.id  # noqa: E731
    return Splits(sorted(tr, key=key), sorted(dv, key=key), sorted(te, key=key), len(confirm),
                  confirm=sorted(confirm, key=key))


# ---- leakage -------------------------------------------------------------------------------

@dataclass
class Leak:
    train_id: str
    test_id: str
    kind: str  # "exact", "near", "13-gram"
    detail: str = ""


@dataclass
class LeakageReport:
    leaks: list[Leak] = field(default_factory=list)
    removed_train: int = 0
    removed_dev: int = 0

    def counts(self) -> dict[str, int]:
        c: dict[str, int] = {}
        for leak in self.leaks:
            c[leak.kind] = c.get(leak.kind, 0) + 1
        return c


def _shingles(text: str, k: int = 5) -> set[str]:
    t = normalize_text(text)
    return {t[i : i + k] for i in range(max(1, len(t) - k + 1))}


def _ngrams(text: str, n: int = 13) -> set[tuple[str, ...]]:
    words = normalize_text(text).split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def find_leaks(train: list[Example], test: list[Example], threshold: float = 0.8,
               ngram: int = 13, num_perm: int = 128) -> list[Leak]:
    """Pairs (train, test) that are exact, near (Jaccard >= threshold) or share a 13-gram."""
    from datasketch import MinHash, MinHashLSH

    leaks: list[Leak] = []
    exact: dict[str, str] = {normalize_text(e.input_text()): e.id for e in test}
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    test_sh: dict[str, set[str]] = {}
    grams: dict[tuple[str, ...], str] = {}
    for e in test:
        sh = _shingles(e.input_text())
        test_sh[e.id] = sh
        m = MinHash(num_perm=num_perm, seed=1)
        m.update_batch([s.encode() for s in sh])
        lsh.insert(e.id, m)
        for g in _ngrams(e.input_text(), ngram):
            grams.setdefault(g, e.id)
    for e in train:
        text = e.input_text()
        hit = exact.get(normalize_text(text))
        if hit is not None:
            leaks.append(Leak(e.id, hit, "exact"))
            continue
        sh = _shingles(text)
        m = MinHash(num_perm=num_perm, seed=1)
        m.update_batch([s.encode() for s in sh])
        best = None
        for cand in lsh.query(m):
            other = test_sh[cand]
            j = len(sh & other) / max(1, len(sh | other))
            if j >= threshold and (best is None or j > best[1]):
                best = (cand, j)
        if best:
            leaks.append(Leak(e.id, best[0], "near", f"Jaccard {best[1]:.2f}"))
            continue
        for g in _ngrams(text, ngram):
            if g in grams:
                leaks.append(Leak(e.id, grams[g], "13-gram", " ".join(g)))
                break
    return leaks


def decontaminate(splits: Splits) -> Splits:
    """Drop train and dev examples that leak into test; record what was found."""
    leaks = find_leaks(splits.train + splits.dev, splits.test + splits.confirm)
    bad = {leak.train_id for leak in leaks}
    train = [e for e in splits.train if e.id not in bad]
    dev = [e for e in splits.dev if e.id not in bad]
    report = LeakageReport(leaks, len(splits.train) - len(train), len(splits.dev) - len(dev))
    return Splits(train, dev, splits.test, splits.capped_test, report, splits.confirm)
