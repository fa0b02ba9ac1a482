"""`ladder init`: write a commented task.toml from a bare examples file, check it, and print
the next command. One library call (`init.init_task`) plus rendering. Non-interactive: every
choice is a flag or inferred (no prompts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from llm_ladder.cli.common import JsonOpt, app, esc, out
from llm_ladder.init import init_task


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
         as_json: JsonOpt = False) -> None:
    """Infer the task kind, metric, labels, split, bar and model from EXAMPLES, write a
    commented TASK_DIR/task.toml, run the checks and print the next command."""
    res = init_task(task_dir, examples, corpus=corpus, tools=tools, bar=bar, force=force,
                    model_backend=model_backend, model_path=model_path)
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
