"""Orchestration: check and split the data, run rungs cheapest first, recommend one.

`prepare` loads the examples (refusing bad rows unless asked to skip them), splits them,
removes train/dev rows that leak into test, and checks input lengths with the model's own
tokenizer. `run_rung` builds a rung's pipeline (a training rung trains or reuses its
adapter here), evaluates it on the test split and stores it. `recommend` hands the stored
runs to `decide.py` (bar, budgets, paired tests between rungs).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llm_ladder import plugins
from llm_ladder.costs import price_for
from llm_ladder.data import Example, Problem, check_lengths, format_problems, load_all
from llm_ladder.errors import LadderError
from llm_ladder.evaluate import evaluate, package_versions, summarize
from llm_ladder.metrics import build_metric
from llm_ladder.models.base import ChatModel
from llm_ladder.rungs import PROMPTING_RUNGS, RAG_RUNGS, RungContext, get_rung
from llm_ladder.splits import Splits, decontaminate, split_examples
from llm_ladder.store import Store
from llm_ladder.task import ModelConfig, Task

LABEL_METRICS = {"accuracy", "macro_f1"}


@dataclass
class Prepared:
    task: Task
    splits: Splits
    problems: list[Problem] = field(default_factory=list)
    rows_read: int = 0
    labels: list[str] | None = None
    schema: dict[str, Any] | None = None
    token_spread: dict[str, int] = field(default_factory=dict)
    retriever: Any = None
    unlabeled: list[Example] = field(default_factory=list)  # extra inputs for a teacher

    def split_hash(self) -> str:
        blob = json.dumps(self.splits.ids(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def prepare(task: Task, skip_bad_rows: bool = False) -> Prepared:
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
    if labels is None and task.metric.name in LABEL_METRICS:
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


def build_model(cfg: ModelConfig) -> ChatModel:
    factory = plugins.get("models", cfg.backend)
    return factory(**cfg.model_dump(exclude={"backend"}))


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
    for name in ("train", "dev", "test"):
        setattr(prep.splits, name, [e for e in getattr(prep.splits, name) if e.id not in bad])
    return problems


def run_rung(prep: Prepared, rung_name: str, model_key: str, model: ChatModel, store: Store,
             resume: bool = False, progress: Callable[[int, int], Callable[[int], None]]
             | None = None, ladder_id: str | None = None, base_key: str | None = None,
             on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Evaluate one rung on the test split; returns the stored run with its summary.

    A rung that trains (finetune/rungs.py) trains first, or reuses its adapter; its
    one-time cost (training, teacher labelling) is added to the summary as `one_time`.
    """
    task = prep.task
    rung = get_rung(rung_name)
    ctx = RungContext(task, prep.splits.train, prep.labels, prep.schema, prep.retriever,
                      dev=prep.splits.dev, unlabeled=prep.unlabeled,
                      leakage_removed=_leak_count(prep),
                      base_key=base_key, resume=resume, on_event=on_event)
    pipeline = rung.build(ctx)
    metric = build_metric(task.metric.name, prep.labels, prep.schema)
    config = {"rung": rung_name, "settings": pipeline.settings,
              "params": vars(pipeline.params), "model": (pipeline.model or model).describe(),
              "metric": task.metric.name, "split": prep.split_hash(),
              "test_n": len(prep.splits.test),
              "index": getattr(prep.retriever, "index_info", None)}
    run_id = None
    if resume:
        run_id = store.find_resumable(task.name, rung_name, model_key, "test", config)
    if run_id is None:
        run_id = store.create_run(task.name, rung_name, model_key, "test", config,
                                  package_versions(), ladder_id)
    elif ladder_id:
        store.set_ladder(run_id, ladder_id)
    tick = progress(len(prep.splits.test), rung_name) if progress else None
    chunk = getattr(model, "batch_size", 8)
    evaluate(pipeline, model, prep.splits.test, metric, store, run_id, tick, chunk)
    price, source = price_for(task, model_key)
    summary = summarize(store.predictions(run_id), metric, price, source)
    summary.update(run_id=run_id, rung=rung_name, model=model_key)
    if "one_time" in pipeline.settings:
        one = dict(pipeline.settings["one_time"])
        one["usd"] = (one["seconds"] * price.usd_per_hour / 3600
                      if price is not None and price.usd_per_hour is not None else None)
        summary["one_time"] = one
    store.finish_run(run_id, summary)
    return store.get_run(run_id) or {}


def attach_retriever(prep: Prepared, embedder: Any) -> None:
    """Open the task's index for the RAG rungs (build it with `ladder index`)."""
    from llm_ladder.rag.index import open_store
    from llm_ladder.rag.retrieve import Retriever

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


def _leak_count(prep: Prepared) -> int:
    leak = prep.splits.leakage
    return (leak.removed_train + leak.removed_dev) if leak else 0


def _ids_hash(ids: set[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:12]


def rung_names(task: Task) -> list[str]:
    from llm_ladder.finetune.rungs import finetune_defaults
    from llm_ladder.tools import TOOL_RUNGS

    default = (PROMPTING_RUNGS + (RAG_RUNGS if task.corpus else [])
               + (TOOL_RUNGS if task.tools else []) + finetune_defaults(task))
    names = task.rungs.include or default
    known = plugins.names("rungs")
    for n in names:
        if n not in known:
            raise LadderError(f"task.toml: unknown rung {n!r} in rungs.include; known: "
                              + ", ".join(known))
    return names


def within_budget(task: Task, s: dict[str, Any]) -> tuple[bool, str]:
    b = task.budget
    if b.latency_p95_ms and s["latency_p95_s"] is not None \
            and s["latency_p95_s"] * 1000 > b.latency_p95_ms:
        return False, (f"p95 latency {s['latency_p95_s'] * 1000:.0f} ms is over the "
                       f"{b.latency_p95_ms:.0f} ms budget")
    if b.cost_per_1k_usd is not None and s["cost_per_1k_usd"] is not None \
            and s["cost_per_1k_usd"] > b.cost_per_1k_usd:
        return False, (f"${s['cost_per_1k_usd']:.4f} per 1k requests is over the "
                       f"${b.cost_per_1k_usd:.4f} budget")
    return True, ""


def recommend(task: Task, summaries: list[dict[str, Any]], store: Store | None = None
              ) -> dict[str, Any]:
    """The decision (llm_ladder.decide): cheapest rung meeting the bar in budget, unless a
    dearer one is significantly better on paired tests (needs `store` for predictions)."""
    from llm_ladder.decide import decide

    configs = {}
    if store is not None:
        configs = {s["run_id"]: (store.get_run(s["run_id"]) or {}).get("config") or {}
                   for s in summaries if s.get("run_id")}
    return decide(task, summaries, store.predictions if store else None, configs)
