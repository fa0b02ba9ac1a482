"""Fine-tuning one rung as a library call (`ladder tune` and `ladder distill`).

`tune_rung` trains (or reuses) the rung's adapter, evaluates it on the test split, records
the test metrics in the adapter's manifest, and returns them beside the newest stored run of
every other rung. For `distill` the teacher is first scored on the test split and then labels
the train inputs (plus unlabelled `inputs`, never test inputs).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from llm_ladder.errors import LadderError
from llm_ladder.finetune import registry
from llm_ladder.ladder import Event, Progress, newest_runs, run_rung
from llm_ladder.rungs.distill import label_with_teacher, read_inputs
from llm_ladder.session import Session, Status, open_session, open_task


def tune_rung(task_dir: Path, rung: str = "lora", *, base: str | None = None,
              skip_bad_rows: bool = False, resume: bool = False, teacher: str | None = None,
              teacher_rung: str | None = None, inputs: Path | None = None,
              on_progress: Progress | None = None, on_event: Event | None = None,
              status: Status | None = None,
              on_session: Callable[[Session], None] | None = None) -> dict[str, Any]:
    """Train (or reuse) `rung`'s adapter, evaluate it on the test split; returns the
    `ladder tune --json` document."""
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
