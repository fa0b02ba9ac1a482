"""What `ladder serve` runs: a rung's pipeline built the way `ladder run` builds it, and the
model it calls.

A stored run with an adapter is served with exactly that adapter: its prompt rung is built
and the adapter loaded on the base (a `full` run: its whole tuned model folder), so serving
never trains. A rung that stores what it chose
(`from_run`: the optimized prompt) is rebuilt from the run's settings, so serving never
searches again. Settings that drifted since the run (data or task changed) are reported as
warnings; a different adapter is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llm_ladder.errors import LadderError
from llm_ladder.models import build_model
from llm_ladder.models.base import ChatModel
from llm_ladder.rungs.base import Pipeline, get_rung
from llm_ladder.rungs.finetune import adapter_model, tuned_model
from llm_ladder.serving.app import Served
from llm_ladder.serving.guard import load_schema
from llm_ladder.session import Prepared, open_session
from llm_ladder.task import Task


def build_pipeline(task: Task, rung: str, embedder: Any = None, retriever: Any = None,
                   settings: dict[str, Any] | None = None) -> tuple[Pipeline, Prepared]:
    """The rung's pipeline built the way `ladder run` builds it (train split for shots, the
    index for the rungs that need it), and the prepared data it was built from. `retriever`
    replaces opening the index (deploy only needs the prompt's shape). With a stored run's
    `settings`, a rung with `from_run` rebuilds exactly what that run measured."""
    session = open_session(task, rungs=[rung], skip_bad_rows=True, embedder=embedder,
                           retriever=retriever, load_model=False)
    obj, ctx = get_rung(rung), session.prep.context()
    from_run = getattr(obj, "from_run", None)
    pinned = from_run(ctx, settings) if from_run is not None and settings else None
    return pinned or obj.build(ctx), session.prep


def prompt_rung(rung: str) -> str:
    """The prompting rung a fine-tuned rung wraps (its prompt, without the training)."""
    return getattr(get_rung(rung), "prompt_rung", None) or "zero-shot"


def build_served(task: Task, rung: str, model_key: str = "default",
                 run: dict[str, Any] | None = None, model: ChatModel | None = None,
                 embedder: Any = None) -> Served:
    """The pipeline and the model it calls (the rung's own when it brings one, else `model`,
    else the task's `model_key`)."""
    settings = ((run or {}).get("config") or {}).get("settings") or {}
    if settings.get("adapter_path"):
        path = Path(settings["adapter_path"])
        full = "full" in settings  # a full fine-tune: a whole model folder, not an adapter
        marker = "config.json" if full else "adapter_config.json"
        if not (path / marker).is_file():
            raise LadderError(f"{path}: the run's {'model' if full else 'adapter'} "
                              f"{settings.get('adapter')!r} is gone (no {marker}); train it "
                              "again with its rung")
        pipeline, prep = build_pipeline(task, prompt_rung(rung), embedder)
        pipeline.rung = rung
        base_key = settings.get("base_key") or "default"
        pipeline.model = (tuned_model(task, base_key, str(path)) if full
                          else adapter_model(task, base_key, str(path)))
        pipeline.settings = {**pipeline.settings, **{k: settings[k] for k in settings
                                                     if k not in pipeline.settings}}
    else:
        pipeline, prep = build_pipeline(task, rung, embedder, settings=settings)
    warnings = _compare(run, pipeline) if run else []
    chosen = pipeline.model or model or build_model(task.model(model_key))
    schema = load_schema(task.path(task.serve.output_schema)) if task.serve.output_schema \
        else None
    return Served(pipeline, chosen, task.name, rung, model_key, run["id"] if run else None,
                  task.serve.model_name or "", schema, warnings, prep)


def _compare(run: dict[str, Any], pipeline: Pipeline) -> list[str]:
    """Refuse a different adapter than the run's; warn about other drifted settings."""
    stored = (run.get("config") or {}).get("settings") or {}
    now = pipeline.settings
    if stored.get("adapter") != now.get("adapter"):
        raise LadderError(f"run {run['id']} used adapter {stored.get('adapter')!r} but the rung "
                          f"{run['rung']!r} now builds {now.get('adapter')!r}; serve the rung "
                          "by name or restore that adapter")
    drift = sorted(k for k in set(stored) | set(now)
                   if json.dumps(stored.get(k), sort_keys=True, default=str)
                   != json.dumps(now.get(k), sort_keys=True, default=str))
    return [f"the pipeline's {k!r} differs from run {run['id']}'s (data or task changed "
            "since the run)" for k in drift]
