"""`ladder run`, `eval`, `check`, `index`, `ask`: climb the ladder and look at the data.

Each command is one library call (`climb`, `eval_on_logs`, `prepare`, `build_index`,
`open_session` + the rag rung) plus rendering.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live

from llm_ladder import plugins
from llm_ladder.audit import Audit, audit, save_audit, write_suspects
from llm_ladder.cli.common import (
    JsonOpt,
    ModelOpt,
    ResumeOpt,
    SkipOpt,
    TaskDir,
    app,
    err,
    esc,
    fmt,
    out,
    print_session,
    progress_bar,
    progress_callback,
    rung_line,
    summary_table,
    task_store,
    train_events,
)
from llm_ladder.embedding import build_embedder
from llm_ladder.errors import LadderError
from llm_ladder.ladder import climb, eval_on_logs, power
from llm_ladder.rag.index import build_index
from llm_ladder.rag.scoring import injection
from llm_ladder.results import LadderResult
from llm_ladder.rungs.base import get_rung, ladder_for
from llm_ladder.session import open_session, prepare


def _climb(task_dir: Path, rungs: list[str] | None, model_key: str, skip: bool,
           resume: bool, as_json: bool, repeat: int = 1, run_all: bool = True,
           report: bool = False, models: list[str] | None = None) -> LadderResult:
    """Open the session and climb, showing each rung's row as it finishes (a live table on
    a terminal, one line per rung otherwise); print the table or the JSON at the end. On
    Ctrl-C the finished rows are printed before the interrupt goes on to `main` (exit 130,
    the --resume hint)."""
    if models:
        model_key = models[0]
    session = open_session(task_dir, model_key, rungs, skip_bad_rows=skip, status=err.status)
    task = session.task
    keys = models or task.ladder.models or [model_key]
    print_session(session, keys)
    title = (f"{task.name} — {task.metric.name} on {len(session.prep.splits.test)} test "
             f"examples, model{'s' if len(keys) > 1 else ''} {', '.join(keys)}")
    done: list[dict[str, Any]] = []
    live_table = err.is_terminal

    def on_rung(summary: dict[str, Any]) -> None:
        done.append(summary)
        if not live_table:
            err.print(rung_line(summary), highlight=False)

    bar = progress_bar()
    view = (Live(console=err, transient=True, get_renderable=lambda: Group(
        *([summary_table(done, title)] if done else []), bar)) if live_table else bar)
    try:
        with view:
            result = climb(task, run_all=run_all, repeat=repeat, resume=resume,
                           report=report, on_progress=progress_callback(bar),
                           on_event=train_events(bar, loss_in_label=True), on_rung=on_rung,
                           session=session, models=models)
    except KeyboardInterrupt:
        if done:
            (err if as_json else out).print(summary_table(done, title + " (interrupted)"))
        err.print(f"{len(done)} of {len(session.rungs)} rung(s) finished and stored")
        raise
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return result
    rec = result.recommendation
    # label tasks: the trivial baselines a rung must beat, scored on the same test split
    out.print(summary_table([*result.rungs, *rec.get("baselines", [])], title))
    for s in result.rungs:
        if s.get("rag"):
            out.print(f"{esc(s['rung'])}: " + _rag_line(s["rag"]), highlight=False)
    out.print(("[green]Recommendation:[/] " if rec["meets_bar"] else "[yellow]Result:[/] ")
              + esc(rec["reason"]), highlight=False)
    for note in rec.get("notes", []):
        out.print(f"  · {esc(note)}", highlight=False)
    for note in rec.get("suggestions", []):
        out.print(f"  → {esc(note)}", highlight=False)
    for name, v in result.repeat.items():
        out.print(f"repeat {esc(name)}: {v['differing']} of {v['n']} outputs differed across "
                  f"{len(v['runs'])} runs at the same settings; quality "
                  + ", ".join(fmt(q) for q in v["quality"]))
    out.print(f"[dim]runs stored in {esc(str(session.store.path))}; see `ladder show RUN_ID "
              f"--task {esc(str(task_dir))}`[/]")
    if result.report:
        out.print(f"report: {result.report['html']} (summary: {result.report['markdown']})",
                  highlight=False)
    return result


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




@app.command()
def run(task_dir: TaskDir, model: ModelOpt = "default",
        rungs: Annotated[str | None, typer.Option(help="comma-separated rung names")] = None,
        skip_bad_rows: SkipOpt = False, resume: ResumeOpt = False,
        run_all: Annotated[bool, typer.Option("--all", help="run every rung, even after one "
                                              "meets the bar, to compare them")] = False,
        no_report: Annotated[bool, typer.Option("--no-report",
                                                help="skip writing the HTML report")] = False,
        models: Annotated[str | None, typer.Option(
            help="comma-separated model keys climbed together: every prompting rung on each "
                 "model, cheapest cell first (default: [ladder] models)")] = None,
        as_json: JsonOpt = False) -> None:
    """Climb the rungs cheapest first, stop at the first that meets the bar (or run --all),
    compare with paired tests, recommend, and write the HTML report."""
    names = [r.strip() for r in rungs.split(",")] if rungs else None
    keys = [m.strip() for m in models.split(",") if m.strip()] if models else None
    _climb(task_dir, names, model, skip_bad_rows, resume, as_json, run_all=run_all,
           report=not no_report, models=keys)


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
    plugins.get("rungs", rung)  # fail fast on an unknown name
    if on_logs:
        _on_logs(task_dir, rung, model, as_json)
        return
    _climb(task_dir, [rung], model, skip_bad_rows, resume, as_json, repeat)


def _on_logs(task_dir: Path, rung: str, model_key: str, as_json: bool) -> None:
    doc = eval_on_logs(task_dir, rung, model_key, status=err.status)
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    (summary,) = doc["rungs"]
    out.print(summary_table([summary], f"{doc['task']} — agreement ({doc['metric']}) with the "
                                       f"served answers on {doc['logged_requests']} logged "
                                       f"requests, model {model_key}"))
    out.print(f"[yellow]note:[/] {doc['note']}. Served by: "
              + ", ".join(f"{esc(k)} ({v})" for k, v in doc["served_by"].items()),
              highlight=False)
    out.print(f"[dim]run {summary['run_id']} stored[/]")


@app.command()
def index(task_dir: TaskDir, as_json: JsonOpt = False) -> None:
    """Build or update the task's corpus index; only changed chunks are embedded."""
    task, _ = task_store(task_dir)
    with err.status("loading the embedder…"):
        embedder = build_embedder(task.corpus)
    with progress_bar() as bar:
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
        out.print(f"  [yellow]skipped[/] {esc(str(p))}", highlight=False)
    for d in report.hidden_text:
        out.print(f"  [yellow]hidden characters[/] in {esc(d)} (zero-width or invisible text)",
                  highlight=False)
    out.print(f"[dim]index: {report.store}[/]")


@app.command()
def ask(task_dir: TaskDir, question: Annotated[str, typer.Argument(help="the question")],
        model: ModelOpt = "default",
        show_context: Annotated[bool, typer.Option("--show-context",
                                                    help="print the retrieved chunks")] = False,
        as_json: JsonOpt = False) -> None:
    """Answer one question with the RAG rung, citing the chunks it used."""
    session = open_session(task_dir, model, ["rag"], skip_bad_rows=True, status=err.status)
    pipeline = get_rung("rag").build(session.prep.context(train=[], dev=[]))
    messages, context = pipeline.prepare(question)
    assert session.model is not None
    (gen,) = session.model.generate([messages], pipeline.params)
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
    out.print(esc(answer), highlight=False)
    out.print()
    for c in context:
        out.print(f"[{c['n']}] {esc(c['source'])} (part {c['position'] + 1}, score "
                  f"{c['score']:.3f})" + ("  [yellow]contains instructions[/]"
                                          if c["n"] in flagged else ""), highlight=False)
        if show_context:
            out.print(f"[dim]{esc(c['text'])}[/]", highlight=False)


@app.command()
def check(task_dir: TaskDir, skip_bad_rows: SkipOpt = False,
          export_suspects: Annotated[Path | None, typer.Option(
              "--export-suspects", help="write the likely mislabelled examples as JSONL "
              "for review")] = None,
          no_embeddings: Annotated[bool, typer.Option(
              "--no-embeddings", help="skip the checks that need the embedder (semantic "
              "duplicates, likely mislabels)")] = False,
          as_json: JsonOpt = False) -> None:
    """Validate the task file and examples; report bad rows, splits, leakage, labels and the
    data audit (conflicting duplicates, rare labels, outliers, likely mislabels). Exits 2
    when a row is bad, like a linter, unless --skip-bad-rows accepts them. Changes no data; the
    audit is stored in .ladder/audit.json for the report."""
    task, _ = task_store(task_dir)
    prep = prepare(task, skip_bad_rows=True)
    embed = None
    if not no_embeddings:
        with err.status("loading the embedder…"):
            embed = build_embedder(task.corpus).embed
    with err.status("auditing the examples…"):
        rep = audit(prep, embed)
    save_audit(task, rep)  # the report and the web view show the newest audit
    if export_suspects is not None:
        n = write_suspects(rep, export_suspects)
        err.print(f"{n} suspect(s) written to {esc(str(export_suspects))}", highlight=False)
    s = prep.splits
    doc = {"task": task.name, "rows": prep.rows_read, "bad_rows": [str(p) for p in prep.problems],
           "split": {k: len(v) for k, v in s.ids().items()}, "capped_test": s.capped_test,
           "leakage": [vars(leak) for leak in (s.leakage.leaks if s.leakage else [])],
           "labels": prep.labels, "audit": rep.as_dict(),
           "power": power(prep, len(ladder_for(task))),
           "ok": not prep.problems or skip_bad_rows}
    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        out.print(f"[bold]{esc(task.name)}[/]: {prep.rows_read} rows, {len(prep.problems)} bad")
        for p in prep.problems[:50]:
            out.print(f"  [red]✗[/] {esc(str(p))}", highlight=False)
        out.print(f"split: train {len(s.train)} / dev {len(s.dev)} / test {len(s.test)}")
        for leak in (s.leakage.leaks if s.leakage else [])[:20]:
            out.print("  [yellow]leak[/] " + esc(f"{leak.kind}: train {leak.train_id} ~ test "
                                                 f"{leak.test_id} {leak.detail}"), highlight=False)
        if prep.labels:
            out.print(f"labels ({len(prep.labels)}): " + esc(", ".join(prep.labels)),
                      highlight=False)
        _print_audit(rep)
        out.print("[bold]power[/]: " + esc(doc["power"]["sentence"]), highlight=False)
    if prep.problems and not skip_bad_rows:
        raise LadderError(f"{len(prep.problems)} bad row(s) (listed above); fix them, or pass "
                          "--skip-bad-rows to accept them (they are left out of every run)")
    if prep.problems:
        err.print(f"[yellow]{len(prep.problems)} bad row(s) accepted with --skip-bad-rows[/]")


def _print_audit(rep: Audit) -> None:
    """The data audit for a human: what to review, with ids (nothing was changed)."""
    out.print(f"[bold]audit[/] of {rep.examples} examples (nothing changed; review these):")
    for c in rep.conflicts[:20]:
        pairs = ", ".join(f"{i} → {o!r}" for i, o in zip(c["ids"], c["outputs"], strict=True))
        out.print("  [yellow]conflict[/] " + esc(f"{c['kind']} duplicate input, different "
                                                 f"outputs: {pairs} {c['detail']}"),
                  highlight=False)
    if len(rep.conflicts) > 20:
        out.print(f"  … and {len(rep.conflicts) - 20} more conflicts")
    if rep.rare_labels:
        out.print("  [yellow]rare labels[/] (≤ 2 examples): " + esc(", ".join(
            f"{k} ({v})" for k, v in rep.rare_labels.items())), highlight=False)
    for lab, where in rep.one_split_labels.items():
        out.print(f"  [yellow]label in one split[/] {esc(lab)}: {esc(where)}", highlight=False)
    for o in rep.length_outliers[:20]:
        out.print(f"  [yellow]length outlier[/] {esc(o['id'])}: {o['chars']} characters "
                  f"(median {o['median_chars']})", highlight=False)
    for o in rep.format_outliers[:20]:
        out.print(f"  [yellow]format outlier[/] {esc(', '.join(o['ids'][:10]))}: "
                  f"{esc(o['why'])}", highlight=False)
    for sus in rep.suspects[:20]:
        out.print(f"  [yellow]likely mislabelled[/] {esc(sus.id)}: {esc(repr(sus.given))} → "
                  f"suggested {esc(repr(sus.suggested))} (p={sus.confidence:.2f} vs "
                  f"{sus.given_probability:.2f}) {esc(sus.input[:70])}", highlight=False)
    if len(rep.suspects) > 20:
        out.print(f"  … and {len(rep.suspects) - 20} more suspects (--export-suspects FILE "
                  "writes them all)")
    for note in rep.notes:
        out.print(f"  [dim]{esc(note)}[/]", highlight=False)
