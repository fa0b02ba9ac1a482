"""`ladder distill` with a real teacher (the embedded model prompted with its nearest train
examples): the teacher is scored on test, never sees the answer it is asked for, its labels
are cached (a second run asks it nothing), and test inputs cannot be slipped in as
'unlabelled' inputs."""

from __future__ import annotations

import json

import pytest
from conftest import write_task
from helpers import ladder

pytestmark = pytest.mark.slow

FINETUNE = """
[finetune]
teacher = "default"
teacher_rung = "few-shot-nearest"
epochs = 1
batch_size = 4
r = 4
alpha = 8
target_modules = ["q_proj", "v_proj"]
min_examples = 10
"""


def test_distill_labels_train_only_with_the_other_fold_as_examples(tmp_path):
    task = write_task(tmp_path / "t", n_rows=30, extra=FINETUNE, max_test=2)
    r = ladder("distill", str(task), "--teacher", "default", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["teacher_test"]["rung"] == "few-shot-nearest"
    assert doc["teacher_test"]["n"] == 2
    labels = doc["teacher_labels"]
    assert labels["asked"] == labels["labelled"] + labels["agreement"]["failed"] > 0
    assert labels["agreement"]["with_reference"] > 0
    assert doc["summary"]["rung"] == "distill"
    assert doc["summary"]["one_time"]["seconds"] > 0
    # the teacher's prompts, as cached: a train input never appears among its own shots
    (cache,) = (task / ".ladder" / "teacher").glob("*.jsonl")
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    assert len(rows) == labels["asked"]
    for row in rows:
        *shots, question = [m["content"] for m in row["messages"] if m["role"] == "user"]
        assert shots and question not in shots
    manifest = json.loads((task / ".ladder" / "adapters" / doc["adapter"] /
                           "manifest.json").read_text())
    assert manifest["teacher"]["model"] == "default"
    test_ids = {p["example_id"] for p in json.loads(ladder(
        "show", doc["run_id"], "--task", str(task), "--json").stdout)["predictions"]}
    assert not test_ids & {row["id"] for row in rows}

    again = ladder("distill", str(task), "--teacher", "default", "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads(again.stdout)
    assert second["teacher_labels"]["asked"] == 0  # every answer came from the cache
    assert second["adapter"] == doc["adapter"]

    # a test input passed as an 'unlabelled' input is refused, naming it
    test_input = json.loads(ladder("show", doc["run_id"], "--task", str(task),
                                   "--json").stdout)["predictions"][0]["input"]
    extra = tmp_path / "logs.jsonl"
    extra.write_text(json.dumps({"id": "log-1", "input": test_input, "output": ""}) + "\n")
    bad = ladder("distill", str(task), "--teacher", "default", "--inputs", str(extra),
                 check=False)
    assert bad.returncode == 2 and "in the test split" in bad.stderr
