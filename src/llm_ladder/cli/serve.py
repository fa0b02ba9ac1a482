"""`ladder serve`, `logs export`, `deploy`: ship the chosen pipeline.

`serve` runs a stored run's rung (or a rung by name) behind the OpenAI-compatible server
(llm_ladder.serving). `logs export` turns the logged traffic into an examples file for
labelling or distillation (`eval --on-logs` is in cli/run.py). `deploy` writes a bundle for
vLLM or for another `ladder serve` (serving/deploy.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from llm_ladder import plugins
from llm_ladder.cli.common import JsonOpt, TaskOpt, app, err, esc, out, task_store
from llm_ladder.errors import LadderError
from llm_ladder.serving.app import create_app, run_server
from llm_ladder.serving.build import build_served
from llm_ladder.serving.deploy import write_bundle
from llm_ladder.serving.guard import check_bind
from llm_ladder.store import export_rows


def _resolve(store, target: str, model: str | None) -> tuple[str, str, dict[str, Any] | None]:
    """(rung, model key, run or None) for a run id (or unique prefix) or a rung name."""
    if target in plugins.names("rungs"):
        return target, model or "default", None
    run = store.get_run(target)
    if run is None:
        raise LadderError(f"{target!r} is neither a rung ({', '.join(plugins.names('rungs'))}) "
                          f"nor a run id in {store.path}; `ladder runs` lists them")
    return run["rung"], model or run["model"], run


@app.command()
def serve(target: Annotated[str, typer.Argument(metavar="RUN_ID_OR_RUNG",
                                                help="a stored run id or a rung name")],
          task: TaskOpt = Path("."),
          host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
          port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
          model: Annotated[str | None, typer.Option("--model", "-m",
                                                    help="model key (default: the run's)")]
          = None) -> None:
    """Serve a run's pipeline (or a rung's) as an OpenAI-compatible API."""
    task_obj, store = task_store(task)
    cfg = task_obj.serve
    token = os.environ.get(cfg.token_env) or None
    check_bind(host, token, cfg.token_env)  # before anything slow
    rung, model_key, run = _resolve(store, target, model)
    with err.status(f"building {rung} and loading model {model_key}…"):
        served = build_served(task_obj, rung, model_key, run)
    for w in served.warnings:
        err.print(f"[yellow]warning:[/] {esc(w)}", highlight=False)
    app_ = create_app(served, cfg, store if cfg.log_requests else None, token, host)
    shown = f"[{host}]" if ":" in host else host
    err.print(f"serving [bold]{esc(served.name)}[/] (rung {rung}, model {model_key}"
              + (f", run {run['id']}" if run else "") + f") on http://{shown}:{port}/v1 — auth "
              + ("on" if token else f"off (loopback only; set {cfg.token_env} to require it)")
              + (f"; requests logged to {store.path}" if cfg.log_requests else
                 "; request logging off"), highlight=False)
    run_server(app_, host, port, cfg)


logs_app = typer.Typer(no_args_is_help=True, help="Traffic logged by `ladder serve`.")
app.add_typer(logs_app, name="logs")


@logs_app.command("export")
def logs_export(task: TaskOpt = Path("."),
                out_file: Annotated[Path, typer.Option("--out", help="JSONL file to write")]
                = Path("served.jsonl"),
                limit: Annotated[int | None, typer.Option(min=1, help="at most N rows")] = None,
                only_labelled: Annotated[bool, typer.Option(
                    "--only-labelled", help="only rows a person accepted or corrected in "
                                            "`ladder ui`")] = False,
                as_json: JsonOpt = False) -> None:
    """Write the logged traffic as an examples file (served answer = provisional output;
    where a person accepted or corrected it in `ladder ui`, the human output)."""
    _, store = task_store(task)
    rows = export_rows(store.request_logs(limit, status="ok"), store.labels("requests"))
    if only_labelled:
        rows = [r for r in rows if "human_output" in r]
        if not rows:
            raise LadderError(f"no logged answer in {store.path} was accepted or corrected "
                              "yet; label them in `ladder ui` first")
    if not rows:
        raise LadderError(f"no answered requests logged in {store.path}; serve with `ladder "
                          "serve` (serve.log_requests = true) first")
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(out_file.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                   encoding="utf-8")
    tmp.replace(out_file)
    human = sum(1 for r in rows if "human_output" in r)
    doc = {"rows": len(rows), "human_outputs": human, "out": str(out_file)}
    if as_json:
        print(json.dumps(doc))
        return
    out.print(f"wrote {len(rows)} logged request(s) to {esc(str(out_file))}; {human} with a "
              "human output (accepted or corrected in `ladder ui`), the others are what was "
              "served, not checked answers: review them before training on them",
              highlight=False)


@app.command()
def deploy(run_id: Annotated[str, typer.Argument(help="the stored run to ship")],
           out_dir: Annotated[Path, typer.Option("--out", help="bundle folder to create")],
           task: TaskOpt = Path("."),
           target: Annotated[str, typer.Option(help="vllm or ladder")] = "vllm",
           base: Annotated[str | None, typer.Option(help="the base model as vLLM loads it "
                                                         "(a Hugging Face id or a path)")]
           = None,
           as_json: JsonOpt = False) -> None:
    """Write a deployment bundle for a run: prompt template, pinned sampling, adapter,
    vector-store settings, serve.sh and README."""
    task_obj, store = task_store(task)
    doc = write_bundle(task_obj, store, run_id, out_dir, target, base)  # type: ignore[arg-type]
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    out.print(f"bundle for run {doc['run_id']} ({doc['rung']}) written to {esc(str(out_dir))}: "
              + ", ".join(doc["files"]), highlight=False)
    for note in doc["notes"]:
        out.print(f"  · {esc(note)}", highlight=False)
