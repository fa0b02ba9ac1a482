"""The decision: which rung to ship, and why, in plain sentences (procedure: docs/decision.md).

Rungs come in ladder order (cheapest first). Each rung's quality is tested against the bar
with a one-sided test (exact binomial for 0/1 scores, BCa bootstrap for continuous scores and
macro-F1); failed generations count as wrong. The family of rungs is corrected by Holm's
step-down procedure over the number of rungs the ladder plans to run (fixed before the climb,
so the climb may stop early): a rung passes when Holm rejects "quality ≤ bar" at family-wise
one-sided α = 0.05 (and never at more than 0.025 per rung), it is within the latency budget
(the served p95 at the serving concurrency, serving/latency.py; the batch p95 for runs without
that probe) and the cost budget, at most `metric.max_unscored_share` of its predictions are
unscored, and, for label metrics given a majority-class baseline, a paired test shows it beats
that baseline.

The cheapest passing rung is the candidate; a later passing rung replaces it only when a
one-sided paired test on the same examples (exact McNemar; sign-flip permutation; permutation
of the macro-F1 difference) says it is better at α = 0.05 / (planned − 1), capped at 0.025.
The reasons name the tests, p-values, effects with intervals and what the dearer rung costs.

When no rung passes, the result names the closest rung, analyses its failures by kind and
says how many test examples the corrected test needs (`power_report`). Skipped: weighing cost
against quality on one score (the bar and budgets are the rule). A judged rung (docs/judge.md)
is tested on its prediction-powered interval when human scores exist, and refused while its
judge's agreement with humans is unknown or below the task's floor (`judge_trust_check`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from llm_ladder.costs import (
    Ownership,
    break_even,
    break_even_interval,
    break_even_sentence,
    cost_per_1k,
    minutes,
    ownership,
    price_for,
)
from llm_ladder.curve import advice_for as curve_advice
from llm_ladder.errors import LadderError
from llm_ladder.metrics import LabelAccuracy, MacroF1, build_metric, metric_needs, output_kind
from llm_ladder.stats import (
    Paired,
    counted_score,
    failed_generation,
    min_margin,
    n_needed,
    p_above_binary,
    paired_macro_f1,
    paired_test,
    power_one_sided,
    run_quality,
)
from llm_ladder.task import Task

FORMAT_KINDS = {"format error (output names no label)", "invalid JSON", "schema violation",
                "empty output", "truncated (hit max_tokens)"}
CORRECT_AT = 0.5  # an example counts as correct when its score is at least this
ALPHA = 0.05      # family-wise, one-sided: declaring any rung above the bar when it is not
PER_TEST_CAP = 0.025  # never more lenient than the lower bound of a 95% two-sided interval
POWER = 0.8
Predictions = Callable[[str], list[dict[str, Any]]]


def correct(score: float | None) -> bool | None:
    """Correct, wrong, or None when unscored (0/1 metrics: 1 is correct; others: ≥ 0.5)."""
    return None if score is None else score >= CORRECT_AT


def q_text(q: Mapping[str, Any]) -> str:
    return f"{q['value']:.3f} [{q['low']:.3f}, {q['high']:.3f}]"


def test_text(t: Paired) -> str:
    name = {"mcnemar": "McNemar", "sign-flip permutation": "sign-flip permutation test",
            "permutation (macro-F1)": "paired permutation test of macro-F1"}.get(t.test, t.test)
    return (f"{name} one-sided p={t.p_greater:.3g} (two-sided p={t.p_value:.3g}), difference "
            f"{t.diff:+.3f} [{t.low:+.3f}, {t.high:+.3f}] on {t.n} paired examples")


# ---- the family-wise rule -----------------------------------------------------------------

def planned_count(summaries: Sequence[Mapping[str, Any]], planned: int | None = None) -> int:
    """The family size: `planned`, else the largest `planned_rungs` a summary carries, else
    the number of summaries (then a climb that stopped early is under-counted: pass it)."""
    m = planned or max((int(s.get("planned_rungs") or 0) for s in summaries), default=0)
    return max(m, len(summaries), 1)


def rung_alpha(planned: int) -> float:
    """Bonferroni level of one rung (the first step of Holm)."""
    return min(PER_TEST_CAP, ALPHA / max(planned, 1))


def compare_alpha(planned: int) -> float:
    """Level of one "a dearer rung replaces the candidate" test (at most planned − 1 of them)."""
    return min(PER_TEST_CAP, ALPHA / max(planned - 1, 1))


def holm(p_values: Sequence[float | None], planned: int) -> list[bool]:
    """Holm's step-down rejections at family-wise ALPHA over `planned` hypotheses, of which
    these were tested (None = not tested, never rejected); each level capped at 0.025."""
    order = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    out = [False] * len(p_values)
    for j, (p, i) in enumerate(order):
        if p > min(PER_TEST_CAP, ALPHA / max(planned - j, 1)):
            break
        out[i] = True
    return out


def budget_latency(s: Mapping[str, Any]) -> tuple[float | None, int | None]:
    """The p95 latency (seconds) the budget is judged on, and the concurrency it was measured
    at: the served p95 at the task's serving concurrency when the run probed it
    (serving/latency.py), else (None concurrency) the batch p95 of older runs."""
    served = s.get("served_latency") or {}
    p95 = (served.get("concurrent") or {}).get("p95_s")
    if p95 is not None:
        return p95, served.get("concurrency")
    return s.get("latency_p95_s"), None


def budget_check(task: Task, s: Mapping[str, Any]) -> tuple[bool, str]:
    """Within the latency and cost budgets? With a sentence either way."""
    b, parts = task.budget, []
    p95, clients = budget_latency(s)
    if b.latency_p95_ms and p95 is not None:
        ms = p95 * 1000
        if clients is not None:
            at = f"{clients} client{'' if clients == 1 else 's'} at once"
            if ms > b.latency_p95_ms:
                return False, (f"served p95 latency {ms:.0f} ms with {at} is over the "
                               f"{b.latency_p95_ms:.0f} ms budget")
            parts.append(f"served p95 {ms:.0f} ms ≤ {b.latency_p95_ms:.0f} ms with {at}")
        else:
            if ms > b.latency_p95_ms:
                return False, (f"batch p95 latency {ms:.0f} ms is over the "
                               f"{b.latency_p95_ms:.0f} ms budget (this run has no served-"
                               "latency probe, so its batch latency stands in)")
            parts.append(f"batch p95 {ms:.0f} ms ≤ {b.latency_p95_ms:.0f} ms, this run having "
                         "no served-latency probe")
    cost = s.get("cost_per_1k_usd")
    if b.cost_per_1k_usd is not None and cost is not None:
        if cost > b.cost_per_1k_usd:
            return False, (f"${cost:.4f} per 1k requests is over the "
                           f"${b.cost_per_1k_usd:.4f} budget")
        parts.append(f"${cost:.4f} ≤ ${b.cost_per_1k_usd:.4f} per 1k requests")
    return True, ("within budget (" + ", ".join(parts) + ")") if parts else "no budget set"


def unscored_check(task: Task, s: Mapping[str, Any]) -> tuple[bool, str]:
    """At most `metric.max_unscored_share` of the predictions left out (reference unscorable)."""
    n = s.get("n") or 0
    share = s.get("unscored_share")
    if share is None:
        share = (s.get("unscored") or 0) / n if n else 0.0
    limit = task.metric.max_unscored_share
    if share > limit:
        return False, (f"{s.get('unscored', 0)} of {n} predictions ({share:.0%}) could not be "
                       f"scored, over the {limit:.0%} allowed (metric.max_unscored_share)")
    return True, ""


def judge_trust_check(task: Task, s: Mapping[str, Any]) -> tuple[bool, str]:
    """A rung scored by a judge (a metric that needs one) is recommended only when the judge's
    agreement with human scores is known and at least `judge.agreement_floor` (the point
    estimate; the report shows its interval). Unknown agreement (no human scores) refuses."""
    if "judge" not in metric_needs(task.metric.name):
        return True, ""
    j = s.get("judge") or {}
    floor = task.judge.agreement_floor if task.judge is not None else None
    if not j.get("ok"):
        why = j.get("why") or "no judge-check in this run's summary"
        return False, (f"the judge is not trusted: {why}"
                       + (f" (agreement floor {floor:.2f})" if floor is not None and
                          "floor" not in why else "")
                       + "; a judged rung is not recommended (`ladder judge-check`)")
    return True, ""


def _metric(task: Task) -> Any:
    try:
        return build_metric(task.metric.name, task.metric.labels)
    except LadderError:
        return None


class _Evidence:
    """Predictions, recomputed qualities and paired tests, each computed once."""

    def __init__(self, task: Task, predictions: Predictions | None) -> None:
        self.task, self.predictions = task, predictions
        self._metric: Any = False  # built on first use (only with predictions)
        self._preds: dict[str, list[dict[str, Any]]] = {}
        self._quality: dict[int, tuple[dict[str, Any], float | None]] = {}

    @property
    def metric(self) -> Any:
        if self._metric is False:
            self._metric = _metric(self.task)
        return self._metric

    def preds(self, s: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        if s.get("predictions") is not None:  # baselines carry theirs
            return s["predictions"]
        if self.predictions is None or not s.get("run_id"):
            return None
        if s["run_id"] not in self._preds:
            self._preds[s["run_id"]] = self.predictions(s["run_id"])
        return self._preds[s["run_id"]]

    def quality(self, s: Mapping[str, Any]) -> tuple[dict[str, Any], float | None]:
        """(quality dict, one-sided p of "quality ≤ bar"): recomputed from the predictions
        when stored, else from the summary (its p_bar when made for this bar, or the exact
        binomial test for 0/1 scores)."""
        key = id(s)
        if key not in self._quality:
            self._quality[key] = self._compute(s)
        return self._quality[key]

    def _compute(self, s: Mapping[str, Any]) -> tuple[dict[str, Any], float | None]:
        bar, q = self.task.bar, dict(s["quality"])
        ppi = (s.get("judge") or {}).get("ppi")  # human scores exist: the PPI interval decides
        if ppi and ppi.get("value") is not None and ppi.get("bar") == bar:
            return ({k: ppi[k] for k in ("value", "low", "high", "n")}
                    | {"method": ppi["method"]}, ppi.get("p_bar"))
        p = self.preds(s)
        if p is not None and self.metric is not None:
            qual, _ = run_quality(p, self.metric, bar)
            return {**qual.interval.as_dict(), "method": qual.interval.method}, qual.p_bar
        if bar is None or q.get("value") is None:
            return q, None
        if q.get("p_bar") is not None and q.get("bar") == bar:
            return q, q["p_bar"]
        if str(q.get("method", "")).startswith("exact binomial"):
            return q, p_above_binary(round(q["value"] * q["n"]), q["n"], bar)
        return q, None

    def pair(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> Paired | None:
        pa, pb = self.preds(a), self.preds(b)
        if pa is None or pb is None:
            return None
        return pair(pa, pb, self.task.metric.name, self.task.metric.labels, self.metric)


def pair(preds_a: list[dict[str, Any]], preds_b: list[dict[str, Any]],
         metric_name: str = "", labels: list[str] | None = None, metric: Any = None) -> Paired:
    """The paired test of B against A on the examples both count (matched by example id;
    failed generations count as wrong): macro-F1 difference for macro_f1, else per example."""
    a = {p["example_id"]: p for p in preds_a if counted_score(p, metric) is not None}
    b = {p["example_id"]: p for p in preds_b if counted_score(p, metric) is not None}
    ids = sorted(set(a) & set(b))
    if metric_name == "macro_f1" and ids:
        m = MacroF1(labels=labels)
        out = lambda p: "" if failed_generation(p) else str(p.get("output") or "")  # noqa: E731
        refs = [str(a[i]["reference"]) for i in ids]
        ra, ga, lab = m.encode([out(a[i]) for i in ids] + [out(b[i]) for i in ids], refs * 2)
        n = len(ids)
        return paired_macro_f1(ra[:n], ga[:n], ga[n:], len(lab))
    return paired_test([float(counted_score(a[i], metric)) for i in ids],  # type: ignore[arg-type]
                       [float(counted_score(b[i], metric)) for i in ids])  # type: ignore[arg-type]


def passing(task: Task, summaries: Sequence[Mapping[str, Any]], planned: int | None = None,
            predictions: Predictions | None = None,
            baselines: Sequence[Mapping[str, Any]] | None = None,
            _ev: _Evidence | None = None) -> tuple[list[bool], list[str], dict[str, Any]]:
    """Which rungs pass (in order), a note per rung that does not, and the evidence used."""
    ev = _ev or _Evidence(task, predictions)
    m = planned_count(summaries, planned)
    majority = next((b for b in baselines or [] if b.get("baseline") == "majority"), None)
    ps: list[float | None] = []
    notes: list[str] = []
    base_tests: dict[str, dict[str, Any]] = {}
    for s in summaries:
        q, p = ev.quality(s)
        if q.get("value") is None:
            notes.append(f"{s['rung']}: nothing could be scored")
            ps.append(None)
            continue
        if task.bar is None:
            ps.append(None)
            continue
        ok, why = budget_check(task, s)
        ok_u, why_u = unscored_check(task, s)
        ok_j, why_j = judge_trust_check(task, s)
        if not ok:
            notes.append(f"{s['rung']}: {q_text(q)} — {why}")
        elif not ok_u:
            notes.append(f"{s['rung']}: {q_text(q)} — {why_u}; it cannot be recommended")
        elif not ok_j:
            notes.append(f"{s['rung']}: {q_text(q)} — {why_j}")
        elif p is None:
            notes.append(f"{s['rung']}: {q_text(q)} — no test against the bar is possible "
                         "(no stored predictions and no p-value in the summary)")
        elif majority is not None and output_kind(task.metric.name) == "label":
            t = ev.pair(majority, s)
            if t is None or t.n == 0:
                notes.append(f"{s['rung']}: {q_text(q)} — no predictions to test it against "
                             f"the majority-class baseline; it cannot be recommended")
                p = None
            else:
                base_tests[s["rung"]] = {"a": majority["rung"], "b": s["rung"], **t.as_dict()}
                if t.p_greater > rung_alpha(m):
                    notes.append(f"{s['rung']}: {q_text(q)} — not shown better than the "
                                 f"majority-class baseline {q_text(majority['quality'])} "
                                 f"({test_text(t)}; needs p ≤ {rung_alpha(m):.3g})")
                    p = None
        ps.append(p if ok and ok_u and ok_j else None)
    rejected = holm(ps, m)
    for s, p, r in zip(summaries, ps, rejected, strict=True):
        if p is not None and not r:
            q, _ = ev.quality(s)
            notes.append(f"{s['rung']}: {q_text(q)} — not shown above the bar {task.bar:.3f} "
                         f"(one-sided p={p:.3g}; Holm over {m} planned rungs needs "
                         f"p ≤ {rung_alpha(m):.3g} for the first rung to pass)")
    info = {"planned_rungs": m, "alpha": ALPHA, "alpha_per_rung": rung_alpha(m),
            "alpha_compare": compare_alpha(m), "p_bar": {s["rung"]: p for s, p in
                                                         zip(summaries, ps, strict=True)},
            "baseline_tests": base_tests}
    return rejected, notes, info


def should_stop(task: Task, summaries: list[dict[str, Any]], planned: int | None = None,
                predictions: Predictions | None = None,
                baselines: list[dict[str, Any]] | None = None) -> bool:
    """Stop the climb? True when some rung so far passes the same rule `decide` applies."""
    if task.bar is None or not summaries:
        return False
    return any(passing(task, summaries, planned, predictions, baselines)[0])


def meets_bar(task: Task, s: dict[str, Any], planned: int | None = None) -> bool:
    """One rung alone against the corrected rule (kept for callers; prefer `should_stop`)."""
    return should_stop(task, [s], planned)


def confirmation(task: Task, summary: dict[str, Any],
                 predictions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The recommended rung re-run once on the confirmation slice (the capped test rows, never
    looked at): one test at one-sided 0.025, no family (the choice was made on other rows)."""
    ev = _Evidence(task, (lambda _: predictions or []) if predictions is not None else None)
    q, p = ev.quality(summary)
    ok = task.bar is not None and p is not None and p <= PER_TEST_CAP
    return {"rung": summary.get("rung"), "confirmed": ok, "p_bar": p, "quality": q,
            "reason": (f"{summary.get('rung')} on the confirmation slice: {q_text(q)}, one-sided "
                       f"p={p:.3g} against the bar {task.bar:.3f}"
                       + (" — confirmed." if ok else " — not confirmed.")) if p is not None
            and task.bar is not None else "no test possible on the confirmation slice"}


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
    kind = output_kind(metric)
    cats: Counter[str] = Counter()
    ids: dict[str, list[str]] = {}
    confusions: Counter[str] = Counter()
    fields: Counter[str] = Counter()
    unscored: Counter[str] = Counter()
    truncated = 0
    for p in preds:
        d = p.get("details") or {}
        if failed_generation(p):
            cat = "generation failed"
        elif p["score"] is None:
            unscored[p.get("score_reason") or "no reason"] += 1
            continue
        elif correct(p["score"]):
            continue
        else:
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


def _not_run(rungs: Sequence[str], ran: Sequence[str]) -> list[str]:
    """The rungs of `rungs` the ladder has not run: advice never repeats what was tried."""
    return [r for r in rungs if r not in ran]


def suggestions(task: Task, best: dict[str, Any], analysis: dict[str, Any],
                ran: list[str]) -> list[str]:
    """What the evidence suggests, one sentence each."""
    out = []
    gen = analysis["categories"].get("generation failed", 0)
    if gen:
        out.append(f"{gen} generation(s) of {best['rung']} failed (an error instead of an "
                   "answer: context overflow, timeout, server error); they count as wrong. "
                   "Check the stored errors: a shorter prompt, a larger context_length or "
                   "more retries.")
    failed = analysis["failed"] - gen
    fmt = analysis["format_errors"]
    if failed and fmt * 2 >= failed:
        teach = _not_run(("few-shot-nearest", "lora"), ran)
        out.append(f"{fmt} of {failed} failures of {best['rung']} are format errors "
                   f"({', '.join(c for c in analysis['categories'] if c in FORMAT_KINDS)}): "
                   "the model does not produce the expected form; "
                   + (f"rungs that teach the form by example have not run yet: try "
                      f"{' or '.join(teach)}" if teach else
                      "few-shot-nearest and lora ran and did not teach it: more or cleaner "
                      "train examples (`ladder check` lists conflicting and likely mislabelled "
                      "ones), or a larger model")
                   + ("; truncated outputs need a larger generation.max_tokens"
                      if analysis["truncated"] else "") + ".")
    elif failed:
        has_rag = any(r in ran for r in ("rag", "few-shot-rag"))
        learn = _not_run(("few-shot-nearest", "lora"), ran)
        from_examples = (f"try {' or '.join(learn)}, which learn the mapping from the train "
                         "examples" if learn else
                         "few-shot-nearest and lora ran: more labelled examples, or cleaner "
                         "ones (`ladder check` lists conflicting and likely mislabelled ones)")
        closed = output_kind(task.metric.name) == "label"  # a label set: no facts to look up
        out.append(f"{failed - fmt} of {failed} failures of {best['rung']} are well-formed "
                   "but wrong answers: "
                   + ("a mapping the model has not learned; " + from_examples + "." if closed
                      else "a knowledge gap or a mapping the model has not learned; "
                      + ("the RAG rungs did not close it, so check retrieval (recall@k); "
                         if has_rag else "if the answers are in documents, add a [corpus] "
                         "and run the RAG rungs; ") + "if they follow from examples, "
                      + from_examples + "."))
    if analysis["unscored"]:
        n = sum(analysis["unscored"].values())
        out.append(f"{n} prediction(s) of {best['rung']} could not be scored ("
                   + "; ".join(f"{r}: {c}" for r, c in analysis["unscored"].items())
                   + "); fix that before trusting the comparison.")
    return out


# ---- power before climbing ------------------------------------------------------------------

def power_report(task: Task, n_test: int, planned_rungs: int,
                 margins: Sequence[float] = (0.05, 0.10, 0.15)) -> dict[str, Any]:
    """What the corrected test can confirm with `n_test` test examples: the smallest true
    margin above the bar found with 80% power, the power at each of `margins`, and the test
    size each margin needs. Exact binomial power (0/1 scores); for continuous scores in [0, 1]
    it is a conservative bound (their variance is at most that of 0/1 scores with the same
    mean); for macro-F1 an approximation."""
    alpha = rung_alpha(planned_rungs)
    doc: dict[str, Any] = {"bar": task.bar, "metric": task.metric.name, "n_test": n_test,
                           "planned_rungs": planned_rungs, "alpha_per_rung": alpha,
                           "power": POWER, "min_margin": None, "margins": [], "sentence": ""}
    if task.bar is None:
        doc["sentence"] = "No quality bar set: nothing to confirm."
        return doc
    bar = task.bar
    doc["min_margin"] = min_margin(n_test, bar, alpha, POWER)
    for d in margins:
        if bar + d > 1:
            continue
        doc["margins"].append({"margin": d, "power": power_one_sided(n_test, bar, d, alpha),
                               "n_needed": n_needed(bar, d, alpha, POWER)})
    kind = {"accuracy": "", "macro_f1": " (approximate for macro-F1)"}.get(
        task.metric.name, "" if task.metric.name in {"exact_match", "normalized_match",
                                                     "json_valid"}
        else " (conservative for continuous scores)")
    head = (f"With {n_test} test examples and {planned_rungs} planned rungs (one-sided "
            f"α = {alpha:.3g} per rung), ")
    mm = doc["min_margin"]
    if mm is None:
        head += (f"no rung can be confirmed above the bar {bar:.3f} with {POWER:.0%} power, "
                 "even a perfect one: the decision cannot be made")
    else:
        head += (f"a rung is confirmed above the bar {bar:.3f} with {POWER:.0%} power only if "
                 f"its true quality is at least {min(1.0, bar + mm):.3f} (margin {mm:.3f})")
    needs = "; ".join(f"margin {m['margin']:.2f} needs {m['n_needed']} test examples"
                      for m in doc["margins"] if m["n_needed"] is not None)
    doc["sentence"] = head + kind + "." + (f" {needs}." if needs else "")
    return doc


# ---- trivial baselines for label metrics -----------------------------------------------------

def baselines(train_outputs: Sequence[str], test_references: Mapping[str, str] | Sequence[str],
              metric_name: str, labels: Sequence[str] | None = None,
              seed: int = 0) -> list[dict[str, Any]]:
    """Majority-class and uniform-random rows for a label metric: the majority label of the
    train split answered everywhere, and a seeded uniform draw over the labels, each scored on
    the test references with the same interval as a rung. Each carries its `predictions` (for
    the paired test in `decide`). Empty for other metrics or without labels."""
    if output_kind(metric_name) != "label":
        return []
    refs = dict(test_references) if isinstance(test_references, Mapping) \
        else {f"e{i:03d}": r for i, r in enumerate(test_references)}
    metric = MacroF1(labels=labels) if metric_name == "macro_f1" else LabelAccuracy(labels=labels)
    seen = [lab for o in train_outputs if (lab := metric.label_of(o)) is not None]
    label_set = list(labels) if labels else sorted(set(seen))
    if not label_set or not refs:
        return []
    counts = Counter(seen)
    top = max(label_set, key=lambda lab: (counts[lab], -label_set.index(lab)))
    rng = np.random.default_rng(seed)
    rows = []
    for kind, name, answer in (
            ("majority", f"baseline: majority class ({top})", lambda _: top),
            ("uniform", "baseline: uniform random label",
             lambda _: label_set[int(rng.integers(len(label_set)))])):
        preds = []
        for ex_id, ref in refs.items():
            out = answer(ex_id)
            sc = metric.score(out, ref)
            preds.append({"example_id": ex_id, "output": out, "reference": ref,
                          "score": sc.value, "score_reason": sc.reason, "details": sc.details,
                          "error": None})
        q, counts_ = run_quality(preds, metric)
        n = len(preds)
        rows.append({"rung": name, "baseline": kind, "run_id": None, "metric": metric_name,
                     "quality": {**q.interval.as_dict(), "method": q.interval.method},
                     "n": n, "scored": counts_["counted"], "failed": 0,
                     "unscored": counts_["unscored"],
                     "unscored_share": counts_["unscored"] / n if n else 0.0,
                     "train_share": counts[top] / len(seen) if kind == "majority" and seen
                     else None, "predictions": preds})
    return rows


# ---- the recommendation -----------------------------------------------------------------------

def _request_costs(task: Task, s: Mapping[str, Any],
                   preds: list[dict[str, Any]] | None) -> list[float] | None:
    """Per-request costs of one run's predictions (for the break-even interval)."""
    if not preds or not s.get("model"):
        return None
    try:
        price, _ = price_for(task, s["model"])
    except LadderError:
        return None
    out = []
    for p in preds:
        c = cost_per_1k(price, p.get("tokens_in") or 0, p.get("tokens_out") or 0,
                        (p.get("details") or {}).get("compute_s", p.get("latency_s") or 0.0))
        if c is None:
            return None
        out.append(c / 1000)
    return out


def _break_even_text(task: Task, ev: _Evidence, cheap: Mapping[str, Any],
                     other: Mapping[str, Any], owned: dict[str, Ownership]) -> str:
    rpd = task.budget.requests_per_day
    be = break_even(owned[cheap["rung"]], owned[other["rung"]], rpd)
    if be is not None:
        ca = _request_costs(task, cheap, ev.preds(cheap))
        cb = _request_costs(task, other, ev.preds(other))
        if ca and cb:
            be.update(break_even_interval(owned[cheap["rung"]], owned[other["rung"]], ca, cb,
                                          rpd))
    return break_even_sentence(be)


def decide(task: Task, summaries: list[dict[str, Any]], predictions: Predictions | None = None,
           configs: dict[str, dict[str, Any]] | None = None, planned: int | None = None,
           baselines: list[dict[str, Any]] | None = None,
           capped_test: int = 0) -> dict[str, Any]:
    """The recommendation for `summaries` (in ladder order). `predictions(run_id)` gives the
    stored predictions for the tests and error analysis; `configs` maps run id → config;
    `planned` is the number of rungs the ladder planned to run (the family size; default: the
    summaries' `planned_rungs`, else their count); `baselines` are `baselines(...)` rows (a
    label-metric rung must beat the majority one); `capped_test` is the number of test rows
    held back by split.max_test (the confirmation slice), for the suggestions."""
    configs = configs or {}
    ev = _Evidence(task, predictions)
    owned = {s["rung"]: ownership(task, s, configs.get(s.get("run_id")), s.get("model"))
             for s in summaries}
    passed, notes, info = passing(task, summaries, planned, None, baselines, ev)
    eligible = [s for s, ok in zip(summaries, passed, strict=True) if ok]
    comparisons: list[dict[str, Any]] = list(info["baseline_tests"].values())
    chosen = eligible[0] if eligible else None
    reason = ""
    m = info["planned_rungs"]
    base_doc = [{k: v for k, v in b.items() if k != "predictions"} for b in baselines or []]
    if chosen is not None:
        q0, p0 = ev.quality(chosen)
        reason = (f"{chosen['rung']} reaches {q_text(q0)} above the bar {task.bar:.3f} "
                  f"(one-sided p={p0:.3g}, Holm over {m} planned rungs at family-wise "
                  f"α={ALPHA:g}), {budget_check(task, chosen)[1]}; it is the cheapest rung "
                  "that does.")
        if chosen["rung"] in info["baseline_tests"]:
            bt = info["baseline_tests"][chosen["rung"]]
            reason += (f" It beats the majority-class baseline (one-sided "
                       f"p={bt['p_greater']:.3g}).")
        for s in eligible[1:]:
            cost = cost_text(owned[s["rung"]])
            costs = f" and it costs {cost}" if cost else ""
            qs, _ = ev.quality(s)
            t = ev.pair(chosen, s)
            if t is None:
                notes.append(f"{s['rung']} also meets the bar at {q_text(qs)}; no "
                             "stored predictions to test the difference, so the cheaper "
                             f"{chosen['rung']} stays{costs}.")
                continue
            comparisons.append({"a": chosen["rung"], "b": s["rung"], **t.as_dict()})
            if t.n == 0:
                notes.append(f"{s['rung']} also meets the bar but shares no scored test "
                             f"examples with {chosen['rung']}; the cheaper one stays.")
            elif t.p_greater <= compare_alpha(m) and t.diff is not None and t.diff > 0:
                reason += (f" {s['rung']} reaches {q_text(qs)} and is significantly better "
                           f"({test_text(t)}; needs p ≤ {compare_alpha(m):.3g}), so the higher "
                           f"rung is worth it{costs}; "
                           f"{_break_even_text(task, ev, chosen, s, owned)}.")
                chosen = s
            else:
                notes.append(f"{s['rung']} reaches {q_text(qs)} but is not shown better "
                             f"({test_text(t)}; needs p ≤ {compare_alpha(m):.3g})"
                             + ("" if t.diff is not None and t.diff > 0
                                else ", and it is no better")
                             + f"{costs}; the cheaper {chosen['rung']} wins.")
    ran = [s["rung"] for s in summaries]
    common = {"decision": info, "baselines": base_doc,
              "ownership": {k: o.as_dict() for k, o in owned.items()}}
    if chosen is not None:
        settings = (configs.get(chosen["run_id"]) or {}).get("settings") or {}
        model = (configs.get(chosen["run_id"]) or {}).get("model")
        for s in summaries:  # the chosen rung against every other rung, for the report
            if s is chosen or any(c["b"] == s["rung"] and c["a"] == chosen["rung"]
                                  for c in comparisons):
                continue
            t = ev.pair(chosen, s)
            if t is not None:
                comparisons.append({"a": chosen["rung"], "b": s["rung"], **t.as_dict()})
        return {"rung": chosen["rung"], "run_id": chosen.get("run_id"), "meets_bar": True,
                "model": chosen.get("model"), "model_info": model, "settings": settings,
                "params": (configs.get(chosen["run_id"]) or {}).get("params"),
                "reason": f"Ship {chosen['rung']} on model {chosen.get('model')}. " + reason,
                "notes": notes, "comparisons": comparisons, **common}
    scored = [s for s in summaries if ev.quality(s)[0].get("value") is not None]
    best = max(scored, key=lambda s: ev.quality(s)[0]["value"]) if scored else None
    bq = ev.quality(best)[0] if best else None
    doc: dict[str, Any] = {
        "rung": None, "run_id": None, "meets_bar": False,
        "closest": best["rung"] if best else None,
        "reason": ("No rung meets the bar with the corrected test within budget"
                   if task.bar is not None else
                   "No quality bar set in task.toml; showing the comparison only")
        + (f"; the closest is {best['rung']} at {q_text(bq)}"  # type: ignore[arg-type]
           + (f" against the bar {task.bar:.3f}" if task.bar is not None else "") + "."
           if best else "."),
        "notes": notes, "comparisons": comparisons, "suggestions": [], **common}
    refused = [why for s in summaries if (why := judge_trust_check(task, s)[1])]
    if refused:  # the reason says why a judged ladder recommends nothing
        doc["reason"] += f" Refused: {refused[0]}."
    if best is not None:
        p = ev.preds(best)
        doc["suggestions"] = more_data(task, best, bq, m, capped_test)  # type: ignore[arg-type]
        if p is not None:
            analysis = error_analysis(p, task.metric.name)
            doc["error_analysis"] = analysis
            doc["suggestions"] = suggestions(task, best, analysis, ran) + doc["suggestions"]
            for s in scored:
                if s is not best and ev.pair(best, s) is not None:
                    comparisons.append({"a": best["rung"], "b": s["rung"],
                                        **ev.pair(best, s).as_dict()})  # type: ignore[union-attr]
    # "more data", quantified: a tuned rung's stored learning curve (`ladder curve`)
    doc["suggestions"] += curve_advice(task.bar, summaries, configs)
    return doc


def more_data(task: Task, best: Mapping[str, Any], q: Mapping[str, Any], planned: int,
              capped_test: int = 0) -> list[str]:
    """How many test examples the corrected test needs if the closest rung's quality holds."""
    if task.bar is None or q.get("value") is None or q["value"] <= task.bar:
        return []
    margin = q["value"] - task.bar
    need = n_needed(task.bar, margin, rung_alpha(planned), POWER)
    n = q.get("n") or best.get("n") or 0
    text = (f"{best['rung']}'s estimate {q['value']:.3f} is above the bar but not confirmed "
            f"with {n} test examples; if its quality holds, "
            + (f"about {need}" if need is not None else "more than 100,000")
            + f" test examples give the corrected test ({planned} planned rungs) "
            f"{POWER:.0%} power (more data).")
    if capped_test:
        text += (f" {capped_test} test rows held back by split.max_test have not been looked "
                 "at: use them as a fresh confirmation slice and decide on them alone, not "
                 "pooled with these.")
    return [text]
