"""`ladder tune`, `distill`, `adapters`, `export`: the fine-tuning commands.

`curve` trains the rung on 25/50/100% of the train split, scores each on dev and says how
much more data would likely reach the bar (llm_ladder.curve).
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

from llm_ladder.cli import common
from llm_ladder.cli.common import JsonOpt, ResumeOpt, SkipOpt, TaskDir, app, err, out
from llm_ladder.errors import LadderError
from llm_ladder.finetune.registry import adapters_dir, export_adapter, list_adapters, read_manifest
from llm_ladder.tuning import learning_curve, tune_rung

BaseOpt = Annotated[str | None, typer.Option(
    "--base", help="model key to tune (default finetune.base); a new base = re-tuning")]


def _train_bar() -> Progress:
    return Progress(TextColumn("{task.description:<10}"), BarColumn(),
                    TextColumn("step {task.completed}/{task.total}"),
                    TextColumn("loss {task.fields[loss]:.3f}{task.fields[dev]}"),
                    TextColumn("{task.fields[tps]:.0f} tok/s"), TimeRemainingColumn(),
                    console=err)


def _tune(task_dir: Path, rung: str, base: str | None, skip: bool, resume: bool,
          as_json: bool, teacher: str | None = None, teacher_rung: str | None = None,
          inputs: Path | None = None) -> dict[str, Any]:
    with common.progress_bar() as bar, _train_bar() as tbar:
        doc = tune_rung(task_dir, rung, base=base, skip_bad_rows=skip, resume=resume,
                        teacher=teacher, teacher_rung=teacher_rung, inputs=inputs,
                        on_progress=common.progress_callback(bar),
                        on_event=common.train_events(tbar), status=err.status,
                        on_session=common.print_session)
    if as_json:
        print(json.dumps(doc, indent=2, default=str))
        return doc
    summary = doc["summary"]
    task, _ = common.task_store(task_dir)
    manifest = read_manifest(adapters_dir(task) / doc["adapter"]) or {}
    tr = doc.get("training") or {}
    out.print(f"adapter [bold]{doc['adapter']}[/] ({manifest.get('size_bytes', 0) / 1e6:.1f}"
              f" MB): {tr.get('steps')} steps in {tr.get('seconds', 0) / 60:.1f} min, "
              f"{tr.get('tokens_per_s', 0):.0f} train tok/s, best dev loss "
              f"{common.fmt(tr.get('best_dev_loss'))} at step {tr.get('best_step')}"
              + (" (stopped early)" if tr.get("stopped_early") else ""))
    if "teacher_labels" in doc:
        a = doc["teacher_labels"]["agreement"]
        shown = teacher_rung or (task.finetune.teacher_rung if task.finetune else "")
        out.print(f"teacher {teacher} ({shown}) labelled "
                  f"{doc['teacher_labels']['labelled']} inputs; agreement with the references "
                  f"on {a['with_reference']} of them: {common.fmt(a['mean'])}")
    rows = ([doc["teacher_test"] | {"rung": f"teacher: {doc['teacher_test']['rung']}"}]
            if "teacher_test" in doc else []) + doc["baselines"] + [summary]
    title = (f"{doc['task']} — {summary['metric']} on {summary['n']} test examples (other "
             "rungs: their newest stored run)")
    out.print(common.summary_table(rows, title))
    one = summary.get("one_time") or {}
    out.print(f"one-time cost: {one.get('what', '')}" + (
        f", ${one['usd']:.4f} at the task's price" if one.get("usd") is not None else ""))
    return doc


@app.command()
def tune(task_dir: TaskDir, base: BaseOpt = None,
         rung: Annotated[str, typer.Option(help="a rung that trains: lora, lora-prompt, "
                                           "lora-rag, lora-tools or full")] = "lora",
         skip_bad_rows: SkipOpt = False,
         resume: Annotated[bool, typer.Option("--resume", help="continue a killed training "
                                              "from its newest complete checkpoint")] = False,
         as_json: JsonOpt = False) -> None:
    """Fine-tune the task's small model on the train split (LoRA, or every weight with
    --rung full), then test it."""
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
    task, _ = common.task_store(task_dir)
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
                  f"{tr.get('tokens_per_s', 0):.0f}", common.fmt(q.get("value")),
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
    t, _ = common.task_store(task)
    dest = export_adapter(adapters_dir(t), adapter, out_dir, merge)
    m = read_manifest(dest) or {}
    out.print(f"wrote {dest}" + (" (with merged/)" if merge else ""))
    if m.get("method") == "full":  # a whole model folder, not an adapter
        out.print(f"serve it with: vllm serve {dest}", highlight=False)
        return
    out.print(f"serve it with: vllm serve {m.get('base', {}).get('weights', 'BASE')} "
              f"--enable-lora --lora-modules {t.name}={dest} --max-lora-rank "
              f"{max(8, m.get('config', {}).get('r', 16))}", highlight=False)


@app.command()
def curve(task_dir: TaskDir,
          rung: Annotated[str, typer.Option(help="a rung that trains: lora, lora-prompt, "
                                            "lora-rag, lora-tools or full")] = "lora",
          fractions: Annotated[str, typer.Option(
              help="comma-separated fractions of the train split")] = "0.25,0.5,1",
          base: BaseOpt = None, skip_bad_rows: SkipOpt = False, resume: ResumeOpt = False,
          as_json: JsonOpt = False) -> None:
    """Learning curve: tune on growing shares of train, score each on dev (never test), and
    estimate how much more train data would reach the bar. Stored with the adapter; the
    advice of `ladder run` uses it."""
    try:
        fr = tuple(float(x) for x in fractions.split(",") if x.strip())
    except ValueError:
        raise LadderError(f"--fractions: numbers in (0, 1] separated by commas, not "
                          f"{fractions!r}") from None
    with common.progress_bar() as bar, _train_bar() as tbar:
        doc = learning_curve(task_dir, rung, fr, base=base, skip_bad_rows=skip_bad_rows,
                             resume=resume, on_progress=common.progress_callback(bar),
                             on_event=common.train_events(tbar), status=err.status,
                             on_session=common.print_session)
    if as_json:
        print(json.dumps(doc, indent=2, default=str))
        return
    t = Table(title=f"{doc['task']} — learning curve of {doc['rung']}, {doc['metric']} on "
                    f"the dev split")
    for col in ("share", "train", "dev score", "95% interval", "dev n", "train min",
                "adapter"):
        t.add_column(col)
    for p in doc["points"]:
        t.add_row(f"{p['fraction']:.0%}", str(p["n"]), common.fmt(p["score"]),
                  f"[{common.fmt(p['low'])}, {common.fmt(p['high'])}]", str(p["dev_n"]),
                  f"{(p['train_s'] or 0) / 60:.1f}", p["adapter"])
    out.print(t)
    f = doc["fit"]
    if f:
        out.print(f"fit: {f['formula']}, a={f['a']:.3f}, b={f['b']:.4f} ± "
                  f"{common.fmt(f['b_se'], '.4f')} ({f['gain_per_doubling']:+.3f} per "
                  "doubling of the train data)", highlight=False)
    out.print(common.esc(doc["advice"] or "no bar in task.toml: no advice"), highlight=False)
    out.print(f"stored with the adapter: {common.esc(doc['adapter_path'])}", highlight=False)
