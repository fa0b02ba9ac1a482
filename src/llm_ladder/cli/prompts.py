"""`ladder prompts`: the optimized prompts a task has stored, and one of them in full.

One library call (`optimize.stored_prompts` / `optimize.read`) plus rendering: the list shows
each prompt's id, its instruction variant, k, dev scores (chosen and fixed prompt) and the
search's calls and time; `--show ID` prints the prompt verbatim (instruction and every
demonstration) and the search trace (every candidate, its dev scores on both halves).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from llm_ladder import optimize
from llm_ladder.cli.common import JsonOpt, TaskDir, app, esc, fmt, out, task_store
from llm_ladder.errors import LadderError


def _dev(d: dict[str, Any] | None, key: str) -> float | None:
    return (d or {}).get(key)


@app.command()
def prompts(task_dir: TaskDir = Path("."),
            show: Annotated[str | None, typer.Option("--show", help="a prompt id: print it "
                                                     "verbatim with its search trace")] = None,
            as_json: JsonOpt = False) -> None:
    """List the task's stored optimized prompts (the `optimized-prompt` rung), newest first."""
    task, _ = task_store(task_dir)
    if show:
        doc = optimize.read(task.state_dir, show)
        if doc is None:
            raise LadderError(f"no stored prompt {show!r} in {optimize.prompts_dir(task.state_dir)}"
                              "; `ladder prompts TASK` lists them")
        if as_json:
            print(json.dumps(doc, indent=2, ensure_ascii=False))
            return
        _print_prompt(doc)
        return
    docs = optimize.stored_prompts(task.state_dir)
    if as_json:
        print(json.dumps(docs, indent=2, ensure_ascii=False))
        return
    t = Table(title=f"optimized prompts in {optimize.prompts_dir(task.state_dir)}")
    for col in ("id", "instruction", "place", "k", "dev A", "dev B", "fixed A", "fixed B",
                "calls", "search s"):
        t.add_column(col, justify="left" if col in ("id", "instruction", "place") else "right")
    for d in docs:
        t.add_row(d["id"], esc(d.get("name") or ""), d["place"], str(d["k"]),
                  fmt(_dev(d.get("dev"), "A")), fmt(_dev(d.get("dev"), "B")),
                  fmt(_dev(d.get("fixed_dev"), "A")), fmt(_dev(d.get("fixed_dev"), "B")),
                  str(d.get("calls", "")), fmt(d.get("seconds"), ".0f"))
    out.print(t)
    if not docs:
        out.print("none yet: `ladder run TASK --rungs optimized-prompt` searches one")


def _print_prompt(doc: dict[str, Any]) -> None:
    out.rule(f"prompt {doc['id']} ({esc(doc.get('name') or '')}, instruction in the "
             f"{doc['place']} turn, k={doc['k']})")
    out.print("[bold cyan]instruction:[/]\n" + esc(doc["instruction"]), highlight=False)
    if doc.get("pool") is not None:
        out.print(f"[bold]demonstrations:[/] the {doc['k']} nearest each input (few-shot-nearest's "
                  f"selection) among a pool of {len(doc['pool'])} train examples, stored in "
                  "prompt.json", highlight=False)
    for d in doc["demos"][:doc["k"]]:
        inp = d["input"] if isinstance(d["input"], str) else json.dumps(d["input"])
        out.print(f"[bold]demo {esc(str(d['id']))}:[/] {esc(inp)} → {esc(d['output'])}",
                  highlight=False)
    tr = doc.get("trace") or {}
    out.print(f"search {doc['search_id']}: {tr.get('calls')} model calls in "
              f"{fmt(tr.get('seconds'), '.0f')} s; dev halves A {len(tr.get('dev_a', []))} / B "
              f"{len(tr.get('dev_b', []))}; {tr.get('bootstrapped', 0)} demonstrations "
              f"bootstrapped; ranking on A held on B: {tr.get('ranking_held')}", highlight=False)
    t = Table(title="search trace (dev half A for every candidate; B for the finalists)")
    for col in ("candidate", "instruction", "k", "demo set", "dev A", "dev B", ""):
        t.add_column(col)
    for r in optimize.trace_rows(tr):
        t.add_row(r["key"], esc(r["instruction"]), str(r["k"]),
                  str(r["demo_set"] if r["k"] else "—"), fmt(r["A"]), fmt(r["B"]), r["mark"])
    out.print(t)
