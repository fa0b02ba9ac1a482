"""`ladder report`, `compare`, `ui`: the report of a ladder, comparisons of runs, and a small
local web view of both.

The web view is the standard library's threading HTTP server, bound to 127.0.0.1 by default
(another address needs --allow-remote); it renders the same pages `ladder report` writes,
from the run store, on each request, and a labelling queue that writes labels (behind the
printed token, a session cookie and CSRF tokens: report/server.py). Skipped: starting runs
from the browser.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from llm_ladder.cli.common import JsonOpt, TaskOpt, app, err, esc, fmt, out, task_store
from llm_ladder.errors import LadderError
from llm_ladder.report import compare_runs, write_report
from llm_ladder.report.server import make_server


@app.command()
def report(ident: Annotated[str, typer.Argument(help="ladder id or run id")],
           task: TaskOpt = Path("."),
           out_dir: Annotated[Path | None, typer.Option(
               "--out", help="folder for report.html and report.md "
                             "(default TASK/.ladder/reports/ID)")] = None,
           as_json: JsonOpt = False) -> None:
    """Write the HTML report (tables, charts, per-example outputs) and a Markdown summary."""
    t, store = task_store(task)
    html_path, md_path = write_report(t, store, ident, out_dir)
    if as_json:
        print(json.dumps({"html": str(html_path), "markdown": str(md_path)}, indent=2))
        return
    out.print(md_path.read_text(encoding="utf-8"), markup=False, highlight=False)
    out.print(f"report: {html_path}", highlight=False)


@app.command()
def compare(run_a: Annotated[str, typer.Argument(help="the earlier run id")],
            run_b: Annotated[str, typer.Argument(help="the later run id")],
            task: TaskOpt = Path("."),
            limit: Annotated[int, typer.Option(help="examples to list per kind")] = 10,
            as_json: JsonOpt = False) -> None:
    """What changed between two runs (settings, model) and example by example, with the
    paired test: use it for a new base model or a new prompt."""
    _, store = task_store(task)
    c = compare_runs(store, run_a, run_b)
    if as_json:
        print(json.dumps(c, indent=2, default=str))
        return
    a, b, t = c["a"], c["b"], c["test"]
    qa = ((a["summary"] or {}).get("quality") or {}).get("value")
    qb = ((b["summary"] or {}).get("quality") or {}).get("value")
    out.print(f"A {a['id']} {a['rung']} on {a['model']}: {fmt(qa)}", highlight=False)
    out.print(f"B {b['id']} {b['rung']} on {b['model']}: {fmt(qb)}", highlight=False)
    for ch in c["changes"]:
        out.print(f"  changed {esc(ch['key'])}: {esc(_short(ch['a']))} → "
                  f"{esc(_short(ch['b']))}", highlight=False)
    if not c["changes"]:
        out.print("  no setting differs")
    if t["n"]:
        name = "McNemar" if t["test"] == "mcnemar" else "paired bootstrap"
        out.print(f"B − A = {t['diff']:+.3f} [{t['low']:+.3f}, {t['high']:+.3f}] on {t['n']} "
                  f"paired examples, {name} p={t['p_value']:.3g} — "
                  + ("significant" if t["significant"] else "not significant"))
    else:
        out.print("no test example was scored in both runs")
    n = c["counts"]
    out.print(f"fixed {n['fixed']}, broken {n['broken']}, output changed {n['changed']}, "
              f"same {n['same']}" + (f"; only in A {len(c['only_a'])}, only in B "
                                     f"{len(c['only_b'])}" if c["only_a"] or c["only_b"]
                                     else ""))
    for kind in ("fixed", "broken", "changed"):
        for x in [x for x in c["examples"] if x["kind"] == kind][:limit]:
            out.print(esc(f"  [{kind}] {x['example_id']}: {_short(x['a']['output'])} → "
                           f"{_short(x['b']['output'])} (reference {_short(x['reference'])})"),
                      highlight=False)


def _short(x: object, n: int = 60) -> str:
    s = str(x).replace("\n", " ")
    return s if len(s) <= n else s[: n - 1] + "…"


@app.command()
def ui(task: TaskOpt = Path("."),
       port: Annotated[int, typer.Option(help="port to listen on")] = 8765,
       host: Annotated[str, typer.Option(help="address to bind; keep 127.0.0.1 unless you "
                                              "trust the network")] = "127.0.0.1",
       user: Annotated[str | None, typer.Option(
           "--user", help="who the labels are from (default: the OS user)")] = None,
       allow_remote: Annotated[bool, typer.Option(
           "--allow-remote", help="allow a bind beyond loopback (anyone who can reach it can "
                                  "read every stored prompt; labelling still needs the "
                                  "token)")] = False) -> None:
    """A local web view of the task's runs and ladders (reports, charts, side-by-side
    examples with filters, comparisons) and a labelling queue for served answers and the
    judge's unscored answers (/label; open the printed URL with its token)."""
    task_store(task)  # fail fast on a bad task folder
    try:
        server = make_server(task, host, port,
                             log=lambda line: err.print(f"[dim]{esc(line)}[/]", highlight=False),
                             user=user, allow_remote=allow_remote)
    except OSError as ex:
        raise LadderError(f"cannot listen on {host}:{port}: {ex.strerror}") from None
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]warning:[/] listening on {host}; anyone who can reach it can read "
                  "every stored prompt and output")
    shown = f"[{host}]" if ":" in host else host
    err.print(f"serving {esc(str(task))} on http://{shown}:{server.server_port}/ (Ctrl-C "
              f"stops); label as {esc(server.user)} at http://{shown}:{server.server_port}/"
              f"label?token={server.token}", highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
