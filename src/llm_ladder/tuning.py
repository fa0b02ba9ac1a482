"""Fine-tuning one rung as a library call (`ladder tune` and `ladder distill`).

`tune_rung` trains (or reuses) the rung's adapter, evaluates it on the test split, records
the test metrics in the adapter's manifest, and returns them beside the newest stored run of
every other rung. For `distill` the teacher is first scored on the test split and then labels
the train inputs (plus unlabelled `inputs`, never test inputs). `learning_curve` trains the
rung on nested fractions of the train split and scores each adapter on dev (curve.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from llm_ladder import curve, plugins
from llm_ladder.errors import LadderError
from llm_ladder.finetune import registry
from llm_ladder.ladder import Event, Progress, _store_run, newest_runs, run_rung
from llm_ladder.metrics import build_metric
from llm_ladder.rungs.base import get_rung, needs_of
from llm_ladder.rungs.distill import label_with_teacher, read_inputs
from llm_ladder.session import Session, Status, open_session, open_task


def tuned_rungs() -> list[str]:
    """The rungs `ladder tune` and `ladder curve` train: those that declare they need
    [finetune], less `distill` (its own command: a teacher labels the train split first)."""
    return [n for n in plugins.names("rungs") if "finetune" in needs_of(n) and n != "distill"]


def check_tuned(rung: str, what: str) -> None:
    if rung not in tuned_rungs():
        raise LadderError(f"{what} needs a rung that trains ({', '.join(tuned_rungs())}), "
                          f"not {rung!r}")


def tune_rung(task_dir: Path, rung: str = "lora", *, base: str | None = None,
              skip_bad_rows: bool = False, resume: bool = False, teacher: str | None = None,
              teacher_rung: str | None = None, inputs: Path | None = None,
              on_progress: Progress | None = None, on_event: Event | None = None,
              status: Status | None = None,
              on_session: Callable[[Session], None] | None = None) -> dict[str, Any]:
    """Train (or reuse) `rung`'s adapter, evaluate it on the test split; returns the
    `ladder tune --json` document."""
    if rung != "distill":
        check_tuned(rung, "ladder tune --rung")
    task, _ = open_task(task_dir)
    if task.finetune is None:
        raise LadderError(f"{task.name}: add a [finetune] table to {task_dir}/task.toml to "
                          "fine-tune (an empty table takes the defaults)")
    base_key = base or task.finetune.base
    key = teacher if rung == "distill" else base_key
    if rung == "distill":
        task.finetune = task.finetune.model_copy(update={
            "teacher": teacher, "teacher_rung": teacher_rung or task.finetune.teacher_rung})
    session = open_session(task, key or "default", [rung], skip_bad_rows=skip_bad_rows,
                           status=status)
    if on_session is not None:
        on_session(session)
    prep, store, model = session.prep, session.store, session.model
    assert model is not None
    if rung == "distill" and inputs is not None:
        prep.unlabeled = read_inputs(inputs, {e.id for e in prep.splits.test},
                                     {e.input_text() for e in prep.splits.test})
    doc: dict[str, Any] = {"task": task.name, "rung": rung, "base": base_key}
    if rung == "distill":
        cfg = task.finetune
        t_run = run_rung(prep, cfg.teacher_rung, key, model, store, resume=resume,
                         progress=on_progress)
        doc["teacher_test"] = t_run["summary"]
        labels = label_with_teacher(prep.context(unlabeled=[]), key, cfg.teacher_rung,
                                    prep.splits.train + prep.unlabeled, model)
        doc["teacher_labels"] = {"labelled": len(labels.examples), "asked": labels.asked,
                                 "agreement": labels.agreement, "seconds": labels.seconds}
    run = run_rung(prep, rung, base_key, model, store, resume=resume, progress=on_progress,
                   base_key=base_key, on_event=on_event)
    summary = run["summary"]
    settings = run["config"]["settings"]
    path = Path(settings["adapter_path"])
    registry.record_metrics(path, {"test": {"metric": summary["metric"],
                                            "quality": summary["quality"],
                                            "run_id": run["id"]}})
    manifest = registry.read_manifest(path) or {}
    doc.update(run_id=run["id"], adapter=settings["adapter"], summary=summary,
               training=manifest.get("training"), data_checks=manifest.get("data", {}))
    doc["baselines"] = newest_runs(store, task.name, run["config"]["split"], {run["id"]})
    return doc


def learning_curve(task_dir: Path, rung: str = "lora",
                   fractions: tuple[float, ...] = curve.FRACTIONS, *, base: str | None = None,
                   skip_bad_rows: bool = False, resume: bool = False,
                   on_progress: Progress | None = None, on_event: Event | None = None,
                   status: Status | None = None,
                   on_session: Callable[[Session], None] | None = None) -> dict[str, Any]:
    """Train `rung` on nested `fractions` of the train split (the same recipe; the full
    split reuses the rung's adapter), score each adapter on the dev split (never test),
    fit the curve and store it in the largest adapter's manifest; returns the curve with
    the advice for the task's bar (`ladder curve --json`)."""
    task, _ = open_task(task_dir)
    if task.finetune is None:
        raise LadderError(f"{task.name}: add a [finetune] table to {task_dir}/task.toml to "
                          "fine-tune (an empty table takes the defaults)")
    check_tuned(rung, "a learning curve")
    base_key = base or task.finetune.base or "default"
    session = open_session(task, base_key, [rung], skip_bad_rows=skip_bad_rows,
                           load_model=False, status=status)
    if on_session is not None:
        on_session(session)
    prep, store = session.prep, session.store
    dev = prep.splits.dev
    if not dev:
        raise LadderError(f"{task.name}: the learning curve is scored on the dev split, which "
                          "is empty; set split.dev > 0 in task.toml (the test split is never "
                          "used for it)")
    metric = build_metric(task.metric.name, prep.labels, prep.schema)
    parts = curve.subsets(prep.splits.train, fractions, stratify=prep.labels is not None)
    points: list[dict[str, Any]] = []
    largest = ""
    for frac, subset in zip(sorted(set(fractions)), parts, strict=True):
        pipeline = get_rung(rung).build(prep.context(train=subset, base_key=base_key,
                                                     resume=resume, on_event=on_event))
        assert pipeline.model is not None  # a tuned rung brings its adapted model
        config = {"rung": rung, "settings": pipeline.settings,
                  "params": vars(pipeline.params), "model": pipeline.model.describe(),
                  "metric": task.metric.name, "split": f"{prep.split_hash()}:dev",
                  "slice": "dev", "curve_fraction": frac, "dev_n": len(dev)}
        run_id, summary = _store_run(task, store, pipeline, pipeline.model, dev, metric,
                                     f"{rung}@{frac:g}", base_key, "dev", config,
                                     resume=resume, progress=on_progress)
        store.finish_run(run_id, summary)
        manifest = registry.read_manifest(Path(pipeline.settings["adapter_path"])) or {}
        q = summary["quality"]
        points.append({"fraction": frac, "n": manifest.get("data", {}).get("train",
                                                                          len(subset)),
                       "score": q["value"], "low": q["low"], "high": q["high"],
                       "dev_n": len(dev), "adapter": pipeline.settings["adapter"],
                       "run_id": run_id,
                       "train_s": (manifest.get("training") or {}).get("seconds")})
        largest = pipeline.settings["adapter_path"]
        del pipeline  # free the merged model before the next training
    doc = curve.build(rung, points, task.metric.name, prep.split_hash())
    curve.save(largest, doc)
    return {"task": task.name, **doc, "bar": task.bar, "adapter_path": largest,
            "advice": curve.advice(doc, task.bar)}
