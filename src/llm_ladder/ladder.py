"""The ladder: evaluate rungs on the test split and climb them cheapest first.

`run_rung` builds one rung's pipeline (a training rung trains or reuses its adapter here),
evaluates it on the test split and stores it. `climb` is `ladder run` as a library call:
rungs in ladder order, stopping at the first that meets the bar (unless `run_all`), repeats
for nondeterminism, the recommendation (decide.py) and the report. `eval_on_logs` runs a rung
on the traffic `ladder serve` logged. With several models (`[ladder] models` or
`climb(models=...)`) the climb runs rung x model cells (llm_ladder.cells): a short calibration
pass on dev inputs (never test) measures each model's tokens and seconds per request, the
cells are ordered by the expected cost per request it implies, and the same stop rule and
family correction cover every cell. Skipped: running rungs in parallel (one machine).
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llm_ladder.cells import Cell, grid, order_cells
from llm_ladder.costs import cost_per_1k, price_for
from llm_ladder.data import Example
from llm_ladder.decide import confirmation, decide, power_report, should_stop
from llm_ladder.errors import LadderError
from llm_ladder.evaluate import evaluate, package_versions, summarize
from llm_ladder.judge_check import rung_judgement
from llm_ladder.metrics import Metric, build_metric, match_label, metric_needs
from llm_ladder.models import build_model
from llm_ladder.models.base import ChatModel
from llm_ladder.report import write_report
from llm_ladder.results import LadderResult, Recommendation, Summary
from llm_ladder.rungs.base import Pipeline, get_rung, needs_of
from llm_ladder.serving.latency import probe_rung, served
from llm_ladder.session import Prepared, Session, check_context, open_session, open_task
from llm_ladder.store import Store
from llm_ladder.task import Task

Progress = Callable[[int, str], Callable[[int], None]]  # (total, label) -> advance(n)
Event = Callable[[dict[str, Any]], None]
ON_LOGS_NOTE = ("scored against the answers that were served, not human references: this is "
                "agreement with production (drift), plus tokens, latency and cost on the real "
                "input distribution")


def _store_run(task: Task, store: Store, pipeline: Pipeline, model: ChatModel,
               examples: list[Example], metric: Metric, rung: str, model_key: str,
               split: str, config: dict[str, Any], *, resume: bool = False,
               progress: Progress | None = None, ladder_id: str | None = None
               ) -> tuple[str, Summary]:
    """Create (or resume) a run, evaluate `examples`, summarize; the run is left open."""
    run_id = store.find_resumable(task.name, rung, model_key, split, config) if resume else None
    if run_id is None:
        run_id = store.create_run(task.name, rung, model_key, split, config,
                                  package_versions(), ladder_id)
    elif ladder_id:
        store.set_ladder(run_id, ladder_id)
    tick = progress(len(examples), rung) if progress else None
    evaluate(pipeline, model, examples, metric, store, run_id, tick,
             getattr(model, "batch_size", 8))
    price, source = price_for(task, model_key)
    summary = summarize(store.predictions(run_id), metric, price, source, bar=task.bar)
    summary.update(run_id=run_id, rung=rung, model=model_key)
    if "one_time" in pipeline.settings:
        one = dict(pipeline.settings["one_time"])
        one["usd"] = (one["seconds"] * price.usd_per_hour / 3600
                      if price is not None and price.usd_per_hour is not None else None)
        summary["one_time"] = one
    return run_id, summary


def judge_config(prep: Prepared) -> dict[str, Any]:
    """The judge's model and settings, for a judged run's config (a resumed run never mixes
    two judges' verdicts)."""
    if prep.judge is None or prep.task.judge is None:
        return {}
    return {"judge": {**prep.task.judge.model_dump(), "key": prep.task.judge.model,
                      "model": prep.judge.describe()}}


def run_rung(prep: Prepared, rung_name: str, model_key: str, model: ChatModel, store: Store,
             *, resume: bool = False, progress: Progress | None = None,
             ladder_id: str | None = None, base_key: str | None = None,
             on_event: Event | None = None, planned: int | None = None,
             cell: str | None = None) -> dict[str, Any]:
    """Evaluate one rung on the test split; returns the stored run with its summary.

    A rung that trains (rungs/finetune.py) trains first, or reuses its adapter; its
    one-time cost (training, teacher labelling) is added to the summary as `one_time`.
    `cell` (`rung@model`, a multi-model climb) names the summary's row in place of the rung.
    """
    task = prep.task
    pipeline = get_rung(rung_name).build(prep.context(base_key=base_key, resume=resume,
                                                      on_event=on_event, model=model,
                                                      model_key=model_key))
    metric = prep.metric()
    config = {"rung": rung_name, "settings": pipeline.settings,
              "params": vars(pipeline.params), "model": (pipeline.model or model).describe(),
              "metric": task.metric.name, "split": prep.split_hash(), **judge_config(prep),
              "test_n": len(prep.splits.test),
              "index": getattr(prep.retriever, "index_info", None)}
    run_id, summary = _store_run(task, store, pipeline, pipeline.model or model,
                                 prep.splits.test, metric, rung_name, model_key, "test", config,
                                 resume=resume, progress=progress, ladder_id=ladder_id)
    # per-request latency as `ladder serve` serves it (alone, at the serving concurrency);
    # measured again on resume, never stored as predictions (serving/latency.py)
    summary["served_latency"] = probe_rung(task, pipeline, model, rung_name, model_key,
                                           [e.input for e in prep.splits.test], run_id)
    if planned:  # the family the decision corrects for, stored so reports decide the same way
        summary["planned_rungs"] = planned
    if cell:
        summary["rung"], summary["base_rung"] = cell, rung_name
    if "judge" in metric_needs(task.metric.name):  # trust, PPI interval, evaluation cost
        summary["judge"] = rung_judgement(prep, store.predictions(run_id), metric)
    store.finish_run(run_id, summary)
    return store.get_run(run_id) or {}


def variance(store: Store, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """How many examples got a different raw output across repeated runs (temperature 0
    should give none; batching or server nondeterminism can)."""
    outs = [{p["example_id"]: p["raw_output"] for p in store.predictions(r["id"])}
            for r in runs]
    ids = set(outs[0])
    differing = sum(1 for i in ids if len({o.get(i) for o in outs}) > 1)
    return {"runs": [r["id"] for r in runs], "n": len(ids), "differing": differing,
            "quality": [r["summary"]["quality"]["value"] for r in runs]}


def recommend(task: Task, summaries: list[Summary], store: Store | None = None, *,
              planned: int | None = None, baseline_rows: list[dict[str, Any]] | None = None,
              capped_test: int = 0) -> Recommendation:
    """The decision (llm_ladder.decide): the cheapest rung whose quality is above the bar
    with the family of `planned` rungs corrected (Holm), within budget and better than the
    trivial baselines, unless a dearer one is significantly better on paired tests (needs
    `store` for predictions)."""
    configs = {}
    if store is not None:
        configs = {s["run_id"]: (store.get_run(s["run_id"]) or {}).get("config") or {}
                   for s in summaries if s.get("run_id")}
    return decide(task, summaries, store.predictions if store else None, configs,
                  planned=planned, baselines=baseline_rows, capped_test=capped_test)


def power(prep: Prepared, planned: int) -> dict[str, Any]:
    """What the corrected test can confirm with this test split (decide.power_report)."""
    return power_report(prep.task, len(prep.splits.test), planned)


def climb(task: Task | str | Path, *, rungs: list[str] | None = None, model: str = "default",
          run_all: bool = False, repeat: int = 1, resume: bool = False, report: bool = True,
          skip_bad_rows: bool = False, on_progress: Progress | None = None,
          on_event: Event | None = None, on_rung: Callable[[Summary], None] | None = None,
          session: Session | None = None, models: list[str] | None = None) -> LadderResult:
    """Climb the rungs cheapest first on the same test split and recommend one.

    Without `run_all` the climb stops at the first rung that meets the bar within budget
    (the rest are listed as not run). `repeat` > 1 runs each rung again to measure
    nondeterminism. `on_rung(summary)` is called as each rung finishes (results as they
    come). `session` reuses an opened session (data, index, model). `models` (default the
    task's `[ladder] models`) climbs rung x model cells; one model is the classic ladder."""
    s = session or open_session(task, model, rungs, skip_bad_rows=skip_bad_rows)
    if s.model is None:
        raise LadderError("climb needs a session with a model (open_session(load_model=True))")
    keys = list(dict.fromkeys(models or s.task.ladder.models or [s.model_key]))
    if len(keys) > 1:
        cells = plan_cells(s, keys, skip_bad_rows, on_event)
    else:
        cells = [Cell(name, s.model_key) for name in s.rungs]
        evaluator = s.task.finetune.eval_model if s.task.finetune else None
        if evaluator and evaluator != s.model_key:  # tuned rungs go to that model's server
            trained = {r for r in s.rungs if "finetune" in needs_of(r)}
            if trained and evaluator not in s.extra_models:
                s.extra_models[evaluator] = build_model(s.task.model(evaluator))
            cells = [Cell(c.rung, evaluator, True) if c.rung in trained else c for c in cells]
    llms = {s.model_key: s.model, **s.extra_models}
    multi = len(keys) > 1
    names = [c.name if multi else c.rung for c in cells]
    planned = len(cells)  # the family Holm corrects for, fixed before the first rung runs
    base = s.prep.baselines()
    ladder_id = uuid.uuid4().hex[:8]
    summaries: list[Summary] = []
    repeats: dict[str, Any] = {}
    not_run: list[str] = []
    for i, c in enumerate(cells):
        name, llm = names[i], llms[c.model] if c.model in llms else s.model
        run = run_rung(s.prep, c.rung, c.model, llm, s.store, resume=resume,
                       progress=on_progress, ladder_id=ladder_id, on_event=on_event,
                       planned=planned, cell=name if multi else None)
        summaries.append(run["summary"])
        if on_rung is not None:
            on_rung(run["summary"])
        if repeat > 1:
            again = [run_rung(s.prep, c.rung, c.model, llm, s.store, progress=on_progress,
                              cell=name if multi else None) for _ in range(repeat - 1)]
            repeats[name] = variance(s.store, [run, *again])
        if not run_all and should_stop(s.task, summaries, planned, s.store.predictions, base):
            not_run = names[i + 1:]
            break
    split = s.prep.splits
    rec = recommend(s.task, summaries, s.store, planned=planned, baseline_rows=base,
                    capped_test=split.capped_test)
    if not_run:
        rec.setdefault("notes", []).append(
            f"stopped at {summaries[-1]['rung']}, the first rung that meets the bar; not run: "
            f"{', '.join(not_run)} (`ladder run --all` runs and compares them)")
    result = LadderResult(
        task=s.task.name, ladder_id=ladder_id, model=", ".join(keys) if multi else s.model_key,
        metric=s.task.metric.name,
        bar=s.task.bar,
        split={"train": len(split.train), "dev": len(split.dev), "test": len(split.test),
               "capped_test": split.capped_test},
        bad_rows=len(s.prep.problems), input_tokens=s.prep.token_spread,
        leakage=split.leakage.counts() if split.leakage else {},
        rungs=summaries, recommendation=rec, not_run=not_run, repeat=repeats,
        power=power(s.prep, planned), cells=[grid_row(x, c) for x, c in
                                             zip(summaries, cells, strict=False)],
        calibration={c.name: c.cost_per_1k for c in cells} if multi else {})
    if report:
        html_path, md_path = write_report(s.task, s.store, ladder_id, baselines=base)
        result.report = {"html": str(html_path), "markdown": str(md_path)}
    return result


def grid_row(summary: Summary, cell: Cell) -> dict[str, Any]:
    """One cell of the rung x model grid (`ladder run --json` `cells`)."""
    q = summary.get("quality") or {}
    return {"cell": summary.get("rung"), "rung": cell.rung, "model": cell.model,
            "quality": q.get("value"), "low": q.get("low"), "high": q.get("high"),
            "cost_per_1k_usd": summary.get("cost_per_1k_usd"),
            "latency_p50_s": summary.get("latency_p50_s"),  # batch latency (throughput)
            "latency_p95_s": summary.get("latency_p95_s"),
            "served_p50_s": served(summary).get("p50_s"),  # at the serving concurrency
            "served_p95_s": served(summary).get("p95_s"),
            "served_alone_p95_s": served(summary, "alone").get("p95_s"),
            "one_time_s": (summary.get("one_time") or {}).get("seconds"),
            "expected_cost_per_1k_usd": cell.cost_per_1k}


def tuned_model(task: Task) -> str:
    """The model key a tuned rung is evaluated on: `eval_model`'s server, else its base
    (merged in-process)."""
    ft = task.finetune
    return (ft.eval_model or ft.base if ft else None) or "default"


def planned_cells(task: Task, rungs: list[str], keys: list[str]) -> int:
    """How many cells a climb of `rungs` over `keys` runs: the family Holm corrects for."""
    if len(keys) <= 1:
        return len(rungs)
    return len(grid(rungs, keys, {r for r in rungs if "finetune" in needs_of(r)},
                    tuned_model(task)))


def plan_cells(s: Session, keys: list[str], skip_bad_rows: bool = False,
               on_event: Event | None = None) -> list[Cell]:
    """Load every model of a multi-model climb, check the inputs fit each one's context
    (before any run, so every cell sees the same test split), calibrate and order the cells.
    The loaded models are kept on the session (`extra_models`)."""
    task = s.task
    extra = s.extra_models
    for k in keys:
        if k != s.model_key and k not in extra:
            extra[k] = build_model(task.model(k))
            s.too_long += check_context(s.prep, extra[k], skip_bad_rows)
    llms = {s.model_key: s.model, **extra}
    tuned = tuned_model(task)
    trained = {r for r in s.rungs if "finetune" in needs_of(r)}
    if trained and tuned not in llms:
        llms[tuned] = extra[tuned] = build_model(task.model(tuned))
    cells = grid(s.rungs, keys, trained, tuned)
    costs = calibrate(s.prep, llms, cells, task.ladder.calibrate_n)
    if on_event:
        on_event({"calibrated": {c.name: costs.get((c.rung, c.model)) for c in cells}})
    priced = [Cell(c.rung, c.model, c.trains, costs.get((c.rung, c.model))) for c in cells]
    return order_cells(priced, keys)


def calibrate(prep: Prepared, llms: dict[str, ChatModel], cells: list[Cell],
              n: int) -> dict[tuple[str, str], float | None]:
    """Expected dollars per 1000 requests of each cell, from `n` dev inputs (train when there
    is no dev; never test): each model answers them with the zero-shot prompt (tokens out and
    seconds per request); each cell's prompt is counted with its model's tokenizer (tokens
    in). A self-hosted model's seconds scale with the tokens a cell reads and writes. A rung
    that trains is counted by the prompt it wraps; one whose building costs model calls (a
    prompt search) by the zero-shot prompt."""
    inputs = [e.input for e in (prep.splits.dev or prep.splits.train)[:n]]
    if not inputs:
        return {}
    measured: dict[str, tuple[float, float, float]] = {}
    for key, llm in llms.items():
        zero = get_rung("zero-shot").build(prep.context(model=llm, model_key=key))
        msgs = [zero.prepare(i)[0] for i in inputs]
        t0 = time.perf_counter()
        gens = llm.generate(msgs, zero.params)
        secs = (time.perf_counter() - t0) / len(inputs)
        measured[key] = (statistics.fmean(llm.count_tokens(m) for m in msgs),
                         statistics.fmean(g.tokens_out for g in gens), secs)
    out: dict[tuple[str, str], float | None] = {}
    for c in cells:
        tin0, tout, secs = measured[c.model]
        llm = llms[c.model]
        rung = getattr(get_rung(c.rung), "prompt_rung", None) or c.rung
        tin = tin0
        if "optimize" not in needs_of(rung):
            try:
                pipe = get_rung(rung).build(prep.context(model=llm, model_key=c.model))
                tin = statistics.fmean(llm.count_tokens(pipe.prepare(i)[0]) for i in inputs)
            except LadderError:
                pass  # the climb reports it when it runs the cell
        price, _ = price_for(prep.task, c.model)
        out[(c.rung, c.model)] = cost_per_1k(price, tin, tout,
                                             secs * (tin + tout) / max(tin0 + tout, 1.0))
    return out


def newest_runs(store: Store, task_name: str, split: str, exclude: set[str]) -> list[Summary]:
    """The newest finished run of every rung on the same test split (by split hash)."""
    seen, rows = set(), []
    for r in store.list_runs(500):
        s = r.get("summary")
        if (r["task"] != task_name or r["status"] != "done" or not s or r["rung"] in seen
                or r["id"] in exclude or (r.get("config") or {}).get("split") != split):
            continue
        seen.add(r["rung"])
        rows.append(s)
    return rows


def eval_on_logs(task: Task | str | Path, rung: str, model: str = "default",
                 status: Any = None) -> dict[str, Any]:
    """Run `rung` on the requests `ladder serve` logged and score its agreement with what
    was served (there are no human references in traffic: this measures drift and the
    production token/latency/cost profile, not correctness). Stored as a run on split
    "logs"."""
    task, store = open_task(task)
    logs = [log for log in store.request_logs(status="ok") if log["response"]]
    if not logs:
        raise LadderError(f"no answered requests logged in {store.path}; serve with `ladder "
                          "serve` (serve.log_requests = true) first")
    s = open_session(task, model, [rung], skip_bad_rows=True, status=status)
    pipeline = get_rung(rung).build(s.prep.context())
    llm = pipeline.model or s.model
    assert llm is not None
    labels = s.prep.labels
    examples = []
    for log in logs:
        ref = log["response"]
        if labels:  # compare labels with labels: the served text names one, or stays as is
            ref = match_label(ref, labels) or ref.strip()
        examples.append(Example(log["id"], log["request"], ref, {"served_rung": log["rung"]}))
    if labels:  # a served answer that names no label is a class of its own here
        labels = labels + sorted({e.output for e in examples} - set(labels))
    metric = build_metric(task.metric.name, labels, s.prep.schema,
                          **({"judge": s.prep.judge, "config": task.judge}
                             if s.prep.judge is not None else {}))
    config = {"rung": rung, "settings": pipeline.settings, "params": vars(pipeline.params),
              "model": llm.describe(), "metric": task.metric.name, "split": "logs",
              "logs": {"n": len(logs), "first": logs[0]["id"], "last": logs[-1]["id"]},
              "reference": "served answers"}
    run_id, summary = _store_run(task, store, pipeline, llm, examples, metric, rung, model,
                                 "logs", config)
    summary.pop("one_time", None)
    summary.update(reference="served answers", note=ON_LOGS_NOTE)
    store.finish_run(run_id, summary)
    served_by: dict[str, int] = {}
    for log in logs:
        served_by[log["rung"]] = served_by.get(log["rung"], 0) + 1
    return {"task": task.name, "on_logs": True, "logged_requests": len(logs),
            "served_by": served_by, "metric": task.metric.name, "note": ON_LOGS_NOTE,
            "rungs": [summary]}


def confirm(task: Task | str | Path, rung: str, model: str = "default", *,
            progress: Progress | None = None, status: Any = None) -> dict[str, Any]:
    """Run `rung` once on the confirmation slice (the test rows held back by
    `split.max_test`, never looked at by the climb) and test it against the bar at one-sided
    0.025. Refused when this slice was already used: a second look is not a confirmation."""
    s = open_session(task, model, [rung], status=status)
    assert s.model is not None
    rows = s.prep.splits.confirm
    if not rows:
        raise LadderError(f"{s.task.name}: no confirmation slice; set split.max_test below the "
                          "test split's size to hold rows back for one confirmation run")
    split_id = s.prep.split_hash()
    used = [r for r in s.store.list_runs(500) if r["task"] == s.task.name
            and r["status"] == "done" and (r.get("config") or {}).get("split") == split_id
            and (r.get("config") or {}).get("slice") == "confirm"]
    if used:
        raise LadderError(f"the confirmation slice of this split was already used by run "
                          f"{used[0]['id']} ({used[0]['rung']}); a second look is not a "
                          "confirmation: add new test examples instead")
    pipeline = get_rung(rung).build(s.prep.context())
    llm = pipeline.model or s.model
    metric = s.prep.metric()
    config = {"rung": rung, "settings": pipeline.settings, "params": vars(pipeline.params),
              "model": llm.describe(), "metric": s.task.metric.name, "split": split_id,
              "slice": "confirm", "confirm_n": len(rows),
              "index": getattr(s.prep.retriever, "index_info", None)}
    run_id, summary = _store_run(s.task, s.store, pipeline, llm, rows, metric, rung,
                                 s.model_key, "confirm", config, progress=progress)
    if "judge" in metric_needs(s.task.metric.name):
        summary["judge"] = rung_judgement(s.prep, s.store.predictions(run_id), metric)
    s.store.finish_run(run_id, summary)
    return {"task": s.task.name, "rung": rung, "run_id": run_id, "n": len(rows),
            "summary": summary,
            "confirmation": confirmation(s.task, summary, s.store.predictions(run_id))}
