"""The climb's own logic, in process, with the scripted model (llm_ladder.testing): early
stop, --all, the not-run note, repeat variance, resume, and rungs that declare their needs.
The real-model tests (test_known_answer*, test_cli_e2e) are the proof that real parts work."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_ladder import LadderError, climb, open_session, plugins
from llm_ladder.ladder import confirm
from llm_ladder.models.base import GenParams
from llm_ladder.rungs.base import DEFAULT_LADDER, Pipeline, RungContext, as_messages, ladder_for
from llm_ladder.session import open_task
from llm_ladder.task import load_task
from llm_ladder.testing import ScriptedModel, write_task

LABELS = ["alpha", "beta"]
ROWS = [{"id": f"q{i}", "input": f"question number {i}", "output": LABELS[i % 2]}
        for i in range(40)]
RIGHT = {r["input"]: r["output"] for r in ROWS}


def _task(tmp_path: Path, answers, rungs: str = '"zero-shot", "system-prompt"',
          name: str = "climb") -> Path:
    return write_task(tmp_path / name, ROWS, answers=answers, bar=0.5,
                      extra=f"[rungs]\ninclude = [{rungs}]\n")


def test_climb_stops_at_the_first_rung_that_meets_the_bar(tmp_path):
    result = climb(_task(tmp_path, RIGHT), report=False)
    assert [s["rung"] for s in result.rungs] == ["zero-shot"]
    assert result.not_run == ["system-prompt"]
    assert result.recommendation["meets_bar"] is True
    assert result.recommendation["rung"] == "zero-shot"
    assert any("not run: system-prompt" in n for n in result.recommendation["notes"])
    doc = result.to_dict()
    assert list(doc)[:3] == ["task", "ladder_id", "model"] and "repeat" not in doc
    base = result.recommendation["baselines"]  # label task: the rows a rung must beat
    assert [b["baseline"] for b in base] == ["majority", "uniform"]
    assert base[0]["quality"]["value"] < 0.7 and "predictions" not in base[0]


def test_climb_all_runs_every_rung_and_a_failing_ladder_stops_nowhere(tmp_path):
    result = climb(_task(tmp_path, RIGHT), run_all=True, report=False)
    assert [s["rung"] for s in result.rungs] == ["zero-shot", "system-prompt"]
    assert result.not_run == []
    wrong = {k: ("beta" if v == "alpha" else "alpha") for k, v in RIGHT.items()}
    failing = climb(_task(tmp_path, wrong, name="wrong"), report=False)
    assert [s["rung"] for s in failing.rungs] == ["zero-shot", "system-prompt"]
    assert failing.recommendation["meets_bar"] is False
    assert failing.rungs[0]["quality"]["value"] == 0.0


def test_repeat_reports_variance_only_when_outputs_differ(tmp_path):
    steady = climb(_task(tmp_path, RIGHT, '"zero-shot"'), repeat=2, report=False)
    assert steady.repeat["zero-shot"]["differing"] == 0
    # 7 answers in call order: the second run (18 test examples later) sees them shifted
    # (the served-latency probe off: its calls would shift them again)
    seven = ["alpha", "beta", "beta", "alpha", "beta", "alpha", "alpha"]
    shift = write_task(tmp_path / "shift", ROWS, answers=seven, bar=0.5,
                       extra='[rungs]\ninclude = ["zero-shot"]\n[serve]\nlatency_probe = 0\n')
    shifting = climb(shift, repeat=2, report=False)
    v = shifting.repeat["zero-shot"]
    assert v["n"] == shifting.split["test"] and v["differing"] > 0


class Dying(ScriptedModel):
    """Killed (Ctrl-C) while generating its third chunk."""

    def generate(self, requests, params):
        if len(self.calls) >= 16:
            raise KeyboardInterrupt
        return super().generate(requests, params)


def test_resume_continues_a_killed_rung_without_asking_twice(tmp_path):
    folder = _task(tmp_path, RIGHT, '"zero-shot"')
    session = open_session(folder, rungs=["zero-shot"])
    session.model = Dying(answers=RIGHT, batch_size=8)
    with pytest.raises(KeyboardInterrupt):
        climb(folder, report=False, session=session)
    session = open_session(folder, rungs=["zero-shot"])
    result = climb(folder, resume=True, report=False, session=session)
    n = result.split["test"]
    # the served-latency probe asks again by design (a warm-up, 8 alone, 8 at concurrency;
    # never stored): serving/latency.py
    probe = 1 + 2 * min(8, n)
    assert n > 16 and len(session.model.calls) == n - 16 + probe  # 16 stored before the kill
    assert result.rungs[0]["n"] == n and result.rungs[0]["quality"]["value"] == 1.0
    fresh = open_session(folder, rungs=["zero-shot"])
    climb(folder, resume=True, report=False, session=fresh)  # finished runs are not resumed
    assert len(fresh.model.calls) == n + probe


def test_the_default_ladder_follows_what_the_rungs_need(tmp_path):
    folder = write_task(tmp_path / "plain", ROWS, answers=RIGHT)
    assert ladder_for(load_task(folder)) == ["zero-shot", "system-prompt", "few-shot-random",
                                             "few-shot-nearest", "chain-of-thought",
                                             "constrained", "few-shot-constrained"]
    tuned = write_task(tmp_path / "tuned", ROWS, answers=RIGHT,
                       extra='[finetune]\n[optimize]\n[models.big]\nbackend = "local"\n')
    names = ladder_for(load_task(tuned))
    assert names[-1] == "lora" and "distill" not in names and "rag" not in names
    assert "optimized-prompt" in names  # the [optimize] table opts into the prompt search
    assert [n for n in DEFAULT_LADDER if n in names] == names  # the default order


class NeedsIndex:
    """A third-party rung: it only declares that it needs the index."""

    name = "echo-first-chunk"
    description = "answers with the source of the first retrieved chunk"
    needs = frozenset({"index"})

    def build(self, ctx: RungContext) -> Pipeline:
        assert ctx.retriever is not None, "the session did not open the index"
        hits = ctx.retriever.search("garden shed permit", k=1)
        return Pipeline(self.name, as_messages, GenParams(max_tokens=8),
                        settings={"first": hits[0].chunk.source})


@pytest.mark.slow
def test_a_plugin_rung_that_needs_the_index_gets_the_retriever(tmp_path):
    from llm_ladder.embedding import build_embedder
    from llm_ladder.rag.index import build_index

    folder = write_task(tmp_path / "rag", ROWS, answers=RIGHT, extra=(
        '[rungs]\ninclude = ["echo-first-chunk"]\n[corpus]\npaths = ["corpus"]\n'))
    (folder / "corpus").mkdir()
    (folder / "corpus" / "shed.md").write_text("# Sheds\nA garden shed under 15 m2 needs no "
                                               "building permit.\n")
    (folder / "corpus" / "roof.md").write_text("# Roofs\nRoof repairs need a notice.\n")
    task = load_task(folder)
    build_index(task, build_embedder(task.corpus))
    plugins.register("rungs", "echo-first-chunk", NeedsIndex)
    try:
        result = climb(folder, report=False)
    finally:
        plugins.unregister("rungs", "echo-first-chunk")
    assert [s["rung"] for s in result.rungs] == ["echo-first-chunk"]
    run = open_task(folder)[1].get_run(result.rungs[0]["run_id"])
    assert run["config"]["settings"]["first"].endswith("shed.md")
    assert run["config"]["index"]["count"] >= 2  # the run records the index it read


def test_confirm_uses_the_held_back_rows_once(tmp_path):
    folder = write_task(tmp_path / "capped", ROWS, answers=RIGHT, bar=0.5,
                        split="train = 0.5\ndev = 0.0\ntest = 0.5\nmax_test = 8",
                        extra='[rungs]\ninclude = ["zero-shot"]\n')
    result = climb(folder, report=False)
    held = result.split["capped_test"]
    assert result.split["test"] == 8 and held > 0
    assert result.power["n_test"] == 8 and result.power["sentence"]
    doc = confirm(folder, "zero-shot")
    assert doc["n"] == held and doc["confirmation"]["confirmed"] is True
    run_ids = {p["example_id"] for p in open_task(folder)[1].predictions(doc["run_id"])}
    tested = {p["example_id"] for p in open_task(folder)[1].predictions(
        result.rungs[0]["run_id"])}
    assert run_ids and not run_ids & tested  # the confirmation slice is other rows
    with pytest.raises(LadderError, match="second look"):
        confirm(folder, "zero-shot")


class FirstWord:
    """A plugin metric that declares a closed label set (like accuracy)."""

    name = "first_word"
    output_kind = "label"

    def __init__(self, **_):
        pass

    def score(self, prediction, reference):
        from llm_ladder.metrics import Score

        return Score(float(prediction.split()[:1] == reference.split()[:1]))


def test_a_metric_declares_its_output_kind(tmp_path):
    from llm_ladder.metrics import output_kind
    from llm_ladder.session import prepare

    assert [output_kind(m) for m in ("accuracy", "macro_f1", "json_match", "token_f1")] == \
        ["label", "label", "json", "text"]
    plugins.register("metrics", "first_word", FirstWord)
    try:
        folder = write_task(tmp_path / "fw", ROWS, answers=RIGHT, metric="first_word")
        assert prepare(load_task(folder)).labels == LABELS  # inferred, as for accuracy
    finally:
        plugins.unregister("metrics", "first_word")
