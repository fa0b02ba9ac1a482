"""HTML pages: the ladder report, the comparison of two runs, and the web view's index.

Every page is one self-contained document: inline CSS, a few lines of inline JS for the
filters, inline SVG charts; nothing is fetched. Every value from the store (model outputs,
prompts, inputs, rung names) is escaped with `html.escape`, so an output containing
`<script>` is shown as text. Skipped: sorting tables, pagination, dark mode.
"""

from __future__ import annotations

import json
import time
from html import escape
from typing import Any

from llm_ladder.costs import break_even_sentence, minutes
from llm_ladder.decide import budget_latency
from llm_ladder.optimize import trace_rows
from llm_ladder.report.charts import break_even_chart, color, scatter
from llm_ladder.serving.latency import served

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:0 auto;max-width:1200px;
padding:16px 24px;color:#222}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ddd;padding:4px 8px;
text-align:right;vertical-align:top}th{background:#f4f4f4}td.l,th.l{text-align:left}
.rec{padding:10px 14px;border-left:5px solid #2a2;background:#f3fbf3}
.rec.none{border-color:#c80;background:#fdf8ef}.muted{color:#666}
.charts{display:flex;flex-wrap:wrap;gap:16px}.charts figure{margin:0}
figcaption{font-size:12px;color:#555;max-width:520px}
.ex{border:1px solid #ddd;border-radius:4px;margin:10px 0;padding:8px}
.cells{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:8px}
.cell{border-left:4px solid #999;padding:4px 8px;background:#fafafa}
.cell[data-status=correct]{border-color:#2a2}.cell[data-status=incorrect]{border-color:#c22}
.cell[data-status=unscored]{border-color:#c80}
pre{white-space:pre-wrap;word-break:break-word;margin:4px 0;font-size:12px;background:#f6f6f6;
padding:4px}.role{font-weight:bold;color:#036}.controls{position:sticky;top:0;background:#fff;
padding:6px 0;border-bottom:1px solid #eee}
.fixed{color:#182}.broken{color:#c22}
tr.baseline-row td{color:#666;font-style:italic;background:#fafafa}
"""

FILTER_JS = """
(function(){
  var rung=document.getElementById('f-rung'), st=document.getElementById('f-status'),
      count=document.getElementById('f-count');
  function apply(){
    var shown=0;
    document.querySelectorAll('.ex').forEach(function(ex){
      var cells=Array.prototype.slice.call(ex.querySelectorAll('.cell'));
      cells.forEach(function(c){c.hidden=(rung.value!=='all'&&c.dataset.rung!==rung.value);});
      var visible=cells.filter(function(c){return !c.hidden;});
      var ok=st.value==='all'||visible.some(function(c){return c.dataset.status===st.value;});
      ex.hidden=!ok; if(ok){shown++;}
    });
    count.textContent=shown+' example(s) shown';
  }
  rung.addEventListener('change',apply); st.addEventListener('change',apply); apply();
})();
"""

COMPARE_JS = """
(function(){
  var k=document.getElementById('f-kind'), count=document.getElementById('f-count');
  function apply(){
    var shown=0;
    document.querySelectorAll('.ex').forEach(function(ex){
      var ok=k.value==='all'||ex.dataset.kind===k.value; ex.hidden=!ok; if(ok){shown++;}
    });
    count.textContent=shown+' example(s) shown';
  }
  k.addEventListener('change',apply); apply();
})();
"""


def e(x: Any) -> str:
    return escape("" if x is None else str(x), quote=True)


def page(title: str, body: str, script: str = "") -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">"
            f"<title>{e(title)}</title><style>{CSS}</style></head><body>{body}"
            + (f"<script>{script}</script>" if script else "") + "</body></html>\n")


def num(x: float | None, spec: str = ".3f") -> str:
    return "—" if x is None else format(x, spec)


def q_cell(q: dict[str, Any]) -> str:
    if q.get("value") is None:
        return "—"
    return f"{q['value']:.3f} <span class=muted>[{q['low']:.3f}, {q['high']:.3f}]</span>"


def messages_html(msgs: list[dict[str, Any]] | None) -> str:
    out = []
    for m in msgs or []:
        content = m.get("content")
        if not isinstance(content, str):
            content = json.dumps(content, ensure_ascii=False)
        out.append(f"<div><span class=role>{e(m.get('role'))}:</span><pre>{e(content)}</pre>"
                   "</div>")
    return "".join(out)


def input_text(inp: Any) -> str:
    if isinstance(inp, str):
        return inp
    return "\n".join(f"{m.get('role')}: {m.get('content')}" for m in inp or [])


def _ladder_table(d: dict[str, Any]) -> str:
    rec = d["decision"]
    anchor = rec.get("rung") or rec.get("closest")
    tests = {c["b"]: c for c in rec.get("comparisons", []) if c["a"] == anchor}
    head = ("<tr><th class=l>rung</th><th class=l>model</th><th>quality [95% CI]</th><th>n</th>"
            "<th>unscored</th><th>tok in</th><th>tok out</th><th title=\"per request as `ladder "
            "serve` answers it, at the serving concurrency (the latency budget's figure)\">"
            "served p50 ms</th><th>served p95 ms</th><th title=\"one request at a time, an idle "
            "server; TTFT: time to first token when streamed\">alone p95 ms</th><th title="
            "\"the evaluation's batches: a throughput figure\">batch p95 ms</th>"
            f"<th>$/1k req</th><th class=l>one-time</th><th class=l>vs {e(anchor or '—')}</th>"
            "</tr>")
    rows = []
    for s in d["summaries"]:
        own = d["ownership"][s["rung"]]
        t = tests.get(s["rung"])
        vs = "—" if s["rung"] == anchor else "not compared"
        if t and t["n"]:
            vs = (f"{t['diff']:+.3f} [{t['low']:+.3f}, {t['high']:+.3f}], "
                  f"{_test_name(t['test'])} "
                  f"p={t['p_value']:.3g}")
        one = ("—" if not own["one_time_what"] else
               (f"{minutes(own['one_time_s'])}: " if own["one_time_s"] is not None else "")
               + own["one_time_what"])
        ms = (lambda v: num(v and v * 1000, ".0f"))  # noqa: E731
        mark = " ✔" if s["rung"] == rec.get("rung") else ""
        rows.append(f"<tr class=rung-row data-rung=\"{e(s['rung'])}\"><td class=l>"
                    f"{e(s['rung'])}{mark}</td><td class=l>{e(s.get('model'))}</td>"
                    f"<td>{q_cell(s['quality'])}</td><td>{s['n']}</td><td>{s['unscored']}</td>"
                    f"<td>{num(s['tokens_in_mean'], '.0f')}</td>"
                    f"<td>{num(s['tokens_out_mean'], '.1f')}</td>"
                    f"<td>{ms(served(s).get('p50_s'))}</td><td>{ms(served(s).get('p95_s'))}</td>"
                    f"<td>{_alone(s)}</td><td>{ms(s['latency_p95_s'])}</td>"
                    f"<td>{num(s['cost_per_1k_usd'], '.4f')}</td><td class=l>{e(one)}</td>"
                    f"<td class=l>{e(vs)}</td></tr>")
    rows += [_baseline_row(b, anchor, rec) for b in rec.get("baselines") or []]
    return f"<table id=ladder-table>{head}{''.join(rows)}</table>"


def _alone(s: dict[str, Any]) -> str:
    """The alone p95 cell: ms, with the time to first token when the probe streamed."""
    alone = served(s, "alone")
    text = num(alone.get("p95_s") and alone["p95_s"] * 1000, ".0f")
    ttft = alone.get("ttft_p95_s")
    return text + (f" <span class=muted>(TTFT {ttft * 1000:.0f})</span>"
                   if ttft is not None else "")


def _grid(d: dict[str, Any]) -> str:
    """A multi-model ladder's rung x model grid: quality [CI] and $/1k requests per cell."""
    cells = [s for s in d["summaries"] if s.get("base_rung")]
    models = list(dict.fromkeys(s.get("model") for s in cells))
    if len(models) < 2:
        return ""
    rungs = list(dict.fromkeys(s["base_rung"] for s in cells))
    at = {(s["base_rung"], s.get("model")): s for s in cells}
    chosen = d["decision"].get("rung")
    head = "<tr><th class=l>rung</th>" + "".join(f"<th>{e(m)}</th>" for m in models) + "</tr>"
    rows = []
    for r in rungs:
        tds = []
        for m in models:
            s = at.get((r, m))
            if s is None:
                tds.append("<td class=muted>not run</td>")
                continue
            mark = " ✔" if s["rung"] == chosen else ""
            tds.append(f"<td>{q_cell(s['quality'])}{mark}<br><span class=muted>"
                       f"${num(s.get('cost_per_1k_usd'), '.4f')}/1k</span></td>")
        rows.append(f"<tr><td class=l>{e(r)}</td>{''.join(tds)}</tr>")
    return ("<h3>Rung × model</h3><table id=grid-table>" + head + "".join(rows) + "</table>"
            "<p class=muted>Each cell is one rung on one model, on the same test examples; a "
            "rung that trains has a cell only on the model it tunes.</p>")


def _baseline_row(b: dict[str, Any], anchor: str | None, rec: dict[str, Any]) -> str:
    """A trivial baseline (label metrics: majority class, uniform random) under the rungs,
    with the same interval; not a rung, so no cost columns. The majority row shows the paired
    test the anchor rung had to pass against it."""
    t = next((c for c in rec.get("comparisons", []) if c["a"] == b["rung"]
              and c["b"] == anchor), None)
    vs = "—"
    if t and t["n"]:
        vs = (f"{-t['diff']:+.3f} [{-t['high']:+.3f}, {-t['low']:+.3f}], "
              f"{_test_name(t['test'])} p={t['p_greater']:.3g} ({anchor} better, one-sided)")
    return (f"<tr class=baseline-row data-baseline=\"{e(b.get('baseline'))}\"><td class=l>"
            f"{e(b['rung'])}</td><td class=l>—</td><td>{q_cell(b['quality'])}</td>"
            f"<td>{b['n']}</td><td>{b.get('unscored', 0)}</td>"
            + "<td>—</td>" * 7 + f"<td class=l>—</td><td class=l>{e(vs)}</td></tr>")


def _test_name(test: str) -> str:
    return {"mcnemar": "McNemar", "sign-flip permutation": "sign-flip permutation",
            "permutation (macro-F1)": "macro-F1 permutation"}.get(test, test)


def _recommendation(rec: dict[str, Any]) -> str:
    items = "".join(f"<li>{e(n)}</li>" for n in rec.get("notes", []))
    sugg = "".join(f"<li>{e(n)}</li>" for n in rec.get("suggestions", []))
    settings = ""
    if rec.get("rung"):
        settings = (f"<details><summary>settings of {e(rec['rung'])}</summary><pre>"
                    f"{e(json.dumps(rec.get('settings'), indent=2, ensure_ascii=False))}</pre>"
                    f"<pre>generation: {e(json.dumps(rec.get('params'), ensure_ascii=False))}"
                    f"</pre><pre>{e(json.dumps(rec.get('model_info'), indent=2))}</pre>"
                    "</details>")
    return (f"<div id=recommendation class=\"rec{'' if rec['meets_bar'] else ' none'}\">"
            f"<strong>{'Recommendation' if rec['meets_bar'] else 'Result'}:</strong> "
            f"{e(rec['reason'])}{settings}"
            + (f"<ul>{items}</ul>" if items else "")
            + (f"<p><strong>What the evidence suggests</strong></p><ul>{sugg}</ul>"
               if sugg else "") + "</div>")


def _charts(d: dict[str, Any]) -> str:
    # the latency budget's figure: served p95 at the serving concurrency, else (a run from
    # before the probe) the batch p95
    rows = [s | {"latency_p95_ms": (p95 := budget_latency(s)[0]) and p95 * 1000}
            for s in d["summaries"]]
    rec = d["decision"].get("rung")
    figs = []
    for key, label, title in (("cost_per_1k_usd", "$ per 1k requests", "quality vs cost"),
                              ("latency_p95_ms", "served p95 latency (ms)",
                               "quality vs latency")):
        svg, skipped = scatter(rows, key, label, title, d["bar"], rec)
        cap = (f"{title}: dots are rungs with their 95% interval (in a rung x model grid, "
               "cells rung@model coloured by model); the dotted line joins the "
               "Pareto front (no other rung is both cheaper and better); the dashed red line "
               "is the bar.") + (f" Not plotted (no value): {', '.join(skipped)}."
                                 if skipped else "")
        figs.append(f"<figure class=chart>{svg or '<p>no data</p>'}<figcaption>{e(cap)}"
                    "</figcaption></figure>")
    own = d["ownership"]
    rpd = d["budget"].get("requests_per_day")
    lines, unknown = [], []
    for name in d["rungs"]:
        o = own[name]
        per = o["per_request_usd"]
        if o["recurring_per_year_usd"] and rpd and per is not None:
            per += o["recurring_per_year_usd"] / (365 * rpd)
        if per is None or (o["one_time_usd"] is None and o["one_time_what"]):
            unknown.append(name)
            continue
        lines.append((name, o["one_time_usd"] or 0.0, per))
    finite = [b["requests"] for b in d["break_even"] if b.get("requests")]
    horizon = 2 * max(finite) if finite else (365 * rpd if rpd else 1_000_000)
    svg = break_even_chart(lines, horizon, "cumulative cost vs requests")
    cap = ("Cumulative cost: one-time cost (training, labelling) plus per-request cost × "
           f"requests, up to {horizon:,.0f} requests"
           + (f" ({horizon / rpd:,.0f} days at {rpd:g} requests/day)" if rpd else "") + ". "
           + " ".join(break_even_sentence(b) + "." for b in d["break_even"])
           + (f" Not drawn (a cost not measured): {', '.join(unknown)}." if unknown else ""))
    figs.append(f"<figure class=chart id=break-even>{svg or '<p>no costs</p>'}<figcaption>"
                f"{e(cap)}</figcaption></figure>")
    return f"<div class=charts>{''.join(figs)}</div>"


def _ownership(d: dict[str, Any]) -> str:
    rows = []
    for name in d["rungs"]:
        o = d["ownership"][name]
        per = o["per_request_usd"]
        rows.append(f"<tr><td class=l>{e(name)}</td><td>{num(per and per * 1000, '.4f')}</td>"
                    f"<td>{num(o['tokens_per_request'], '.0f')}</td>"
                    f"<td>{num(o['one_time_usd'], '.4f')}</td><td class=l>"
                    f"{e(o['one_time_what'] or '—')}</td>"
                    f"<td>{num(o['recurring_per_year_usd'], '.4f')}</td><td class=l>"
                    f"{e(o['recurring_what'] or '—')}</td></tr>")
    notes = [n for name in d["rungs"] for n in d["ownership"][name]["notes"]]
    return ("<table id=ownership><tr><th class=l>rung</th><th>$/1k req</th><th>tokens/req</th>"
            "<th>one-time $</th><th class=l>one-time work</th><th>recurring $/year</th>"
            f"<th class=l>recurring work</th></tr>{''.join(rows)}</table>"
            + "".join(f"<p class=muted>{e(n)}</p>" for n in notes))


def _analysis(d: dict[str, Any]) -> str:
    out = []
    for name in d["rungs"]:
        a = d["analysis"][name]
        cats = "".join(f"<tr><td class=l>{e(c)}</td><td>{n}</td><td class=l>"
                       f"{e(', '.join(a['examples'].get(c, [])))}</td></tr>"
                       for c, n in sorted(a["categories"].items(), key=lambda kv: -kv[1]))
        cats += "".join(f"<tr><td class=l>unscored: {e(r)}</td><td>{n}</td><td></td></tr>"
                        for r, n in a["unscored"].items())
        extra = ""
        if a["confusions"]:
            extra += "<p class=muted>most common confusions (reference → output): " + e(
                "; ".join(f"{k} ×{v}" for k, v in a["confusions"].items())) + "</p>"
        if a["wrong_fields"]:
            extra += "<p class=muted>fields most often wrong: " + e(
                "; ".join(f"{k} ×{v}" for k, v in a["wrong_fields"].items())) + "</p>"
        out.append(f"<h3>{e(name)}: {a['failed']} of {a['n']} wrong</h3>"
                   + (f"<table class=errors><tr><th class=l>kind</th><th>count</th>"
                      f"<th class=l>examples</th></tr>{cats}</table>" if cats else "")
                   + extra)
    return "".join(out)


def _examples(d: dict[str, Any]) -> str:
    opts = "".join(f"<option value=\"{e(r)}\">{e(r)}</option>" for r in d["rungs"])
    controls = ("<div class=controls><label>rung <select id=f-rung><option value=all>all rungs"
                f"</option>{opts}</select></label> <label>status <select id=f-status>"
                "<option value=all>all</option><option value=correct>correct</option>"
                "<option value=incorrect>incorrect</option><option value=unscored>unscored"
                "</option></select></label> <span id=f-count class=muted></span></div>")
    items = []
    for ex in d["examples"]:
        cells = []
        for i, rung in enumerate(d["rungs"]):
            c = ex["cells"].get(rung)
            if c is None:
                continue
            why = f" ({e(c['reason'])})" if c["reason"] else ""
            src = (f"<div class=muted>retrieved: {e(', '.join(map(str, c['retrieved'])))}</div>"
                   if c["retrieved"] else "")
            cells.append(
                f"<div class=cell data-rung=\"{e(rung)}\" data-status=\"{c['status']}\">"
                f"<div><strong style=\"color:{color(i)}\">{e(rung)}</strong> — {c['status']}, "
                f"score {num(c['score'], '.2f')}{why}</div><div>output:</div>"
                f"<pre class=output>{e(c['output'])}</pre>{src}"
                f"<details><summary>exact prompt and raw output</summary>"
                f"{messages_html(c['messages'])}<div class=role>raw output:</div>"
                f"<pre>{e(c['raw_output'])}</pre></details></div>")
        items.append(f"<section class=ex data-id=\"{e(ex['id'])}\"><div><strong>"
                     f"{e(ex['id'])}</strong></div><div>input:</div><pre>"
                     f"{e(input_text(ex['input']))}</pre><div>reference:</div><pre>"
                     f"{e(ex['reference'])}</pre><div class=cells>{''.join(cells)}</div>"
                     "</section>")
    return controls + "".join(items)


def _audit(stored: dict[str, Any] | None, limit: int = 50) -> str:
    """The data audit `ladder check` stored (llm_ladder.audit): what to review, with ids."""
    if not stored:
        return ("<p class=muted id=audit>No data audit stored for this task: run <code>ladder "
                "check TASK</code> (it finds conflicting duplicates, likely mislabelled rows, "
                "rare labels, labels in one split and outliers), then re-render the report."
                "</p>")
    a = stored["audit"]
    head = (f"<p class=muted id=audit>{a['examples']} examples audited by <code>ladder check"
            f"</code> on {e(stored.get('created', '?'))}; nothing was changed, these are for "
            "review (<code>ladder check --export-suspects FILE</code> writes the suspects as "
            "JSONL).</p>")
    if stored.get("stale"):
        head += ("<p class=\"rec none\">The example files changed since this audit: run "
                 "<code>ladder check</code> again.</p>")
    parts = [head]

    def table(title: str, cols: list[str], rows: list[list[str]], total: int) -> None:
        if not total:
            return
        more = (f" <span class=muted>(first {limit} of {total})</span>"
                if total > len(rows) else "")
        parts.append(f"<h3>{e(title)}: {total}{more}</h3><table class=audit><tr>"
                     + "".join(f"<th class=l>{e(c)}</th>" for c in cols) + "</tr>"
                     + "".join("<tr>" + "".join(f"<td class=l>{c}</td>" for c in r) + "</tr>"
                               for r in rows) + "</table>")

    sus = a.get("suspects") or []
    table("Likely mislabelled", ["id", "given label", "suggested label", "confidence",
                                 "p(given)", "input"],
          [[e(x["id"]), e(x["given"]), e(x["suggested"]), num(x["confidence"], ".2f"),
            num(x["given_probability"], ".2f"), e(x["input"][:160])] for x in sus[:limit]],
          len(sus))
    con = a.get("conflicts") or []
    table("Conflicting duplicates (same or near-same input, different outputs)",
          ["kind", "ids → outputs", "detail"],
          [[e(c["kind"]), "<br>".join(f"{e(i)} → {e(o)}" for i, o in
                                      zip(c["ids"], c["outputs"], strict=True)),
            e(c.get("detail", ""))] for c in con[:limit]], len(con))
    rare = a.get("rare_labels") or {}
    table("Rare labels (≤ 2 examples)", ["label", "examples"],
          [[e(k), str(v)] for k, v in list(rare.items())[:limit]], len(rare))
    one = a.get("one_split_labels") or {}
    table("Labels in one split only", ["label", "where"],
          [[e(k), e(v)] for k, v in list(one.items())[:limit]], len(one))
    length = a.get("length_outliers") or []
    table("Output-length outliers", ["id", "characters", "median"],
          [[e(o["id"]), str(o["chars"]), str(o["median_chars"])] for o in length[:limit]],
          len(length))
    fmt = a.get("format_outliers") or []
    table("Format outliers", ["ids", "why"],
          [[e(", ".join(o["ids"][:10])), e(o["why"])] for o in fmt[:limit]], len(fmt))
    if len(parts) == 1:
        parts.append("<p>The audit found nothing to review.</p>")
    parts += [f"<p class=muted>{e(n)}</p>" for n in a.get("notes") or []]
    return "".join(parts)


def render_report(d: dict[str, Any]) -> str:
    s0 = d["summaries"][0]
    head = (f"<h1>{e(d['task'])} — ladder {e(d['id'])}</h1><p class=muted>metric "
            f"{e(d['metric'])}, bar {e(d['bar'] if d['bar'] is not None else 'not set')}, "
            f"{s0['n']} test examples; report written "
            f"{e(time.strftime('%Y-%m-%d %H:%M'))}; an example is correct when its score is "
            "at least 0.5.</p>")
    body = (head + _recommendation(d["decision"]) + "<h2>The ladder</h2>" + _ladder_table(d)
            + _grid(d) + _judge(d)
            + "<h2>Quality, cost and latency</h2>" + _charts(d)
            + "<h2>Cost of ownership</h2>" + _ownership(d)
            + "<h2>Error analysis</h2>" + _analysis(d)
            + "<h2>Data audit</h2>" + _audit(d.get("audit"))
            + _optimized(d.get("prompts") or {}) + _upgrades(d.get("upgrades") or [])
            + "<h2>Examples</h2>" + _examples(d))
    return page(f"{d['task']} — ladder report", body, FILTER_JS)


def _iv(x: dict[str, Any] | None, spec: str = ".3f") -> str:
    """"value [low, high]" of an interval dict, or "—"."""
    if not x or x.get("value") is None:
        return "—"
    if x.get("low") is None:
        return num(x["value"], spec)
    return (f"{num(x['value'], spec)} <span class=muted>[{num(x['low'], spec)}, "
            f"{num(x['high'], spec)}]</span>")


def _judge(d: dict[str, Any]) -> str:
    """A judged ladder: the judge model, its agreement with human scores (or "unknown"),
    whether a rung was refused for it, and per rung the PPI interval beside the plain one."""
    judged = [s for s in d["summaries"] if s.get("judge")]
    if not judged:
        return ""
    configs = {r["id"]: (r.get("config") or {}).get("judge") or {} for r in d["runs"]}
    j0 = judged[0]["judge"]
    t = j0.get("trust") or {}
    cfg = configs.get(judged[0]["run_id"]) or {}
    model = cfg.get("model")  # the judge's describe(): a dict, or a string in older runs
    if isinstance(model, dict):
        model = " ".join(str(model[k]) for k in ("backend", "name") if model.get(k))
    key = t.get("judge_model") or cfg.get("key") or "—"
    who = key + (f" ({model})" if model and model != key else "")
    a = t.get("agreement") or {}
    if a.get("value") is None:
        agree = f"unknown: {e(j0.get('why') or 'no human scores')}"
    else:
        agree = (f"{e(a.get('name'))} {_iv(a, '.2f')} on {e(a.get('n'))} human-scored answers"
                 + (f"; Spearman {_iv(t['spearman'], '.2f')}" if t.get("spearman") else ""))
    rows = []
    for s in judged:
        j = s["judge"]
        ppi = j.get("ppi")
        ppi_cell = (f"{_iv(ppi)} <span class=muted>({ppi.get('n_labelled')} human-scored)"
                    "</span>" if ppi else f"— <span class=muted>{e(j.get('ppi_why'))}</span>")
        verdict = ("trusted" if j.get("ok") else
                   f"<strong>refused</strong>: {e(j.get('why'))}")
        rows.append(f"<tr class=judge-row><td class=l>{e(s['rung'])}</td><td>"
                    f"{_iv(s.get('quality'))}</td><td class=ppi>{ppi_cell}</td>"
                    f"<td class=l>{verdict}</td></tr>")
    return (f"<h2 id=judge>Judge</h2><p id=judge-trust>Judge model {e(who)}, "
            f"{e(t.get('mode') or cfg.get('mode') or '')}; agreement with humans: {agree}; "
            f"floor {num(j0.get('floor'), '.2f')}. A judged rung is recommended only when "
            "the agreement reaches the floor; with human scores the decision uses the PPI "
            "interval.</p>"
            "<table id=judge-table><tr><th class=l>rung</th><th>judge, plain [95% CI]</th>"
            "<th>judge corrected by humans (PPI) [95% CI]</th><th class=l>judge trust</th>"
            "</tr>" + "".join(rows) + "</table>")


def _upgrades(records: list[dict[str, Any]]) -> str:
    """The task's upgrade history (`ladder upgrade`), oldest first."""
    if not records:
        return ""
    rows = "".join(
        f"<tr><td>{e(time.strftime('%Y-%m-%d %H:%M', time.localtime(u['created'])))}</td>"
        f"<td>{e(u['from_model'])} → {e(u['to_model'])}</td><td>{e(u['old_ladder'])} → "
        f"{e(u['new_ladder'])}</td><td>{e(u['verdict'])}</td><td>"
        + "; ".join(f"{e(r['rung'])}: {num((r.get('new_quality') or {}).get('value'))}, "
                    f"fixed {e(r['fixed'])}, broken {e(r['broken'])}" for r in u["rungs"])
        + "</td></tr>" for u in records)
    return ("<h2 id=upgrades>Upgrade history</h2><table><tr><th>when</th><th>model</th>"
            f"<th>ladder</th><th>verdict</th><th>per rung (new quality)</th></tr>{rows}</table>")


def _optimized(prompts: dict[str, Any]) -> str:
    """The optimized prompt verbatim and its search trace (candidates, dev scores)."""
    if not prompts:
        return ""
    html = ["<h2 id=optimized-prompt>Optimized prompt</h2>"]
    for rung, doc in prompts.items():
        tr = doc.get("trace") or {}
        demos = "".join(f"<li><pre>{e(input_text(x['input']))}</pre>→ <pre>{e(x['output'])}"
                        "</pre></li>" for x in doc["demos"][:doc["k"]])
        html.append(
            f"<p>{e(rung)} uses prompt {e(doc['id'])} ({e(doc.get('name'))}, instruction in the "
            f"{e(doc['place'])} turn, k={e(doc['k'])}), chosen by search {e(doc['search_id'])} "
            f"on train + dev only: {e(tr.get('calls'))} model calls in "
            f"{num(tr.get('seconds'), '.0f')} s.</p><pre class=prompt>{e(doc['instruction'])}"
            f"</pre>" + (f"<ol>{demos}</ol>" if demos else ""))
        rows = [f"<tr><td>{e(r['key'])}</td><td>{e(r['instruction'])}</td><td>{e(r['k'])}</td>"
                f"<td>{num(r['A'])}</td><td>{num(r['B'])}</td><td>{r['mark']}</td></tr>"
                for r in trace_rows(tr)]
        html.append(f"<table class=trace><tr><th>candidate</th><th>instruction</th><th>k</th>"
                    f"<th>dev A ({len(tr.get('dev_a', []))})</th><th>dev B "
                    f"({len(tr.get('dev_b', []))})</th><th></th></tr>{''.join(rows)}</table>")
    return "".join(html)


def render_compare(c: dict[str, Any]) -> str:
    a, b, t = c["a"], c["b"], c["test"]
    changes = "".join(f"<tr><td class=l>{e(x['key'])}</td><td class=l><pre>{e(x['a'])}</pre>"
                      f"</td><td class=l><pre>{e(x['b'])}</pre></td></tr>" for x in c["changes"])
    qa = (a["summary"] or {}).get("quality") or {}
    qb = (b["summary"] or {}).get("quality") or {}
    test = ("no examples scored in both runs" if not t["n"] else
            f"{'McNemar' if t['test'] == 'mcnemar' else 'paired bootstrap'} on {t['n']} "
            f"paired examples: difference B − A {t['diff']:+.3f} [{t['low']:+.3f}, "
            f"{t['high']:+.3f}], p={t['p_value']:.3g}"
            + (" (significant)" if t["significant"] else " (not significant)"))
    cnt = c["counts"]
    rows = []
    for x in c["examples"]:
        side = "".join(
            f"<div class=cell data-status=\"{k}\"><strong>{k.upper()}</strong> score "
            f"{num(x[k]['score'], '.2f')}<pre class=output>{e(x[k]['output'])}</pre><details>"
            f"<summary>exact prompt</summary>{messages_html(x[k]['messages'])}</details></div>"
            for k in ("a", "b"))
        rows.append(f"<section class=ex data-kind=\"{x['kind']}\"><strong>"
                    f"{e(x['example_id'])}</strong> <span class=\"{x['kind']}\">{x['kind']}"
                    f"</span><pre>{e(input_text(x['input']))}</pre><div>reference:</div><pre>"
                    f"{e(x['reference'])}</pre><div class=cells>{side}</div></section>")
    body = (f"<h1>Compare {e(a['id'])} → {e(b['id'])}</h1>"
            f"<table><tr><th></th><th class=l>run</th><th class=l>rung</th><th class=l>model"
            f"</th><th>quality</th></tr><tr><td>A</td><td class=l>{e(a['id'])}</td><td class=l>"
            f"{e(a['rung'])}</td><td class=l>{e(a['model'])}</td><td>{q_cell(qa)}</td></tr>"
            f"<tr><td>B</td><td class=l>{e(b['id'])}</td><td class=l>{e(b['rung'])}</td>"
            f"<td class=l>{e(b['model'])}</td><td>{q_cell(qb)}</td></tr></table>"
            f"<p id=test>{e(test)}</p><p>fixed {cnt['fixed']}, broken {cnt['broken']}, "
            f"output changed {cnt['changed']}, same {cnt['same']}</p>"
            "<h2>What changed</h2>"
            + (f"<table id=changes><tr><th class=l>setting</th><th class=l>A</th><th class=l>B"
               f"</th></tr>{changes}</table>" if changes else "<p>no setting differs</p>")
            + "<h2>Examples</h2><div class=controls><label>show <select id=f-kind>"
            "<option value=all>all</option><option value=fixed>fixed</option>"
            "<option value=broken>broken</option><option value=changed>changed output</option>"
            "<option value=same>same</option></select></label> <span id=f-count class=muted>"
            "</span></div>" + "".join(rows))
    return page(f"compare {a['id']} {b['id']}", body, COMPARE_JS)


def render_index(task: str, ladders: list[dict[str, Any]]) -> str:
    rows = []
    ids = []
    for lad in ladders:
        runs = ", ".join(f"{r['rung']} ({num(r['quality'])})" for r in lad["runs"])
        kind = "ladder" if lad["ladder"] else "run"
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(lad["created"]))
        rows.append(f"<tr><td class=l><a href=\"/report/{e(lad['id'])}\">{e(lad['id'])}</a>"
                    f"</td><td class=l>{kind}</td><td class=l>{e(when)}</td><td class=l>"
                    f"{e(runs)}</td></tr>")
        ids += [r["id"] for r in lad["runs"]]
    opts = "".join(f"<option value=\"{e(i)}\">{e(i)}</option>" for i in ids)
    body = (f"<h1>{e(task)} — runs</h1><table id=ladders><tr><th class=l>id</th><th class=l>"
            "kind</th><th class=l>created</th><th class=l>rungs (quality)</th></tr>"
            + "".join(rows) + "</table><h2>Compare two runs</h2><form action=\"/compare\">"
            f"<select name=a>{opts}</select> → <select name=b>{opts}</select> "
            "<button type=submit>compare</button></form>")
    return page(f"{task} — runs", body)
