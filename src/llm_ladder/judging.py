"""Judge metrics: a model scores open-ended answers, and how far to trust it.

`JudgeMetric` (`[metric] name = "judge"`, settings in `[judge]`) declares `needs = {"judge"}`:
it never opens a model itself; the session loads the model named by `judge.model` and the
runner hands it over (`build_metric(..., judge=model, config=task.judge)`).

- pointwise: the judge sees the question, the reference (unless `use_reference = false`),
  the rubric and the answer, and replies `Score: N` (N on `judge.scale`) and `Reason: ...`;
  the score is normalised to [0, 1] and averaged over `repeats`.
- pairwise: the answer is compared with the reference answer as "A vs B", asked in both
  orders (AB and BA, so a judge that always prefers the first answer scores ties); win = 1,
  tie = 0.5, loss = 0, averaged over the orders and repeats.

Every judge call is kept in the prediction's `details["judge"]` (the exact messages, the raw
verdict, the parsed value, tokens, latency); any verdict that cannot be parsed leaves the
prediction unscored with the reason and the raw text — never a guessed score. The judge's
tokens are an evaluation cost (`evaluation_cost`), never the rung's serving cost.

Also here, the agreement statistics of `ladder judge-check`: quadratic-weighted Cohen's kappa
and Spearman's rho with BCa intervals (vectorized over resamples; tests check them against
scikit-learn's and SciPy's), preference accuracy and position
bias with exact Clopper–Pearson intervals, and self-consistency across repeats. Skipped:
multi-judge panels, reference-free rubrics learned from data, logprob-weighted scores.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import rankdata

from llm_ladder.errors import LadderError
from llm_ladder.metrics import Score, unscored
from llm_ladder.models.base import ChatModel, GenParams
from llm_ladder.stats import RowStat, bca, clopper_pearson
from llm_ladder.task import JudgeConfig

SYSTEM = ("You are a careful, strict grader. You read a question, a reference answer and a "
          "candidate answer, and you grade the candidate's content, not its style or length.")
PAIR_SYSTEM = ("You are a careful, strict grader. You read a question and two answers, and "
               "you say which answer is better on content, not on style, length or order.")
_SCORE = re.compile(r"score\s*[:=]\s*\**\s*(-?\d+(?:\.\d+)?)", re.I)
_JSON_SCORE = re.compile(r'"score"\s*:\s*(-?\d+(?:\.\d+)?)', re.I)
_WINNER = re.compile(r"winner\s*[:=]\s*\**\s*(answer\s+)?(a|b|tie)\b", re.I)
_REASON = re.compile(r"reason\s*[:=]\s*(.+)", re.I)


def text_of(inp: Any) -> str:
    """The question as text: a plain input, or the last user turn of chat messages."""
    if isinstance(inp, str):
        return inp
    users = [str(m.get("content") or "") for m in inp or [] if m.get("role") == "user"]
    return users[-1] if users else ""


def default_rubric(cfg: JudgeConfig) -> str:
    lo, hi = cfg.scale
    return (f"{hi} = correct and complete: says what the reference says; "
            f"{lo} = wrong, off-topic, unsupported or empty; in between: partly right "
            "or missing key facts.")


def pointwise_messages(cfg: JudgeConfig, question: str, answer: str,
                       reference: str) -> list[dict[str, str]]:
    lo, hi = cfg.scale
    ref = f"Reference answer:\n{reference}\n\n" if cfg.use_reference and reference else ""
    user = (f"Question:\n{question}\n\n{ref}Candidate answer:\n{answer}\n\n"
            f"Rubric: {cfg.rubric or default_rubric(cfg)}\n"
            f"Grade the candidate answer from {lo} (worst) to {hi} (best). Reply in exactly "
            f"this form:\nScore: <a whole number from {lo} to {hi}>\nReason: <one short "
            "sentence>")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def pairwise_messages(cfg: JudgeConfig, question: str, first: str, second: str,
                      reference: str | None = None) -> list[dict[str, str]]:
    ref = (f"Reference answer (for facts):\n{reference}\n\n"
           if cfg.use_reference and reference else "")
    rubric = cfg.rubric or "the better answer is correct, complete and on the question."
    user = (f"Question:\n{question}\n\n{ref}Answer A:\n{first}\n\nAnswer B:\n{second}\n\n"
            f"Rubric: {rubric}\nWhich answer is better? Reply in exactly this form:\n"
            "Winner: <A, B or tie>\nReason: <one short sentence>")
    return [{"role": "system", "content": PAIR_SYSTEM}, {"role": "user", "content": user}]


def parse_score(text: str, scale: tuple[int, int]) -> tuple[float | None, str]:
    """(score on the scale, reason) or (None, why it cannot be read)."""
    m = _SCORE.search(text) or _JSON_SCORE.search(text)
    if m is None:
        return None, f"judge verdict has no 'Score: N' (raw: {text.strip()[:80]!r})"
    v = float(m.group(1))
    lo, hi = scale
    if not lo <= v <= hi:
        return None, f"judge score {m.group(1)} is outside the scale {lo}–{hi}"
    r = _REASON.search(text)
    return v, (r.group(1).strip()[:300] if r else "")


def parse_winner(text: str) -> tuple[str | None, str]:
    """("A" | "B" | "tie", reason) or (None, why it cannot be read)."""
    m = _WINNER.search(text)
    if m is None:
        return None, f"judge verdict has no 'Winner: A/B/tie' (raw: {text.strip()[:80]!r})"
    r = _REASON.search(text)
    w = m.group(2).lower()
    return ("tie" if w == "tie" else w.upper()), (r.group(1).strip()[:300] if r else "")


@dataclass
class Verdicts:
    """The judge calls for one item and what they add up to (None = unscored, with why)."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    value: float | None = None  # on the scale (pointwise) or win share of the first item
    why: str | None = None

    def record(self) -> dict[str, Any]:
        return {"calls": self.calls, "value": self.value}


def _ask(model: ChatModel, cfg: JudgeConfig, requests: list[list[dict[str, str]]]
         ) -> list[dict[str, Any]]:
    """Send the judge requests in chunks of the model's batch size; one record per call."""
    params = GenParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature)
    size = int(getattr(model, "batch_size", 8) or 8)
    out: list[dict[str, Any]] = []
    for start in range(0, len(requests), size):
        chunk = requests[start:start + size]
        for msgs, g in zip(chunk, model.generate(chunk, params), strict=True):
            out.append({"messages": msgs, "raw": g.text, "tokens_in": g.tokens_in,
                        "tokens_out": g.tokens_out, "latency_s": g.latency_s,
                        "error": g.error})
    return out


EMPTY = "empty answer: scored 0 without asking the judge"


def judge_points(model: ChatModel, cfg: JudgeConfig,
                 items: Sequence[tuple[str, str, str]]) -> list[Verdicts]:
    """Pointwise verdicts for (question, answer, reference) items, `cfg.repeats` each."""
    reqs = [pointwise_messages(cfg, q, a, r) for q, a, r in items for _ in range(cfg.repeats)]
    calls = _ask(model, cfg, reqs) if reqs else []
    out = []
    for k in range(len(items)):
        v = Verdicts(calls=calls[k * cfg.repeats:(k + 1) * cfg.repeats])
        out.append(v)
        values = []
        for c in v.calls:
            if c["error"]:
                c["parsed"], v.why = None, f"judge call failed: {c['error']}"
                continue
            c["parsed"], c["reason"] = parse_score(c["raw"], cfg.scale)
            if c["parsed"] is None:
                v.why = c["reason"]
            else:
                values.append(c["parsed"])
        v.value = float(np.mean(values)) if v.why is None else None
    return out


def judge_pairs(model: ChatModel, cfg: JudgeConfig,
                items: Sequence[tuple[str, str, str, str | None]]) -> list[Verdicts]:
    """Pairwise verdicts for (question, answer_a, answer_b, reference or None) items, asked in
    both orders (`cfg.repeats` times each). `value` is a's share: win 1, tie 0.5, loss 0."""
    reqs = []
    for q, a, b, ref in items:
        for _ in range(cfg.repeats):
            reqs.append(pairwise_messages(cfg, q, a, b, ref))
            reqs.append(pairwise_messages(cfg, q, b, a, ref))
    calls = _ask(model, cfg, reqs) if reqs else []
    per = 2 * cfg.repeats
    out = []
    for k in range(len(items)):
        v = Verdicts(calls=calls[k * per:(k + 1) * per])
        shares = []
        for j, c in enumerate(v.calls):
            c["order"] = "AB" if j % 2 == 0 else "BA"  # AB: the item's a shown first
            if c["error"]:
                c["parsed"], v.why = None, f"judge call failed: {c['error']}"
                continue
            c["parsed"], c["reason"] = parse_winner(c["raw"])
            if c["parsed"] is None:
                v.why = f"{c['reason']} (order {c['order']})"
                continue
            first_won = {"A": 1.0, "B": 0.0, "tie": 0.5}[c["parsed"]]
            shares.append(first_won if c["order"] == "AB" else 1.0 - first_won)
        v.value = float(np.mean(shares)) if v.why is None else None
        out.append(v)
    return out


class JudgeMetric:
    """`[metric] name = "judge"`: a model grades each answer (see the module docstring)."""

    name = "judge"
    needs = frozenset({"judge"})  # the session loads `[judge] model` and passes it in

    def __init__(self, judge: ChatModel | None = None, config: JudgeConfig | None = None,
                 **_: Any):
        self.judge = judge
        self.config = config or JudgeConfig()

    def _model(self) -> ChatModel:
        if self.judge is None:
            raise LadderError("the judge metric needs a judge model: set [judge] model to a "
                              "key of [models] and run it through a session (`ladder run`)")
        return self.judge

    def score(self, prediction: str, reference: str) -> Score:
        """One answer without its question (the runner calls `score_many` with it)."""
        return self.score_many([("", prediction, reference)])[0]

    def score_many(self, items: Sequence[tuple[Any, str, str]]) -> list[Score]:
        """Scores for (input, prediction, reference) items, judged in batches. An empty
        answer scores 0 without asking the judge (so a failed generation needs no judge)."""
        cfg = self.config
        asked = [k for k, (_, p, _) in enumerate(items) if p.strip()]
        verdicts: dict[int, Verdicts] = {}
        if asked and cfg.mode == "pointwise":
            verdicts = dict(zip(asked, judge_points(self._model(), cfg, [
                (text_of(items[k][0]), items[k][1], items[k][2]) for k in asked]), strict=True))
        elif asked:
            verdicts = dict(zip(asked, judge_pairs(self._model(), cfg, [
                (text_of(items[k][0]), items[k][1], items[k][2], None) for k in asked]),
                strict=True))
        lo, hi = cfg.scale
        out = []
        for k in range(len(items)):
            v = verdicts.get(k)
            if v is None:
                out.append(Score(0.0, details={"judge": {"calls": [], "value": None,
                                                         "note": EMPTY}}))
                continue
            if v.value is None:
                s = unscored(v.why or "judge verdict unreadable")
            elif cfg.mode == "pointwise":
                s = Score((v.value - lo) / (hi - lo))
            else:
                s = Score(v.value)
            s.details["judge"] = v.record()
            out.append(s)
        return out


# ---- evaluation cost ---------------------------------------------------------------------

def evaluation_cost(preds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The judge's calls and tokens over a run's predictions (an evaluation cost: it is not
    paid per served request)."""
    calls = [c for p in preds for c in ((p.get("details") or {}).get("judge") or {})
             .get("calls", [])]
    return {"judge_calls": len(calls),
            "judge_tokens_in": int(sum(c.get("tokens_in") or 0 for c in calls)),
            "judge_tokens_out": int(sum(c.get("tokens_out") or 0 for c in calls)),
            "judge_seconds": float(sum(c.get("latency_s") or 0.0 for c in calls))}


# ---- agreement with human scores -----------------------------------------------------------

def _bca_interval(stat, n: int) -> tuple[float | None, float | None]:
    if n < 3:
        return None, None
    b = bca(stat, n, resamples=2000)
    lo, hi = b.interval()
    return (None, None) if not (np.isfinite(lo) and np.isfinite(hi)) else (lo, hi)


def qwk_rows(h: np.ndarray, j: np.ndarray) -> RowStat:
    """Quadratic-weighted Cohen's kappa of resampled rows, vectorized: 1 − mean((h − j)²) /
    (var h + var j + (mean h − mean j)²), which is sklearn's `cohen_kappa_score(...,
    weights="quadratic")` on integer scores (a test checks the two agree). Two constant,
    equal raters give 1; a constant rater against a varying one gives 0."""
    def stat(idx: np.ndarray) -> np.ndarray:
        hh, jj = h[idx], j[idx]
        num = ((hh - jj) ** 2).mean(axis=1)
        den = hh.var(axis=1) + jj.var(axis=1) + (hh.mean(axis=1) - jj.mean(axis=1)) ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, 1 - num / np.where(den > 0, den, 1), (num == 0) * 1.0)
    return stat


def spearman_rows(h: np.ndarray, j: np.ndarray) -> RowStat:
    """Spearman's rho (Pearson on average ranks, as scipy's `spearmanr`) of resampled rows;
    0 for a row where one side is constant."""
    def stat(idx: np.ndarray) -> np.ndarray:
        rh, rj = rankdata(h[idx], axis=1), rankdata(j[idx], axis=1)
        rh, rj = rh - rh.mean(axis=1, keepdims=True), rj - rj.mean(axis=1, keepdims=True)
        den = np.sqrt((rh ** 2).sum(axis=1) * (rj ** 2).sum(axis=1))
        return np.where(den > 0, (rh * rj).sum(axis=1) / np.where(den > 0, den, 1), 0.0)
    return stat


def _with_interval(stat: RowStat, n: int) -> dict[str, Any]:
    value = float(stat(np.arange(n)[None, :])[0])
    lo, hi = _bca_interval(stat, n)
    return {"value": value, "low": lo, "high": hi, "n": n}


def weighted_kappa(human: Sequence[float], judge: Sequence[float],
                   scale: tuple[int, int]) -> dict[str, Any]:
    """Quadratic-weighted Cohen's kappa (judge scores rounded to the scale's integers) with
    a BCa interval over items. Kappa is 0 when one side gives a single score."""
    h = np.rint(np.asarray(human, dtype=float))
    j = np.clip(np.rint(np.asarray(judge, dtype=float)), scale[0], scale[1])
    if h.size == 0:
        return {"value": None, "low": None, "high": None, "n": 0}
    return _with_interval(qwk_rows(h, j), int(h.size)) | {
        "method": "quadratic-weighted Cohen's kappa, BCa bootstrap"}


def spearman(human: Sequence[float], judge: Sequence[float]) -> dict[str, Any]:
    """Spearman's rho with a BCa interval; None when either side is constant."""
    h, j = np.asarray(human, dtype=float), np.asarray(judge, dtype=float)
    if h.size < 3 or np.ptp(h) == 0 or np.ptp(j) == 0:
        return {"value": None, "low": None, "high": None, "n": int(h.size),
                "why": "fewer than 3 items, or one side gives a single score"}
    return _with_interval(spearman_rows(h, j), int(h.size)) | {
        "method": "Spearman's rho, BCa bootstrap"}


def share(k: int, n: int) -> dict[str, Any]:
    """k of n with its exact (Clopper–Pearson) 95% interval."""
    iv = clopper_pearson(k, n)
    return {"value": iv.value, "low": iv.low, "high": iv.high, "n": n, "k": k,
            "method": "exact (Clopper–Pearson)"}


def self_consistency(verdicts: Sequence[Verdicts]) -> dict[str, Any]:
    """Share of items whose repeated verdicts (same prompt, same order) all agree."""
    groups: list[list[Any]] = []
    for v in verdicts:
        by: dict[str, list[Any]] = {}
        for c in v.calls:
            by.setdefault(c.get("order", ""), []).append(c.get("parsed"))
        groups += [g for g in by.values() if len(g) > 1]
    if not groups:
        return {"value": None, "n": 0, "why": "one verdict per item (set judge.repeats ≥ 2 "
                "and judge.temperature > 0 to measure it)"}
    same = sum(1 for g in groups if None not in g and len(set(g)) == 1)
    return share(same, len(groups))


def position_bias(verdicts: Sequence[Verdicts]) -> dict[str, Any]:
    """Pairwise: share of parsed verdicts that prefer the answer shown first (0.5 = none), and
    how often the two orders of one item disagree."""
    firsts = [c["parsed"] == "A" for v in verdicts for c in v.calls
              if c.get("parsed") in ("A", "B")]
    flips = 0
    pairs = 0
    for v in verdicts:
        ab = [c["parsed"] for c in v.calls if c.get("order") == "AB"]
        ba = [c["parsed"] for c in v.calls if c.get("order") == "BA"]
        for x, y in zip(ab, ba, strict=False):
            if x is None or y is None:
                continue
            pairs += 1
            flip = {"A": "B", "B": "A", "tie": "tie"}[y]
            flips += x != flip
    out = share(sum(firsts), len(firsts)) if firsts else {"value": None, "n": 0}
    out["order_disagreement"] = share(flips, pairs) if pairs else None
    return out
