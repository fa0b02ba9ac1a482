"""`ladder synth`: synthetic test questions from the corpus, their review, and the retriever
scored on them (docs/synth.md). Each form is one library call (llm_ladder.synth) plus
rendering; exactly one of --from-corpus, --list, --promote/--reject or --recall is given.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from llm_ladder.cli.common import JsonOpt, TaskDir, app, err, esc, fmt, out, progress_bar
from llm_ladder.errors import LadderError
from llm_ladder.synth import (
    OUTCOMES,
    STATUSES,
    load_rows,
    retrieval_check,
    review_synthetic,
    synthesize,
)


def _ids(values: list[str] | None) -> list[str]:
    return [i.strip() for v in values or [] for i in v.split(",") if i.strip()]


def _iv(d: dict[str, Any] | None) -> str:
    if not d or d.get("value") is None:
        return "—"
    return f"{fmt(d['value'], '.2f')} [{fmt(d['low'], '.2f')}, {fmt(d['high'], '.2f')}]"


@app.command("synth")
def synth(
    task_dir: TaskDir,
    from_corpus: Annotated[int | None, typer.Option(
        "--from-corpus", help="sample N chunks of the index and write a question for each")
    ] = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="model key from task.toml that writes the questions "
        "(default: the task's default model)")] = None,
    seed: Annotated[int, typer.Option("--seed", help="seed of the chunk sample")] = 0,
    list_rows: Annotated[bool, typer.Option("--list", help="list the synthetic rows")] = False,
    status: Annotated[str | None, typer.Option(
        "--status", help="with --list: only rows with this status")] = None,
    promote: Annotated[list[str] | None, typer.Option(
        "--promote", help="promote these row ids (repeat, or comma-separate)")] = None,
    reject: Annotated[list[str] | None, typer.Option(
        "--reject", help="reject these row ids (repeat, or comma-separate)")] = None,
    who: Annotated[str, typer.Option("--who", help="reviewer name stored with a decision")
                   ] = "cli",
    recall: Annotated[bool, typer.Option(
        "--recall", help="score the task's retriever on the promoted rows")] = False,
    include_pending: Annotated[bool, typer.Option(
        "--include-pending", help="with --recall: score pending rows too")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write test questions grounded in sampled corpus chunks (each chunk its gold source),
    drop those answerable without the chunk and near-duplicates of existing examples, and
    keep the rest as pending rows in .ladder/synthetic.jsonl — never in the test split.
    Review them (--list, --promote, --reject, or the web view) and score the retriever on
    the promoted ones (--recall)."""
    promote_ids, reject_ids = _ids(promote), _ids(reject)
    modes = [from_corpus is not None, list_rows, bool(promote_ids or reject_ids), recall]
    if sum(modes) != 1:
        raise LadderError("give exactly one of --from-corpus N, --list, --promote/--reject "
                          "ID, or --recall")
    if status is not None and status not in STATUSES:
        raise LadderError(f"--status must be one of {', '.join(STATUSES)}")
    if from_corpus is not None:
        with progress_bar() as bar:
            tid = bar.add_task("questions", total=None)
            doc = synthesize(task_dir, from_corpus, model, seed,
                             progress=lambda done, total: bar.update(tid, completed=done,
                                                                     total=total))
        if as_json:
            print(json.dumps(doc, indent=2))
            return
        c = doc["counts"]
        t = Table(title=f"{doc['task']} — {c['sampled']} chunks sampled (seed {doc['seed']}), "
                        f"model {doc['model']}")
        t.add_column("outcome")
        t.add_column("chunks", justify="right")
        t.add_row("already done earlier", str(c["already_done"]))
        t.add_row("asked", str(c["asked"]))
        for o in OUTCOMES:
            t.add_row(f"dropped: {o.replace('_', ' ')}", str(c[o]))
        t.add_row("[bold]kept (pending review)[/]", str(c["kept"]))
        out.print(t)
        out.print(f"closed-book rule: {esc(doc['rules']['closed_book'])}; duplicates: "
                  f"{esc(doc['rules']['duplicate'])}; {doc['seconds']:.0f} s; rows in "
                  f"{esc(doc['rows_file'])}", highlight=False)
        return
    if list_rows:
        rows = [r for r in load_rows(task_dir) if status is None or r["status"] == status]
        if as_json:
            print(json.dumps([{k: v for k, v in r.items() if k != "calls"} for r in rows],
                             indent=2, ensure_ascii=False))
            return
        t = Table(title=f"{len(rows)} synthetic row(s)")
        for col in ("id", "status", "question", "answer", "gold document"):
            t.add_column(col)
        for r in rows:
            t.add_row(r["id"], r["status"], esc(r["input"]), esc(r["reference"]),
                      esc(", ".join(r["doc_ids"])))
        out.print(t)
        return
    if promote_ids or reject_ids:
        both = set(promote_ids) & set(reject_ids)
        if both:
            raise LadderError(f"both promoted and rejected: {', '.join(sorted(both))}")
        done = [review_synthetic(task_dir, i, "promote", who) for i in promote_ids]
        done += [review_synthetic(task_dir, i, "reject", who) for i in reject_ids]
        if as_json:
            print(json.dumps([{"id": r["id"], "status": r["status"]} for r in done], indent=2))
        else:
            for r in done:
                out.print(f"{r['id']}: {r['status']}", highlight=False)
        return
    statuses = ("promoted", "pending") if include_pending else ("promoted",)
    with err.status("scoring the retriever on the synthetic rows…"):
        doc = retrieval_check(task_dir, statuses)
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    if not doc["n"]:
        out.print(doc["why"], highlight=False)
        return
    t = Table(title=f"{doc['task']} — retriever ({doc['mode']}, k={doc['k']}) on {doc['n']} "
                    f"synthetic row(s) ({' + '.join(statuses)}); not the human test split")
    t.add_column("metric")
    t.add_column("value [95% interval]")
    for name in ("chunk_recall", "doc_recall", "chunk_mrr", "doc_mrr"):
        t.add_row(name.replace("_", " ").replace("recall", f"recall@{doc['k']}"),
                  _iv(doc.get(name)))
    out.print(t)
