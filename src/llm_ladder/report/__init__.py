"""The report of a ladder (or one run) and the comparison of two runs, from the run store.

`collect` gathers what a reader needs: the runs in ladder order, the decision with its
paired tests, cost of ownership and break-even, per-rung error analysis, and every example
with each rung's exact prompt and output. `write_report` renders it as one self-contained
HTML file (inline CSS, JS and SVG; works offline) plus a Markdown summary. `compare_runs`
says what changed between two runs, example by example, with the paired test.
Skipped: PDF export, charts of per-example latency, and re-running anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from llm_ladder import optimize
from llm_ladder.audit import stored_audit
from llm_ladder.costs import Ownership, break_even, ownership
from llm_ladder.decide import correct, decide, error_analysis, pair
from llm_ladder.errors import LadderError
from llm_ladder.report.html import render_report
from llm_ladder.report.markdown import render_markdown
from llm_ladder.rungs.base import ladder_for
from llm_ladder.session import prepare
from llm_ladder.store import Store
from llm_ladder.task import Task


def ladder_runs(store: Store, ident: str) -> tuple[str, list[dict[str, Any]]]:
    """(ladder id or run id, runs in the order they ran) for a ladder id or a run id."""
    rows = store.db.execute("SELECT id FROM runs WHERE ladder_id=? ORDER BY created",
                            (ident,)).fetchall()
    if not rows:
        run = store.get_run(ident)
        if run is None:
            raise LadderError(f"no ladder or run {ident!r} in {store.path}; `ladder runs` "
                              "lists them")
        if not run.get("ladder_id"):
            return run["id"], [run]
        ident = run["ladder_id"]
        rows = store.db.execute("SELECT id FROM runs WHERE ladder_id=? ORDER BY created",
                                (ident,)).fetchall()
    runs = [store.get_run(r["id"]) for r in rows]
    by_rung: dict[str, dict[str, Any]] = {}
    for r in runs:  # a rung run twice in one ladder (resume): keep the newest finished one
        if r and r["summary"]:
            # a multi-model ladder names its rows by cell (`rung@model`, llm_ladder.cells)
            r = {**r, "rung": r["summary"].get("rung") or r["rung"]}
            by_rung.pop(r["rung"], None)
            by_rung[r["rung"]] = r
    if not by_rung:
        raise LadderError(f"{ident}: no finished runs to report")
    return ident, list(by_rung.values())


def list_ladders(store: Store) -> list[dict[str, Any]]:
    """Ladders (and runs outside any ladder), newest first, for the web view's index."""
    out: dict[str, dict[str, Any]] = {}
    for r in store.list_runs(1000):
        key = r.get("ladder_id") or r["id"]
        entry = out.setdefault(key, {"id": key, "ladder": bool(r.get("ladder_id")),
                                     "created": r["created"], "runs": []})
        entry["runs"].append({"id": r["id"], "rung": r["rung"], "model": r["model"],
                              "status": r["status"],
                              "quality": ((r["summary"] or {}).get("quality") or {})
                              .get("value")})
    for e in out.values():
        e["runs"].reverse()
    return list(out.values())


def _break_evens(owned: dict[str, Ownership], rungs: list[str], anchor: str | None,
                 rpd: float | None) -> list[dict[str, Any]]:
    """Break-even against the recommended (or closest) rung: of each rung with a one-time
    cost against it, or of it against each rung without one when it has one itself."""
    if anchor is None or anchor not in owned:
        return []
    a = owned[anchor]
    has = (lambda o: bool(o.one_time_usd or o.one_time_what))  # noqa: E731
    out = []
    for name in rungs:
        o = owned[name]
        if name == anchor or has(o) == has(a):
            continue
        cheap, other = (a, o) if has(o) else (o, a)
        out.append(break_even(cheap, other, rpd) or {"cheap": cheap.rung, "other": other.rung,
                                                     "requests": None, "days": None,
                                                     "unknown": True})
    return out


def _task_rungs(task: Task) -> list[str]:
    try:
        return ladder_for(task)
    except LadderError:  # a rung plugin no longer installed: report what was stored
        return []


def _baselines(task: Task, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trivial baselines of the runs' split (label metrics), as the climb computed them;
    none when the data changed since (another split) or cannot be read."""
    try:
        prep = prepare(task, skip_bad_rows=True)
    except LadderError:
        return []
    if any((r.get("config") or {}).get("split") != prep.split_hash() for r in runs):
        return []
    return prep.baselines()


def collect(task: Task, store: Store, ident: str,
            baselines: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything the report shows. `baselines` are the climb's `baselines(...)` rows (with
    their predictions); without them they are recomputed from the task's split."""
    ident, runs = ladder_runs(store, ident)
    summaries = [r["summary"] | {"run_id": r["id"], "rung": r["rung"], "model": r["model"]}
                 for r in runs]
    preds = {r["id"]: store.predictions(r["id"]) for r in runs}
    decision = decide(task, summaries, preds.__getitem__, {r["id"]: r["config"] for r in runs},
                      baselines=_baselines(task, runs) if baselines is None else baselines)
    not_run = [n for n in _task_rungs(task)
               if n not in {r["summary"].get("base_rung") or r["rung"] for r in runs}]
    if not_run and len(runs) > 1:
        decision["notes"].append(f"not run in this ladder: {', '.join(not_run)} (`ladder run` "
                                 "stops at the first rung that meets the bar; `--all` runs and "
                                 "compares them all)")
    owned = {r["rung"]: ownership(task, s, r["config"], r["model"])
             for r, s in zip(runs, summaries, strict=True)}
    rungs = [r["rung"] for r in runs]
    examples: dict[str, dict[str, Any]] = {}
    for r in runs:
        for p in preds[r["id"]]:
            ex = examples.setdefault(p["example_id"], {"id": p["example_id"],
                                                       "input": p["input"],
                                                       "reference": p["reference"],
                                                       "cells": {}})
            ok = correct(p["score"])
            ex["cells"][r["rung"]] = {
                "output": p["output"], "raw_output": p["raw_output"], "score": p["score"],
                "reason": p["score_reason"], "messages": p["messages"], "error": p["error"],
                "status": "unscored" if ok is None else "correct" if ok else "incorrect",
                "retrieved": [c.get("source") for c in
                              (p.get("details") or {}).get("retrieved") or []]}
    return {"id": ident, "task": task.name, "metric": task.metric.name, "bar": task.bar,
            "budget": task.budget.model_dump(), "runs": runs, "summaries": summaries,
            "rungs": rungs, "decision": decision,
            "analysis": {r["rung"]: error_analysis(preds[r["id"]], task.metric.name)
                         for r in runs},
            "ownership": {k: o.as_dict() for k, o in owned.items()},
            "break_even": _break_evens(owned, rungs, decision.get("rung")
                                       or decision.get("closest"),
                                       task.budget.requests_per_day),
            "examples": sorted(examples.values(), key=lambda e: e["id"]),
            "audit": stored_audit(task), "prompts": optimized_prompts(task, runs),
            "upgrades": store.upgrades(task.name)}


def optimized_prompts(task: Task, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """rung -> the stored optimized prompt (with its search trace) a run used."""
    out = {}
    for r in runs:
        pid = ((r.get("config") or {}).get("settings") or {}).get("prompt_id")
        doc = optimize.read(task.state_dir, pid) if pid else None
        if doc is not None:
            out[r["rung"]] = doc
    return out


def write_report(task: Task, store: Store, ident: str, out_dir: Path | None = None,
                 baselines: list[dict[str, Any]] | None = None) -> tuple[Path, Path]:
    """Write report.html and report.md; returns their paths. `baselines`: see `collect`."""

    data = collect(task, store, ident, baselines)
    folder = out_dir or task.state_dir / "reports" / data["id"]
    folder.mkdir(parents=True, exist_ok=True)
    html_path, md_path = folder / "report.html", folder / "report.md"
    html, md = render_report(data), render_markdown(data)  # both rendered before any write
    _write_atomic(html_path, html)
    _write_atomic(md_path, md)
    return html_path, md_path


def _write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, fsync, rename over it: a reader (the web
    view, a browser) sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def compare_runs(store: Store, id_a: str, id_b: str) -> dict[str, Any]:
    """What changed from run A to run B: settings, and example by example, with the test."""
    a, b = store.get_run(id_a), store.get_run(id_b)
    for ident, r in ((id_a, a), (id_b, b)):
        if r is None:
            raise LadderError(f"no run {ident!r} in {store.path}; `ladder runs` lists them")
    assert a is not None and b is not None
    fa = _flat({"rung": a["rung"], "model_key": a["model"], **(a["config"] or {})})
    fb = _flat({"rung": b["rung"], "model_key": b["model"], **(b["config"] or {})})
    changes = [{"key": k, "a": fa.get(k), "b": fb.get(k)} for k in sorted(set(fa) | set(fb))
               if fa.get(k) != fb.get(k)]
    pa = {p["example_id"]: p for p in store.predictions(a["id"])}
    pb = {p["example_id"]: p for p in store.predictions(b["id"])}
    rows, counts = [], {"fixed": 0, "broken": 0, "changed": 0, "same": 0}
    for ex in sorted(set(pa) & set(pb)):
        x, y = pa[ex], pb[ex]
        ca, cb = correct(x["score"]), correct(y["score"])
        kind = ("fixed" if ca is False and cb else "broken" if ca and cb is False
                else "changed" if x["output"] != y["output"] else "same")
        counts[kind] += 1
        rows.append({"example_id": ex, "kind": kind, "input": x["input"],
                     "reference": x["reference"],
                     "a": {k: x[k] for k in ("output", "score", "score_reason", "messages")},
                     "b": {k: y[k] for k in ("output", "score", "score_reason", "messages")}})
    test = pair(list(pa.values()), list(pb.values()))
    return {"a": {k: a[k] for k in ("id", "rung", "model", "status", "summary")},
            "b": {k: b[k] for k in ("id", "rung", "model", "status", "summary")},
            "changes": changes, "counts": counts, "only_a": sorted(set(pa) - set(pb)),
            "only_b": sorted(set(pb) - set(pa)), "test": test.as_dict(), "examples": rows}


def dumps(doc: Any) -> str:
    return json.dumps(doc, indent=2, default=str)
