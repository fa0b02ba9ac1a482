"""The labelling queue of `ladder ui`: what a person can label, and where their labels go.

A queue source is a small `LabelSource`: a `kind` (its name in URLs and in the `labels`
table), a title, the `actions` it allows (accept, correct, score), the score `scale`,
`items()` in queue order, `item(id)`, `labelled()` and `save(...)`. Three are built in:

- `requests`: answers served by `ladder serve` (the `request_logs` table, status ok), with
  their citations. Accept = the served answer is right; correct = the person's answer
  replaces it; score (when the task has a `[judge]`) = a score on the judge's scale. These
  flow into `ladder logs export` (`human_output`, `store.export_rows`).
- `judge-labels`: rows of the `[judge] labels` file whose `meta.human_score` is empty
  (pointwise judges; e.g. the answers `examples/faq-judge/prepare.py --answers` writes). A
  score given here counts as that row's human score in `ladder judge-check` and in a judged
  run's agreement and PPI interval (`human_scores`, read by judge_check.load_labels). That
  file is never the test split (load_labels refuses test rows), so no label from the web
  view reaches training, few-shot pools or prompt search, and the test rows the judge scores
  stay independent of the human-scored ones, as PPI needs.
- `synthetic`: questions `ladder synth` generated from the corpus (llm_ladder.synth), shown
  with their source chunk: promote (optionally with the question or answer edited) or
  reject. Decisions go to synth's own review file (`synth.review_synthetic`), not to the
  `labels` table; promoted rows stay a separate synthetic set, never the test split.

Labels live in the run store (`Store.put_label`, table `labels`): one row per (source, item),
with who and when; a later action on the same item replaces the fields it sets (latest wins)
and keeps the others. Skipped: pairwise preferences (human_pref) in the queue, several
people labelling the same item separately (the latest person wins), undo.
"""

from __future__ import annotations

import getpass
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from llm_ladder import synth
from llm_ladder.data import Messages, load_examples
from llm_ladder.errors import LadderError
from llm_ladder.store import Store, open_run_store
from llm_ladder.task import Task

ACTIONS = ("accept", "correct", "score", "promote", "reject")
MAX_OUTPUT_CHARS = 20_000


@dataclass
class LabelItem:
    """One thing to label: the input, the answer to judge, and what helps judging it."""

    id: str
    input: str | Messages
    answer: str
    reference: str | None = None
    citations: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""


class LabelSource(Protocol):
    """A queue of items to label (see the module docstring)."""

    kind: str
    title: str
    actions: tuple[str, ...]
    scale: tuple[int, int] | None

    def items(self) -> list[LabelItem]: ...

    def item(self, item_id: str) -> LabelItem | None: ...

    def labelled(self) -> dict[str, dict[str, Any]]: ...

    def save(self, item_id: str, who: str, action: str, output: str | None = None,
             score: float | None = None, input: str | None = None) -> None: ...


def default_user() -> str:
    """The OS user name, for the `who` of a label when `--user` is not given."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def check_label(source: LabelSource, action: str, output: str | None,
                score: float | None, input: str | None = None) -> None:
    """Refuse an action the source does not allow, an empty or oversized correction or edit,
    or a score off the source's scale, with a LadderError (nothing is written)."""
    if action not in source.actions:
        raise LadderError(f"{source.kind}: action {action!r} is not offered here "
                          f"(offered: {', '.join(source.actions)})")
    if action == "correct" and (output is None or not output.strip()):
        raise LadderError("a correction needs the corrected answer")
    for name, text in (("answer", output), ("question", input)):
        if text is not None and not text.strip() and action != "reject":
            raise LadderError(f"an edited {name} cannot be empty")
        if text is not None and len(text) > MAX_OUTPUT_CHARS:
            raise LadderError(f"an edited {name} may have at most {MAX_OUTPUT_CHARS} "
                              "characters")
    if action == "score":
        lo, hi = source.scale or (0, 0)
        if score is None or not math.isfinite(score) or not lo <= score <= hi:
            raise LadderError(f"a score must be a number from {lo} to {hi}")


class _StoreLabels(ABC):
    """Shared by the built-in sources: labels of `kind` in the run store."""

    kind: str
    actions: tuple[str, ...]
    scale: tuple[int, int] | None

    def __init__(self, store: Store):
        self.store = store

    def labelled(self) -> dict[str, dict[str, Any]]:
        return self.store.labels(self.kind)

    def item(self, item_id: str) -> LabelItem | None:
        return next((x for x in self.items() if x.id == item_id), None)

    @abstractmethod
    def items(self) -> list[LabelItem]:
        """The source's items in queue order (each built-in source lists its own)."""

    def save(self, item_id: str, who: str, action: str, output: str | None = None,
             score: float | None = None, input: str | None = None) -> None:
        check_label(self, action, output, score)
        if self.item(item_id) is None:
            raise LadderError(f"{self.kind}: no item {item_id!r} to label")
        if action == "accept":
            self.store.put_label(self.kind, item_id, who, accepted=True)
        elif action == "correct":
            self.store.put_label(self.kind, item_id, who, output=output)
        else:
            self.store.put_label(self.kind, item_id, who, score=score)


class RequestSource(_StoreLabels):
    """Answers served by `ladder serve` (status ok), oldest first."""

    kind = "requests"
    title = "served answers (ladder serve)"

    def __init__(self, task: Task, store: Store):
        super().__init__(store)
        self.scale = tuple(task.judge.scale) if task.judge is not None else None  # type: ignore[assignment]
        self.actions = ("accept", "correct") + (("score",) if self.scale else ())

    def items(self) -> list[LabelItem]:
        return [LabelItem(id=r["id"], input=r["request"] or "", answer=r["response"],
                          citations=list(r["citations"] or []),
                          note=f"served by {r['rung']} on {r['model']}"
                               + (f", run {r['run_id']}" if r["run_id"] else ""))
                for r in self.store.request_logs(status="ok") if r["response"]]


class JudgeLabelSource(_StoreLabels):
    """Rows of the `[judge] labels` file still without a human score (pointwise)."""

    kind = "judge-labels"
    title = "answers for the judge check ([judge] labels without a human score)"
    actions = ("score",)

    def __init__(self, task: Task, store: Store):
        super().__init__(store)
        assert task.judge is not None
        self.scale = tuple(task.judge.scale)  # type: ignore[assignment]
        self.path = task.path(task.judge.labels or "")

    def items(self) -> list[LabelItem]:
        return [LabelItem(id=x.id, input=x.input, answer=x.meta["answer"], reference=x.output,
                          note=str(x.meta.get("from") or x.source))
                for x in load_examples(Path(self.path)).examples
                if x.meta.get("human_score") is None and isinstance(x.meta.get("answer"), str)]


class SyntheticSource:
    """Questions generated by `ladder synth` (llm_ladder.synth), for review: promote or
    reject, the question and answer editable. Reviewed rows count as labelled."""

    kind = "synthetic"
    title = "generated questions (ladder synth): promote or reject"
    actions = ("promote", "reject")
    scale = None

    def __init__(self, task: Task):
        self.task = task

    def items(self) -> list[LabelItem]:
        return [LabelItem(id=r["id"], input=r["input"], answer=r["reference"],
                          citations=[{"source": ", ".join(map(str, r.get("doc_ids") or [])),
                                      "text": r.get("chunk_text") or ""}],
                          note=f"generated by {r.get('model')}; status {r['status']}")
                for r in synth.load_rows(self.task)]

    def item(self, item_id: str) -> LabelItem | None:
        return next((x for x in self.items() if x.id == item_id), None)

    def labelled(self) -> dict[str, dict[str, Any]]:
        out = {}
        for r in synth.load_rows(self.task):
            if r["status"] != "pending" and r.get("reviews"):
                last = r["reviews"][-1]
                out[r["id"]] = {"accepted": r["status"] == "promoted", "output": None,
                                "score": None, "who": last.get("who"),
                                "created": last.get("at"), "status": r["status"]}
        return out

    def save(self, item_id: str, who: str, action: str, output: str | None = None,
             score: float | None = None, input: str | None = None) -> None:
        check_label(self, action, output, score, input)
        x = self.item(item_id)
        if x is None:
            raise LadderError(f"{self.kind}: no item {item_id!r} to review")
        edit_q = input if input is not None and input.strip() != x.input else None
        edit_a = output if output is not None and output.strip() != x.answer else None
        synth.review_synthetic(self.task, item_id, action, who,
                               input=edit_q if action == "promote" else None,
                               reference=edit_a if action == "promote" else None)


def sources(task: Task, store: Store) -> list[LabelSource]:
    """The task's queues: served answers always; the judge's unscored answers when the task
    has a pointwise `[judge]` with a `labels` file; generated questions when `ladder synth`
    has written some."""
    out: list[LabelSource] = [RequestSource(task, store)]
    j = task.judge
    if j is not None and j.mode == "pointwise" and j.labels and task.path(j.labels).is_file():
        out.append(JudgeLabelSource(task, store))
    if synth.rows_path(task).is_file():
        out.append(SyntheticSource(task))
    return out


def progress(source: LabelSource) -> tuple[int, int]:
    """(labelled, total) of a source's current items."""
    ids = [x.id for x in source.items()]
    done = source.labelled()
    return sum(1 for i in ids if i in done), len(ids)


def next_item(source: LabelSource, after: str | None = None,
              skip_labelled: bool = True) -> str | None:
    """The id of the next item after `after` in queue order (wrapping round, never `after`
    itself), unlabelled ones only unless `skip_labelled` is false; None when there is none."""
    ids = [x.id for x in source.items()]
    done = source.labelled() if skip_labelled else {}
    start = ids.index(after) + 1 if after in ids else 0
    order: Sequence[str] = ids[start:] + ids[:start]
    return next((i for i in order if i != after and i not in done), None)


def human_scores(task: Task) -> dict[str, dict[str, Any]]:
    """example id -> the `judge-labels` label with a score, from the run store (empty when no
    store exists yet). judge_check.load_labels fills empty `meta.human_score`s with them."""
    if not task.store.url_env and not (task.state_dir / "runs.db").is_file():
        return {}
    store = open_run_store(task)
    try:
        return {k: v for k, v in store.labels(JudgeLabelSource.kind).items()
                if v["score"] is not None}
    finally:
        store.close()
