"""The learning curve of a fine-tuned rung, and what it says about getting more train data.

`ladder curve TASK --rung lora` (tuning.learning_curve) trains the rung's recipe on nested
25/50/100% subsets of the train split (stratified by label on a label task; the 100% point
reuses the rung's adapter when `ladder run`/`ladder tune` trained it) and scores each adapter
on the DEV split: the test split is never used to choose or extrapolate anything. This
module holds the pure part: the subsets, the fit, the extrapolation, the advice sentence,
and storing the curve in the 100%-adapter's manifest (where `decide.suggestions` finds it).

The fit is log-linear, score = a + b·ln(n), by weighted least squares (scipy's curve_fit,
each point weighted by its own interval, absolute_sigma) — not the inverse power law
a - b·n^-c: with three points a three-parameter curve passes through them exactly, leaves
no residual to judge it by, and its asymptote a swings wildly with one point's noise. Two
parameters leave one degree of freedom and a slope with a standard error. Log-linear keeps
growing where a real curve saturates, so it is optimistic far out: the extrapolation is
refused beyond MAX_FACTOR times the current train size, and said to be a rough guide.
A slope within one standard error of zero (or under MIN_GAIN per doubling) is "flat".
Skipped: more than one seed per point, and the dev-vs-test gap (the bar is met on test; the
curve is on dev).
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import curve_fit

from llm_ladder.data import Example
from llm_ladder.errors import LadderError
from llm_ladder.finetune.registry import read_manifest, record_metrics

FRACTIONS = (0.25, 0.5, 1.0)
MAX_FACTOR = 10.0   # no extrapolation beyond 10x today's train size
MIN_GAIN = 0.005    # a gain per doubling below this is flat whatever its noise
Z = 1.96


def _order(ex: Example) -> str:
    return hashlib.sha256(ex.id.encode()).hexdigest()


def subsets(train: Sequence[Example], fractions: Sequence[float] = FRACTIONS,
            stratify: bool = False) -> list[list[Example]]:
    """Nested subsets of `train`, one per fraction (each contains the smaller ones).

    The order is a hash of the ids (reproducible, independent of file order). With
    `stratify` every label keeps its share, and keeps at least one example."""
    fr = sorted(set(fractions))
    if not fr or fr[0] <= 0 or fr[-1] > 1:
        raise LadderError(f"learning-curve fractions must lie in (0, 1]: {list(fractions)}")
    groups: dict[str, list[Example]] = defaultdict(list)
    for ex in sorted(train, key=_order):
        groups[ex.output.strip() if stratify else ""].append(ex)
    out = []
    for f in fr:
        take = []
        for rows in groups.values():
            take += rows[: max(1, round(f * len(rows)))]
        out.append(sorted(take, key=_order))
    return out


def _se(point: Mapping[str, Any]) -> float:
    """A point's standard error from its 95% interval (never zero)."""
    low, high = point.get("low"), point.get("high")
    if low is None or high is None:
        return 0.05
    return max((high - low) / (2 * Z), 1e-3)


def fit(points: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Weighted log-linear fit score = a + b·ln(n) to points {n, score, low, high}; None
    with fewer than two distinct n. Returns a, b, b's standard error, the gain per doubling."""
    pts = [p for p in points if p.get("score") is not None and p.get("n")]
    if len({p["n"] for p in pts}) < 2:
        return None
    x = np.log(np.array([float(p["n"]) for p in pts]))
    y = np.array([float(p["score"]) for p in pts])
    sigma = np.array([_se(p) for p in pts])
    (a, b), cov = curve_fit(lambda t, a, b: a + b * t, x, y, p0=(float(y.mean()), 0.0),
                            sigma=sigma, absolute_sigma=True)
    b_se = float(math.sqrt(cov[1][1])) if math.isfinite(cov[1][1]) else None
    return {"model": "log-linear", "formula": "score = a + b * ln(n)", "a": float(a),
            "b": float(b), "b_se": b_se, "gain_per_doubling": float(b) * math.log(2),
            "points": len(pts)}


def needed_n(f: Mapping[str, Any], bar: float) -> float | None:
    """The train size at which the fitted curve reaches `bar` (None when it never rises)."""
    if f["b"] <= 0:
        return None
    return math.exp((bar - f["a"]) / f["b"])


def is_flat(f: Mapping[str, Any]) -> bool:
    return (f["b"] <= 0 or f["gain_per_doubling"] < MIN_GAIN
            or (f.get("b_se") is not None and f["b"] <= f["b_se"]))


def advice(curve: Mapping[str, Any], bar: float | None) -> str | None:
    """One sentence on more train data, from a stored curve; None without a bar or a fit."""
    f, pts = curve.get("fit"), curve.get("points") or []
    if bar is None or f is None or not pts:
        return None
    rung, top = curve.get("rung", "the tuned rung"), max(pts, key=lambda p: p["n"])
    if top.get("score") is None or any(p.get("score") is None for p in pts):
        return None
    sizes = ", ".join(str(p["n"]) for p in pts)
    scores = ", ".join(f"{p['score']:.3f}" for p in pts)
    shape = (f"{len(pts)} points at {sizes} train examples, dev scores {scores}; "
             f"{f['gain_per_doubling']:+.3f} per doubling")
    head = f"Learning curve of {rung} ({shape}): "
    if top["score"] >= bar:
        return (head + f"its dev score already reaches the bar {bar:.3f} with all "
                f"{top['n']} train examples, so more data of the same kind is not what is "
                "missing on test; the dev/test gap is (a larger test split narrows it).")
    if is_flat(f):
        return (head + "the curve is flat (the slope is within its noise on "
                f"{top.get('dev_n', '?')} dev examples): more data of the same kind is "
                "unlikely to help; try cleaner labels (`ladder check`), a larger base model "
                "or another rung.")
    need = needed_n(f, bar)
    assert need is not None
    if need > MAX_FACTOR * top["n"]:
        return (head + f"reaching the bar {bar:.3f} would take more than {MAX_FACTOR:.0f}x "
                f"today's {top['n']} train examples (the fit says about {need:,.0f}), beyond "
                "what a 3-point curve can say; more data alone is unlikely to be the cheap "
                "route.")
    more = max(1, math.ceil(need - top["n"]))
    return (head + f"at about {more:,} more train examples ({need:,.0f} in all, "
            f"{need / top['n']:.1f}x today) the dev score would reach the bar {bar:.3f} "
            "(log-linear fit; treat it as a rough guide).")


def build(rung: str, points: list[dict[str, Any]], metric: str, split: str) -> dict[str, Any]:
    """The stored curve document: points, fit, and what they were measured on."""
    return {"rung": rung, "metric": metric, "split": split, "scored_on": "dev",
            "points": sorted(points, key=lambda p: p["n"]), "fit": fit(points)}


def save(adapter_path: str | Path, curve: Mapping[str, Any]) -> None:
    """Store the curve in the manifest of the 100% adapter (metrics.curve)."""
    record_metrics(Path(adapter_path), {"curve": dict(curve)})


def load(adapter_path: str | Path) -> dict[str, Any] | None:
    """The curve stored with an adapter, if any."""
    m = read_manifest(Path(adapter_path)) or {}
    return (m.get("metrics") or {}).get("curve")


def advice_for(bar: float | None, summaries: Sequence[Mapping[str, Any]],
               configs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The "more data" sentences for the tuned rungs in `summaries` that have a stored curve
    (found through their run config's adapter_path)."""
    out = []
    for s in summaries:
        settings = (configs.get(s.get("run_id") or "") or {}).get("settings") or {}
        path = settings.get("adapter_path")
        if not path:
            continue
        curve = load(path)
        text = advice(curve, bar) if curve else None
        if text:
            out.append(text)
    return out
