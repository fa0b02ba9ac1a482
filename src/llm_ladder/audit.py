"""The data audit of `ladder check`: what makes a dataset noisy, listed for review.

Found, with the ids involved: conflicting duplicates (the same input after normalization,
a MinHash near-duplicate with Jaccard >= 0.8 on character 5-gram shingles, or — with an
embedder — cosine >= 0.95, with different outputs); rare labels (1–2 examples); labels present
in only one of train/test; output-length outliers (beyond 3 IQRs of the log length) and format
outliers (not JSON where nearly all outputs are JSON objects, a label that differs from
another only in case or spacing); and likely mislabelled examples.

Mislabels are found by confident learning (Northcutt et al., as cleanlab does) on
out-of-fold probabilities: a multinomial logistic regression on the inputs' embeddings
(all-MiniLM-L6-v2 by default), 5-fold cross-validated so no example is scored by a model that
saw it. An example is a suspect when another label's out-of-fold probability reaches that
label's per-class threshold (the mean probability of the examples carrying it) and beats its
own; it is reported with the suggested label and that probability, and the list is ranked
by the out-of-fold probability of the given label, lowest first (self-confidence, as
cleanlab ranks by default), so a reviewer who reads the top k reads the likeliest errors
first. Why logistic regression
and not k-NN: with ~10 examples a class, k votes are coarse (confidence in steps of 1/k) and
a near-duplicate with the wrong label outvotes the rest; a linear model on normalized
embeddings gives graded, better calibrated probabilities in about a second. scikit-learn
comes with sentence-transformers (the `local` extra). Nothing is changed automatically.
Skipped: mislabel detection for free-text and JSON outputs (no classes to confuse).

`ladder check` stores its audit in the task's state folder (`save_audit`, with a
fingerprint of the data files); the HTML report and the web view show the stored one
(`stored_audit`), marked stale when the data changed since.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llm_ladder.data import Example, load_all
from llm_ladder.errors import require
from llm_ladder.session import Prepared
from llm_ladder.splits import normalize_text
from llm_ladder.task import Task

Embed = Callable[[list[str]], np.ndarray]
NEAR_JACCARD = 0.8
NEAR_COSINE = 0.95
RARE = 2
FOLDS = 5


@dataclass
class Suspect:
    """A likely mislabelled example: its label, the suggested one and its probability."""

    id: str
    given: str
    suggested: str
    confidence: float  # out-of-fold probability of the suggested label
    given_probability: float
    input: str
    source: str


@dataclass
class Audit:
    """What the audit found; `as_dict()` is the `audit` part of `ladder check --json`."""

    examples: int
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    rare_labels: dict[str, int] = field(default_factory=dict)
    one_split_labels: dict[str, str] = field(default_factory=dict)
    length_outliers: list[dict[str, Any]] = field(default_factory=list)
    format_outliers: list[dict[str, Any]] = field(default_factory=list)
    suspects: list[Suspect] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["suspects"] = [asdict(s) for s in self.suspects]
        return d


def _key(output: str, labels: list[str] | None) -> str:
    return output.strip() if labels else normalize_text(output)


def conflicts(examples: list[Example], labels: list[str] | None,
              vectors: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Pairs (or groups) of the same or near-same input with different outputs."""
    from datasketch import MinHash, MinHashLSH

    found: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()

    def add(kind: str, group: list[Example], detail: str = "") -> None:
        ids = [e.id for e in group]
        pair = (min(ids), max(ids))
        if len(ids) == 2 and pair in seen:
            return
        if len(ids) == 2:
            seen.add(pair)
        found.append({"kind": kind, "ids": ids, "outputs": [e.output for e in group],
                      "detail": detail})

    by_text: dict[str, list[Example]] = {}
    for e in examples:
        by_text.setdefault(normalize_text(e.input_text()), []).append(e)
    for group in by_text.values():
        if len({_key(e.output, labels) for e in group}) > 1:
            add("exact", group)
            for a in group:
                for b in group:
                    if a.id < b.id:
                        seen.add((a.id, b.id))
    lsh = MinHashLSH(threshold=NEAR_JACCARD, num_perm=128)
    shingles: dict[str, set[str]] = {}
    index = {e.id: e for e in examples}
    for e in examples:
        t = normalize_text(e.input_text())
        sh = {t[i:i + 5] for i in range(max(1, len(t) - 4))}
        shingles[e.id] = sh
        m = MinHash(num_perm=128, seed=1)
        m.update_batch([s.encode() for s in sh])
        for cand in lsh.query(m):
            other = shingles[cand]
            j = len(sh & other) / max(1, len(sh | other))
            if j >= NEAR_JACCARD and _key(e.output, labels) != _key(index[cand].output, labels):
                add("near", [index[cand], e], f"Jaccard {j:.2f}")
        lsh.insert(e.id, m)
    if vectors is not None and len(examples) > 1:
        sims = vectors @ vectors.T
        for i, j in zip(*np.nonzero(np.triu(sims, 1) >= NEAR_COSINE), strict=True):
            a, b = examples[int(i)], examples[int(j)]
            if _key(a.output, labels) != _key(b.output, labels):
                add("semantic", [a, b], f"cosine {float(sims[i, j]):.2f}")
    return found


def _out_of_fold(vectors: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> np.ndarray:
    """Out-of-fold class probabilities of a logistic regression, FOLDS-fold."""
    linear = require("sklearn.linear_model", "local")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    probs = np.zeros((len(y), n_classes))
    for k in range(FOLDS):
        held = order[k::FOLDS]
        fit = np.setdiff1d(order, held)
        if len(np.unique(y[fit])) < 2:
            continue
        clf = linear.LogisticRegression(C=10.0, max_iter=2000)
        clf.fit(vectors[fit], y[fit])
        probs[np.ix_(held, clf.classes_)] = clf.predict_proba(vectors[held])
    return probs


def mislabelled(examples: list[Example], vectors: np.ndarray, seed: int = 0
                ) -> list[Suspect]:
    """Confident-learning suspects among label examples, the least likely given label first
    (cleanlab's default "self_confidence" ranking; it puts about twice as many real flips
    in the top k as ranking by the margin to the suggested label: docs/data.md)."""
    names = sorted({e.output.strip() for e in examples})
    col = {n: i for i, n in enumerate(names)}
    y = np.array([col[e.output.strip()] for e in examples])
    probs = _out_of_fold(vectors, y, len(names), seed)
    thresholds = np.array([probs[y == c, c].mean() if np.any(y == c) else 1.0
                           for c in range(len(names))])
    out = []
    for i, e in enumerate(examples):
        above = np.nonzero(probs[i] >= thresholds)[0]
        if not len(above):
            continue
        best = int(above[np.argmax(probs[i, above])])
        if best != y[i] and probs[i, best] > probs[i, y[i]]:
            out.append(Suspect(e.id, names[y[i]], names[best], round(float(probs[i, best]), 3),
                               round(float(probs[i, y[i]]), 3), e.input_text()[:200],
                               e.source))
    return sorted(out, key=lambda s: (s.given_probability, -s.confidence))


def _outliers(examples: list[Example], labels: list[str] | None
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    length, fmt = [], []
    if labels:
        by_norm: dict[str, set[str]] = {}
        for lab in labels:
            by_norm.setdefault(normalize_text(lab), set()).add(lab)
        for variants in by_norm.values():
            if len(variants) > 1:
                fmt.append({"ids": [e.id for e in examples if e.output.strip() in variants],
                            "why": "labels differing only in case, spacing or punctuation: "
                                   + ", ".join(sorted(variants))})
        return length, fmt
    logs = np.log1p([len(e.output) for e in examples])
    if len(examples) >= 8:
        q1, q3 = np.percentile(logs, [25, 75])
        spread = max(q3 - q1, 0.1)
        med = float(np.expm1(np.median(logs)))
        for e, v in zip(examples, logs, strict=True):
            if v > q3 + 3 * spread or v < q1 - 3 * spread:
                length.append({"id": e.id, "chars": len(e.output), "median_chars": round(med),
                               "source": e.source})
    is_obj = []
    for e in examples:
        try:
            is_obj.append(isinstance(json.loads(e.output), dict))
        except json.JSONDecodeError:
            is_obj.append(False)
    if sum(is_obj) >= 0.9 * len(examples) and not all(is_obj):
        for e, ok in zip(examples, is_obj, strict=True):
            if not ok:
                fmt.append({"ids": [e.id], "why": "not a JSON object, unlike "
                            f"{sum(is_obj)} of {len(examples)} outputs", "source": e.source})
    return length, fmt


def all_examples(prep: Prepared) -> list[Example]:
    """Every good row of the task (the split and decontamination remove nothing here)."""
    task = prep.task
    paths = [task.path(p) for p in task.data.examples]
    if task.data.test:
        paths.append(task.path(task.data.test))
    return load_all(paths, task.data.id_field).examples


def audit(prep: Prepared, embed: Embed | None = None, seed: int = 0) -> Audit:
    """Audit the task's examples. Without `embed` the embedding checks (semantic duplicates,
    mislabels) are skipped and said so in `notes`."""
    examples = all_examples(prep)
    labels = prep.labels
    rep = Audit(len(examples))
    vectors = embed([e.input_text() for e in examples]) if embed and examples else None
    rep.conflicts = conflicts(examples, labels, vectors)
    if labels:
        counts = Counter(e.output.strip() for e in examples)
        rep.rare_labels = {k: v for k, v in sorted(counts.items()) if v <= RARE}
        train = {e.output.strip() for e in prep.splits.train}
        test = {e.output.strip() for e in prep.splits.test}
        rep.one_split_labels = (
            {k: "test only (never seen in train)" for k in sorted(test - train)}
            | {k: "train only (never tested)" for k in sorted(train - test)})
    rep.length_outliers, rep.format_outliers = _outliers(examples, labels)
    if not labels:
        rep.notes.append("mislabel check skipped: the outputs are not a closed label set")
    elif vectors is None:
        rep.notes.append("mislabel and semantic-duplicate checks skipped (no embedder)")
    elif len(examples) < 10:
        rep.notes.append("mislabel check skipped: fewer than 10 examples")
    else:
        rep.suspects = mislabelled(examples, vectors, seed)
    return rep


def write_suspects(rep: Audit, path: Any) -> int:
    """Write the suspects as JSONL (one object a line, for review); returns how many."""
    with open(path, "w", encoding="utf-8") as f:
        for s in rep.suspects:
            f.write(json.dumps(asdict(s), ensure_ascii=False) + "\n")
    return len(rep.suspects)



AUDIT_FILE = "audit.json"


def data_fingerprint(task: Task) -> str:
    """A hash of the task's example files' bytes (an audit is of one version of the data)."""
    h = hashlib.sha256()
    paths = [task.path(p) for p in task.data.examples]
    if task.data.test:
        paths.append(task.path(task.data.test))
    for path in paths:
        h.update(str(path.name).encode())
        try:
            h.update(path.read_bytes())
        except OSError:
            h.update(b"<unreadable>")
    return h.hexdigest()[:16]


def save_audit(task: Task, rep: Audit) -> Path:
    """Store the audit beside the run store (atomically), for the report and web view."""
    task.state_dir.mkdir(parents=True, exist_ok=True)
    path = task.state_dir / AUDIT_FILE
    doc = {"data": data_fingerprint(task), "created": time.strftime("%Y-%m-%d %H:%M"),
           "audit": rep.as_dict()}
    tmp = path.with_name(f".{AUDIT_FILE}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
    return path


def stored_audit(task: Task) -> dict[str, Any] | None:
    """The audit `ladder check` stored, with `stale` set when the data changed since; None
    when there is none (or it cannot be read: the report then says to run `ladder check`)."""
    try:
        doc = json.loads((task.state_dir / AUDIT_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("audit"), dict):
        return None
    doc["stale"] = doc.get("data") != data_fingerprint(task)
    return doc
