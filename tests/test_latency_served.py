"""Served latency (serving/latency.py): every rung's per-request latency measured through the
serving engine, alone and at the serving concurrency, apart from the evaluation's batch
latency; the latency budget judged on the served figure.

Logic with a scripted model whose batch takes longer than one request (a per-request delay,
and every answer of a batch carrying the batch's wall time, as the local backend does); one
small real-model check with SmolLM2 that one request served alone is faster than its batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write_task as write_real_task

from llm_ladder import climb, open_session
from llm_ladder.decide import budget_check, budget_latency
from llm_ladder.ladder import run_rung
from llm_ladder.models.base import Generation, GenParams, Messages
from llm_ladder.task import load_task
from llm_ladder.testing import ScriptedModel, write_task

DELAY = 0.1  # seconds per request in a batch
ROWS = [{"id": f"q{i}", "input": f"question number {i}", "output": "yes"} for i in range(40)]
RIGHT = {r["input"]: r["output"] for r in ROWS}


class Slow(ScriptedModel):
    """A batch of n takes n x DELAY, and each answer's latency is the whole batch's."""

    def generate(self, requests: list[Messages], params: GenParams) -> list[Generation]:
        t0 = time.perf_counter()
        time.sleep(DELAY * len(requests))
        gens = super().generate(requests, params)
        wall = time.perf_counter() - t0
        for g in gens:
            g.latency_s = wall
        return gens


class SlowStreaming(Slow):
    """Streams one request word by word (models.base.StreamsTokens)."""

    def stream(self, messages: Messages, params: GenParams) -> Iterator[str | Generation]:
        t0 = time.perf_counter()
        (gen,) = super().generate([messages], params)  # DELAY for one request
        deltas = [w + " " for w in gen.text.split(" ")]
        for d in deltas:
            time.sleep(DELAY / 5)
            yield d
        yield Generation("".join(deltas), gen.tokens_in, gen.tokens_out,
                         time.perf_counter() - t0)


def _task(tmp_path: Path, serve: str = "latency_probe = 4\nlatency_concurrency = 2\n",
          budget: str = "latency_p95_ms = 500\n", metric: str = "normalized_match") -> Path:
    return write_task(tmp_path / "lat", ROWS, answers=RIGHT, bar=0.5, metric=metric,
                      extra=f'[rungs]\ninclude = ["zero-shot"]\n[serve]\n{serve}'
                            f"[budget]\n{budget}")


def _climb(folder: Path, model: ScriptedModel, **kw):
    session = open_session(folder, rungs=["zero-shot"])
    session.model = model
    return climb(folder, report=False, session=session, **kw), session


def test_the_budget_is_judged_on_served_latency_not_the_batch(tmp_path):
    model = Slow(answers=RIGHT, batch_size=8)
    result, session = _climb(_task(tmp_path), model)
    s = result.rungs[0]
    served = s["served_latency"]
    assert (served["k"], served["concurrency"], served["inputs"]) == (4, 2, "test")
    # the batch figure is a chunk of 8: about 8 x DELAY; one request alone about DELAY
    assert s["latency_p95_s"] >= 7 * DELAY
    assert served["alone"]["n"] == 4 and served["alone"]["errors"] == 0
    assert DELAY <= served["alone"]["p95_s"] < 3 * DELAY
    assert served["alone"]["p50_s"] <= served["alone"]["p95_s"]
    # two clients at once: the engine batches them, so about 2 x DELAY
    assert DELAY <= served["concurrent"]["p95_s"] < 4 * DELAY
    assert served["alone"]["ttft_p95_s"] is None  # the scripted model does not stream
    # the batch p95 (about 800 ms) is over the 500 ms budget; the served one is not
    rec = result.recommendation
    assert rec["rung"] == "zero-shot" and rec["meets_bar"] is True
    assert "served p95 " in rec["reason"] and "ms ≤ 500 ms with 2 clients at once" in \
        rec["reason"]
    assert budget_latency(s) == (served["concurrent"]["p95_s"], 2)
    # the probe asked the model (a warm-up, 4 alone, 4 at concurrency 2), stored nothing
    n = result.split["test"]
    assert len(model.calls) == n + 9
    preds = session.store.predictions(s["run_id"])
    assert len(preds) == n and len({p["example_id"] for p in preds}) == n
    assert session.store.request_logs() == []


def test_a_streaming_model_reports_time_to_first_token(tmp_path):
    result, _ = _climb(_task(tmp_path, budget=""), SlowStreaming(answers=RIGHT, batch_size=8))
    served = result.rungs[0]["served_latency"]
    assert served["streamed_alone"] is True
    alone = served["alone"]
    # the first word leaves after the request's DELAY; the whole answer one word later
    assert DELAY <= alone["ttft_p50_s"] < alone["p50_s"]
    assert alone["ttft_p95_s"] is not None and served["concurrent"]["ttft_p95_s"] is None


class Killed(BaseException):
    """Ctrl-C during the probe."""


def test_a_killed_run_probes_again_on_resume_and_never_duplicates(tmp_path, monkeypatch):
    folder = _task(tmp_path)
    session = open_session(folder, rungs=["zero-shot"])
    first = Slow(answers=RIGHT, batch_size=8)

    def killed(*_a, **_k):
        raise Killed

    # what a kill during the probe leaves: every prediction stored, the run not finished
    with monkeypatch.context() as m:
        m.setattr("llm_ladder.ladder.probe_rung", killed)
        with pytest.raises(Killed):
            run_rung(session.prep, "zero-shot", "default", first, session.store)
    n = len(session.prep.splits.test)
    (run,) = session.store.list_runs()
    assert run["status"] != "done" and len(session.store.predictions(run["id"])) == n
    again = Slow(answers=RIGHT, batch_size=8)
    result, s2 = _climb(folder, again, resume=True)
    assert result.rungs[0]["run_id"] == run["id"]
    assert len(again.calls) == 9  # nothing evaluated again: the probe's 1 + 4 + 4
    assert result.rungs[0]["served_latency"]["alone"]["n"] == 4
    preds = s2.store.predictions(run["id"])
    assert len(preds) == n and len({p["example_id"] for p in preds}) == n


def test_without_a_probe_the_batch_latency_stands_in_and_says_so(tmp_path):
    result, _ = _climb(_task(tmp_path, serve="latency_probe = 0\n"),
                       Slow(answers=RIGHT, batch_size=8))
    s = result.rungs[0]
    assert s["served_latency"] == {"skipped": "serve.latency_probe = 0"}
    assert budget_latency(s) == (s["latency_p95_s"], None)
    assert result.recommendation["meets_bar"] is False
    assert any("batch p95 latency" in n and "no served-latency probe" in n
               for n in result.recommendation["notes"])


def test_budget_sentences_name_the_served_figure_and_its_concurrency():
    task = load_task_text(latency_p95_ms=1000)
    ok = {"latency_p95_s": 5.0, "served_latency": {"concurrency": 4, "concurrent": {
        "p95_s": 0.8}}}
    assert budget_check(task, ok) == (
        True, "within budget (served p95 800 ms ≤ 1000 ms with 4 clients at once)")
    over = {"latency_p95_s": 0.1, "served_latency": {"concurrency": 1, "concurrent": {
        "p95_s": 1.2}}}
    assert budget_check(task, over) == (
        False, "served p95 latency 1200 ms with 1 client at once is over the 1000 ms budget")
    # a probe whose every request failed measured nothing: the batch figure stands in
    failed = {"latency_p95_s": 0.5, "served_latency": {"concurrency": 4, "concurrent": {
        "p95_s": None}}}
    assert budget_latency(failed) == (0.5, None)


def load_task_text(**budget):
    from llm_ladder.task import Task

    return Task.model_validate({"name": "t", "bar": 0.6, "data": {"examples": ["x.jsonl"]},
                                "metric": {"name": "accuracy"}, "budget": budget})


def test_real_model_one_request_alone_is_faster_than_its_batch(tmp_path, smol):
    folder = write_real_task(tmp_path / "real", max_test=4,
                             extra="[serve]\nlatency_probe = 2\nlatency_concurrency = 2\n")
    session = open_session(folder, rungs=["zero-shot"], load_model=False)
    session.model = smol  # batch_size 4: the four test rows are one batch
    result = climb(folder, report=False, session=session)
    s = result.rungs[0]
    alone = s["served_latency"]["alone"]
    assert alone["n"] == 2 and alone["errors"] == 0
    assert alone["p95_s"] < s["latency_p50_s"]
    assert s["served_latency"]["concurrent"]["errors"] == 0
    assert load_task(folder).serve.latency_probe == 2


def test_table_json_cells_and_reports_show_served_and_batch_latency(tmp_path):
    import re

    from rich.console import Console

    from llm_ladder.cli.common import summary_table

    folder = _task(tmp_path, metric="accuracy")  # a label metric: the baseline rows too
    session = open_session(folder, rungs=["zero-shot"])
    session.model = Slow(answers=RIGHT, batch_size=8)
    result = climb(folder, session=session)
    s = result.rungs[0]
    served_ms = f"{s['served_latency']['concurrent']['p95_s'] * 1000:.0f}"
    batch_ms = f"{s['latency_p95_s'] * 1000:.0f}"
    console = Console(record=True, width=200)
    console.print(summary_table(result.rungs, "t"))
    text = console.export_text()
    assert "served p95 ms" in text and "batch p95 ms" in text
    assert served_ms in text and batch_ms in text
    cell = result.to_dict()["cells"][0]
    assert cell["served_p95_s"] == s["served_latency"]["concurrent"]["p95_s"]
    assert cell["served_alone_p95_s"] == s["served_latency"]["alone"]["p95_s"]
    assert cell["latency_p95_s"] == s["latency_p95_s"]  # the batch figure, key kept
    html = Path(result.report["html"]).read_text(encoding="utf-8")
    table = html[html.index("<table id=ladder-table>"):]
    table = table[: table.index("</table>")]
    rows = re.findall(r"<tr.*?</tr>", table)
    assert ">served p95 ms</th>" in rows[0] and ">batch p95 ms</th>" in rows[0]
    assert f"<td>{served_ms}</td>" in rows[1] and f"<td>{batch_ms}</td>" in rows[1]
    assert "baseline-row" in rows[-1]  # the baseline rows keep the header's width
    assert {len(re.findall(r"<t[hd]", r)) for r in rows} == {len(re.findall(r"<th", rows[0]))}
    md = Path(result.report["markdown"]).read_text(encoding="utf-8")
    assert "| served p95 ms | batch p95 ms |" in md and f"| {served_ms} | {batch_ms} |" in md
