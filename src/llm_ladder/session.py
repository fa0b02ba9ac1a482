"""A session: a task's data checked and split, the index opened for the rungs that need it,
and the model loaded — what every command that runs a rung starts from.

`prepare` loads the examples (refusing bad rows unless asked to skip them), splits them and
removes train/dev rows that leak into test. `open_session` adds the retriever (when a chosen
rung declares `needs = {"index"}`), the model, and the input-length check with the model's
own tokenizer. `Prepared.context()` is the one place a `RungContext` is built. Skipped:
sharing one loaded model between sessions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_ladder.data import Example, Problem, check_lengths, format_problems, load_all
from llm_ladder.decide import baselines
from llm_ladder.embedding import build_embedder
from llm_ladder.errors import LadderError
from llm_ladder.metrics import Metric, build_metric, metric_needs, output_kind
from llm_ladder.models import build_model
from llm_ladder.models.base import ChatModel
from llm_ladder.rag.index import open_store
from llm_ladder.rag.retrieve import Retriever
from llm_ladder.rungs.base import RungContext, ladder_for, needs_of
from llm_ladder.splits import Splits, decontaminate, split_examples
from llm_ladder.store import Store, open_run_store
from llm_ladder.task import Task, load_task

Status = Callable[[str], AbstractContextManager[Any]]


@dataclass
class Prepared:
    """A task's examples, checked and split, with what the rungs build from."""

    task: Task
    splits: Splits
    problems: list[Problem] = field(default_factory=list)
    rows_read: int = 0
    labels: list[str] | None = None
    schema: dict[str, Any] | None = None
    token_spread: dict[str, int] = field(default_factory=dict)
    retriever: Retriever | None = None
    unlabeled: list[Example] = field(default_factory=list)  # extra inputs for a teacher
    judge: ChatModel | None = None  # the judge metric's model (`[judge] model`), when it needs one
    judge_trust: dict[str, Any] | None = None  # judge_check.trust(), computed once per session

    def split_hash(self) -> str:
        """A short hash of the split's ids: runs on the same split compare pair by pair."""
        blob = json.dumps(self.splits.ids(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def leakage_removed(self) -> int:
        leak = self.splits.leakage
        return (leak.removed_train + leak.removed_dev) if leak else 0

    def baselines(self) -> list[dict[str, Any]]:
        """Majority-class and uniform-random rows for label metrics (empty otherwise): from
        the train split's labels, scored on the test split like a rung."""
        return baselines([e.output for e in self.splits.train],
                         {e.id: e.output for e in self.splits.test}, self.task.metric.name,
                         self.labels)

    def metric(self) -> Metric:
        """The task's metric, given the resources it declares in `needs` (the judge model)."""
        extra = ({"judge": self.judge, "config": self.task.judge}
                 if "judge" in metric_needs(self.task.metric.name) else {})
        return build_metric(self.task.metric.name, self.labels, self.schema, **extra)

    def context(self, **overrides: Any) -> RungContext:
        """The RungContext for this data: train (and dev) only, never test."""
        fields: dict[str, Any] = {
            "task": self.task, "train": self.splits.train, "labels": self.labels,
            "schema": self.schema, "retriever": self.retriever, "dev": self.splits.dev,
            "unlabeled": self.unlabeled, "leakage_removed": self.leakage_removed()}
        return RungContext(**(fields | overrides))


def prepare(task: Task, skip_bad_rows: bool = False) -> Prepared:
    """Load, check, split and decontaminate the task's examples."""
    paths = [task.path(p) for p in task.data.examples]
    loaded = load_all(paths, task.data.id_field)
    test_loaded = None
    if task.data.test:
        test_loaded = load_all([task.path(task.data.test)], task.data.id_field)
        loaded.problems += test_loaded.problems
        loaded.rows_read += test_loaded.rows_read
        overlap = {e.id for e in loaded.examples} & {e.id for e in test_loaded.examples}
        if overlap:
            raise LadderError(f"ids appear both in examples and in the test file: "
                              f"{', '.join(sorted(overlap)[:5])}")
    if loaded.problems and not skip_bad_rows:
        raise LadderError(f"{len(loaded.problems)} bad row(s) in the examples:\n"
                          + format_problems(loaded.problems)
                          + "\nFix them, or pass --skip-bad-rows to run on the good rows only.")
    splits = split_examples(loaded.examples, task.split.train, task.split.dev, task.split.test,
                            task.split.seed, test_loaded.examples if test_loaded else None,
                            task.split.max_test)
    if not splits.test:
        raise LadderError(f"{task.name}: the test split is empty; add examples or raise "
                          "split.test")
    splits = decontaminate(splits)
    labels = task.metric.labels
    if labels is None and output_kind(task.metric.name) == "label":
        everything = splits.train + splits.dev + splits.test
        labels = sorted({e.output.strip() for e in everything})
    schema = None
    if task.metric.schema_file:
        path = task.path(task.metric.schema_file)
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise LadderError(f"{path}: cannot read the metric's JSON schema: {e}") from None
    return Prepared(task, splits, loaded.problems, loaded.rows_read, labels, schema)


def check_context(prep: Prepared, model: ChatModel, skip_bad_rows: bool) -> list[Problem]:
    """Inputs longer than the model's context, counted with its tokenizer; never truncated."""
    limit = model.context_length - prep.task.generation.max_tokens
    everything = prep.splits.train + prep.splits.dev + prep.splits.test
    counts: list[int] = []

    def counting(msgs):
        counts.append(model.count_tokens(msgs))
        return counts[-1]

    problems = check_lengths(everything, counting, limit)
    if counts:
        counts.sort()
        prep.token_spread = {"min": counts[0], "median": counts[len(counts) // 2],
                             "p95": counts[min(len(counts) - 1, int(0.95 * len(counts)))],
                             "max": counts[-1], "limit": limit}
    if problems and not skip_bad_rows:
        raise LadderError(f"{len(problems)} input(s) too long for {model.name}:\n"
                          + format_problems(problems)
                          + "\nShorten them, or pass --skip-bad-rows to leave them out.")
    bad = {p.example_id for p in problems}
    for name in ("train", "dev", "test", "confirm"):
        setattr(prep.splits, name, [e for e in getattr(prep.splits, name) if e.id not in bad])
    return problems


def attach_retriever(prep: Prepared, embedder: Any) -> None:
    """Open the task's index for the rungs that need it (build it with `ladder index`)."""
    if prep.task.corpus is None:
        raise LadderError(f"{prep.task.name}: the retrieval rungs need a [corpus] in task.toml "
                          f"and an index (`ladder index {prep.task.root}`)")
    store = open_store(prep.task, embedder.name, embedder.dim, create=False)
    if store.count() == 0:
        raise LadderError(f"{prep.task.name}: the index is empty; run `ladder index "
                          f"{prep.task.root}` first")
    retriever = Retriever(store, embedder.embed)
    # the index's content hash goes into each run's config, so a resumed run never mixes
    # predictions made against two different indexes
    retriever.index_info = store.info() | {"count": store.count(),
                                           "content": _ids_hash(store.ids())}
    prep.retriever = retriever


def _ids_hash(ids: set[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:12]


def open_judge(task: Task, llm: ChatModel | None, model_key: str) -> ChatModel:
    """The judge metric's model: `[judge] model` (the rung's own model object when it names
    the same key)."""
    if task.judge is None:
        raise LadderError(f"{task.name}: [metric] name = \"judge\" needs a [judge] table "
                          "(model, mode, scale, rubric; docs/judge.md)")
    if task.judge.model == model_key and llm is not None:
        return llm
    return build_model(task.model(task.judge.model))


@dataclass
class Session:
    """What `open_session` returns: the task, its run store, the prepared data, the model."""

    task: Task
    store: Store
    prep: Prepared
    model: ChatModel | None
    model_key: str
    rungs: list[str]
    too_long: list[Problem] = field(default_factory=list)
    extra_models: dict[str, ChatModel] = field(default_factory=dict)  # other models climbed


def open_task(task: Task | str | Path) -> tuple[Task, Store]:
    """The task (loaded from its folder when given a path) and its run store."""
    task = task if isinstance(task, Task) else load_task(Path(task))
    return task, open_run_store(task)


def open_session(task: Task | str | Path, model: str = "default",
                 rungs: list[str] | None = None, *, skip_bad_rows: bool = False,
                 embedder: Any = None, retriever: Any = None, load_model: bool = True,
                 status: Status | None = None) -> Session:
    """Prepare the data, open the index when a chosen rung needs it, load the model and
    check the inputs fit its context. `rungs` defaults to the task's ladder; `retriever`
    replaces opening the index; `status(message)` wraps the slow steps (a spinner)."""
    task, store = open_task(task)
    busy = status or (lambda _msg: contextlib.nullcontext())
    prep = prepare(task, skip_bad_rows)
    names = list(rungs) if rungs else ladder_for(task)
    if any("index" in needs_of(n) for n in names):
        if retriever is not None:
            prep.retriever = retriever
        else:
            if embedder is None and task.corpus is not None:
                with busy("loading the embedder…"):
                    embedder = build_embedder(task.corpus)
            attach_retriever(prep, embedder)
    llm, too_long = None, []
    if load_model:
        with busy(f"loading model {model}…"):
            llm = build_model(task.model(model))
        too_long = check_context(prep, llm, skip_bad_rows)
        if "judge" in metric_needs(task.metric.name):
            with busy("loading the judge model…"):
                prep.judge = open_judge(task, llm, model)
    return Session(task, store, prep, llm, model, names, too_long)
