"""`ladder init`: write a commented task.toml from a bare examples file, check it, and print
the next command. One library call (`init.init_task`) plus rendering.

On a terminal (stdin is a TTY) it asks for what the data cannot say, each with the inferred
proposal as the default (Enter accepts it): the metric (which confirms the inferred kind),
the label set, the bar and the model. A flag skips its question (`--metric`, `--labels`,
`--bar`, `--model-backend`), `--yes` skips them all, and when stdin is not a terminal (a
pipe, CI) nothing is asked: every choice is a flag or inferred.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.prompt import FloatPrompt, Prompt

from llm_ladder.cli.common import JsonOpt, app, err, esc, out
from llm_ladder.errors import LadderError
from llm_ladder.init import DEFAULT_BARS, EMBEDDED, METRICS_FOR, infer_task, init_task

BACKENDS = ("local", "llamacpp", "openai")


def _ask(prompt: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return prompt.ask(*args, console=err, **kwargs)
    except EOFError:
        raise LadderError("no answer (end of input); pass the choices as flags (--metric, "
                          "--labels, --bar, --model-backend) or --yes to accept the "
                          "proposals") from None


def ask_choices(task_dir: Path, examples: Path, corpus: Path | None, tools: Path | None,
                given: dict[str, Any]) -> dict[str, Any]:
    """The interactive questions; each has the inferred proposal as its default and is
    skipped when `given` (the flags) already holds its answer."""
    inf = infer_task(task_dir, examples, corpus=corpus, tools=tools, **{
        k: v for k, v in given.items() if k in ("bar", "metric", "labels", "model_backend",
                                                "model_path", "model_name")})
    err.print(f"[bold]{inf.rows} rows[/]: a [bold]{inf.kind}[/] task ({esc(inf.metric.why)})",
              highlight=False)
    answers = dict(given)
    if given.get("metric") is None:
        answers["metric"] = _ask(Prompt, "metric", choices=list(METRICS_FOR[inf.kind]),
                                 default=inf.metric.value)
    if inf.labels is not None and given.get("labels") is None:
        data = set(inf.labels.value)
        while True:
            text = _ask(Prompt, f"label set ({len(data)} seen; comma-separated, add labels "
                        "that have no example yet)", default=", ".join(inf.labels.value))
            chosen = [x.strip() for x in text.split(",") if x.strip()]
            missing = sorted(data - set(chosen))
            if not missing:
                break
            err.print(f"[red]the label set must keep every label of the examples; missing: "
                      f"{esc(', '.join(missing))}[/]", highlight=False)
        answers["labels"] = chosen
    if given.get("bar") is None:
        proposal = DEFAULT_BARS.get(answers["metric"], 0.7)
        while True:
            bar = _ask(FloatPrompt, f"quality bar for {answers['metric']} (0 to 1; the "
                       "lower bound of a rung's interval must reach it)", default=proposal)
            if 0 <= bar <= 1:
                break
            err.print("[red]the bar is a score between 0 and 1[/]")
        answers["bar"] = bar
    if given.get("model_backend") is None:
        answers["model_backend"] = _ask(Prompt, f"model backend (local = the embedded "
                                        f"{EMBEDDED}, no download)", choices=list(BACKENDS),
                                        default="local")
        if answers["model_backend"] == "openai" and given.get("model_name") is None:
            answers["model_name"] = _ask(Prompt, "model name", default="gpt-4o-mini")
    return answers


@app.command()
def init(task_dir: Annotated[Path, typer.Argument(help="folder to write task.toml into")],
         examples: Annotated[Path, typer.Option("--examples", help="JSONL or CSV examples "
                                                "file (any supported row format)")],
         corpus: Annotated[Path | None, typer.Option("--corpus", help="documents for the "
                                                     "RAG rungs (folder or file)")] = None,
         tools: Annotated[Path | None, typer.Option("--tools", help="OpenAI-format tools "
                                                    "JSON file")] = None,
         bar: Annotated[float | None, typer.Option("--bar", help="quality bar on the "
                                                   "metric (default: a guess per metric)")]
         = None,
         force: Annotated[bool, typer.Option("--force", help="overwrite an existing "
                                             "task.toml")] = False,
         model_backend: Annotated[str | None, typer.Option(
             "--model-backend", help="backend of [models.default] instead of the embedded "
             "model (e.g. scripted, openai)")] = None,
         model_path: Annotated[str | None, typer.Option(
             "--model-path", help="path setting of that model (e.g. scripted answers)")]
         = None,
         model_name: Annotated[str | None, typer.Option(
             "--model-name", help="name setting of that model (e.g. gpt-4o-mini)")] = None,
         metric: Annotated[str | None, typer.Option(
             "--metric", help="metric instead of the inferred one (it must fit the kind)")]
         = None,
         labels: Annotated[str | None, typer.Option(
             "--labels", help="comma-separated label set (every output of the examples, "
             "plus labels with no example yet)")] = None,
         yes: Annotated[bool, typer.Option("--yes", "-y", help="on a terminal, accept every "
                                           "proposal without asking")] = False,
         as_json: JsonOpt = False) -> None:
    """Infer the task kind, metric, labels, split, bar and model from EXAMPLES, write a
    commented TASK_DIR/task.toml, run the checks and print the next command. On a terminal
    it asks for the metric, labels, bar and model (the proposal is the default)."""
    given: dict[str, Any] = {
        "bar": bar, "metric": metric, "model_backend": model_backend, "model_path": model_path,
        "model_name": model_name,
        "labels": [x.strip() for x in labels.split(",")] if labels is not None else None}
    if (task_dir / "task.toml").exists() and not force:
        raise LadderError(f"{task_dir / 'task.toml'} exists; pass --force to overwrite it")
    if sys.stdin.isatty() and not yes and all(p is None or p.exists()
                                              for p in (examples, corpus, tools)):
        given = ask_choices(task_dir, examples, corpus, tools, given)
    res = init_task(task_dir, examples, corpus=corpus, tools=tools, force=force, **given)
    inf, prep = res.inference, res.prep
    sp = prep.splits
    doc = {"task_file": str(res.task_file), "kind": inf.kind, "metric": inf.metric.value,
           "labels": inf.labels.value if inf.labels else None, "bar": inf.bar.value,
           "split": inf.split, "max_test": inf.max_test.value if inf.max_test else None,
           "rows": prep.rows_read, "bad_rows": [str(p) for p in prep.problems],
           "split_sizes": {"train": len(sp.train), "dev": len(sp.dev), "test": len(sp.test)},
           "power": inf.power.get("sentence"), "next": res.next_command}
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    out.print(f"wrote [bold]{esc(str(res.task_file))}[/]: {inf.kind} task, metric "
              f"{inf.metric.value}, bar {inf.bar.value}", highlight=False)
    out.print(f"  {esc(inf.metric.why)}", highlight=False)
    out.print(f"check: {prep.rows_read} rows, {len(prep.problems)} bad; split train "
              f"{len(sp.train)} / dev {len(sp.dev)} / test {len(sp.test)}", highlight=False)
    for p in prep.problems[:20]:
        out.print(f"  [red]✗[/] {esc(str(p))}", highlight=False)
    if inf.power.get("sentence"):
        out.print(f"power: {esc(inf.power['sentence'])}", highlight=False)
    out.print(f"next: [bold]{esc(res.next_command)}[/]", highlight=False)
