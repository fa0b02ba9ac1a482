"""How far to trust a judge: `ladder judge-check`, and the judge block of a judged rung.

Human scores live in their own file, `[judge] labels` (JSONL in the examples format; the
judged answer and its human score in `meta`), never in the test rows a rung is scored on:
ids or questions shared with the test split are refused. A pointwise row whose
`meta.human_score` is empty takes the score a person gave it in `ladder ui`
(llm_ladder.labels, the run store's `labels` table) and is left out while it has none.
Pointwise rows carry `meta.answer` and `meta.human_score` (on `judge.scale`); pairwise rows
carry `meta.answer_a`, optionally `meta.answer_b` (default: the row's reference output) and
`meta.human_pref` ("a", "b" or "tie").

`trust` asks the judge about every labelled answer and reports agreement (weighted kappa and
Spearman for scales, accuracy for preferences), position bias, self-consistency, and whether
the agreement reaches `judge.agreement_floor`. `rung_judgement` adds, for one judged run, the
prediction-powered interval (llm_ladder.ppi) from the labelled answers and the run's judge
scores, beside the plain judge interval, and the judge's evaluation cost. Skipped: storing
the calibration calls as a run (they are returned, and `--json` prints them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm_ladder.costs import price_for
from llm_ladder.data import Example, load_examples
from llm_ladder.errors import LadderError
from llm_ladder.judging import (
    evaluation_cost,
    judge_pairs,
    judge_points,
    position_bias,
    self_consistency,
    share,
    spearman,
    text_of,
    weighted_kappa,
)
from llm_ladder.labels import human_scores
from llm_ladder.models.base import ChatModel
from llm_ladder.ppi import ppi_mean
from llm_ladder.session import Prepared, open_judge, prepare
from llm_ladder.splits import normalize_text
from llm_ladder.stats import counted_score
from llm_ladder.task import JudgeConfig, Task, load_task

PREFS = {"a": 1.0, "tie": 0.5, "b": 0.0}


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def load_labels(task: Task, prep: Prepared | None = None) -> list[Example]:
    """The human-scored rows of `[judge] labels`, checked; [] when none are configured.
    Rows that are test rows (same id or same question) are refused."""
    cfg = task.judge
    if cfg is None or not cfg.labels:
        return []
    path = task.path(cfg.labels)
    loaded = load_examples(Path(path))
    bad = [f"{p.file}:{p.line}: {p.message}" for p in loaded.problems]
    lo, hi = cfg.scale
    if cfg.mode == "pointwise":  # an empty human_score: scored in `ladder ui`, or still pending
        given = human_scores(task)
        for e in loaded.examples:
            if e.meta.get("human_score") is None and e.id in given:
                e.meta |= {"human_score": given[e.id]["score"],
                           "human_score_by": given[e.id]["who"]}
        loaded.examples = [e for e in loaded.examples if e.meta.get("human_score") is not None]
    for e in loaded.examples:
        m = e.meta
        if cfg.mode == "pointwise":
            h = _num(m.get("human_score"))
            if not isinstance(m.get("answer"), str):
                bad.append(f"{e.source}: meta.answer (the judged answer) must be a string")
            if h is None or not lo <= h <= hi:
                bad.append(f"{e.source}: meta.human_score must be a number from {lo} to {hi}, "
                           f"got {m.get('human_score')!r}")
        else:
            if not isinstance(m.get("answer_a"), str):
                bad.append(f"{e.source}: meta.answer_a must be a string")
            if "answer_b" in m and not isinstance(m["answer_b"], str):
                bad.append(f"{e.source}: meta.answer_b must be a string when given")
            if str(m.get("human_pref", "")).lower() not in PREFS:
                bad.append(f"{e.source}: meta.human_pref must be 'a', 'b' or 'tie', got "
                           f"{m.get('human_pref')!r}")
    if bad:
        raise LadderError(f"{len(bad)} problem(s) in the judge's human labels:\n  "
                          + "\n  ".join(bad[:20]))
    if prep is not None:  # calibration never uses the rows the judge scores for the decision
        test = prep.splits.test + prep.splits.confirm
        ids = {e.id for e in test}
        questions = {normalize_text(text_of(e.input)) for e in test}
        clash = [e.id for e in loaded.examples
                 if e.id in ids or normalize_text(text_of(e.input)) in questions]
        if clash:
            raise LadderError(f"{path}: {len(clash)} human-labelled row(s) are test rows "
                              f"({', '.join(clash[:5])}); label answers to train/dev or new "
                              "questions, never the test split the judge scores")
    return loaded.examples


def _norm(v: float, cfg: JudgeConfig) -> float:
    lo, hi = cfg.scale
    return (v - lo) / (hi - lo)


def trust(task: Task, judge: ChatModel, rows: list[Example]) -> dict[str, Any]:
    """Agreement of the judge with the human labels in `rows` and the verdict against the
    floor. `labelled` holds the normalised (judge, human) pairs PPI uses."""
    cfg = task.judge or JudgeConfig()
    doc: dict[str, Any] = {"mode": cfg.mode, "floor": cfg.agreement_floor, "n": len(rows),
                           "judge_model": cfg.model}
    if not rows:
        return doc | {"ok": False, "agreement": None,
                      "why": "no human-scored answers ([judge] labels is not set or empty)"}
    if cfg.mode == "pointwise":
        verdicts = judge_points(judge, cfg, [(text_of(e.input), e.meta["answer"], e.output)
                                             for e in rows])
        humans = [float(e.meta["human_score"]) for e in rows]
        pairs = [(v.value, h) for v, h in zip(verdicts, humans, strict=True)
                 if v.value is not None]
        kappa = weighted_kappa([h for _, h in pairs], [j for j, _ in pairs], cfg.scale)
        doc |= {"agreement": kappa | {"name": "weighted kappa"}, "kappa": kappa,
                "spearman": spearman([h for _, h in pairs], [j for j, _ in pairs]),
                "labelled": {"judge": [_norm(j, cfg) for j, _ in pairs],
                             "human": [_norm(h, cfg) for _, h in pairs]}}
    else:
        verdicts = judge_pairs(judge, cfg, [
            (text_of(e.input), e.meta["answer_a"], e.meta.get("answer_b", e.output),
             e.output if "answer_b" in e.meta else None) for e in rows])
        humans = [PREFS[str(e.meta["human_pref"]).lower()] for e in rows]
        scored = [(v.value, h, "answer_b" not in e.meta)
                  for v, h, e in zip(verdicts, humans, rows, strict=True) if v.value is not None]
        right = sum(1 for j, h, _ in scored if (j > 0.5) - (j < 0.5) == (h > 0.5) - (h < 0.5))
        acc = share(right, len(scored)) if scored else {"value": None, "n": 0}
        doc |= {"agreement": acc | {"name": "preference accuracy"},
                "position_bias": position_bias(verdicts),
                "labelled": {"judge": [j for j, _, ref in scored if ref],
                             "human": [h for _, h, ref in scored if ref]}}
    unscored = [(e.id, v.why) for e, v in zip(rows, verdicts, strict=True) if v.value is None]
    doc["self_consistency"] = self_consistency(verdicts)
    doc["unscored"] = {"n": len(unscored), "examples": unscored[:10]}
    doc["cost"] = evaluation_cost([{"details": {"judge": v.record()}} for v in verdicts])
    doc["items"] = [{"id": e.id, "human": h, "judge": v.value, "why": v.why,
                     "calls": v.calls} for e, h, v in zip(rows, humans, verdicts, strict=True)]
    a = (doc["agreement"] or {}).get("value")
    if a is None:
        doc |= {"ok": False, "why": f"no agreement could be measured ({len(unscored)} of "
                f"{len(rows)} verdicts unreadable)"}
    else:
        doc["ok"] = a >= cfg.agreement_floor
        doc["why"] = (f"{doc['agreement']['name']} {a:.2f}"
                      + (f" [{doc['agreement']['low']:.2f}, {doc['agreement']['high']:.2f}]"
                         if doc["agreement"].get("low") is not None else "")
                      + f" on {doc['agreement']['n']} human-scored answers "
                      + ("reaches" if doc["ok"] else "is below")
                      + f" the floor {cfg.agreement_floor:.2f}"
                      + (f"; {len(unscored)} verdict(s) unreadable" if unscored else ""))
    return doc


def judge_check(task: Task | str | Path) -> dict[str, Any]:
    """`ladder judge-check TASK`: the judge's trust report on the task's human labels."""
    task = task if isinstance(task, Task) else load_task(Path(task))
    if task.judge is None:
        raise LadderError(f"{task.name}: no [judge] table in task.toml (docs/judge.md)")
    prep = prepare(task)
    rows = load_labels(task, prep)
    if not rows:
        raise LadderError(f"{task.name}: no human scores to check the judge against; set "
                          "[judge] labels to a JSONL of human-scored answers, or score its "
                          "answers in `ladder ui` (/label) (docs/judge.md)")
    doc = trust(task, open_judge(task, None, ""), rows)
    return {"task": task.name, **doc}


def compact(doc: dict[str, Any]) -> dict[str, Any]:
    """The trust report without the per-item calls (for run summaries)."""
    return {k: v for k, v in doc.items() if k not in ("items", "labelled")}


def rung_judgement(prep: Prepared, preds: list[dict[str, Any]], metric: Any) -> dict[str, Any]:
    """The judge block of a judged run's summary: trust (computed once per session), the
    PPI interval beside the plain judge interval, and the evaluation cost."""
    task = prep.task
    if prep.judge_trust is None:
        if prep.judge is None:
            raise LadderError("a judged run needs the session's judge model (open_session)")
        prep.judge_trust = trust(task, prep.judge, load_labels(task, prep))
    t = prep.judge_trust
    block: dict[str, Any] = {"trust": compact(t), "ok": t["ok"], "why": t["why"],
                             "floor": t["floor"]}
    values = [float(v) for p in preds if (v := counted_score(p, metric)) is not None]
    lab = t.get("labelled") or {"judge": [], "human": []}
    if len(lab["judge"]) >= 2 and len(values) >= 2:
        iv = ppi_mean(values, lab["judge"], lab["human"])
        block["ppi"] = iv.as_dict() | {"bar": task.bar,
                                       "p_bar": None if task.bar is None else iv.p_above(task.bar)}
    else:
        block["ppi"] = None
        block["ppi_why"] = "fewer than 2 human-scored answers the judge could read"
    cost = evaluation_cost(preds)
    price, source = price_for(task, task.judge.model if task.judge else "default")
    usd = None
    if price is not None and price.input_per_1m is not None:
        usd = (cost["judge_tokens_in"] * price.input_per_1m
               + cost["judge_tokens_out"] * (price.output_per_1m or 0)) / 1e6
    elif price is not None and price.usd_per_hour is not None:
        usd = cost["judge_seconds"] * price.usd_per_hour / 3600
    block["evaluation_cost"] = cost | {"usd": usd, "price_source": source}
    return block
