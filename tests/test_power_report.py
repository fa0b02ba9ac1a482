"""`power_report`: what the corrected test can confirm before climbing (issue 11)."""

from __future__ import annotations

import pytest

from llm_ladder.decide import power_report, rung_alpha
from llm_ladder.stats import min_margin, n_needed, power_one_sided
from llm_ladder.task import Task


def task(bar: float | None = 0.8, metric: str = "accuracy") -> Task:
    return Task.model_validate({"name": "t", "bar": bar, "data": {"examples": ["x.jsonl"]},
                                "metric": {"name": metric}})


def test_power_report_numbers_follow_the_corrected_level():
    rep = power_report(task(), 100, 12, margins=[0.05, 0.1])
    a = rung_alpha(12)
    assert rep["alpha_per_rung"] == a == pytest.approx(0.05 / 12)
    assert rep["min_margin"] == pytest.approx(min_margin(100, 0.8, a))
    m = rep["margins"][1]
    assert m["power"] == pytest.approx(power_one_sided(100, 0.8, 0.1, a))
    assert m["n_needed"] == n_needed(0.8, 0.1, a)
    assert f"at least {0.8 + rep['min_margin']:.3f}" in rep["sentence"]
    assert f"margin 0.10 needs {m['n_needed']} test examples" in rep["sentence"]


def test_power_report_says_when_the_decision_cannot_be_made():
    rep = power_report(task(), 12, 12)
    assert rep["min_margin"] is None
    assert "cannot be made" in rep["sentence"]
    assert power_report(task(bar=None), 50, 3)["sentence"].startswith("No quality bar")
    assert "conservative" in power_report(task(bar=0.5, metric="token_f1"), 80, 3)["sentence"]
    assert all(m["margin"] <= 0.2 for m in power_report(task(bar=0.8), 80, 3)["margins"])
