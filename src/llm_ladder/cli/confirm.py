"""`ladder confirm`: the recommended rung, once, on the held-back confirmation slice."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from llm_ladder.cli.common import (
    JsonOpt,
    ModelOpt,
    TaskDir,
    app,
    err,
    esc,
    out,
    progress_bar,
    progress_callback,
    summary_table,
)
from llm_ladder.ladder import confirm as confirm_rung


@app.command()
def confirm(task_dir: TaskDir,
            rung: Annotated[str, typer.Option(help="the rung to confirm (the recommended one)")],
            model: ModelOpt = "default", as_json: JsonOpt = False) -> None:
    """Run a rung once on the test rows held back by split.max_test (never looked at by the
    climb) and test it against the bar; a second look at the same slice is refused."""
    with progress_bar() as bar:
        doc = confirm_rung(task_dir, rung, model, progress=progress_callback(bar),
                           status=err.status)
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    out.print(summary_table([doc["summary"]], f"{doc['task']} — {rung} on the confirmation "
                                              f"slice ({doc['n']} held-back examples)"))
    c = doc["confirmation"]
    out.print(("[green]Confirmed:[/] " if c["confirmed"] else "[yellow]Not confirmed:[/] ")
              + esc(c["reason"]), highlight=False)
