"""`ladder` end to end with the real embedded model on a small real task."""

import json

from conftest import write_task
from helpers import ladder


def test_run_show_runs_json(tmp_path):
    task = write_task(tmp_path / "t")
    doc = json.loads(ladder("run", task, "--rungs", "zero-shot,few-shot-nearest",
                            "--json").stdout)
    assert [r["rung"] for r in doc["rungs"]] == ["zero-shot", "few-shot-nearest"]
    assert doc["split"]["test"] == 6
    for r in doc["rungs"]:
        q = r["quality"]
        assert r["n"] == 6 and r["unscored"] == 0
        assert 0 <= q["low"] <= q["value"] <= q["high"] <= 1
        assert r["tokens_in_mean"] > 0 and r["latency_p95_s"] > 0
        assert r["cost_per_1k_usd"] > 0  # local placeholder price x measured compute time
    assert doc["recommendation"]["reason"]

    listed = json.loads(ladder("runs", task, "--json").stdout)
    assert {r["id"] for r in listed} == {r["run_id"] for r in doc["rungs"]}

    nearest = doc["rungs"][1]["run_id"]
    shown = json.loads(ladder("show", nearest, "--task", task, "--json", "--limit", "0").stdout)
    preds = shown["predictions"]
    assert len(preds) == 6
    test_ids = {p["example_id"] for p in preds}
    for p in preds:
        msgs = p["messages"]
        # the exact prompt is stored: system prompt, 3 shots (user/assistant), then the input
        assert msgs[0]["role"] == "system" and "Classify" in msgs[0]["content"]
        assert [m["role"] for m in msgs[1:]] == ["user", "assistant"] * 3 + ["user"]
        assert msgs[-1]["content"] == p["input"]
        shots = {m["content"] for m in msgs[1:-1] if m["role"] == "user"}
        test_inputs = {q["input"] for q in preds}
        assert not shots & test_inputs, "a test example leaked into the few-shot pool"
    assert len(test_ids) == 6

    human = ladder("run", task, "--rungs", "zero-shot").stdout
    assert "zero-shot" in human and "quality" in human


def test_user_mistakes_get_one_clear_line(tmp_path):
    task = write_task(tmp_path / "t")
    toml = task / "task.toml"
    toml.write_text("surprise = 1\n" + toml.read_text())
    proc = ladder("run", task, check=False)
    assert proc.returncode == 2
    assert "unknown key 'surprise'" in proc.stderr and str(toml) in proc.stderr
    assert "Traceback" not in proc.stderr

    task2 = write_task(tmp_path / "t2")
    with open(task2 / "data" / "faq.jsonl", "a") as f:
        f.write('{"id": "x1", "input": "", "output": "bygglov"}\n')
    proc = ladder("run", task2, "--rungs", "zero-shot", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "faq.jsonl:41: input: is empty" in proc.stderr
    assert "--skip-bad-rows" in proc.stderr

    doc = json.loads(ladder("run", task2, "--rungs", "zero-shot", "--skip-bad-rows",
                            "--json").stdout)
    assert doc["bad_rows"] == 1
    assert doc["split"]["train"] + doc["split"]["test"] + doc["split"]["capped_test"] == 40

    proc = ladder("eval", task2, "--rung", "no-such-rung", check=False)
    assert proc.returncode == 2 and "known:" in proc.stderr and "Traceback" not in proc.stderr
    proc = ladder("show", "nope", "--task", task2, check=False)
    assert proc.returncode == 2 and "no run 'nope'" in proc.stderr


def test_repeat_at_temperature_zero_reports_no_variance(tmp_path):
    task = write_task(tmp_path / "t", max_test=4)
    doc = json.loads(ladder("eval", task, "--rung", "system-prompt", "--repeat", "2",
                            "--json").stdout)
    rep = doc["repeat"]["system-prompt"]
    assert len(rep["runs"]) == 2 and len(set(rep["runs"])) == 2
    assert rep["n"] == 4 and rep["differing"] == 0
    assert rep["quality"][0] == rep["quality"][1]
    assert doc["input_tokens"]["max"] >= doc["input_tokens"]["median"] > 0
