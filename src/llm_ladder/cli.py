"""The `ladder` command: check, run, eval, index, ask, runs, show.

Human output (tables, progress bars, messages) goes to stderr-safe Rich consoles; with
`--json` stdout carries exactly one JSON document and everything else goes to stderr.
User mistakes (LadderError) print one clear message and exit 2, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from llm_ladder.errors import LadderError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Climb the ladder: prompt, retrieve or fine-tune, decided on your data.")
err = Console(stderr=True, soft_wrap=True)
out = Console(width=None if sys.stdout.isatty() else 160)

TaskDir = Annotated[Path, typer.Argument(help="folder with task.toml")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout")]
SkipOpt = Annotated[bool, typer.Option("--skip-bad-rows",
                                       help="run on the good rows when some are bad")]
ResumeOpt = Annotated[bool, typer.Option("--resume",
                                         help="continue the last unfinished run of each rung")]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="model key from task.toml")]


def _store(task_dir: Path):
    from llm_ladder.store import Store
    from llm_ladder.task import load_task

    task = load_task(task_dir)
    return task, Store(task.state_dir / "runs.db")


def _progress():
    return Progress(TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=err, transient=False)


def _prepare(task_dir: Path, skip: bool, model_key: str, rungs: list[str] | None = None):
    from llm_ladder.ladder import attach_retriever, build_model, check_context, prepare, rung_names
    from llm_ladder.rungs import RETRIEVAL_RUNGS

    task, store = _store(task_dir)
    prep = prepare(task, skip)
    s = prep.splits
    err.print(f"[bold]{task.name}[/]: {prep.rows_read} rows read, {len(prep.problems)} bad"
              f"{' (skipped)' if prep.problems else ''}; split train {len(s.train)} / dev "
              f"{len(s.dev)} / test {len(s.test)}"
              + (f" (test capped, {s.capped_test} left out)" if s.capped_test else ""))
    if s.leakage and s.leakage.leaks:
        c = s.leakage.counts()
        err.print(f"[yellow]leakage:[/] {sum(c.values())} train/dev example(s) overlap the test "
                  f"split ({', '.join(f'{k} {v}' for k, v in c.items())}); removed from train "
                  f"{s.leakage.removed_train} and dev {s.leakage.removed_dev}")
    if set(rungs or rung_names(task)) & set(RETRIEVAL_RUNGS):
        attach_retriever(prep, _embedder(task))
    with err.status(f"loading model {model_key}…"):
        model = build_model(task.model(model_key))
    too_long = check_context(prep, model, skip)
    ts = prep.token_spread
    if ts:
        err.print(f"input tokens ({model_key}'s tokenizer, chat template included): min "
                  f"{ts['min']}, median {ts['median']}, p95 {ts['p95']}, max {ts['max']} "
                  f"(limit {ts['limit']})")
    if too_long:
        err.print(f"[yellow]{len(too_long)} input(s) longer than the context skipped[/]")
    return task, store, prep, model


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "—" if x is None else format(x, spec)


def _table(summaries: list[dict[str, Any]], title: str) -> Table:
    t = Table(title=title)
    one_time = any(s.get("one_time") for s in summaries)
    for col in ("rung", "quality [95% CI]", "n", "unscored", "tok in", "tok out",
                "p50 ms", "p95 ms", "$/1k req") + (("one-time",) if one_time else ()):
        t.add_column(col, justify="left" if col in ("rung", "one-time") else "right")
    for s in summaries:
        q = s["quality"]
        qtxt = "—" if q["value"] is None else f"{q['value']:.3f} [{q['low']:.3f}, {q['high']:.3f}]"
        extra = []
        if one_time:
            o = s.get("one_time") or {}
            extra = [f"{o['seconds']:.0f} s {o.get('what', '')}" if o.get("seconds") is not None
                     else "—"]
        t.add_row(s["rung"], qtxt, str(s["n"]), str(s["unscored"]),
                  _fmt(s["tokens_in_mean"], ".0f"), _fmt(s["tokens_out_mean"], ".1f"),
                  _fmt(s["latency_p50_s"] and s["latency_p50_s"] * 1000, ".0f"),
                  _fmt(s["latency_p95_s"] and s["latency_p95_s"] * 1000, ".0f"),
                  _fmt(s["cost_per_1k_usd"], ".4f"), *map(_esc, extra))
    return t


def _run_rungs(task_dir: Path, rungs: list[str] | None, model_key: str, skip: bool,
               resume: bool, as_json: bool, repeat: int = 1, run_all: bool = True,
               report: bool = False) -> dict[str, Any]:
    """Run rungs in ladder order; without `run_all`, stop at the first that meets the bar
    within budget (later rungs are then not run, so they are not compared)."""
    from llm_ladder.decide import meets_bar
    from llm_ladder.ladder import recommend, run_rung, rung_names

    task, store, prep, model = _prepare(task_dir, skip, model_key, rungs)
    names = rungs or rung_names(task)
    ladder_id = uuid.uuid4().hex[:8]
    summaries = []
    with _progress() as bar:
        def progress(total: int, label: str):
            tid = bar.add_task(label, total=total)
            return lambda n: bar.advance(tid, n)

        repeats = {}
        not_run: list[str] = []
        from llm_ladder.cli_finetune import _train_events

        on_event = _train_events(bar, loss_in_label=True)  # training rungs report progress
        for i, name in enumerate(names):
            run = run_rung(prep, name, model_key, model, store, resume, progress, ladder_id,
                           on_event=on_event)
            summaries.append(run["summary"])
            if repeat > 1:
                again = [run_rung(prep, name, model_key, model, store, False, progress)
                         for _ in range(repeat - 1)]
                repeats[name] = _variance(store, [run, *again])
            if not run_all and meets_bar(task, run["summary"]):
                not_run = names[i + 1:]
                break
    rec = recommend(task, summaries, store)
    if not_run:
        rec.setdefault("notes", []).append(
            f"stopped at {summaries[-1]['rung']}, the first rung that meets the bar; not run: "
            f"{', '.join(not_run)} (`ladder run --all` runs and compares them)")
    split = prep.splits
    doc = {"task": task.name, "ladder_id": ladder_id, "model": model_key,
           "metric": task.metric.name, "bar": task.bar,
           "split": {"train": len(split.train), "dev": len(split.dev), "test": len(split.test),
                     "capped_test": split.capped_test},
           "bad_rows": len(prep.problems), "input_tokens": prep.token_spread,
           "leakage": split.leakage.counts() if split.leakage else {},
           "rungs": summaries, "recommendation": rec, "not_run": not_run}
    if repeats:
        doc["repeat"] = repeats
    if report:
        from llm_ladder.report import write_report

        html_path, md_path = write_report(task, store, ladder_id)
        doc["report"] = {"html": str(html_path), "markdown": str(md_path)}
    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        out.print(_table(summaries, f"{task.name} — {task.metric.name} on {len(split.test)} "
                                    f"test examples, model {model_key}"))
        for s in summaries:
            if s.get("rag"):
                out.print(f"{s['rung']}: " + _rag_line(s["rag"]), highlight=False)
        out.print(("[green]Recommendation:[/] " if rec["meets_bar"] else "[yellow]Result:[/] ")
                  + _esc(rec["reason"]), highlight=False)
        for note in rec.get("notes", []):
            out.print(f"  · {_esc(note)}", highlight=False)
        for note in rec.get("suggestions", []):
            out.print(f"  → {_esc(note)}", highlight=False)
        for name, v in repeats.items():
            out.print(f"repeat {name}: {v['differing']} of {v['n']} outputs differed across "
                      f"{len(v['runs'])} runs at the same settings; quality "
                      + ", ".join(_fmt(q) for q in v["quality"]))
        out.print(f"[dim]runs stored in {store.path}; see `ladder show RUN_ID --task "
                  f"{task_dir}`[/]")
        if report:
            out.print(f"report: {doc['report']['html']} (summary: {doc['report']['markdown']})",
                      highlight=False)
    return doc


def _rag_line(r: dict[str, Any]) -> str:
    """One sentence of retrieval and grounding scores for the human table."""
    parts = []
    names = {"recall_at_k": "recall@k", "mrr": "MRR", "ndcg_at_10": "nDCG@10",
             "citation_validity": "valid citations", "answer_support": "answer support"}
    for key, label in names.items():
        if key in r:
            parts.append(f"{label} {r[key]:.2f}")
    for key, n in (r.get("unscored") or {}).items():
        parts.append(f"{names.get(key, key)} unscored for {n} answer(s)")
    parts.append(f"planted instructions retrieved for {r.get('injected_contexts', 0)} "
                 f"question(s), obeyed {r.get('injections_obeyed', 0)}")
    return "; ".join(parts)


def _variance(store, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """How many examples got a different raw output across repeated runs (temperature 0
    should give none; batching or server nondeterminism can)."""
    outs = [{p["example_id"]: p["raw_output"] for p in store.predictions(r["id"])}
            for r in runs]
    ids = set(outs[0])
    differing = sum(1 for i in ids if len({o.get(i) for o in outs}) > 1)
    return {"runs": [r["id"] for r in runs], "n": len(ids), "differing": differing,
            "quality": [r["summary"]["quality"]["value"] for r in runs]}


@app.command()
def run(task_dir: TaskDir, model: ModelOpt = "default",
        rungs: Annotated[str | None, typer.Option(help="comma-separated rung names")] = None,
        skip_bad_rows: SkipOpt = False, resume: ResumeOpt = False,
        run_all: Annotated[bool, typer.Option("--all", help="run every rung, even after one "
                                              "meets the bar, to compare them")] = False,
        no_report: Annotated[bool, typer.Option("--no-report",
                                                help="skip writing the HTML report")] = False,
        as_json: JsonOpt = False) -> None:
    """Climb the rungs cheapest first, stop at the first that meets the bar (or run --all),
    compare with paired tests, recommend, and write the HTML report."""
    names = [r.strip() for r in rungs.split(",")] if rungs else None
    _run_rungs(task_dir, names, model, skip_bad_rows, resume, as_json, run_all=run_all,
               report=not no_report)


@app.command("eval")
def eval_(task_dir: TaskDir,
          rung: Annotated[str, typer.Option(help="rung name, e.g. few-shot-nearest")],
          model: ModelOpt = "default", skip_bad_rows: SkipOpt = False,
          resume: ResumeOpt = False, as_json: JsonOpt = False,
          repeat: Annotated[int, typer.Option(min=1, max=10, help="run N times and report "
                                              "outputs that differ (nondeterminism)")] = 1,
          on_logs: Annotated[bool, typer.Option("--on-logs", help="run on the requests logged "
                                                "by `ladder serve`; scores agreement with "
                                                "what was served")] = False,
          ) -> None:
    """Run one rung on the test split (or, with --on-logs, on served traffic)."""
    from llm_ladder import plugins

    plugins.get("rungs", rung)  # fail fast on an unknown name
    if on_logs:
        cli_serve.eval_on_logs(task_dir, rung, model, as_json)
        return
    _run_rungs(task_dir, [rung], model, skip_bad_rows, resume, as_json, repeat)


def _embedder(task):
    from llm_ladder.embedding import build_embedder

    with err.status("loading the embedder…"):
        return build_embedder(task.corpus)


@app.command()
def index(task_dir: TaskDir, as_json: JsonOpt = False) -> None:
    """Build or update the task's corpus index; only changed chunks are embedded."""
    from llm_ladder.rag.index import build_index

    task, _ = _store(task_dir)
    embedder = _embedder(task)
    with _progress() as bar:
        tid = bar.add_task("embedding", total=None)
        report = build_index(task, embedder,
                             lambda done, total: bar.update(tid, completed=done, total=total))
    doc = report.as_dict()
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    out.print(f"[bold]{task.name}[/]: {report.documents} documents, {report.chunks} chunks — "
              f"added {report.added}, updated {report.updated}, removed {report.removed}, "
              f"unchanged {report.unchanged} documents; {report.chunks_embedded} chunks "
              f"embedded, {report.chunks_deleted} deleted")
    for p in report.problems:
        out.print(f"  [yellow]skipped[/] {_esc(str(p))}", highlight=False)
    for d in report.hidden_text:
        out.print(f"  [yellow]hidden characters[/] in {_esc(d)} (zero-width or invisible text)",
                  highlight=False)
    out.print(f"[dim]index: {report.store}[/]")


@app.command()
def ask(task_dir: TaskDir, question: Annotated[str, typer.Argument(help="the question")],
        model: ModelOpt = "default",
        show_context: Annotated[bool, typer.Option("--show-context",
                                                    help="print the retrieved chunks")] = False,
        as_json: JsonOpt = False) -> None:
    """Answer one question with the RAG rung, citing the chunks it used."""
    from llm_ladder.ladder import Prepared, attach_retriever, build_model
    from llm_ladder.rag.scoring import injection
    from llm_ladder.rungs import RungContext, get_rung
    from llm_ladder.splits import Splits

    task, _ = _store(task_dir)
    prep = Prepared(task, Splits([], [], []))
    attach_retriever(prep, _embedder(task))
    pipeline = get_rung("rag").build(RungContext(task, [], retriever=prep.retriever))
    messages, context = pipeline.prepare(question)
    with err.status(f"loading model {model}…"):
        llm = build_model(task.model(model))
    (gen,) = llm.generate([messages], pipeline.params)
    if gen.error:
        raise LadderError(f"the model failed: {gen.error}")
    answer = pipeline.parse(gen.text)
    context = context or []
    flagged = [c["n"] for c in context if injection(c["text"])]
    if as_json:
        print(json.dumps({"question": question, "answer": answer, "messages": messages,
                          "context": context, "instructions_in_context": flagged,
                          "tokens_in": gen.tokens_in, "tokens_out": gen.tokens_out,
                          "latency_s": gen.latency_s}, indent=2))
        return
    out.print(_esc(answer), highlight=False)
    out.print()
    for c in context:
        out.print(f"[{c['n']}] {_esc(c['source'])} (part {c['position'] + 1}, score "
                  f"{c['score']:.3f})" + ("  [yellow]contains instructions[/]"
                                          if c["n"] in flagged else ""), highlight=False)
        if show_context:
            out.print(f"[dim]{_esc(c['text'])}[/]", highlight=False)


@app.command()
def check(task_dir: TaskDir, as_json: JsonOpt = False) -> None:
    """Validate the task file and examples; report bad rows, splits and leakage."""
    from llm_ladder.ladder import prepare

    task, _ = _store(task_dir)
    prep = prepare(task, skip_bad_rows=True)
    s = prep.splits
    doc = {"task": task.name, "rows": prep.rows_read, "bad_rows": [str(p) for p in prep.problems],
           "split": {k: len(v) for k, v in s.ids().items()}, "capped_test": s.capped_test,
           "leakage": [vars(leak) for leak in (s.leakage.leaks if s.leakage else [])],
           "labels": prep.labels}
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    out.print(f"[bold]{task.name}[/]: {prep.rows_read} rows, {len(prep.problems)} bad")
    for p in prep.problems[:50]:
        out.print(f"  [red]✗[/] {p}", highlight=False)
    out.print(f"split: train {len(s.train)} / dev {len(s.dev)} / test {len(s.test)}")
    for leak in (s.leakage.leaks if s.leakage else [])[:20]:
        out.print(f"  [yellow]leak[/] {leak.kind}: train {leak.train_id} ~ test {leak.test_id} "
                  f"{leak.detail}", highlight=False)
    if prep.labels:
        out.print(f"labels ({len(prep.labels)}): {', '.join(prep.labels)}")


@app.command()
def runs(task_dir: Annotated[Path, typer.Argument(help="folder with task.toml")] = Path("."),
         limit: int = 50, as_json: JsonOpt = False) -> None:
    """List stored runs, newest first."""
    _, store = _store(task_dir)
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
        t.add_row(r["id"], r["rung"], r["model"], r["status"], _fmt(q), str(s.get("n", "")))
    out.print(t)


@app.command()
def show(run_id: str, task: Annotated[Path, typer.Option(help="task folder")] = Path("."),
         limit: int = 20, only_wrong: Annotated[bool, typer.Option("--wrong")] = False,
         as_json: JsonOpt = False) -> None:
    """Show one run: its summary, and per example the exact messages, output and score."""
    _, store = _store(task)
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
        out.print(_table([r["summary"]], f"run {r['id']} ({r['status']})"))
    for p in preds[:limit]:
        out.rule(f"{p['example_id']}  score={_fmt(p['score'])}"
                 + (f"  ({p['score_reason']})" if p["score_reason"] else ""))
        for m in p["messages"]:
            out.print(f"[bold cyan]{m['role']}:[/] " + _esc(str(m.get("content"))),
                      highlight=False)
        out.print("[bold green]model:[/] " + _esc(p["raw_output"]), highlight=False)
        out.print("[bold]parsed:[/] " + _esc(p["output"]) + "   [bold]reference:[/] "
                  + _esc(p["reference"]), highlight=False)


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


# Commands that live in modules of their own register on `app` when imported.
from llm_ladder import cli_finetune, cli_report, cli_serve  # noqa: E402, F401


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("LANCE_LOG", "error")
    try:
        app(standalone_mode=False)
    except LadderError as e:
        err.print(f"[red]error:[/] {_esc(str(e))}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted; what was stored is kept — continue with --resume")
        sys.exit(130)
    except typer.Abort:
        sys.exit(130)
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    # `python -m llm_ladder.cli`: run the imported module, where every command registered
    from llm_ladder.cli import main as _main

    _main()
