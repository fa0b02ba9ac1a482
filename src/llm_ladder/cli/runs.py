"""`ladder runs` and `ladder show`: the stored runs, and one run's exact messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from llm_ladder.cli.common import JsonOpt, app, esc, fmt, out, summary_table, task_store
from llm_ladder.errors import LadderError


@app.command()
def runs(task_dir: Annotated[Path, typer.Argument(help="folder with task.toml")] = Path("."),
         limit: int = 50, as_json: JsonOpt = False) -> None:
    """List stored runs, newest first."""
    _, store = task_store(task_dir)
    rows = store.list_runs(limit)
    if as_json:
        print(json.dumps([{k: r[k] for k in ("id", "task", "rung", "model", "status", "created",
                                              "ladder_id", "summary")} for r in rows], indent=2))
        return
    t = Table(title=f"runs in {store.path}")
    for col in ("id", "rung", "model", "status", "quality", "n"):
        t.add_column(col)
    for r in rows:
        s = r["summary"] or {}
        q = (s.get("quality") or {}).get("value")
        t.add_row(r["id"], r["rung"], r["model"], r["status"], fmt(q), str(s.get("n", "")))
    out.print(t)


@app.command()
def show(run_id: str, task: Annotated[Path, typer.Option(help="task folder")] = Path("."),
         limit: int = 20, only_wrong: Annotated[bool, typer.Option("--wrong")] = False,
         as_json: JsonOpt = False) -> None:
    """Show one run: its summary, and per example the exact messages, output and score."""
    _, store = task_store(task)
    r = store.get_run(run_id)
    if r is None:
        raise LadderError(f"no run {run_id!r} in {store.path}; `ladder runs` lists them")
    preds = store.predictions(r["id"])
    if only_wrong:
        preds = [p for p in preds if p["score"] is None or p["score"] < 1]
    if as_json:
        print(json.dumps({"run": r, "predictions": preds[:limit] if limit else preds},
                         indent=2))
        return
    if r["summary"]:
        out.print(summary_table([r["summary"]], f"run {r['id']} ({r['status']})"))
    params = (r.get("config") or {}).get("params")
    if params:  # the generation settings the run used (None = the backend's default)
        out.print("[bold]generation:[/] " + esc(", ".join(
            f"{k}={v}" for k, v in params.items() if k != "tools" and v is not None)),
            highlight=False)
    for p in preds[:limit]:
        out.rule(f"{p['example_id']}  score={fmt(p['score'])}"
                 + (f"  ({p['score_reason']})" if p["score_reason"] else ""))
        for m in p["messages"]:
            out.print(f"[bold cyan]{m['role']}:[/] " + esc(str(m.get("content"))),
                      highlight=False)
        out.print("[bold green]model:[/] " + esc(p["raw_output"]), highlight=False)
        out.print("[bold]parsed:[/] " + esc(p["output"]) + "   [bold]reference:[/] "
                  + esc(p["reference"]), highlight=False)
