"""`ladder judge-check`: how far the task's judge agrees with human scores (docs/judge.md)."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table

from llm_ladder.cli.common import JsonOpt, TaskDir, app, err, esc, fmt, out
from llm_ladder.judge_check import judge_check as check_judge


def _iv(d: dict[str, Any] | None) -> str:
    if not d or d.get("value") is None:
        return "—" + (f" ({d['why']})" if d and d.get("why") else "")
    iv = (f" [{fmt(d['low'], '.2f')}, {fmt(d['high'], '.2f')}]"
          if d.get("low") is not None else "")
    return f"{fmt(d['value'], '.2f')}{iv} (n={d.get('n')})"


@app.command("judge-check")
def judge_check(task_dir: TaskDir, as_json: JsonOpt = False) -> None:
    """Ask the task's judge about every human-scored answer in judge.labels and report
    agreement (weighted kappa and Spearman, or preference accuracy), position bias and
    self-consistency with intervals. Exit code 1 when agreement is below the floor."""
    with err.status("asking the judge about the human-scored answers…"):
        doc = check_judge(task_dir)
    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        t = Table(title=f"{doc['task']} — judge {doc['judge_model']} ({doc['mode']}) against "
                        f"{doc['n']} human-scored answers")
        t.add_column("check")
        t.add_column("value [95% interval]")
        a = doc.get("agreement") or {}
        t.add_row(f"agreement: {a.get('name', '')}", _iv(a))
        if doc["mode"] == "pointwise":
            t.add_row("Spearman's rho", _iv(doc.get("spearman")))
        else:
            pb = doc.get("position_bias") or {}
            t.add_row("prefers the first answer shown", _iv(pb))
            t.add_row("the two orders disagree", _iv(pb.get("order_disagreement")))
        t.add_row("self-consistency across repeats", _iv(doc.get("self_consistency")))
        t.add_row("unreadable verdicts", str(doc["unscored"]["n"]))
        c = doc["cost"]
        t.add_row("judge calls / tokens in / out",
                  f"{c['judge_calls']} / {c['judge_tokens_in']} / {c['judge_tokens_out']}")
        out.print(t)
        out.print(("[green]Trusted:[/] " if doc["ok"] else "[red]Not trusted:[/] ")
                  + esc(doc["why"]), highlight=False)
    if not doc["ok"]:
        raise typer.Exit(1)
