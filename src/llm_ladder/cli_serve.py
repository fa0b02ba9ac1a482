"""`ladder serve`, `logs export`, `deploy`, and `eval --on-logs`: ship the chosen pipeline.

`serve` runs a stored run's rung (or a rung by name) behind the OpenAI-compatible server in
serve.py. `logs export` turns the logged traffic into an examples file for labelling or
distillation. `eval --on-logs` runs a rung on the logged inputs and scores its agreement
with what was served: there are no human references in traffic, so it measures drift and
the production token/latency/cost profile, not correctness. `deploy` writes a bundle for
vLLM or for another `ladder serve`. Deliberately skipped: container images, cloud deploys.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from llm_ladder.cli import _esc, _store, _table, app, err, out
from llm_ladder.errors import LadderError

TaskOpt = Annotated[Path, typer.Option("--task", help="task folder")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout")]
# the embedded model's Hugging Face id, for engines that load weights themselves
HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
           "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
           "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def _resolve(store, target: str, model: str | None) -> tuple[str, str, dict[str, Any] | None]:
    """(rung, model key, run or None) for a run id (or unique prefix) or a rung name."""
    from llm_ladder import plugins

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
    from llm_ladder.serve import build_served, create_app, run_server
    from llm_ladder.serve_guard import check_bind

    task_obj, store = _store(task)
    cfg = task_obj.serve
    token = os.environ.get(cfg.token_env) or None
    check_bind(host, token, cfg.token_env)  # before anything slow
    rung, model_key, run = _resolve(store, target, model)
    with err.status(f"building {rung} and loading model {model_key}…"):
        served = build_served(task_obj, rung, model_key, run)
    for w in served.warnings:
        err.print(f"[yellow]warning:[/] {_esc(w)}", highlight=False)
    app_ = create_app(served, cfg, store if cfg.log_requests else None, token)
    shown = f"[{host}]" if ":" in host else host
    err.print(f"serving [bold]{_esc(served.name)}[/] (rung {rung}, model {model_key}"
              + (f", run {run['id']}" if run else "") + f") on http://{shown}:{port}/v1 — auth "
              + ("on" if token else f"off (loopback only; set {cfg.token_env} to require it)")
              + (f"; requests logged to {store.path}" if cfg.log_requests else
                 "; request logging off"), highlight=False)
    run_server(app_, host, port, cfg)


logs_app = typer.Typer(no_args_is_help=True, help="Traffic logged by `ladder serve`.")
app.add_typer(logs_app, name="logs")


def export_rows(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Logged requests as examples: messages input, the served answer as provisional output."""
    rows = []
    for log in logs:
        if not log["response"]:
            continue
        rows.append({"id": log["id"], "input": log["request"], "output": log["response"],
                     "meta": {"log_id": log["id"],
                              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                    time.gmtime(log["created"])),
                              "served_rung": log["rung"], "served_model": log["model"],
                              "run_id": log["run_id"], "provisional": True,
                              "citations": log["citations"]}})
    return rows


@logs_app.command("export")
def logs_export(task: TaskOpt = Path("."),
                out_file: Annotated[Path, typer.Option("--out", help="JSONL file to write")]
                = Path("served.jsonl"),
                limit: Annotated[int | None, typer.Option(min=1, help="at most N rows")] = None,
                as_json: JsonOpt = False) -> None:
    """Write the logged traffic as an examples file (served answer = provisional output)."""
    _, store = _store(task)
    rows = export_rows(store.request_logs(limit, status="ok"))
    if not rows:
        raise LadderError(f"no answered requests logged in {store.path}; serve with `ladder "
                          "serve` (serve.log_requests = true) first")
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(out_file.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                   encoding="utf-8")
    tmp.replace(out_file)
    doc = {"rows": len(rows), "out": str(out_file)}
    if as_json:
        print(json.dumps(doc))
        return
    out.print(f"wrote {len(rows)} logged request(s) to {_esc(str(out_file))}; the outputs are "
              "what was served, not checked answers: review them before training on them",
              highlight=False)


ON_LOGS_NOTE = ("scored against the answers that were served, not human references: this is "
                "agreement with production (drift), plus tokens, latency and cost on the real "
                "input distribution")


def eval_on_logs(task_dir: Path, rung: str, model_key: str, as_json: bool) -> dict[str, Any]:
    """`ladder eval --on-logs`: run `rung` on the logged inputs and compare with what was
    served. Stored as a run on split "logs"."""
    from llm_ladder.costs import price_for
    from llm_ladder.data import Example
    from llm_ladder.evaluate import evaluate, package_versions, summarize
    from llm_ladder.metrics import build_metric, match_label
    from llm_ladder.serve import build_served

    task, store = _store(task_dir)
    logs = store.request_logs(status="ok")
    logs = [log for log in logs if log["response"]]
    if not logs:
        raise LadderError(f"no answered requests logged in {store.path}; serve with `ladder "
                          "serve` (serve.log_requests = true) first")
    with err.status(f"building {rung} and loading model {model_key}…"):
        served = build_served(task, rung, model_key)
    labels, schema = served.prep.labels, served.prep.schema
    examples = []
    for log in logs:
        ref = log["response"]
        if labels:  # compare labels with labels: the served text names one, or stays as is
            ref = match_label(ref, labels) or ref.strip()
        examples.append(Example(log["id"], log["request"], ref, {"served_rung": log["rung"]}))
    if labels:  # a served answer that names no label is a class of its own here
        labels = labels + sorted({e.output for e in examples} - set(labels))
    metric = build_metric(task.metric.name, labels, schema)
    pipeline, model = served.pipeline, served.model
    config = {"rung": rung, "settings": pipeline.settings, "params": vars(pipeline.params),
              "model": model.describe(), "metric": task.metric.name, "split": "logs",
              "logs": {"n": len(logs), "first": logs[0]["id"], "last": logs[-1]["id"]},
              "reference": "served answers"}
    run_id = store.create_run(task.name, rung, model_key, "logs", config, package_versions())
    evaluate(pipeline, model, examples, metric, store, run_id, None,
             getattr(model, "batch_size", 8))
    price, source = price_for(task, model_key)
    summary = summarize(store.predictions(run_id), metric, price, source)
    summary.update(run_id=run_id, rung=rung, model=model_key, reference="served answers",
                   note=ON_LOGS_NOTE)
    store.finish_run(run_id, summary)
    served_by: dict[str, int] = {}
    for log in logs:
        served_by[log["rung"]] = served_by.get(log["rung"], 0) + 1
    doc = {"task": task.name, "on_logs": True, "logged_requests": len(logs),
           "served_by": served_by, "metric": task.metric.name, "note": ON_LOGS_NOTE,
           "rungs": [summary]}
    if as_json:
        print(json.dumps(doc, indent=2))
        return doc
    out.print(_table([summary], f"{task.name} — agreement ({task.metric.name}) with the served "
                                f"answers on {len(logs)} logged requests, model {model_key}"))
    out.print(f"[yellow]note:[/] {ON_LOGS_NOTE}. Served by: "
              + ", ".join(f"{k} ({v})" for k, v in served_by.items()), highlight=False)
    out.print(f"[dim]run {run_id} stored in {store.path}[/]")
    return doc


# ---- deploy ----------------------------------------------------------------------------
INPUT = "{{input}}"


class _NoIndex:
    """Stands in for the index: the template shows the prompt's shape, it retrieves nothing."""

    def search(self, *_: Any, **__: Any) -> list[Any]:
        return []


def _template(task, run: dict[str, Any]) -> dict[str, Any]:
    """The prompt the run's rung builds, with a placeholder for the user's input."""
    from llm_ladder.serve import build_pipeline, prompt_rung

    settings = run["config"].get("settings") or {}
    # a fine-tuned rung's prompt is its prompt rung's (building it would train)
    rung = prompt_rung(run["rung"]) if settings.get("adapter") else run["rung"]
    pipeline, _ = build_pipeline(task, rung, retriever=_NoIndex())
    doc: dict[str, Any] = {"rung": run["rung"], "run_id": run["id"],
                           "system": settings.get("system"),
                           "params": {k: v for k, v in vars(pipeline.params).items()},
                           "parse": getattr(pipeline.parse, "__name__", "custom"),
                           "settings": settings}
    if pipeline.retrieve is not None:
        sample = [{"n": 1, "source": "{{source}}", "position": 0, "text": "{{chunk}}"}]
        doc["messages"] = pipeline.build_messages(INPUT, sample)
        doc["retrieval"] = "the top-k chunks replace the sample document, numbered [1]..[k]"
    else:
        doc["messages"] = pipeline.build_messages(INPUT)
    if run["rung"] in ("few-shot-nearest", "few-shot-rag"):
        doc["shots"] = ("chosen per input (the k train examples nearest to it); the messages "
                        "show those chosen for the placeholder: serve this rung with "
                        "`ladder serve` in front of the engine")
    return doc


def _env_names(task) -> list[str]:
    """Names of the environment variables the deployment reads (never their values)."""
    names = {task.serve.token_env}
    for m in task.models.values():
        if m.api_key_env:
            names.add(m.api_key_env)
    c = task.corpus
    if c is not None:
        names |= {n for n in (c.pg_url_env, c.embedder_api_key_env) if n}
        for s in c.sql:
            names |= set(re.findall(r"\$\{(\w+)\}", s.url))
    return sorted(names)


def _vector_store(task, run: dict[str, Any]) -> dict[str, Any] | None:
    c = task.corpus
    if c is None:
        return None
    return {"store": c.store, "collection": c.collection, "pg_url_env": c.pg_url_env,
            "embedder": c.embedder, "embedder_base_url": c.embedder_base_url,
            "embedder_api_key_env": c.embedder_api_key_env, "k": task.retrieval.k,
            "mode": task.retrieval.mode, "index": run["config"].get("index")}


def _export_adapter(task, adapter_id: str, dest: Path) -> tuple[int, dict[str, Any]]:
    try:
        from llm_ladder.finetune.registry import export_adapter
    except ImportError:
        raise LadderError(f"the run uses adapter {adapter_id!r} but llm_ladder.finetune is "
                          "not installed; install the 'finetune' extra") from None
    folder = export_adapter(task.state_dir / "adapters", adapter_id, dest, merge=False)
    try:
        conf = json.loads((Path(folder) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise LadderError(f"{folder}: the exported adapter has no readable "
                          f"adapter_config.json: {e}") from None
    return int(conf.get("r") or 8), conf


def _lora_rank(r: int) -> int:
    fits = [x for x in VLLM_LORA_RANKS if x >= r]
    if not fits:
        raise LadderError(f"adapter rank {r} is over vLLM's maximum {VLLM_LORA_RANKS[-1]}")
    return fits[0]


def _vllm_command(base: str, name: str, params: dict[str, Any], adapter: bool, rank: int,
                  chat_template: str | None) -> list[str]:
    override = {"temperature": params["temperature"], "top_p": 1.0,
                "max_new_tokens": params["max_tokens"], "repetition_penalty": 1.0}
    cmd = ["vllm", "serve", base, "--host", "127.0.0.1", "--port", "${PORT:-8000}",
           "--generation-config", "vllm",
           "--override-generation-config", json.dumps(override, sort_keys=True)]
    if adapter:
        cmd += ["--enable-lora", "--lora-modules", f"{name}=./adapter",
                "--max-lora-rank", str(rank)]
    else:
        cmd += ["--served-model-name", name]
    if chat_template:
        cmd += ["--chat-template", chat_template]
    return cmd


def _sh(cmd: list[str]) -> str:
    parts = [c if c == "${PORT:-8000}" else shlex.quote(c) for c in cmd]
    return " \\\n  ".join([" ".join(parts[:3])] + [" ".join(parts[i:i + 2])
                                                   for i in range(3, len(parts), 2)])


def _copy_task(task, dest: Path, adapter_id: str | None) -> list[str]:
    """task.toml and the files it names (data, schemas, corpus folders inside the task)."""
    notes = []
    dest.mkdir(parents=True)
    shutil.copy2(task.root / "task.toml", dest / "task.toml")
    rels = list(task.data.examples) + [p for p in (task.data.test, task.metric.schema_file,
                                                   task.serve.output_schema) if p]
    if task.corpus:
        rels += task.corpus.paths
        if task.corpus.sql or task.corpus.urls:
            notes.append("SQL and URL corpus sources are read again by `ladder index`")
    for rel in rels:
        src = task.path(rel)
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            notes.append(f"{rel}: outside the task folder, not copied")
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, dirs_exist_ok=True)
        elif src.is_file():
            shutil.copy2(src, target)
        else:
            notes.append(f"{rel}: not found, not copied")
    if adapter_id:
        src = task.state_dir / "adapters" / adapter_id
        if src.is_dir():
            shutil.copytree(src, dest / ".ladder" / "adapters" / adapter_id)
        else:
            notes.append(f"adapter {adapter_id}: not found under {src.parent}")
    return notes


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
    if target not in ("vllm", "ladder"):
        raise LadderError(f"--target must be vllm or ladder, not {target!r}")
    task_obj, store = _store(task)
    run = store.get_run(run_id)
    if run is None:
        raise LadderError(f"no run {run_id!r} in {store.path}; `ladder runs` lists them")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise LadderError(f"{out_dir}: exists and is not empty; choose a new --out folder")
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        doc = _write_bundle(task_obj, run, tmp, target, base)  # type: ignore[arg-type]
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)  # a half-written bundle never has the final name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    doc["out"] = str(out_dir)
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    out.print(f"bundle for run {run['id']} ({run['rung']}) written to {_esc(str(out_dir))}: "
              + ", ".join(doc["files"]), highlight=False)
    for note in doc["notes"]:
        out.print(f"  · {_esc(note)}", highlight=False)


def _write_bundle(task, run: dict[str, Any], dest: Path, target: Literal["vllm", "ladder"],
                  base: str | None) -> dict[str, Any]:
    settings = run["config"].get("settings") or {}
    adapter_id = settings.get("adapter")
    template = _template(task, run)
    params = template["params"]
    name = task.serve.model_name or f"{task.name}-{run['rung']}".replace("/", "-")
    notes: list[str] = []
    files = ["manifest.json", "prompt.json", "generation.json", "env.example", "serve.sh",
             "README.md"]
    (dest / "prompt.json").write_text(json.dumps(template, indent=2, ensure_ascii=False))
    gen = {"temperature": params["temperature"], "max_tokens": params["max_tokens"],
           "top_p": 1.0, "stop": params.get("stop"),
           "note": "pinned: what the run was evaluated with; send these with every request"}
    (dest / "generation.json").write_text(json.dumps(gen, indent=2))
    vector = _vector_store(task, run)
    if vector:
        (dest / "vector_store.json").write_text(json.dumps(vector, indent=2))
        files.append("vector_store.json")
    envs = _env_names(task) + (["VLLM_API_KEY"] if target == "vllm" else [])
    (dest / "env.example").write_text(
        "# environment variables this deployment reads; fill in the values where you run it\n"
        + "".join(f"{n}=\n" for n in sorted(set(envs))))
    rank, adapter_conf = 0, {}
    if adapter_id:
        rank, adapter_conf = _export_adapter(task, adapter_id, dest / "adapter")
        files.append("adapter/")
    model_desc = run["config"].get("model") or {}
    base_model = (base or _hub_id(adapter_conf.get("base_model_name_or_path"))
                  or HUB_IDS.get(str(model_desc.get("name", "")).lower())
                  or str(model_desc.get("name") or "BASE_MODEL"))
    if target == "vllm":
        template_file = next((f"./adapter/{f}" for f in ("chat_template.jinja",)
                              if (dest / "adapter" / f).is_file()), None)
        cmd = _vllm_command(base_model, name, params, bool(adapter_id), _lora_rank(rank)
                            if adapter_id else 0, template_file)
        script = _sh(cmd)
        model_snippet = (f'[models.vllm]\nbackend = "openai"\nname = "{name}"\n'
                         'base_url = "http://127.0.0.1:8000/v1"\napi_key_env = "VLLM_API_KEY"\n')
        (dest / "models.vllm.toml").write_text(model_snippet)
        files.append("models.vllm.toml")
        if base_model == "BASE_MODEL":
            notes.append("could not tell the base model's id: pass --base")
    else:
        notes += _copy_task(task, dest / "task", adapter_id)
        files.append("task/")
        steps = []
        if task.corpus:
            steps.append("ladder index ./task")
        steps.append(f"exec ladder serve {shlex.quote(run['rung'])} --task ./task --model "
                     f"{shlex.quote(run['model'])} --host 127.0.0.1 --port \"${{PORT:-8000}}\"")
        script = "\n".join(steps)
    (dest / "serve.sh").write_text("#!/bin/sh\n# written by `ladder deploy` for run "
                                   f"{run['id']} ({run['rung']}, target {target})\nset -eu\n"
                                   'cd "$(dirname "$0")"\n' + script + "\n")
    (dest / "serve.sh").chmod(0o755)
    manifest = {"run_id": run["id"], "task": task.name, "rung": run["rung"],
                "model": run["model"], "target": target, "served_name": name,
                "base_model": base_model if target == "vllm" else None,
                "adapter": adapter_id, "max_lora_rank": _lora_rank(rank) if adapter_id else None,
                "quality": ((run.get("summary") or {}).get("quality") or {}),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "env": sorted(set(envs)), "files": files, "notes": notes}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (dest / "README.md").write_text(_readme(task, run, target, name, base_model, adapter_id,
                                            template, vector, envs, notes))
    return manifest


def _hub_id(value: Any) -> str | None:
    """A Hugging Face id like org/name, not a local path."""
    if not isinstance(value, str) or value.startswith(("/", ".", "~")) or value.count("/") != 1:
        return None
    return None if Path(value).exists() else value


def _readme(task, run, target, name, base_model, adapter_id, template, vector, envs,
            notes) -> str:
    q = (run.get("summary") or {}).get("quality") or {}
    score = (f"{q['value']:.3f} [{q['low']:.3f}, {q['high']:.3f}]"
             if q.get("value") is not None else "not scored")
    lines = [f"# {task.name}: {run['rung']} (run {run['id']})", "",
             f"Written by `ladder deploy {run['id']} --target {target}`. Quality on the test "
             f"split when the run was made: {score} ({task.metric.name}).", "",
             "| file | what |", "| --- | --- |",
             "| `serve.sh` | starts the server on 127.0.0.1 (`PORT` env var, default 8000) |",
             "| `prompt.json` | the rung's messages with `{{input}}` for the user's input, the "
             "system prompt, settings and generation parameters |",
             "| `generation.json` | the pinned sampling settings the run was evaluated with |",
             "| `env.example` | the environment variables read (names only, no values) |",
             "| `manifest.json` | run, rung, model, adapter, files |"]
    if vector:
        lines.append("| `vector_store.json` | the corpus index settings (store, collection, "
                     "embedder, `pg_url_env`) |")
    if adapter_id:
        lines.append(f"| `adapter/` | the PEFT LoRA adapter `{adapter_id}` with its chat "
                     "template |")
    lines.append("")
    if target == "vllm":
        lines += [
            f"`serve.sh` runs vLLM on `{base_model}`"
            + (f" with the adapter as LoRA module `{name}`" if adapter_id else
               f" as `{name}`") + ". `--generation-config vllm` stops vLLM from applying the "
            "model's `generation_config.json`, and `--override-generation-config` pins the "
            "evaluated sampling settings as the defaults. Set `VLLM_API_KEY` to require a "
            "bearer token.", "",
            "vLLM serves the weights only. The prompt (system prompt, shots, retrieved "
            "documents) and the guards are built by llm-ladder: add `models.vllm.toml` to the "
            "task's `task.toml` and run `ladder serve "
            f"{run['rung']} --task TASK_DIR --model vllm` in front of it"
            + (" (a fine-tuned rung brings its own model: point its adapter at the vLLM "
               "module instead)" if adapter_id else "") + ".", ""]
    else:
        lines += ["`task/` is a copy of the task (task file, data, corpus, schemas"
                  + (", adapter" if adapter_id else "") + "). `serve.sh` "
                  + ("builds the index, then " if vector else "")
                  + "runs `ladder serve` on it with the `[serve]` settings of its task.toml.",
                  ""]
    lines += ["Environment variables (set them where you run this): "
              + ", ".join(f"`{e}`" for e in sorted(set(envs))) + ".", ""]
    if notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)
