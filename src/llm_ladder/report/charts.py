"""Inline SVG charts drawn in Python: quality against cost or latency with the Pareto front,
and cumulative cost against requests (break-even). No plotting library, no scripts, no
external fonts; every label is escaped. Skipped: log axes, interactivity beyond <title>
tooltips."""

from __future__ import annotations

import math
from html import escape
from typing import Any

from llm_ladder.cells import split_cell

W, H = 520, 340
L, R, T, B = 64, 20, 24, 48  # margins
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
          "#17becf", "#7f7f7f", "#bcbd22"]


def color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def nice_step(span: float, n: int = 5) -> float:
    """A round tick step (1, 2 or 5 × 10^k) giving about `n` intervals over `span`."""
    if span <= 0:
        return 1.0
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    step = nice_step(hi - lo, n)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def nice_max(hi: float) -> float:
    step = nice_step(hi)
    return math.ceil(hi / step - 1e-9) * step or 1.0


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e3:
        return f"{v / 1e3:.3g}k"
    return f"{v:.3g}"


def _frame(title: str, xlabel: str, ylabel: str, x0: float, x1: float, y0: float,
           y1: float) -> tuple[list[str], Any, Any]:
    def sx(x: float) -> float:
        return L + (x - x0) / ((x1 - x0) or 1) * (W - L - R)

    def sy(y: float) -> float:
        return H - B - (y - y0) / ((y1 - y0) or 1) * (H - T - B)

    parts = [f'<svg viewBox="0 0 {W} {H}" width="{W}" '
             f'height="{H}" role="img" aria-label="{escape(title)}">',
             f'<title>{escape(title)}</title>',
             f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" fill="#fff" '
             'stroke="#999"/>']
    for x in _ticks(x0, x1):
        parts.append(f'<line x1="{sx(x):.1f}" y1="{H - B}" x2="{sx(x):.1f}" y2="{H - B + 4}" '
                     f'stroke="#999"/><text x="{sx(x):.1f}" y="{H - B + 16}" font-size="10" '
                     f'text-anchor="middle">{escape(_fmt(x))}</text>')
    for y in _ticks(y0, y1):
        parts.append(f'<line x1="{L - 4}" y1="{sy(y):.1f}" x2="{L}" y2="{sy(y):.1f}" '
                     f'stroke="#999"/><text x="{L - 6}" y="{sy(y) + 3:.1f}" font-size="10" '
                     f'text-anchor="end">{escape(_fmt(y))}</text>')
    parts.append(f'<text x="{(L + W - R) / 2}" y="{H - 10}" font-size="12" '
                 f'text-anchor="middle">{escape(xlabel)}</text>')
    parts.append(f'<text x="14" y="{(T + H - B) / 2}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 14 {(T + H - B) / 2})">{escape(ylabel)}</text>')
    return parts, sx, sy


def pareto(points: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """Points (name, x, y) not dominated by another with x no larger and y no smaller
    (lower x is better, higher y is better), sorted by x."""
    front = []
    for p in sorted(points, key=lambda p: (p[1], -p[2])):
        if not front or p[2] > front[-1][2]:
            front.append(p)
    return front


def scatter(rows: list[dict[str, Any]], xkey: str, xlabel: str, title: str,
            bar: float | None, recommended: str | None) -> tuple[str, list[str]]:
    """Quality (with its 95% interval) against `xkey` per rung; returns (svg, unplotted).
    Points of a rung x model grid (`rung@model`) are coloured by model, with a legend."""
    pts, skipped = [], []
    for i, r in enumerate(rows):
        q, x = r["quality"], r.get(xkey)
        if q["value"] is None or x is None:
            skipped.append(r["rung"])
            continue
        pts.append((i, r["rung"], float(x), q))
    if not pts:
        return "", skipped
    x1 = nice_max(max(p[2] for p in pts) * 1.1)
    lows = [p[3]["low"] for p in pts] + ([bar] if bar is not None else [])
    highs = [p[3]["high"] for p in pts] + ([bar] if bar is not None else [])
    y0, y1 = max(0.0, min(lows) - 0.05), min(1.0, max(highs) + 0.05)
    if y1 - y0 < 0.1:
        y0, y1 = max(0.0, y0 - 0.05), min(1.0, y1 + 0.05)
    parts, sx, sy = _frame(title, xlabel, "quality", 0.0, x1, y0, y1)
    if bar is not None:
        parts.append(f'<line class="bar" x1="{L}" y1="{sy(bar):.1f}" x2="{W - R}" '
                     f'y2="{sy(bar):.1f}" stroke="#c00" stroke-dasharray="5 4"/>'
                     f'<text x="{W - R - 4}" y="{sy(bar) - 4:.1f}" font-size="10" fill="#c00" '
                     f'text-anchor="end">bar {bar:g}</text>')
    front = pareto([(name, x, q["value"]) for _, name, x, q in pts])
    if len(front) > 1:
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for _, x, y in front)
        parts.append(f'<polyline class="pareto" points="{coords}" fill="none" '
                     'stroke="#555" stroke-width="1.5" stroke-dasharray="2 3"/>')
    on_front = {name for name, _, _ in front}
    models = list(dict.fromkeys(split_cell(name)[1] for _, name, _, _ in pts))
    by_model = len(models) > 1  # a rung x model grid: one colour per model, with a legend
    if by_model:
        for j, m in enumerate(models):
            parts.append(f'<g class="legend"><rect x="{L + 8 + 110 * j}" y="{T + 6}" '
                         f'width="10" height="10" fill="{color(j)}"/><text '
                         f'x="{L + 22 + 110 * j}" y="{T + 15}" font-size="10">'
                         f'{escape(m or "(default)")}</text></g>')
    for i, name, x, q in pts:
        c = color(models.index(split_cell(name)[1]) if by_model else i)
        cx = sx(x)
        tip = (f"{name}: {q['value']:.3f} [{q['low']:.3f}, {q['high']:.3f}], "
               f"{xlabel} {_fmt(x)}" + (" (Pareto front)" if name in on_front else ""))
        parts.append(f'<line x1="{cx:.1f}" y1="{sy(q["low"]):.1f}" x2="{cx:.1f}" '
                     f'y2="{sy(q["high"]):.1f}" stroke="{c}" stroke-width="1.5"/>')
        ring = ' stroke="#000" stroke-width="2"' if name == recommended else ""
        parts.append(f'<circle class="point" data-rung="{escape(name)}" cx="{cx:.1f}" '
                     f'cy="{sy(q["value"]):.1f}" r="{6 if name in on_front else 4}" '
                     f'fill="{c}"{ring}><title>{escape(tip)}</title></circle>')
        left = cx > W - R - 110  # near the right edge: label on the left of the dot
        parts.append(f'<text x="{cx - 8 if left else cx + 8:.1f}" y="{sy(q["value"]) + 4:.1f}" '
                     f'font-size="10" fill="{c}" text-anchor="{"end" if left else "start"}">'
                     f'{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts), skipped


def break_even_chart(lines: list[tuple[str, float, float]], horizon: float,
                     title: str) -> str:
    """Cumulative cost (one-time + per request × n) for n from 0 to `horizon` requests.
    `lines` are (rung, one_time_usd, usd_per_request)."""
    if not lines:
        return ""
    y1 = nice_max(max(one + per * horizon for _, one, per in lines) * 1.05)
    parts, sx, sy = _frame(title, "requests", "cumulative cost (USD)", 0.0, horizon, 0.0, y1)
    for i, (name, one, per) in enumerate(lines):
        c = color(i)
        end = one + per * horizon
        parts.append(f'<line class="cost-line" data-rung="{escape(name)}" x1="{sx(0):.1f}" '
                     f'y1="{sy(one):.1f}" x2="{sx(horizon):.1f}" y2="{sy(end):.1f}" '
                     f'stroke="{c}" stroke-width="2"><title>{escape(name)}: '
                     f'${one:.4g} once + ${per:.3g} per request</title></line>')
        parts.append(f'<text x="{W - R - 4}" y="{sy(end) - 4:.1f}" font-size="10" fill="{c}" '
                     f'text-anchor="end">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
