"""Models as a dimension of the ladder: the (rung, model) cells a multi-model climb runs, their
names and their order.

A cell is one rung on one model, named `rung@model` (`few-shot-nearest@large`). Prompting,
RAG and tool rungs make a cell on every model; a rung that trains makes one cell, on the model
whose weights it tunes (`finetune.base`). The order is cheapest first by expected cost per
request, with two rules that keep the ladder a ladder: each model keeps its own rung order (a
model's few-shot never jumps ahead of its zero-shot), and the cells that train come after the
ones that do not (their one-time cost is weighed by the decision, not by the order). Within
those rules the next cell is always the cheapest head; a cost that is not known (no price)
goes last, and ties keep the order the models were listed in.
Skipped: estimating the cost (the climb's calibration pass does that) and any statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

SEP = "@"


def cell_name(rung: str, model: str) -> str:
    return f"{rung}{SEP}{model}"


def split_cell(name: str) -> tuple[str, str | None]:
    """`few-shot@large` -> ("few-shot", "large"); a plain rung name -> (name, None)."""
    rung, sep, model = name.partition(SEP)
    return rung, (model if sep and model else None)


@dataclass(frozen=True)
class Cell:
    rung: str
    model: str
    trains: bool = False
    cost_per_1k: float | None = None  # expected dollars per 1000 requests (calibration)

    @property
    def name(self) -> str:
        return cell_name(self.rung, self.model)


def grid(rungs: list[str], models: list[str], trains: set[str], tuned: str) -> list[Cell]:
    """The cells of a climb over `models`, each model's ladder in `rungs` order: every rung
    not in `trains` on every model, then each rung in `trains` once, on `tuned` (the model
    that evaluates the tuned weights). A single model gives one cell per rung."""
    cells = [Cell(r, k) for k in models for r in rungs if r not in trains]
    return cells + [Cell(r, tuned, trains=True) for r in rungs if r in trains]


def order_cells(cells: list[Cell], models: list[str]) -> list[Cell]:
    """`cells` (given in each model's ladder order) in climbing order; see the module text."""
    rank = {m: i for i, m in enumerate(models)}
    out: list[Cell] = []
    for trains in (False, True):
        queues: dict[str, list[Cell]] = {}
        for c in cells:
            if c.trains == trains:
                queues.setdefault(c.model, []).append(c)
        while any(queues.values()):
            heads = [q[0] for q in queues.values() if q]
            best = min(heads, key=lambda c: (c.cost_per_1k is None, c.cost_per_1k or 0.0,
                                             rank.get(c.model, len(rank))))
            queues[best.model].pop(0)
            out.append(best)
    return out
