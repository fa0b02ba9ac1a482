"""`ladder check`: a non-zero exit on bad rows (0 with --skip-bad-rows) and the data audit
(conflicting duplicates, rare and one-split labels, outliers, likely mislabels)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from helpers import ladder

from llm_ladder.audit import audit, stored_audit
from llm_ladder.session import prepare
from llm_ladder.task import load_task
from llm_ladder.testing import write_task

TOPICS = {
    "heating": ["radiator", "boiler", "heat pump", "thermostat", "underfloor heating"],
    "water": ["leaking pipe", "dripping tap", "blocked drain", "water heater", "burst hose"],
    "billing": ["invoice", "refund", "payment plan", "late fee", "receipt"],
}


def topic_rows() -> list[dict[str, str]]:
    rows = []
    for label, things in TOPICS.items():
        for i in range(30):
            tail = ["please help", "urgent", "when?"][i % 3]
            rows.append({"id": f"{label}-{i}", "input": f"Customer {i} writes about the "
                         f"{things[i % 5]} at flat {i}: {tail}", "output": label})
    return rows


def test_check_exits_2_on_bad_rows_and_0_when_skipped(tmp_path: Path) -> None:
    task = write_task(tmp_path / "t", topic_rows())
    with (task / "data" / "examples.jsonl").open("a") as f:
        f.write('{"input": "no output here"}\n')
    proc = ladder("check", task, "--no-embeddings", check=False)
    assert proc.returncode == 2
    assert "examples.jsonl:91" in proc.stdout
    assert "--skip-bad-rows" in proc.stderr
    proc = ladder("check", task, "--no-embeddings", "--json", check=False)
    assert proc.returncode == 2 and json.loads(proc.stdout)["ok"] is False
    proc = ladder("check", task, "--no-embeddings", "--skip-bad-rows")
    assert proc.returncode == 0


def test_clean_data_exits_0_and_the_audit_is_stored_for_the_report(tmp_path: Path) -> None:
    task = write_task(tmp_path / "t", topic_rows())
    assert ladder("check", task, "--no-embeddings").returncode == 0
    stored = stored_audit(load_task(task))
    assert stored is not None and stored["stale"] is False
    assert stored["audit"]["examples"] == 90


def clustered(texts: list[str], truth: dict[str, str]) -> np.ndarray:
    """A fake embedder: one direction per true topic plus seeded noise."""
    rng = np.random.default_rng(0)
    names = sorted(TOPICS)
    out = []
    for t in texts:
        v = np.zeros(16)
        v[names.index(truth[t])] = 1.0
        v += rng.normal(0, 0.25, 16)
        out.append(v / np.linalg.norm(v))
    return np.asarray(out, dtype=np.float32)


def test_audit_finds_planted_problems(tmp_path: Path) -> None:
    rows = topic_rows()
    truth = {r["input"]: r["output"] for r in rows}
    rows[3]["output"] = "billing"       # heating-3 flipped
    rows[40]["output"] = "heating"      # water-10 flipped
    rows.append({"id": "dup", "input": rows[5]["input"].upper() + "!", "output": "water"})
    truth[rows[-1]["input"]] = "heating"
    rows.append({"id": "near", "input": rows[6]["input"] + " x", "output": "water"})
    truth[rows[-1]["input"]] = "heating"
    rows.append({"id": "lonely", "input": "Something about the garden fence", "output": "garden"})
    truth[rows[-1]["input"]] = "billing"
    task = write_task(tmp_path / "t", rows)
    rep = audit(prepare(load_task(task)), lambda texts: clustered(texts, truth))
    kinds = {(c["kind"], tuple(sorted(c["ids"]))) for c in rep.conflicts}
    assert ("exact", ("dup", "heating-5")) in kinds
    assert ("near", ("heating-6", "near")) in kinds
    assert rep.rare_labels == {"garden": 1}
    assert "garden" in rep.one_split_labels
    found = {s.id: s.suggested for s in rep.suspects}
    assert found.get("heating-3") == "heating" and found.get("water-10") == "water"
    assert all(0.0 <= s.confidence <= 1.0 for s in rep.suspects)


def test_audit_format_and_length_outliers(tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "input": f"order {i}", "output": json.dumps({"n": i})}
            for i in range(30)]
    rows.append({"id": "odd", "input": "order odd", "output": "sorry, no JSON " * 40})
    task = write_task(tmp_path / "t", rows, metric="json_valid")
    rep = audit(prepare(load_task(task)))
    assert [o["ids"] for o in rep.format_outliers] == [["odd"]]
    assert [o["id"] for o in rep.length_outliers] == ["odd"]
    assert rep.suspects == [] and any("not a closed label set" in n for n in rep.notes)


def test_check_exports_suspects_with_the_real_embedder(tmp_path: Path) -> None:
    rows = topic_rows()
    rows[3]["output"] = "billing"  # a radiator question filed under billing
    task = write_task(tmp_path / "t", rows)
    out = tmp_path / "suspects.jsonl"
    doc = json.loads(ladder("check", task, "--json", "--export-suspects", out).stdout)
    suspects = [json.loads(line) for line in out.read_text().splitlines()]
    assert "heating-3" in [s["id"] for s in suspects]
    (hit,) = [s for s in suspects if s["id"] == "heating-3"]
    assert hit["given"] == "billing" and hit["suggested"] == "heating"
    assert doc["audit"]["suspects"] == suspects
    assert json.loads((task / "data" / "examples.jsonl").read_text().splitlines()[3])[
        "output"] == "billing"  # nothing changed
