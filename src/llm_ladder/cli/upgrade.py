"""`ladder upgrade TASK_DIR --from OLD --to NEW`: re-run the recommended ladder on a new base.

One library call (`llm_ladder.upgrade.upgrade`) plus rendering: one screen with the old and
the new recommendation, what changed, and per rung the paired old-vs-new test with the
examples fixed and broken and the new cost per 1000 requests; or `--json`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from llm_ladder.cli.common import (
    JsonOpt,
    TaskDir,
    app,
    err,
    esc,
    fmt,
    out,
    progress_bar,
    progress_callback,
    rung_line,
    train_events,
)
from llm_ladder.upgrade import UpgradeResult
from llm_ladder.upgrade import upgrade as run_upgrade


def _q(q: dict[str, Any] | None) -> str:
    if not q or q.get("value") is None:
        return "—"
    return f"{q['value']:.3f} [{q['low']:.3f}, {q['high']:.3f}]"


def _rec(r: dict[str, Any]) -> str:
    if r.get("rung"):
        return f"{r['rung']} (meets the bar)"
    return f"none meets the bar (closest {r.get('closest') or '—'})"


def render(res: UpgradeResult) -> None:
    """The one-screen answer."""
    t = Table(title=esc(f"{res.task}: ladder {res.old_ladder} on {res.from_model} re-run on "
                        f"{res.to_model} (ladder {res.new_ladder}), same test split "
                        f"{res.split}"))
    for col in ("rung", f"quality {res.from_model}", f"quality {res.to_model}", "diff",
                "paired p", "fixed", "broken", "$/1k old", "$/1k new"):
        t.add_column(esc(col), justify="left" if col == "rung" else "right")
    for r in res.rungs:
        test = r["test"]
        diff = fmt(test.get("diff"), "+.3f")
        secs = (r.get("new_one_time") or {}).get("seconds")
        name = r["rung"] + ((f" (re-tuned, {secs / 60:.1f} min)" if secs is not None
                             else " (re-tuned)") if r.get("retuned") else "")
        t.add_row(esc(name), _q(r["old_quality"]), _q(r["new_quality"]), diff,
                  fmt(test.get("p_value"), ".3g"), str(r["fixed"]), str(r["broken"]),
                  fmt(r["old_cost_per_1k_usd"], ".4f"), fmt(r["new_cost_per_1k_usd"], ".4f"))
    out.print(t)
    out.print(f"before, on {esc(res.from_model)}: {esc(_rec(res.old_recommendation))}",
              highlight=False)
    out.print(f"after, on {esc(res.to_model)}: {esc(_rec(res.new_recommendation))}",
              highlight=False)
    out.print(("[green]Changed:[/] " if res.changed else "[bold]Unchanged:[/] ")
              + esc(res.verdict), highlight=False)
    tests = {r["test"].get("test") for r in res.rungs}
    out.print(f"[dim]paired test per rung: {esc(', '.join(sorted(str(x) for x in tests)))} "
              "(two-sided p), old model vs new on the same examples; fixed = wrong before and "
              f"correct now. `ladder report {res.new_ladder} --task TASK_DIR` shows the new "
              "ladder; the upgrade is recorded in the run store.[/]")


@app.command("upgrade")
def upgrade_cmd(task_dir: TaskDir,
                from_key: Annotated[str, typer.Option("--from", help="model key the previous "
                                                      "ladder was climbed on")],
                to_key: Annotated[str, typer.Option("--to", help="model key of the new base")],
                ladder: Annotated[str | None, typer.Option(
                    help="the ladder id to re-run (default: the newest on --from)")] = None,
                as_json: JsonOpt = False) -> None:
    """Re-run the recommended rung and every cheaper one on a new base model (re-tuning
    adapters with the same recipe) and say whether the recommendation changed."""
    bar = progress_bar()

    def on_rung(summary: dict[str, Any]) -> None:
        if not err.is_terminal:
            err.print(rung_line(summary), highlight=False)

    with bar:
        res = run_upgrade(task_dir, from_key, to_key, ladder_id=ladder,
                          on_progress=progress_callback(bar),
                          on_event=train_events(bar, loss_in_label=True), status=err.status,
                          on_rung=on_rung)
    if as_json:
        print(json.dumps(res.to_dict(), indent=2))
        return
    render(res)
