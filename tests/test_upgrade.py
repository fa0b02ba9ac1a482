"""`ladder upgrade` (llm_ladder.upgrade) with scripted models: the newest ladder on the old
model is re-run on the new one, tuned rungs re-tuned on the new base, the paired per-example
changes counted, the verdict given and the record stored. Scripted answers test the logic,
not model quality."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llm_ladder import plugins
from llm_ladder.cli import app
from llm_ladder.errors import LadderError
from llm_ladder.ladder import climb
from llm_ladder.models.base import GenParams
from llm_ladder.report import write_report
from llm_ladder.rungs.base import Pipeline, RungContext, as_messages
from llm_ladder.session import prepare
from llm_ladder.store import Store
from llm_ladder.task import load_task
from llm_ladder.testing import write_task
from llm_ladder.upgrade import example_changes, upgrade, upgrade_history

N = 80


class _FakeTuned:
    """Stands in for a trained rung (no training): records the model it runs on and the base
    it would tune, and prompts "TUNED <input>" so scripted answers can tell it apart."""

    name = "fake-tuned"
    description = "a rung that needs [finetune]"
    prompt_rung = "zero-shot"
    needs = frozenset({"finetune"})
    seen: list[tuple[str, str | None]] = []

    def build(self, ctx: RungContext) -> Pipeline:
        type(self).seen.append((ctx.model_key, ctx.base_key))
        return Pipeline(self.name, lambda i: as_messages(f"TUNED {i}"), GenParams(max_tokens=4),
                        str.strip, {"one_time": {"seconds": 120.0, "what": "fake training"}})


@pytest.fixture
def fake_tuned():
    plugins.register("rungs", "fake-tuned", _FakeTuned)
    _FakeTuned.seen = []
    yield _FakeTuned
    plugins.unregister("rungs", "fake-tuned")


def label(i: int) -> str:
    return "alpha" if i % 2 == 0 else "beta"


def other(i: int) -> str:
    return "beta" if i % 2 == 0 else "alpha"


def make_task(tmp_path: Path) -> Path:
    """Old model `default`: zero-shot right only on every 4th question, the tuned rung right
    on all. New model `new`: zero-shot right on all but every 8th question (those break)."""
    rows = [{"id": f"q{i:02d}", "input": f"question {i}", "output": label(i)} for i in range(N)]
    old = {f"question {i}": label(i) if i % 4 == 0 else other(i) for i in range(N)}
    new = {f"question {i}": other(i) if i % 8 == 0 else label(i) for i in range(N)}
    for answers in (old, new):
        answers.update({f"TUNED question {i}": label(i) for i in range(N)})
    root = write_task(tmp_path / "t", rows, answers=old, extra=(
        '[rungs]\ninclude = ["zero-shot", "fake-tuned"]\n[finetune]\n'))
    (tmp_path / "new.json").write_text(json.dumps(new))
    with (root / "task.toml").open("a") as f:
        f.write(f'[models.new]\nbackend = "scripted"\nname = "new"\n'
                f'path = "{(tmp_path / "new.json").as_posix()}"\n')
    return root


def test_recommendation_changes_and_tuned_rung_is_retuned_on_the_new_base(tmp_path,
                                                                          fake_tuned):
    root = make_task(tmp_path)
    old = climb(root, report=False)
    assert old.recommendation["rung"] == "fake-tuned"  # zero-shot fails on the old model
    res = upgrade(root, "default", "new")
    # the tuned rung was re-run on the new model, tuning the new base (base_key = to_key)
    assert fake_tuned.seen[-1] == ("new", "new")
    assert [r["rung"] for r in res.rungs] == ["zero-shot", "fake-tuned"]
    assert res.rungs[1]["retuned"] and not res.rungs[0]["retuned"]
    assert res.old_recommendation["rung"] == "fake-tuned"
    assert res.new_recommendation["rung"] == "zero-shot"
    assert res.changed
    assert "zero-shot" in res.verdict and "retire the fake-tuned rung" in res.verdict
    assert "retraining (2.0 min" in res.verdict
    # fixed / broken counted on the test split, against the scripts
    test_ids = {int(e.id[1:]) for e in prepare(load_task(root)).splits.test}
    zero = res.rungs[0]
    assert zero["fixed"] == sum(1 for i in test_ids if i % 4)
    assert zero["broken"] == sum(1 for i in test_ids if i % 8 == 0)
    assert zero["paired"] == len(test_ids)
    assert zero["test"]["test"] == "mcnemar"
    assert zero["test"]["b_only"] == zero["fixed"] and zero["test"]["a_only"] == zero["broken"]
    assert res.rungs[1]["fixed"] == res.rungs[1]["broken"] == 0
    assert zero["new_cost_per_1k_usd"] is None  # scripted models have no price
    # the new runs form a ladder of their own on the new model
    store = Store(root / ".ladder" / "runs.db")
    runs = [store.get_run(r["new_run"]) for r in res.rungs]
    assert {r["ladder_id"] for r in runs} == {res.new_ladder}
    assert {r["model"] for r in runs} == {"new"}


def test_the_record_is_stored_and_read_back(tmp_path, fake_tuned):
    root = make_task(tmp_path)
    climb(root, report=False)
    res = upgrade(root, "default", "new")
    history = upgrade_history(root)
    assert len(history) == 1
    rec = history[0]
    assert (rec["id"], rec["from_model"], rec["to_model"]) == (res.id, "default", "new")
    assert rec["verdict"] == res.verdict and rec["changed"] is True
    assert rec["new_recommendation"]["rung"] == "zero-shot"
    assert [r["fixed"] for r in rec["rungs"]] == [r["fixed"] for r in res.rungs]
    assert "fixed_ids" not in rec["rungs"][0]  # the ids stay in the predictions
    store = Store(root / ".ladder" / "runs.db")
    assert store.upgrades("another-task") == []
    html, _ = write_report(load_task(root), store, res.new_ladder)
    page = html.read_text(encoding="utf-8")
    assert "Upgrade history" in page and res.verdict.split(":")[0] in page


def test_example_changes_on_a_hand_built_pair():
    def preds(scores):
        return [{"example_id": f"e{i}", "score": s, "reference": "x", "error": None,
                 "score_reason": None} for i, s in enumerate(scores)]

    old = preds([1.0, 0.0, 1.0, 0.0, None, 1.0])
    new = preds([1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    new[0]["error"] = "timeout"  # a failed generation counts as wrong: broken
    got = example_changes(old, new)
    assert got["paired"] == 5  # e4 unscored before: left out
    assert (got["fixed"], got["broken"]) == (1, 3)
    assert got["fixed_ids"] == ["e1"] and got["broken_ids"] == ["e0", "e2", "e5"]


def test_a_changed_split_is_refused(tmp_path, fake_tuned):
    root = make_task(tmp_path)
    climb(root, report=False)
    toml = root / "task.toml"
    toml.write_text(toml.read_text().replace("[split]\n", "[split]\nseed = 99\n"))
    with pytest.raises(LadderError, match="the data changed"):
        upgrade(root, "default", "new")
    assert upgrade_history(root) == []


def test_no_previous_ladder_is_a_clear_error(tmp_path, fake_tuned):
    root = make_task(tmp_path)
    with pytest.raises(LadderError, match="no ladder was climbed on model 'default'"):
        upgrade(root, "default", "new")
    with pytest.raises(LadderError, match="same model"):
        upgrade(root, "new", "new")


def test_cli_upgrade_json(tmp_path, fake_tuned):
    root = make_task(tmp_path)
    climb(root, report=False)
    r = CliRunner().invoke(app, ["upgrade", str(root), "--from", "default", "--to", "new",
                                 "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout[r.stdout.index("{"):])
    assert doc["changed"] and doc["new_recommendation"]["rung"] == "zero-shot"
    r = CliRunner().invoke(app, ["upgrade", str(root), "--from", "default", "--to", "new"])
    assert r.exit_code == 0, r.output
    assert "Changed:" in r.stdout and "fixed" in r.stdout


def test_the_upgrades_table_on_postgresql(postgres_url):
    """m005 and the record's round trip on a real PostgreSQL (conftest's server)."""
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA ladder_upgrade_test")
    store = Store(url=postgres_url + ("&" if "?" in postgres_url else "?")
                  + "options=-csearch_path%3Dladder_upgrade_test")
    try:
        rec = {"id": "u1", "task": "t", "created": 1795730242.2332525, "from_model": "a",
               "to_model": "b", "old_ladder": "l1", "new_ladder": "l2", "verdict": "same",
               "rungs": [{"rung": "zero-shot", "fixed": 2, "broken": 1}]}
        store.add_upgrade(rec)
        assert store.upgrades("t") == [rec] and store.upgrades("u") == []
    finally:
        store.close()
