"""`ladder tune`, `distill`, `adapters`, `export`: the fine-tuning commands.

`tune` trains a LoRA adapter on the train split (dev for early stopping) with a progress bar
(step, loss, train tokens/s, ETA), then evaluates it on the test split and shows it beside
the latest stored runs of the other rungs. `distill` first scores the teacher on the test
split and labels the train inputs with it, then tunes the student on those labels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from llm_ladder.cli import (
    JsonOpt,
    ResumeOpt,
    SkipOpt,
    TaskDir,
    _esc,
    _fmt,
    _prepare,
    _progress,
    _store,
    _table,
    app,
    err,
    out,
)
from llm_ladder.errors import LadderError

BaseOpt = Annotated[str | None, typer.Option(
    "--base", help="model key to tune (default finetune.base); a new base = re-tuning")]


def _train_events(bar: Progress, loss_in_label: bool = False):
    """An on_event callback that drives a training progress bar and prints notices.

    With `loss_in_label` (a plain bar, as `ladder run` shows) the loss goes in the label."""
    state: dict[str, Any] = {}

    def on_event(ev: dict[str, Any]) -> None:
        if "warning" in ev:
            err.print(f"[yellow]data check:[/] {_esc(ev['warning'])}", highlight=False)
        elif "reused" in ev:
            err.print(f"adapter {ev['reused']} already trained on this data, base and config; "
                      "reusing it")
        elif "resumed" in ev:
            err.print(f"resuming from step {ev['resumed']} ({ev['checkpoint']})")
        elif "start" in ev:
            state.pop("tid", None)  # a new training gets a bar of its own
            err.print(f"training {ev['start']} adapter {ev['adapter']} on {ev['train']} train "
                      f"examples (dev {ev['dev']})")
        elif "step" in ev:
            if "tid" not in state:
                state["tid"] = bar.add_task("training", total=ev["total"], loss=0.0, tps=0.0,
                                            dev="")
            dev = f" dev {ev['dev_loss']:.3f}" if "dev_loss" in ev else ""
            if not err.is_terminal and (dev or ev["step"] == ev["total"]):
                # no live bar in a log file: one line at every dev check instead
                err.print(f"step {ev['step']}/{ev['total']} loss {ev['loss']:.3f}{dev} "
                          f"{ev['tokens_per_s']:.0f} tok/s", highlight=False)
            bar.update(state["tid"], completed=ev["step"], total=ev["total"], loss=ev["loss"],
                       tps=ev["tokens_per_s"], dev=dev or bar.tasks[state["tid"]].fields["dev"])
            if loss_in_label:
                bar.update(state["tid"], description=f"training {ev['loss']:.3f}")

    return on_event


def _train_bar() -> Progress:
    return Progress(TextColumn("{task.description:<10}"), BarColumn(),
                    TextColumn("step {task.completed}/{task.total}"),
                    TextColumn("loss {task.fields[loss]:.3f}{task.fields[dev]}"),
                    TextColumn("{task.fields[tps]:.0f} tok/s"), TimeRemainingColumn(),
                    console=err)


def _baselines(store: Any, task_name: str, split: str, exclude: set[str]) -> list[dict]:
    """The newest finished run of every other rung on the same test split."""
    seen, rows = set(), []
    for r in store.list_runs(500):
        s = r.get("summary")
        if (r["task"] != task_name or r["status"] != "done" or not s or r["rung"] in seen
                or r["id"] in exclude or (r.get("config") or {}).get("split") != split):
            continue
        seen.add(r["rung"])
        rows.append(s)
    return rows


def _tune(task_dir: Path, rung: str, base: str | None, skip: bool, resume: bool,
          as_json: bool, teacher: str | None = None, teacher_rung: str | None = None,
          inputs: Path | None = None) -> dict[str, Any]:
    from llm_ladder.finetune import registry
    from llm_ladder.finetune.distill import label_with_teacher
    from llm_ladder.ladder import run_rung
    from llm_ladder.rungs import RungContext

    task, _ = _store(task_dir)
    if task.finetune is None:
        raise LadderError(f"{task.name}: add a [finetune] table to {task_dir}/task.toml to "
                          "fine-tune (an empty table takes the defaults)")
    base_key = base or task.finetune.base
    key = teacher if rung == "distill" else base_key
    task, store, prep, model = _prepare(task_dir, skip, key, [rung])
    if rung == "distill":
        task.finetune = task.finetune.model_copy(update={
            "teacher": teacher, "teacher_rung": teacher_rung or task.finetune.teacher_rung})
        if inputs is not None:
            prep.unlabeled = _read_inputs(inputs, {e.id for e in prep.splits.test},
                                          {e.input_text() for e in prep.splits.test})
    doc: dict[str, Any] = {"task": task.name, "rung": rung, "base": base_key}
    with _progress() as bar:
        def progress(total: int, label: str):
            tid = bar.add_task(label, total=total)
            return lambda n: bar.advance(tid, n)

        if rung == "distill":
            cfg = task.finetune
            t_run = run_rung(prep, cfg.teacher_rung, key, model, store, resume, progress)
            doc["teacher_test"] = t_run["summary"]
            ctx = RungContext(task, prep.splits.train, prep.labels, prep.schema,
                              prep.retriever, dev=prep.splits.dev)
            labels = label_with_teacher(ctx, key, cfg.teacher_rung,
                                        prep.splits.train + prep.unlabeled, model)
            doc["teacher_labels"] = {"labelled": len(labels.examples), "asked": labels.asked,
                                     "agreement": labels.agreement,
                                     "seconds": labels.seconds}
        tbar = _train_bar()
        with tbar:
            run = run_rung(prep, rung, base_key, model, store, resume, progress,
                           base_key=base_key, on_event=_train_events(tbar))
    summary = run["summary"]
    settings = run["config"]["settings"]
    path = Path(settings["adapter_path"])
    registry.record_metrics(path, {"test": {"metric": summary["metric"],
                                            "quality": summary["quality"],
                                            "run_id": run["id"]}})
    manifest = registry.read_manifest(path) or {}
    doc.update(run_id=run["id"], adapter=settings["adapter"], summary=summary,
               training=manifest.get("training"), data_checks=manifest.get("data", {}))
    baselines = _baselines(store, task.name, run["config"]["split"], {run["id"]})
    doc["baselines"] = baselines
    if as_json:
        print(json.dumps(doc, indent=2, default=str))
        return doc
    tr = manifest.get("training") or {}
    out.print(f"adapter [bold]{settings['adapter']}[/] ({manifest.get('size_bytes', 0) / 1e6:.1f}"
              f" MB): {tr.get('steps')} steps in {tr.get('seconds', 0) / 60:.1f} min, "
              f"{tr.get('tokens_per_s', 0):.0f} train tok/s, best dev loss "
              f"{_fmt(tr.get('best_dev_loss'))} at step {tr.get('best_step')}"
              + (" (stopped early)" if tr.get("stopped_early") else ""))
    if "teacher_labels" in doc:
        a = doc["teacher_labels"]["agreement"]
        out.print(f"teacher {teacher} ({task.finetune.teacher_rung}) labelled "
                  f"{doc['teacher_labels']['labelled']} inputs; agreement with the references "
                  f"on {a['with_reference']} of them: {_fmt(a['mean'])}")
    rows = ([doc["teacher_test"] | {"rung": f"teacher: {doc['teacher_test']['rung']}"}]
            if "teacher_test" in doc else []) + baselines + [summary]
    out.print(_table(rows, f"{task.name} — {summary['metric']} on {summary['n']} test "
                           "examples (other rungs: their newest stored run)"))
    one = summary.get("one_time") or {}
    out.print(f"one-time cost: {one.get('what', '')}" + (
        f", ${one['usd']:.4f} at the task's price" if one.get("usd") is not None else ""))
    return doc


def _read_inputs(path: Path, test_ids: set[str], test_texts: set[str]) -> list:
    """Unlabelled inputs for the teacher (JSONL: `input` text or messages, or `messages` as
    `ladder logs export` writes them; any output is ignored). Test inputs are refused."""
    from llm_ladder.data import Example, check_messages

    if not path.is_file():
        raise LadderError(f"{path}: file not found")
    out, problems = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("a row must be a JSON object")
            if "input" in row:
                inp = row["input"] if isinstance(row["input"], str) \
                    else check_messages(row["input"], "input")
                if isinstance(inp, str) and not inp.strip():
                    raise ValueError("input: is empty")
            elif "messages" in row:
                msgs = check_messages(row["messages"])
                while msgs and msgs[-1]["role"] == "assistant":
                    msgs = msgs[:-1]  # the served answer is not a label
                if not msgs:
                    raise ValueError("messages: no user turn")
                inp = msgs
            else:
                raise ValueError("needs an 'input' or 'messages' field")
        except Exception as e:  # noqa: BLE001 - every bad row is reported, with its line
            where = getattr(e, "field", "")
            problems.append(f"{path}:{n}: {where + ': ' if where else ''}{e}")
            continue
        out.append(Example(f"unlabeled:{row.get('id', n)}", inp, "", {}, f"{path}:{n}"))
    if problems:
        raise LadderError(f"{len(problems)} bad row(s) in {path}:\n" + "\n".join(problems[:20]))
    clash = [e.id for e in out if e.id.split(":", 1)[1] in test_ids
             or e.input_text() in test_texts]
    if clash:
        raise LadderError(f"{path}: {len(clash)} input(s) are in the test split and must not "
                          f"be labelled for training: {', '.join(clash[:5])}")
    return out


@app.command()
def tune(task_dir: TaskDir, base: BaseOpt = None,
         rung: Annotated[str, typer.Option(help="lora, lora-prompt or lora-rag")] = "lora",
         skip_bad_rows: SkipOpt = False,
         resume: Annotated[bool, typer.Option("--resume", help="continue a killed training "
                                              "from its newest complete checkpoint")] = False,
         as_json: JsonOpt = False) -> None:
    """LoRA fine-tune the task's small model on the train split, then test it."""
    if rung not in ("lora", "lora-prompt", "lora-rag"):
        raise LadderError(f"--rung must be lora, lora-prompt or lora-rag, not {rung!r}")
    _tune(task_dir, rung, base, skip_bad_rows, resume, as_json)


@app.command()
def distill(task_dir: TaskDir,
            teacher: Annotated[str, typer.Option(help="model key of the teacher in task.toml")],
            teacher_rung: Annotated[str | None, typer.Option(
                help="how the teacher is prompted (default finetune.teacher_rung)")] = None,
            inputs: Annotated[Path | None, typer.Option(
                help="extra unlabelled inputs (JSONL) for the teacher to label")] = None,
            base: BaseOpt = None, skip_bad_rows: SkipOpt = False, resume: ResumeOpt = False,
            as_json: JsonOpt = False) -> None:
    """A teacher labels the train inputs; the small model is LoRA-tuned on its answers."""
    _tune(task_dir, "distill", base, skip_bad_rows, resume, as_json, teacher, teacher_rung,
          inputs)


@app.command()
def adapters(task_dir: TaskDir, as_json: JsonOpt = False) -> None:
    """List trained adapters: base model, data, config, metrics, size."""
    from llm_ladder.finetune.registry import adapters_dir, list_adapters

    task, _ = _store(task_dir)
    rows = list_adapters(adapters_dir(task))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    t = Table(title=f"adapters in {adapters_dir(task)}")
    for col in ("id", "rung", "base", "train", "data", "r/alpha/lr/epochs", "steps", "min",
                "tok/s", "test", "MB"):
        t.add_column(col)
    for m in rows:
        c, tr = m.get("config", {}), m.get("training", {})
        q = ((m.get("metrics") or {}).get("test") or {}).get("quality") or {}
        t.add_row(m["id"], m.get("rung", ""), m["base"]["key"] + ":" + m["base"]["name"],
                  str(m["data"]["train"]), m["data"]["train_hash"][:8],
                  f"{c.get('r')}/{c.get('alpha')}/{c.get('learning_rate')}/{c.get('epochs')}",
                  str(tr.get("steps")), f"{tr.get('seconds', 0) / 60:.1f}",
                  f"{tr.get('tokens_per_s', 0):.0f}", _fmt(q.get("value")),
                  f"{m.get('size_bytes', 0) / 1e6:.1f}")
    out.print(t)


@app.command()
def export(adapter: Annotated[str, typer.Argument(help="adapter id (or a unique prefix)")],
           task: Annotated[Path, typer.Option(help="task folder")] = Path("."),
           out_dir: Annotated[Path, typer.Option("--out", help="folder to write")] = Path(
               "adapter"),
           merge: Annotated[bool, typer.Option("--merge", help="also write the merged "
                                               "model (base + adapter) in out/merged")] = False,
           ) -> None:
    """Write an adapter as a PEFT folder that vLLM loads with --lora-modules."""
    from llm_ladder.finetune.registry import adapters_dir, export_adapter, read_manifest

    t, _ = _store(task)
    dest = export_adapter(adapters_dir(t), adapter, out_dir, merge)
    m = read_manifest(dest) or {}
    out.print(f"wrote {dest}" + (" (with merged/)" if merge else ""))
    out.print(f"serve it with: vllm serve {m.get('base', {}).get('weights', 'BASE')} "
              f"--enable-lora --lora-modules {t.name}={dest} --max-lora-rank "
              f"{max(8, m.get('config', {}).get('r', 16))}", highlight=False)
