"""The decision: which rung to ship, and why, in plain sentences.

Climb the rungs in ladder order (cheapest first). A rung meets the bar when the lower bound
of its 95% interval is at or above the bar and it is within the latency and cost budgets.
The first rung that meets the bar is the candidate; a later (more expensive) rung that also
meets the bar replaces it only when a paired test on the same test examples shows it is
better (p < 0.05): exact McNemar for 0/1 scores, a paired bootstrap otherwise. Otherwise the
cheaper rung wins. The reasons name the test, its p-value, the effect with its interval and
what the dearer rung would cost (one-time work, re-training, break-even).

When no rung meets the bar, the result says so, names the closest rung and analyses its
failures by kind (format errors, wrong answers, truncation, unscored) with what the evidence
suggests. Skipped: multiple-comparison correction (comparisons are few and ordered) and
choosing between rungs on a weighted cost/quality score (the bar and budgets are the rule).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from llm_ladder.costs import Ownership, break_even, break_even_sentence, minutes, ownership
from llm_ladder.stats import Paired, paired_test
from llm_ladder.task import Task

LABEL_METRICS = {"accuracy", "macro_f1"}
JSON_METRICS = {"json_valid", "json_match"}
FORMAT_KINDS = {"format error (output names no label)", "invalid JSON", "schema violation",
                "empty output", "truncated (hit max_tokens)"}
CORRECT_AT = 0.5  # an example counts as correct when its score is at least this
Predictions = Callable[[str], list[dict[str, Any]]]


def correct(score: float | None) -> bool | None:
    """Correct, wrong, or None when unscored (0/1 metrics: 1 is correct; others: ≥ 0.5)."""
    return None if score is None else score >= CORRECT_AT


def q_text(q: dict[str, Any]) -> str:
    return f"{q['value']:.3f} [{q['low']:.3f}, {q['high']:.3f}]"


def test_text(t: Paired) -> str:
    name = "McNemar" if t.test == "mcnemar" else "paired bootstrap"
    return (f"{name} p={t.p_value:.3g}, difference {t.diff:+.3f} [{t.low:+.3f}, {t.high:+.3f}] "
            f"on {t.n} paired examples")


def budget_check(task: Task, s: dict[str, Any]) -> tuple[bool, str]:
    """Within the latency and cost budgets? With a sentence either way."""
    b, parts = task.budget, []
    p95 = s.get("latency_p95_s")
    if b.latency_p95_ms and p95 is not None:
        if p95 * 1000 > b.latency_p95_ms:
            return False, (f"p95 latency {p95 * 1000:.0f} ms is over the "
                           f"{b.latency_p95_ms:.0f} ms budget")
        parts.append(f"p95 {p95 * 1000:.0f} ms ≤ {b.latency_p95_ms:.0f} ms")
    cost = s.get("cost_per_1k_usd")
    if b.cost_per_1k_usd is not None and cost is not None:
        if cost > b.cost_per_1k_usd:
            return False, (f"${cost:.4f} per 1k requests is over the "
                           f"${b.cost_per_1k_usd:.4f} budget")
        parts.append(f"${cost:.4f} ≤ ${b.cost_per_1k_usd:.4f} per 1k requests")
    return True, ("within budget (" + ", ".join(parts) + ")") if parts else "no budget set"


def meets_bar(task: Task, s: dict[str, Any]) -> bool:
    """The rule's test for one rung: lower bound at or above the bar, within budget."""
    low = s["quality"]["low"]
    return task.bar is not None and low is not None and low >= task.bar \
        and budget_check(task, s)[0]


def pair(preds_a: list[dict[str, Any]], preds_b: list[dict[str, Any]]) -> Paired:
    """The paired test on the examples both runs scored (matched by example id)."""
    a = {p["example_id"]: p["score"] for p in preds_a if p["score"] is not None}
    b = {p["example_id"]: p["score"] for p in preds_b if p["score"] is not None}
    ids = sorted(set(a) & set(b))
    return paired_test([a[i] for i in ids], [b[i] for i in ids])


def cost_text(o: Ownership) -> str:
    parts = []
    if o.one_time_s is not None:
        parts.append(f"{minutes(o.one_time_s)} of {o.one_time_what or 'one-time work'}")
    elif o.one_time_what:
        parts.append(o.one_time_what)
    if o.recurring_what:
        parts.append(o.recurring_what)
    return " plus ".join(parts)


def _category(p: dict[str, Any], kind: str) -> str:
    d = p.get("details") or {}
    if kind == "label":
        return "format error (output names no label)" if d.get("label") is None \
            else "wrong label"
    if kind == "json":
        if d.get("valid_json") is False or d.get("error"):
            return "invalid JSON"
        if d.get("schema_errors"):
            return "schema violation"
        return "wrong values"
    if not (p.get("output") or "").strip():
        return "empty output"
    if d.get("finish_reason") == "length":
        return "truncated (hit max_tokens)"
    return "low overlap" if p.get("score", 0) > 0 else "wrong answer"


def error_analysis(preds: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """Failures of one run by kind, with example ids, confusions and wrong JSON fields."""
    kind = "label" if metric in LABEL_METRICS else "json" if metric in JSON_METRICS else "text"
    cats: Counter[str] = Counter()
    ids: dict[str, list[str]] = {}
    confusions: Counter[str] = Counter()
    fields: Counter[str] = Counter()
    unscored: Counter[str] = Counter()
    truncated = 0
    for p in preds:
        d = p.get("details") or {}
        if p["score"] is None:
            unscored[p.get("score_reason") or "no reason"] += 1
            continue
        if correct(p["score"]):
            continue
        cat = _category(p, kind)
        cats[cat] += 1
        ids.setdefault(cat, []).append(p["example_id"])
        truncated += d.get("finish_reason") == "length"
        if kind == "label" and d.get("label") is not None:
            confusions[f"{p['reference'].strip()} → {d['label']}"] += 1
        for f, ok in (d.get("fields") or {}).items():
            fields[f] += not ok
    failed = sum(cats.values())
    fmt = sum(n for c, n in cats.items() if c in FORMAT_KINDS)
    return {"kind": kind, "n": len(preds), "failed": failed, "categories": dict(cats),
            "examples": {c: v[:5] for c, v in ids.items()}, "format_errors": fmt,
            "truncated": truncated, "unscored": dict(unscored),
            "confusions": dict(confusions.most_common(5)),
            "wrong_fields": {f: n for f, n in fields.most_common(5) if n}}


def suggestions(task: Task, best: dict[str, Any], analysis: dict[str, Any],
                ran: list[str]) -> list[str]:
    """What the evidence suggests, one sentence each."""
    out = []
    failed, fmt = analysis["failed"], analysis["format_errors"]
    if failed and fmt * 2 >= failed:
        out.append(f"{fmt} of {failed} failures of {best['rung']} are format errors "
                   f"({', '.join(c for c in analysis['categories'] if c in FORMAT_KINDS)}): "
                   "the model does not produce the expected form; few-shot examples or "
                   "fine-tuning (lora) teach it"
                   + ("; truncated outputs need a larger generation.max_tokens"
                      if analysis["truncated"] else "") + ".")
    elif failed:
        has_rag = any(r in ran for r in ("rag", "few-shot-rag"))
        out.append(f"{failed - fmt} of {failed} failures of {best['rung']} are well-formed "
                   "but wrong answers: a knowledge gap or a mapping the model has not learned; "
                   + ("the RAG rungs did not close it, so check retrieval (recall@k) or "
                      "fine-tune on examples." if has_rag else
                      "if the answers are in documents, add a [corpus] and run the RAG rungs; "
                      "if they follow from examples, try few-shot-nearest or fine-tuning."))
    if analysis["unscored"]:
        n = sum(analysis["unscored"].values())
        out.append(f"{n} prediction(s) of {best['rung']} could not be scored ("
                   + "; ".join(f"{r}: {c}" for r, c in analysis["unscored"].items())
                   + "); fix that before trusting the comparison.")
    q = best["quality"]
    if task.bar is not None and q["value"] is not None and q["low"] is not None:
        if q["value"] > task.bar > q["low"]:
            need = best["n"] * ((q["value"] - q["low"]) / (q["value"] - task.bar)) ** 2
            out.append(f"{best['rung']}'s estimate {q['value']:.3f} is above the bar but its "
                       f"interval is too wide with {best['n']} test examples; about "
                       f"{need:.0f} test examples would lift the lower bound to the bar if "
                       "the quality holds (more data).")
    return out


def decide(task: Task, summaries: list[dict[str, Any]], predictions: Predictions | None = None,
           configs: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The recommendation for `summaries` (in ladder order). `predictions(run_id)` gives the
    stored predictions for paired tests and error analysis; `configs` maps run id → config."""
    configs = configs or {}
    rpd = task.budget.requests_per_day
    owned = {s["rung"]: ownership(task, s, configs.get(s.get("run_id")), s.get("model"))
             for s in summaries}
    notes: list[str] = []
    eligible: list[dict[str, Any]] = []
    budget_text: dict[str, str] = {}
    for s in summaries:
        q = s["quality"]
        if q["value"] is None:
            notes.append(f"{s['rung']}: nothing could be scored")
            continue
        ok, why = budget_check(task, s)
        budget_text[s["rung"]] = why
        if task.bar is None:
            continue
        if not ok:
            notes.append(f"{s['rung']}: {q_text(q)} — {why}")
        elif q["low"] < task.bar:
            notes.append(f"{s['rung']}: {q_text(q)} — lower bound below the bar {task.bar:.3f}")
        else:
            eligible.append(s)
    cache: dict[str, list[dict[str, Any]]] = {}

    def preds(s: dict[str, Any]) -> list[dict[str, Any]] | None:
        if predictions is None or not s.get("run_id"):
            return None
        if s["run_id"] not in cache:
            cache[s["run_id"]] = predictions(s["run_id"])
        return cache[s["run_id"]]

    comparisons: list[dict[str, Any]] = []
    chosen = eligible[0] if eligible else None
    reason = ""
    if chosen is not None:
        reason = (f"{chosen['rung']} reaches {q_text(chosen['quality'])} ≥ bar {task.bar:.3f}, "
                  f"{budget_text[chosen['rung']]}; it is the cheapest rung that does.")
        for s in eligible[1:]:
            pa, pb = preds(chosen), preds(s)
            cost = cost_text(owned[s["rung"]])
            costs = f" and it costs {cost}" if cost else ""
            if pa is None or pb is None:
                notes.append(f"{s['rung']} also meets the bar at {q_text(s['quality'])}; no "
                             "stored predictions to test the difference, so the cheaper "
                             f"{chosen['rung']} stays{costs}.")
                continue
            t = pair(pa, pb)
            comparisons.append({"a": chosen["rung"], "b": s["rung"], **t.as_dict()})
            if t.n == 0:
                notes.append(f"{s['rung']} also meets the bar but shares no scored test "
                             f"examples with {chosen['rung']}; the cheaper one stays.")
            elif t.significant and t.diff > 0:
                be = break_even(owned[chosen["rung"]], owned[s["rung"]], rpd)
                reason += (f" {s['rung']} reaches {q_text(s['quality'])} and is significantly "
                           f"better ({test_text(t)}), so the higher rung is worth it{costs}; "
                           f"{break_even_sentence(be)}.")
                chosen = s
            else:
                notes.append(f"{s['rung']} reaches {q_text(s['quality'])} but the difference "
                             f"is not significant ({test_text(t)})"
                             + ("" if t.diff > 0 else ", and it is no better")
                             + f"{costs}; the cheaper {chosen['rung']} wins.")
    ran = [s["rung"] for s in summaries]
    if chosen is not None:
        settings = (configs.get(chosen["run_id"]) or {}).get("settings") or {}
        model = (configs.get(chosen["run_id"]) or {}).get("model")
        for s in summaries:  # the chosen rung against every other rung, for the report
            if s is chosen or any(c["b"] == s["rung"] and c["a"] == chosen["rung"]
                                  for c in comparisons):
                continue
            pa, pb = preds(chosen), preds(s)
            if pa is not None and pb is not None:
                comparisons.append({"a": chosen["rung"], "b": s["rung"],
                                    **pair(pa, pb).as_dict()})
        return {"rung": chosen["rung"], "run_id": chosen.get("run_id"), "meets_bar": True,
                "model": chosen.get("model"), "model_info": model, "settings": settings,
                "reason": f"Ship {chosen['rung']} on model {chosen.get('model')}. " + reason,
                "notes": notes, "comparisons": comparisons,
                "ownership": {k: o.as_dict() for k, o in owned.items()}}
    scored = [s for s in summaries if s["quality"]["value"] is not None]
    best = max(scored, key=lambda s: s["quality"]["value"]) if scored else None
    doc: dict[str, Any] = {
        "rung": None, "run_id": None, "meets_bar": False,
        "closest": best["rung"] if best else None,
        "reason": ("No rung meets the bar with 95% confidence within budget"
                   if task.bar is not None else
                   "No quality bar set in task.toml; showing the comparison only")
        + (f"; the closest is {best['rung']} at {q_text(best['quality'])}"
           + (f" against the bar {task.bar:.3f}" if task.bar is not None else "") + "."
           if best else "."),
        "notes": notes, "comparisons": comparisons, "suggestions": [],
        "ownership": {k: o.as_dict() for k, o in owned.items()}}
    if best is not None:
        p = preds(best)
        if p is not None:
            analysis = error_analysis(p, task.metric.name)
            doc["error_analysis"] = analysis
            doc["suggestions"] = suggestions(task, best, analysis, ran)
            for s in scored:
                ps = preds(s)
                if s is not best and ps is not None:
                    comparisons.append({"a": best["rung"], "b": s["rung"],
                                        **pair(p, ps).as_dict()})
    return doc
