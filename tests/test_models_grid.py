"""Models as a dimension of the ladder (llm_ladder.cells, ladder.plan_cells): rung x model
cells, cheapest first by the calibrated cost per request, one stop rule and one family over
every cell, the grid in `--json`. Scripted models test the logic; the real two-model runs are
in docs/models.md."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from helpers import ladder

from llm_ladder import climb
from llm_ladder.cells import Cell, order_cells, split_cell
from llm_ladder.testing import write_task

LABELS = ["alpha", "beta"]
WORDS = ("river stone maple copper lantern orbit velvet harbor canyon meadow quartz falcon "
         "ember tundra willow cobalt saffron glacier thistle beacon").split()
# distinct inputs (near-duplicates would be removed from train as test leakage)
_RNG = random.Random(0)
ROWS = [{"id": f"q{i}", "input": " ".join(_RNG.sample(WORDS, 6)), "output": LABELS[i % 2]}
        for i in range(40)]
RIGHT = {r["input"]: r["output"] for r in ROWS}
WRONG = {k: ("beta" if v == "alpha" else "alpha") for k, v in RIGHT.items()}
PRICES = """
[prices.default]
input_per_1m = 0.01
output_per_1m = 0.01
[prices.large]
input_per_1m = 5.0
output_per_1m = 15.0
"""


def two_models(tmp_path: Path, small, large, models: str = '"default", "large"') -> Path:
    """A label task whose default ("small") model answers `small` and whose large one
    answers `large`; the large one is 500x dearer per token."""
    folder = write_task(tmp_path / "grid", ROWS, answers=small, bar=0.5,
                        extra=f'[rungs]\ninclude = ["zero-shot", "system-prompt"]\n'
                              f'[ladder]\nmodels = [{models}]\n{PRICES}')
    (folder / "large.json").write_text(json.dumps(large), encoding="utf-8")
    with (folder / "task.toml").open("a", encoding="utf-8") as f:
        f.write(f'[models.large]\nbackend = "scripted"\nname = "scripted-large"\n'
                f'path = "{(folder / "large.json").as_posix()}"\n')
    return folder


def test_cells_climb_cheapest_model_first_whatever_order_the_models_are_listed(tmp_path):
    folder = two_models(tmp_path, RIGHT, RIGHT, models='"large", "default"')
    result = climb(folder, run_all=True, report=False)
    assert [s["rung"] for s in result.rungs] == [
        "zero-shot@default", "system-prompt@default", "zero-shot@large", "system-prompt@large"]
    assert {s["planned_rungs"] for s in result.rungs} == {4}  # one family over every cell
    doc = result.to_dict()
    cells = {c["cell"]: c for c in doc["cells"]}
    assert cells["zero-shot@large"]["model"] == "large"
    assert cells["zero-shot@large"]["rung"] == "zero-shot"
    assert cells["zero-shot@default"]["quality"] == 1.0
    assert cells["zero-shot@default"]["low"] < 1.0
    small_cost = cells["zero-shot@default"]["cost_per_1k_usd"]
    large_cost = cells["zero-shot@large"]["cost_per_1k_usd"]
    assert 0 < small_cost < large_cost
    assert doc["calibration"]["zero-shot@default"] < doc["calibration"]["zero-shot@large"]
    # both models right: the cheap one is recommended
    assert result.recommendation["rung"] == "zero-shot@default"


def test_the_stop_rule_runs_the_large_model_only_when_the_small_fails(tmp_path):
    result = climb(two_models(tmp_path, WRONG, RIGHT), report=False)
    assert [s["rung"] for s in result.rungs] == [
        "zero-shot@default", "system-prompt@default", "zero-shot@large"]
    assert result.not_run == ["system-prompt@large"]
    assert result.recommendation["rung"] == "zero-shot@large"
    assert result.recommendation["meets_bar"] is True


def test_calibration_reads_train_or_dev_never_test(tmp_path):
    from llm_ladder.session import open_session

    folder = two_models(tmp_path, RIGHT, RIGHT)
    session = open_session(folder, rungs=["zero-shot"])
    test_inputs = {e.input for e in session.prep.splits.test}
    result = climb(folder, run_all=True, report=False, session=session)
    assert len(result.rungs) == 2
    large = session.extra_models["large"]
    first = [m[-1]["content"] for m in large.calls[:4]]
    assert len(first) == 4 and not set(first) & test_inputs
    assert {e.input for e in session.prep.splits.train} >= set(first)


def test_order_keeps_each_models_ladder_and_puts_training_last():
    cells = [Cell("zero-shot", "a", cost_per_1k=1.0), Cell("few-shot", "a", cost_per_1k=9.0),
             Cell("zero-shot", "b", cost_per_1k=5.0), Cell("few-shot", "b", cost_per_1k=6.0),
             Cell("zero-shot", "c"), Cell("lora", "a", trains=True, cost_per_1k=0.5)]
    order = [c.name for c in order_cells(cells, ["a", "b", "c"])]
    assert order == ["zero-shot@a", "zero-shot@b", "few-shot@b", "few-shot@a",
                     "zero-shot@c", "lora@a"]
    assert split_cell("few-shot@b") == ("few-shot", "b")
    assert split_cell("few-shot") == ("few-shot", None)


def test_cli_models_flag_prints_the_grid(tmp_path):
    folder = two_models(tmp_path, WRONG, RIGHT, models='"default"')
    proc = ladder("run", str(folder), "--models", "default,large", "--all", "--no-report",
                  "--json")
    doc = json.loads(proc.stdout)
    # the power line before the climb counts the 4 cells Holm corrects for, not the 2 rungs
    assert "and 4 planned rungs" in proc.stderr, proc.stderr
    assert doc["power"]["sentence"].split("planned")[0] in proc.stderr
    assert [c["cell"] for c in doc["cells"]] == [
        "zero-shot@default", "system-prompt@default", "zero-shot@large", "system-prompt@large"]
    assert doc["model"] == "default, large"
    assert doc["recommendation"]["rung"] == "zero-shot@large"


def test_the_html_report_draws_the_rung_by_model_grid(tmp_path):
    result = climb(two_models(tmp_path, WRONG, RIGHT), report=True)
    html = Path(result.report["html"]).read_text(encoding="utf-8")
    grid = html.split("<table id=grid-table>", 1)[1].split("</table>", 1)[0]
    assert "<th>default</th><th>large</th>" in grid
    rows = {r.split("</td>", 1)[0].split(">")[-1]: r for r in grid.split("<tr><td class=l>")[1:]}
    assert set(rows) == {"zero-shot", "system-prompt"}
    assert "✔" in rows["zero-shot"] and "not run" in rows["system-prompt"]
    assert "ladder-table" in html and "zero-shot@large" in html
    # the quality-vs-cost chart colours each point by its model, with a legend
    chart = html.split('aria-label="quality vs cost"', 1)[1].split("</svg>", 1)[0]
    fills = dict(re.findall(r'data-rung="([^"]+)" cx="[^"]+" cy="[^"]+" r="\d" fill="([^"]+)"',
                            chart))
    assert set(fills) == {"zero-shot@default", "system-prompt@default", "zero-shot@large"}
    assert fills["zero-shot@default"] == fills["system-prompt@default"]
    assert fills["zero-shot@default"] != fills["zero-shot@large"]
    legend = re.findall(r'<g class="legend"><rect [^>]*fill="([^"]+)"/><text [^>]*>([^<]+)<',
                        chart)
    assert dict((m, c) for c, m in legend) == {"default": fills["zero-shot@default"],
                                               "large": fills["zero-shot@large"]}
