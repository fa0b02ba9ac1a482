"""The Markdown summary of a ladder report: table, recommendation, cost of ownership and the
failure kinds per rung. Pipes and newlines in values are neutralised so a model output cannot
break the tables. Skipped: charts and per-example outputs (they are in report.html)."""

from __future__ import annotations

from typing import Any

from llm_ladder.costs import break_even_sentence
from llm_ladder.serving.latency import served


def cell(x: Any) -> str:
    return ("—" if x is None else str(x)).replace("|", "\\|").replace("\n", " ")


def num(x: float | None, spec: str = ".3f") -> str:
    return "—" if x is None else format(x, spec)


def render_markdown(d: dict[str, Any]) -> str:
    rec = d["decision"]
    lines = [f"# {cell(d['task'])} — ladder {cell(d['id'])}", "",
             f"Metric `{d['metric']}`, bar {d['bar'] if d['bar'] is not None else 'not set'}, "
             f"{d['summaries'][0]['n']} test examples. Full report with charts and every "
             "example: `report.html` next to this file.", "",
             f"**{'Recommendation' if rec['meets_bar'] else 'Result'}:** {cell(rec['reason'])}",
             ""]
    lines += [f"- {cell(n)}" for n in rec.get("notes", [])]
    if rec.get("suggestions"):
        lines += ["", "What the evidence suggests:", ""]
        lines += [f"- {cell(n)}" for n in rec["suggestions"]]
    lines += ["", "| rung | model | quality [95% CI] | n | unscored | tok in | tok out | served "
              "p95 ms | batch p95 ms | $/1k req | one-time |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in d["summaries"]:
        q = s["quality"]
        qt = "—" if q["value"] is None else f"{q['value']:.3f} [{q['low']:.3f}, {q['high']:.3f}]"
        o = d["ownership"][s["rung"]]
        p95, batch = served(s).get("p95_s"), s["latency_p95_s"]
        lines.append(f"| {cell(s['rung'])} | {cell(s.get('model'))} | {qt} | {s['n']} | "
                     f"{s['unscored']} | {num(s['tokens_in_mean'], '.0f')} | "
                     f"{num(s['tokens_out_mean'], '.1f')} | {num(p95 and p95 * 1000, '.0f')} | "
                     f"{num(batch and batch * 1000, '.0f')} | "
                     f"{num(s['cost_per_1k_usd'], '.4f')} | {cell(o['one_time_what'] or '—')} |")
    for b in rec.get("baselines") or []:  # trivial baselines (label metrics), not rungs
        q = b["quality"]
        qt = "—" if q["value"] is None else f"{q['value']:.3f} [{q['low']:.3f}, {q['high']:.3f}]"
        lines.append(f"| *{cell(b['rung'])}* | — | {qt} | {b['n']} | {b.get('unscored', 0)} "
                     "| — | — | — | — | — | — |")
    if d["break_even"]:
        lines += ["", "Break-even:", ""]
        lines += [f"- {break_even_sentence(b)}" for b in d["break_even"]]
    lines += ["", "## Failures by kind", ""]
    for name in d["rungs"]:
        a = d["analysis"][name]
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(a["categories"].items(),
                                                         key=lambda kv: -kv[1]))
        uns = sum(a["unscored"].values())
        lines.append(f"- **{cell(name)}**: {a['failed']} of {a['n']} wrong"
                     + (f" ({cell(kinds)})" if kinds else "")
                     + (f"; {uns} unscored" if uns else ""))
    return "\n".join(lines) + "\n"
