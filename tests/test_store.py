"""The SQLite run store (migrations, runs, predictions, resume) and the plugin registries."""

from __future__ import annotations

import sqlite3

import pytest

from llm_ladder import plugins
from llm_ladder.errors import LadderError
from llm_ladder.metrics import LabelAccuracy, TokenF1
from llm_ladder.store import MIGRATIONS, Store

CONFIG = {"rung": "zero-shot", "params": {"max_tokens": 8}, "split": "abc123"}
VERSIONS = {"python": "3.11", "llm_ladder": "0.1.0"}


def pred(example_id: str, score: float | None = 1.0, **extra) -> dict:
    row = {"example_id": example_id, "input": {"text": f"q {example_id}"},
           "messages": [{"role": "user", "content": f"q {example_id}"}],
           "raw_output": f" a {example_id} ", "output": f"a {example_id}",
           "reference": f"a {example_id}", "score": score,
           "score_reason": None if score is not None else "unscored",
           "tokens_in": 5, "tokens_out": 2, "latency_s": 0.25}
    row.update(extra)
    return row


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / ".ladder" / "runs.db")
    yield s
    s.close()


def test_migrations_apply_once(tmp_path):
    path = tmp_path / "state" / "runs.db"
    Store(path).close()
    Store(path).close()
    s = Store(path)
    names = [r[0] for r in s.db.execute("SELECT name FROM migrations ORDER BY name")]
    assert names == ["m001_initial", "m002_ladder_id", "m003_request_logs", "m004_labels",
                     "m005_upgrades"]
    assert names == [fn.__name__ for fn in MIGRATIONS]
    cols = [r[1] for r in s.db.execute("PRAGMA table_info(runs)")]
    assert cols.count("ladder_id") == 1
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()


def test_create_run_and_get_run(store):
    run_id = store.create_run("faq", "zero-shot", "default", "test", CONFIG, VERSIONS, "L1")
    run = store.get_run(run_id)
    assert run is not None
    assert run["id"] == run_id
    assert (run["task"], run["rung"], run["model"], run["split"]) == (
        "faq", "zero-shot", "default", "test")
    assert run["status"] == "running"
    assert run["config"] == CONFIG
    assert run["versions"] == VERSIONS
    assert run["summary"] is None and run["finished"] is None
    assert run["ladder_id"] == "L1"
    store.finish_run(run_id, {"score": 0.5})
    done = store.get_run(run_id)
    assert done["status"] == "done"
    assert done["summary"] == {"score": 0.5}
    assert done["finished"] >= done["created"]
    store.set_ladder(run_id, "L2")
    assert store.get_run(run_id)["ladder_id"] == "L2"
    assert [r["id"] for r in store.list_runs()] == [run_id]


def test_add_predictions_and_done_ids(store):
    run_id = store.create_run("faq", "zero-shot", "default", "test", CONFIG, VERSIONS)
    other = store.create_run("faq", "few-shot-random", "default", "test", CONFIG, VERSIONS)
    assert store.done_ids(run_id) == set()
    store.add_predictions(run_id, [pred("e1"), pred("e2", score=None, details={"why": "x"})])
    store.add_predictions(other, [pred("e9")])
    assert store.done_ids(run_id) == {"e1", "e2"}
    assert store.done_ids(other) == {"e9"}
    rows = store.predictions(run_id)
    assert [r["example_id"] for r in rows] == ["e1", "e2"]
    assert rows[0]["input"] == {"text": "q e1"}
    assert rows[0]["messages"] == [{"role": "user", "content": "q e1"}]
    assert rows[0]["details"] == {}
    assert rows[0]["score"] == 1.0 and rows[0]["error"] is None
    assert rows[1]["score"] is None and rows[1]["score_reason"] == "unscored"
    assert rows[1]["details"] == {"why": "x"}


def test_same_example_twice_keeps_one_row(store):
    run_id = store.create_run("faq", "zero-shot", "default", "test", CONFIG, VERSIONS)
    store.add_predictions(run_id, [pred("e1", score=1.0)])
    store.add_predictions(run_id, [pred("e1", score=0.0, output="changed"), pred("e2")])
    store.add_predictions(run_id, [pred("e3"), pred("e3", score=0.0)])
    rows = store.predictions(run_id)
    assert [r["example_id"] for r in rows] == ["e1", "e2", "e3"]
    assert rows[0]["score"] == 1.0 and rows[0]["output"] == "a e1"  # the first one is kept
    assert rows[2]["score"] == 1.0
    n = store.db.execute("SELECT COUNT(*) FROM predictions WHERE run_id=?", (run_id,))
    assert n.fetchone()[0] == 3


def test_failed_batch_is_rolled_back(store):
    run_id = store.create_run("faq", "zero-shot", "default", "test", CONFIG, VERSIONS)
    broken = pred("e2")
    del broken["latency_s"]
    with pytest.raises(KeyError):
        store.add_predictions(run_id, [pred("e1"), broken])
    assert store.done_ids(run_id) == set()
    with pytest.raises(sqlite3.IntegrityError):  # foreign key: the run must exist
        store.add_predictions("no-such-run", [pred("e1")])


def test_find_resumable(store):
    key = ("faq", "zero-shot", "default", "test")
    assert store.find_resumable(*key, CONFIG) is None
    first = store.create_run(*key, CONFIG, VERSIONS)
    assert store.find_resumable(*key, CONFIG) == first
    assert store.find_resumable(*key, {**CONFIG, "split": "other"}) is None
    assert store.find_resumable("faq", "system-prompt", "default", "test", CONFIG) is None
    assert store.find_resumable("faq", "zero-shot", "big", "test", CONFIG) is None
    store.finish_run(first, {})
    assert store.find_resumable(*key, CONFIG) is None
    second = store.create_run(*key, CONFIG, VERSIONS)
    store.create_run(*key, {**CONFIG, "params": {"max_tokens": 9}}, VERSIONS)
    assert store.find_resumable(*key, CONFIG) == second
    # survives re-opening the file
    again = Store(store.path)
    try:
        assert again.find_resumable(*key, CONFIG) == second
        assert again.done_ids(second) == set()
    finally:
        again.close()


def test_get_run_by_unique_prefix(store):
    ids = [store.create_run("faq", "zero-shot", "default", "test", CONFIG, VERSIONS)
           for _ in range(3)]
    assert len(set(ids)) == 3
    for run_id in ids:
        assert store.get_run(run_id[:-1])["id"] == run_id  # the last hex digits differ
        assert store.get_run(run_id)["id"] == run_id
    common = ids[0][:9]  # "YYYYMMDD-": shared by all three
    assert all(i.startswith(common) for i in ids)
    assert store.get_run(common) is None
    assert store.get_run("nope") is None


# ---- plugins ----------------------------------------------------------------------------

def test_plugins_known_names_and_get():
    metrics = plugins.names("metrics")
    assert {"accuracy", "exact_match", "json_match", "macro_f1", "normalized_match",
            "token_f1", "json_valid"} <= set(metrics)
    assert metrics == sorted(metrics)
    assert plugins.get("metrics", "accuracy") is LabelAccuracy
    assert {"zero-shot", "few-shot-nearest"} <= set(plugins.names("rungs"))
    assert {"local", "openai"} <= set(plugins.names("models"))


def test_plugins_unknown_name_lists_known_ones():
    with pytest.raises(LadderError) as info:
        plugins.get("metrics", "acuracy")
    msg = str(info.value)
    assert msg.startswith("unknown metric 'acuracy'; known: ")
    known = msg.split("known: ", 1)[1].split(", ")
    assert "accuracy" in known and "token_f1" in known
    with pytest.raises(LadderError, match="unknown rung 'nope'; known: .*zero-shot"):
        plugins.get("rungs", "nope")


def test_plugins_register_and_refuse_duplicates():
    class Mine(TokenF1):
        name = "my_f1"

    try:
        plugins.register("metrics", "my_f1", Mine)
        assert plugins.get("metrics", "my_f1") is Mine
        assert "my_f1" in plugins.names("metrics")
        with pytest.raises(LadderError, match="metrics 'my_f1' is already registered"):
            plugins.register("metrics", "my_f1", TokenF1)
        assert plugins.get("metrics", "my_f1") is Mine
    finally:
        plugins.unregister("metrics", "my_f1")
    assert "my_f1" not in plugins.names("metrics")
    with pytest.raises(LadderError, match="metrics 'accuracy' is already registered"):
        plugins.register("metrics", "accuracy", TokenF1)
    assert plugins.get("metrics", "accuracy") is LabelAccuracy


@pytest.mark.parametrize("bad", ["", "has space", "dot.ted", "slash/name"])
def test_plugins_register_refuses_bad_names(bad):
    try:
        with pytest.raises(LadderError, match="bad metrics name"):
            plugins.register("metrics", bad, TokenF1)
        assert bad not in plugins.names("metrics")
    finally:
        plugins.unregister("metrics", bad)
