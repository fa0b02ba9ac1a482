"""The documented shapes of what a ladder returns: a rung's summary, the recommendation, and
the whole climb (`LadderResult`, whose `to_dict()` is the `ladder run --json` document).

Summaries and recommendations stay plain dicts on the wire and in the run store; these
`TypedDict`s name their keys (`total=False`: optional keys appear only when they apply).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict


class Quality(TypedDict, total=False):
    value: float | None  # the metric on the test split; None when nothing could be scored
    low: float | None  # 95% interval
    high: float | None
    n: int


class Summary(TypedDict, total=False):
    """One rung's run on the test split (evaluate.summarize, plus ids)."""

    run_id: str
    rung: str
    model: str
    metric: str
    quality: Quality
    n: int
    unscored: int
    tokens_in_mean: float | None
    tokens_out_mean: float | None
    latency_p50_s: float | None  # batch latency: the evaluation's chunks (a throughput figure)
    latency_p95_s: float | None
    cost_per_1k_usd: float | None
    one_time: dict[str, Any]  # training / labelling: seconds, what, usd, artifact_bytes
    # per request as `ladder serve` answers it: k, concurrency, alone / concurrent p50, p95,
    # time to first token (serving/latency.py); {"skipped": why} when not probed
    served_latency: dict[str, Any]
    rag: dict[str, Any]  # retrieval and grounding scores (RAG rungs)


class Recommendation(TypedDict, total=False):
    """decide.decide's verdict: the rung to ship (or the closest), and why, in sentences."""

    rung: str | None
    meets_bar: bool
    reason: str
    notes: list[str]
    suggestions: list[str]


@dataclass
class LadderResult:
    """The outcome of `climb`: every rung's summary in ladder order and the recommendation."""

    task: str
    ladder_id: str
    model: str
    metric: str
    bar: float | None
    split: dict[str, int]
    bad_rows: int
    input_tokens: dict[str, int]
    leakage: dict[str, int]
    rungs: list[Summary]
    recommendation: Recommendation
    not_run: list[str] = field(default_factory=list)
    repeat: dict[str, Any] = field(default_factory=dict)  # rung -> variance across repeats
    report: dict[str, str] = field(default_factory=dict)  # html / markdown paths
    power: dict[str, Any] = field(default_factory=dict)  # decide.power_report for this split
    # the rung x model grid: one row per cell run (ladder.grid_row); one model = one column
    cells: list[dict[str, Any]] = field(default_factory=list)
    calibration: dict[str, float | None] = field(default_factory=dict)  # cell -> expected $/1k

    def to_dict(self) -> dict[str, Any]:
        """The `ladder run --json` document."""
        doc: dict[str, Any] = {
            "task": self.task, "ladder_id": self.ladder_id, "model": self.model,
            "metric": self.metric, "bar": self.bar, "split": self.split,
            "bad_rows": self.bad_rows, "input_tokens": self.input_tokens,
            "leakage": self.leakage, "rungs": self.rungs,
            "recommendation": self.recommendation, "not_run": self.not_run}
        if self.repeat:
            doc["repeat"] = self.repeat
        if self.report:
            doc["report"] = self.report
        if self.power:
            doc["power"] = self.power
        if self.cells:
            doc["cells"] = self.cells
        if self.calibration:
            doc["calibration"] = self.calibration
        return doc
