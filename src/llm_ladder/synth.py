"""Synthetic test questions from the corpus: `ladder synth TASK --from-corpus N`.

A configured model (the task's, or any `[models]` key) reads N chunks of the task's index —
the very chunks the retriever returns, sampled with a seed and spread across documents (one
chunk per document before a second from any) — and writes one question and its answer for
each. The chunk is the question's gold source. Then three filters, each counted:

- unparseable: the output has no `Question:` / `Answer:` pair, or repeats the demonstration;
- empty / too long: an empty question or answer, or one over the character limits;
- answerable closed-book: the same model answers the question without the chunk and its
  answer matches the generated one (the task's metric for label/JSON tasks; token F1 at or
  above a threshold for free text, and for judged tasks, whose judge is not asked here);
- near-duplicate: cosine >= 0.9 with the task's embedder (the index's) against every existing
  example's input, test split included, and against the synthetic rows already kept. A test
  example is only ever compared against, to drop: its text is never copied; a dropped row
  names the example's id only.

Files, all under `TASK/.ladder/`, appended one JSON line at a time so a killed run loses at
most the batch in flight, and a rerun skips every chunk already done:

- `synthetic.jsonl`: the kept rows (id, input, reference, sources = gold chunk ids, doc_ids,
  synthetic = true, status "pending", model, prompt_hash, and the exact prompts and raw outputs
  of the generating and the closed-book call);
- `synthetic-skipped.jsonl`: one line per chunk that yielded no row, with the outcome and reason
  (and the calls), so skipped chunks are not asked again;
- `synthetic-reviews.jsonl`: review decisions (promote / reject, who, when, edits). A row's
  status is its latest decision; the rows file is never rewritten.

How promoted rows are used: they form a separate synthetic retrieval test set. They never
enter the task's data files, so the hash splits of the human examples (`splits.py`) cannot
move and the human test split stays exactly as it was; `retrieval_check` (`ladder synth TASK
--recall`) scores the task's retriever on them (recall@k and MRR of the gold chunk and of
its document) and reports them apart from the human test split. Skipped: multi-chunk
questions, paraphrase diversity controls, a judge as the closed-book matcher, and scoring
answers (not retrieval) on synthetic rows inside `ladder run`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from llm_ladder.data import Example, load_all
from llm_ladder.embedding import build_embedder
from llm_ladder.errors import LadderError
from llm_ladder.metrics import TokenF1, build_metric, metric_needs, output_kind
from llm_ladder.models import build_model
from llm_ladder.models.base import ChatModel, GenParams
from llm_ladder.rag import rag_metrics
from llm_ladder.rag.chunking import Chunk
from llm_ladder.rag.index import open_store
from llm_ladder.rag.retrieve import Retriever
from llm_ladder.splits import normalize_text
from llm_ladder.stats import mean_quality
from llm_ladder.task import Task, load_task

ROWS_FILE = "synthetic.jsonl"
SKIPPED_FILE = "synthetic-skipped.jsonl"
REVIEWS_FILE = "synthetic-reviews.jsonl"
STATUSES = ("pending", "promoted", "rejected")
DECISIONS = {"promote": "promoted", "reject": "rejected"}
OUTCOMES = ("unparseable", "empty", "too_long", "closed_book", "duplicate", "error")

SYSTEM = ("You write exam questions from a passage. Write ONE question that the passage "
          "answers, then its short answer taken from the passage. Reply in exactly this "
          "form:\nQuestion: <the question>\nAnswer: <the answer>")
DEMO_PASSAGE = ("Passage:\nThe library opens at 9 am on weekdays and at 11 am on Saturdays. "
                "It is closed on Sundays.")
DEMO_QUESTION = "When does the library open on Saturdays?"
DEMO_REPLY = f"Question: {DEMO_QUESTION}\nAnswer: At 11 am."
_QA = re.compile(r"^\s*\**\s*question\s*\**\s*[:\-]\s*(?P<q>.+?)\s*\n+\s*\**\s*answer\s*\**"
                 r"\s*[:\-]\s*(?P<a>.+?)\s*(?:\n\s*\**\s*question\s*\**\s*[:\-].*)?$",
                 re.I | re.S)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _task(task: Task | str | Path) -> Task:
    return task if isinstance(task, Task) else load_task(Path(task))


# ---- the files -----------------------------------------------------------------------------

def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Complete JSON lines of `path`; a torn last line (a killed write) is ignored."""
    if not path.is_file():
        return []
    out = []
    lines = path.read_text(encoding="utf-8").split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # the torn tail of a killed append
                continue
            raise LadderError(f"{path}:{i + 1}: not a JSON line; the synthetic files are "
                              "written by `ladder synth` only") from None
    return out


def _append(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk. A torn last line (a write cut short by a
    kill, never readable) is cut off first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(row, ensure_ascii=False) + "\n"
    with open(path, "r+b" if path.exists() else "w+b") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
        f.seek(0, os.SEEK_END)
        f.write(line.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def _only_writer(task: Task) -> Iterator[None]:
    """Hold `.ladder/synthetic.lock` (an exclusive, non-blocking flock) for one generating run,
    so two `ladder synth` runs on one task cannot both ask about the same chunk."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    task.state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(task.state_dir / "synthetic.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LadderError(f"{task.name}: another `ladder synth` is writing synthetic rows; "
                              "wait for it to finish") from None
        yield
    finally:
        os.close(fd)


def rows_path(task: Task) -> Path:
    return task.state_dir / ROWS_FILE


def load_rows(task: Task | str | Path) -> list[dict[str, Any]]:
    """Every kept synthetic row with its current status (the latest review decision) and the
    latest edits applied; `reviews` lists the decisions in order."""
    task = _task(task)
    reviews: dict[str, list[dict[str, Any]]] = {}
    for r in _read_jsonl(task.state_dir / REVIEWS_FILE):
        reviews.setdefault(r["id"], []).append(r)
    rows = []
    for row in _read_jsonl(rows_path(task)):
        row = dict(row)
        row["reviews"] = reviews.get(row["id"], [])
        for r in row["reviews"]:
            if r.get("decision") not in DECISIONS:
                raise LadderError(f"{task.state_dir / REVIEWS_FILE}: unknown decision "
                                  f"{r.get('decision')!r} on {row['id']}")
            row["status"] = DECISIONS[r["decision"]]
            if r.get("input") is not None:
                row["input"] = r["input"]
            if r.get("reference") is not None:
                row["reference"] = r["reference"]
        rows.append(row)
    return rows


def pending_synthetic(task: Task | str | Path) -> list[dict[str, Any]]:
    """The synthetic rows awaiting review (for `ladder ui`'s labelling queue), oldest first;
    each has id, input, reference, sources, doc_ids, chunk_text, model and created."""
    return [r for r in load_rows(task) if r["status"] == "pending"]


def review_synthetic(task: Task | str | Path, row_id: str, decision: str, who: str,
                     input: str | None = None, reference: str | None = None) -> dict[str, Any]:
    """Record `decision` ("promote" or "reject") on row `row_id` by `who`, optionally with an
    edited question (`input`) or answer (`reference`); returns the row as it now stands.
    A later decision replaces an earlier one."""
    task = _task(task)
    if decision not in DECISIONS:
        raise LadderError(f"unknown decision {decision!r}; use 'promote' or 'reject'")
    if not str(who or "").strip():
        raise LadderError("a review needs `who` (the reviewer's name)")
    for name, value in (("input", input), ("reference", reference)):
        if value is not None and not value.strip():
            raise LadderError(f"an edited {name} cannot be empty")
    rows = {r["id"]: r for r in load_rows(task)}
    if row_id not in rows:
        raise LadderError(f"{task.name}: no synthetic row {row_id!r} "
                          f"(`ladder synth {task.root} --list` shows them)")
    _append(task.state_dir / REVIEWS_FILE,
            {"id": row_id, "decision": decision, "who": who.strip(), "at": _now(),
             "input": input.strip() if input is not None else None,
             "reference": reference.strip() if reference is not None else None})
    return next(r for r in load_rows(task) if r["id"] == row_id)


def synthetic_examples(task: Task | str | Path, statuses: tuple[str, ...] = ("promoted",)
                       ) -> list[Example]:
    """The synthetic rows with these statuses as Examples; `meta.gold_sources` holds the
    gold documents (as rag/scoring.py reads them) and `meta.gold_chunks` the chunk ids."""
    return [Example(r["id"], r["input"], r["reference"],
                    {"gold_sources": r["doc_ids"], "gold_chunks": r["sources"],
                     "synthetic": True, "status": r["status"]}, source=ROWS_FILE)
            for r in load_rows(task) if r["status"] in statuses]


# ---- sampling and parsing ------------------------------------------------------------------

def sample_chunks(chunks: list[Chunk], n: int, seed: int) -> list[Chunk]:
    """The first `n` chunks of a seeded order that visits every document once (documents in
    random order, a random chunk of each) before any document a second time. The order
    depends only on the seed and the chunk set, and a larger n extends a smaller n's sample."""
    rng = random.Random(seed)
    by_doc: dict[str, list[Chunk]] = {}
    for c in sorted(chunks, key=lambda c: c.id):
        by_doc.setdefault(c.doc_id, []).append(c)
    docs = sorted(by_doc)
    rng.shuffle(docs)
    for d in docs:
        rng.shuffle(by_doc[d])
    order: list[Chunk] = []
    depth = 0
    while len(order) < min(n, len(chunks)):
        order += [by_doc[d][depth] for d in docs if depth < len(by_doc[d])]
        depth += 1
    return order[:n]


def parse_qa(text: str) -> tuple[str, str] | str:
    """(question, answer) from a `Question: ... / Answer: ...` reply, or why it is not one."""
    m = _QA.match(text or "")
    if not m:
        return "no 'Question:' line followed by an 'Answer:' line"
    q, a = m.group("q").strip(), m.group("a").strip()
    if normalize_text(q) == normalize_text(DEMO_QUESTION):
        return "repeated the demonstration's question"
    return q, a


def generation_messages(chunk: Chunk) -> list[dict[str, str]]:
    """The exact prompt that asks for a question grounded in `chunk`."""
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": DEMO_PASSAGE},
            {"role": "assistant", "content": DEMO_REPLY},
            {"role": "user", "content": f"Passage:\n{chunk.text}"}]


def closed_book_messages(task: Task, question: str) -> list[dict[str, str]]:
    """The question alone, with the task's description as the system prompt."""
    system = task.description or "Answer the question in one or two sentences."
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


def _hash(messages: list[dict[str, str]]) -> str:
    blob = json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _call(messages: list[dict[str, str]], g: Any) -> dict[str, Any]:
    return {"messages": messages, "raw": g.text, "tokens_in": g.tokens_in,
            "tokens_out": g.tokens_out, "latency_s": round(g.latency_s, 4), "error": g.error}


def _withheld(call: dict[str, Any], *keys: str) -> dict[str, Any]:
    """`call` with `keys` replaced by their sha256 (text never stored in the files)."""
    out = dict(call)
    for k in keys:
        blob = json.dumps(out.pop(k), sort_keys=True, ensure_ascii=False).encode()
        out[f"{k}_sha256"] = hashlib.sha256(blob).hexdigest()[:16]
    return out


# ---- the closed-book and duplicate filters -------------------------------------------------

Matcher = Callable[[str, str], float | None]


def closed_book_matcher(task: Task, threshold: float) -> tuple[Matcher, float, str]:
    """(score(prediction, reference), the score at which they match, the rule in words):
    token F1 for free text and judged tasks, the task's own metric scoring 1 otherwise."""
    name = task.metric.name
    if output_kind(name) == "text" or "judge" in metric_needs(name):
        f1 = TokenF1()
        return (lambda p, r: f1.score(p, r).value), threshold, f"token F1 >= {threshold:.2f}"
    metric = build_metric(name, task.metric.labels, None)
    return (lambda p, r: metric.score(p, r).value), 1.0, f"{name} = 1 (the task's metric)"


def _existing_examples(task: Task) -> list[Example]:
    """Every example of the task's data files (all splits, the test file included), read only
    to compare against; rows with problems are left out here (`ladder check` reports them)."""
    paths = [task.path(p) for p in task.data.examples]
    if task.data.test:
        paths.append(task.path(task.data.test))
    return load_all(paths, task.data.id_field).examples


class _Dedup:
    """Nearest earlier text by cosine (an embedder) or by normalized exact match (none)."""

    def __init__(self, embed: Callable[[list[str]], np.ndarray] | None, threshold: float):
        self.embed = embed
        self.threshold = threshold
        self.ids: list[str] = []
        self.norm: dict[str, str] = {}
        self.vecs: np.ndarray | None = None

    def vectors(self, texts: list[str]) -> np.ndarray | None:
        """The texts' vectors in one call (None without an embedder)."""
        if self.embed is None or not texts:
            return None
        return np.asarray(self.embed(texts), dtype=np.float32)

    def add(self, ids: list[str], texts: list[str], vecs: np.ndarray | None = None) -> None:
        if not ids:
            return
        self.ids += ids
        for i, t in zip(ids, texts, strict=True):
            self.norm.setdefault(normalize_text(t), i)
        v = vecs if vecs is not None else self.vectors(texts)
        if v is not None:
            self.vecs = v if self.vecs is None else np.vstack([self.vecs, v])

    def nearest(self, text: str, vec: np.ndarray | None = None) -> tuple[str, float] | None:
        """(id, similarity) of an earlier text at or above the threshold, else None."""
        exact = self.norm.get(normalize_text(text))
        if exact is not None:
            return exact, 1.0
        if self.embed is None or self.vecs is None:
            return None
        vec = vec if vec is not None else self.vectors([text])[0]
        sims = self.vecs @ vec
        best = int(np.argmax(sims))
        return (self.ids[best], float(sims[best])) if sims[best] >= self.threshold else None


# ---- the run -------------------------------------------------------------------------------

def index_chunks(task: Task, embedder: Any) -> list[Chunk]:
    """The chunks of the task's index (what the retriever returns)."""
    if task.corpus is None:
        raise LadderError(f"{task.name}: synthetic questions come from the corpus, and "
                          f"{task.root / 'task.toml'} has no [corpus] section")
    try:
        store = open_store(task, embedder.name, embedder.dim, create=False)
    except LadderError as e:
        raise LadderError(f"{e} (`ladder index {task.root}`)") from None
    try:
        chunks = store.chunks()
    finally:
        close = getattr(store, "close", None)
        if close:
            close()
    if not chunks:
        raise LadderError(f"{task.name}: the index is empty; build it with "
                          f"`ladder index {task.root}` first")
    return chunks


def synthesize(task: Task | str | Path, n: int, model_key: str | None = None, seed: int = 0,
               *, model: ChatModel | None = None, embedder: Any = None,
               max_tokens: int = 128, closed_book_f1: float = 0.5, dup_cosine: float = 0.9,
               max_question_chars: int = 300, max_answer_chars: int = 1000,
               batch_size: int | None = None,
               progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Generate, filter and append synthetic rows for `n` sampled chunks (chunks done in an
    earlier run, kept or skipped, are not asked again). `model` replaces building
    `model_key` (default: the task's default model); `embedder` replaces building the
    corpus's. Returns the counts, the rules, the new rows' ids and the time taken."""
    task = _task(task)
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise LadderError(f"--from-corpus needs a positive number of chunks, got {n!r}")
    if task.corpus is None:
        raise LadderError(f"{task.name}: synthetic questions come from the corpus, and "
                          f"{task.root / 'task.toml'} has no [corpus] section")
    for name, v in (("closed_book_f1", closed_book_f1), ("dup_cosine", dup_cosine)):
        if not 0 < v <= 1:
            raise LadderError(f"{name} must be in (0, 1], got {v}")
    with _only_writer(task):
        start = time.monotonic()
        key = model_key or "default"
        cfg = task.model(key)  # unknown key -> LadderError with the known ones
        embedder = embedder if embedder is not None else build_embedder(task.corpus)
        chunks = index_chunks(task, embedder)
        sample = sample_chunks(chunks, n, seed)
        kept = _read_jsonl(rows_path(task))
        done = {s for r in kept for s in r["sources"]}
        done |= {r["chunk_id"] for r in _read_jsonl(task.state_dir / SKIPPED_FILE)}
        todo = [c for c in sample if c.id not in done]
        counts = {"sampled": len(sample), "already_done": len(sample) - len(todo),
                  "asked": 0, "generated": 0, "kept": 0} | {o: 0 for o in OUTCOMES}
        reasons: dict[str, list[str]] = {o: [] for o in OUTCOMES}
        new_ids: list[str] = []
        matcher, match_at, rule = closed_book_matcher(task, closed_book_f1)
        doc: dict[str, Any] = {
            "task": task.name, "n": n, "seed": seed, "model": key, "counts": counts,
            "rules": {"closed_book": rule, "duplicate": f"cosine >= {dup_cosine:.2f} "
                      f"({embedder.name}) or the same normalized text",
                      "max_question_chars": max_question_chars,
                      "max_answer_chars": max_answer_chars},
            "rows_file": str(rows_path(task)), "new_ids": new_ids, "reasons": reasons}
        if not todo:
            doc["seconds"] = round(time.monotonic() - start, 2)
            return doc
        llm = model if model is not None else build_model(cfg)
        describe = llm.describe() if hasattr(llm, "describe") else {"name": llm.name}
        dedup = _Dedup(embedder.embed, dup_cosine)
        existing = _existing_examples(task)
        dedup.add([e.id for e in existing], [e.input_text() for e in existing])
        dedup.add([r["id"] for r in kept], [r["input"] for r in kept])
        step = batch_size or int(getattr(llm, "batch_size", 8) or 8)
        gen_params = GenParams(max_tokens=max_tokens)
        cb_params = GenParams(max_tokens=task.generation.max_tokens)

        def skip(chunk: Chunk, outcome: str, reason: str, **calls: Any) -> None:
            counts[outcome] += 1
            reasons[outcome].append(f"{chunk.doc_id}: {reason}")
            _append(task.state_dir / SKIPPED_FILE,
                    {"chunk_id": chunk.id, "doc_id": chunk.doc_id, "outcome": outcome,
                     "reason": reason, "model": key, "seed": seed, "at": _now(), "calls": calls})

        for lo in range(0, len(todo), step):
            batch = todo[lo : lo + step]
            prompts = [generation_messages(c) for c in batch]
            gens = llm.generate(prompts, gen_params)
            counts["asked"] += len(batch)
            parsed: list[tuple[Chunk, str, str, dict[str, Any]]] = []
            for c, p, g in zip(batch, prompts, gens, strict=True):
                call = _call(p, g)
                if g.error:
                    skip(c, "error", f"the model failed: {g.error[:200]}", generate=call)
                    continue
                qa = parse_qa(g.text)
                if isinstance(qa, str):
                    skip(c, "unparseable", qa, generate=call)
                    continue
                counts["generated"] += 1
                q, a = qa
                if not q or not a:
                    skip(c, "empty", "empty question" if not q else "empty answer", generate=call)
                elif len(q) > max_question_chars or len(a) > max_answer_chars:
                    skip(c, "too_long", f"question {len(q)} chars (max {max_question_chars}), "
                         f"answer {len(a)} chars (max {max_answer_chars})", generate=call)
                else:
                    parsed.append((c, q, a, call))
            if not parsed:
                if progress:
                    progress(min(lo + step, len(todo)), len(todo))
                continue
            cb_prompts = [closed_book_messages(task, q) for _, q, _, _ in parsed]
            cb_gens = llm.generate(cb_prompts, cb_params)
            vecs = dedup.vectors([q for _, q, _, _ in parsed])
            for j, ((c, q, a, call), p, g) in enumerate(zip(parsed, cb_prompts, cb_gens,
                                                            strict=True)):
                vec = None if vecs is None else vecs[j]
                cb = _call(p, g)
                value = None if g.error else matcher(g.text, a)
                cb["match"] = value
                if value is not None and value >= match_at:
                    skip(c, "closed_book", f"answered without the passage ({rule}: {value:.2f})",
                         generate=call, closed_book=cb)
                    continue
                near = dedup.nearest(q, vec)
                if near is not None:
                    # the text is withheld: it is (nearly) an existing example's, maybe a test one
                    skip(c, "duplicate", f"near-duplicate of example {near[0]} "
                         f"(similarity {near[1]:.2f})", generate=_withheld(call, "raw"),
                         closed_book=_withheld(cb, "raw", "messages"))
                    continue
                row = {"id": f"synth-{c.id[:12]}", "input": q, "reference": a,
                       "sources": [c.id], "doc_ids": [c.doc_id], "synthetic": True,
                       "status": "pending", "model": key, "model_name": describe.get("name"),
                       "prompt_hash": _hash(call["messages"]), "seed": seed, "created": _now(),
                       "chunk_text": c.text, "calls": {"generate": call, "closed_book": cb}}
                _append(rows_path(task), row)
                dedup.add([row["id"]], [q], None if vec is None else vec[None, :])
                counts["kept"] += 1
                new_ids.append(row["id"])
            if progress:
                progress(min(lo + step, len(todo)), len(todo))
        doc["seconds"] = round(time.monotonic() - start, 2)
        return doc


# ---- the synthetic retrieval test set ------------------------------------------------------

def retrieval_check(task: Task | str | Path, statuses: tuple[str, ...] = ("promoted",),
                    *, embedder: Any = None, k: int | None = None) -> dict[str, Any]:
    """The task's retriever (its `[retrieval]` k and mode) on the synthetic rows with these
    statuses: recall@k and MRR of the gold chunk and of its document, with exact (0/1) or
    BCa intervals from the stats module. Reported apart from the human test split."""
    task = _task(task)
    if task.corpus is None:
        raise LadderError(f"{task.name}: no [corpus] section, so no retriever to check")
    rows = [r for r in load_rows(task) if r["status"] in statuses]
    k = k or task.retrieval.k
    doc: dict[str, Any] = {"task": task.name, "statuses": list(statuses), "n": len(rows),
                           "k": k, "mode": task.retrieval.mode}
    if not rows:
        return doc | {"why": f"no synthetic rows with status {' or '.join(statuses)}"}
    embedder = embedder if embedder is not None else build_embedder(task.corpus)
    store = open_store(task, embedder.name, embedder.dim, create=False)
    try:
        retriever = Retriever(store, embedder.embed)
        per_row: dict[str, list[float]] = {"chunk_recall": [], "doc_recall": [],
                                           "chunk_mrr": [], "doc_mrr": []}
        items = []
        for r in rows:
            hits = retriever.search(r["input"], k=k, mode=task.retrieval.mode)
            cids = [h.chunk.id for h in hits]
            dids = [h.chunk.doc_id for h in hits]
            s = {"chunk_recall": rag_metrics.recall_at_k(cids, r["sources"], k).value,
                 "doc_recall": rag_metrics.recall_at_k(dids, r["doc_ids"], k).value,
                 "chunk_mrr": rag_metrics.mrr(cids, r["sources"]).value,
                 "doc_mrr": rag_metrics.mrr(dids, r["doc_ids"]).value}
            for name, v in s.items():
                if v is not None:
                    per_row[name].append(v)
            items.append({"id": r["id"], **s, "retrieved_docs": dids})
    finally:
        close = getattr(store, "close", None)
        if close:
            close()
    for name, values in per_row.items():
        q = mean_quality(values)
        doc[name] = q.interval.as_dict() | {"method": q.interval.method}
    doc["items"] = items
    return doc
