"""`ladder synth`: synthetic questions from the corpus (llm_ladder.synth, docs/synth.md).

Logic runs on the scripted model with the real embedder (MiniLM) and a real LanceDB index of
a small corpus, built once per module and copied into each test's folder; one test asks the
real SmolLM2-135M about two chunks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llm_ladder.cli import app
from llm_ladder.embedding import Embedder
from llm_ladder.errors import LadderError
from llm_ladder.rag.chunking import Chunk
from llm_ladder.rag.index import build_index
from llm_ladder.session import prepare
from llm_ladder.synth import (
    ROWS_FILE,
    SKIPPED_FILE,
    _only_writer,
    load_rows,
    pending_synthetic,
    retrieval_check,
    review_synthetic,
    sample_chunks,
    synthesize,
)
from llm_ladder.task import load_task
from llm_ladder.testing import ScriptedModel, write_task

DOCS = {
    "roofs.md": "# Roofs\n\nA slate roof lasts about a hundred years when the battens stay dry.",
    "decks.md": "# Decks\n\nA deck higher than 1.2 metres above the ground needs a building "
                "permit from the municipality.",
    "windows.md": "# Windows\n\nTriple glazing halves the heat lost through a window compared "
                  "with double glazing.",
    "fences.md": "# Fences\n\nA fence up to 1.1 metres high needs no permit unless the local "
                 "plan says otherwise.",
    "paint.md": "# Paint\n\nLinseed oil paint on a wooden facade should be renewed every eight "
                "to twelve years.",
    "chimney.md": "# Chimney\n\nA chimney sweep must inspect a wood stove's flue every year "
                  "before the heating season.",
}
# which passage -> the generated reply; which question -> the closed-book answer
GENERATED = {
    "slate roof": "Question: How long does a slate roof last?\nAnswer: About a hundred years.",
    "deck higher": "Question: When does a deck need a building permit?\n"
                   "Answer: When it is higher than 1.2 metres above the ground.",
    "Triple glazing": "Question: What does triple glazing do to heat loss?\n"
                      "Answer: It halves the heat lost through a window.",
    "fence up to": "Question: How high may a fence be without a permit?\n"
                   "Answer: Up to 1.1 metres.",
    "Linseed oil": "Question: How often should linseed oil paint be renewed?\n"
                   "Answer: Every eight to twelve years.",
    "chimney sweep must": "Question: How often must a wood stove flue be inspected?\n"
                     "Answer: Every year before the heating season.",
}
CLOSED_BOOK = {  # the roof question is answered right without the passage
    "How long does a slate roof last?": "About a hundred years.",
}
TEST_QUESTION = "When do decks need a building permit?"  # cosine 0.97 with the generated one


def _rows() -> list[dict]:
    rows = [{"id": f"ex-{i:02d}", "input": f"Unrelated question number {i} about gardens?",
             "output": f"answer {i}"} for i in range(12)]
    rows.append({"id": "deck-q", "input": TEST_QUESTION, "output": "Yes."})
    return rows


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


@pytest.fixture(scope="module")
def template(tmp_path_factory, embedder) -> Path:
    root = tmp_path_factory.mktemp("synth") / "task"
    (root / "corpus").mkdir(parents=True)
    for name, text in DOCS.items():
        (root / "corpus" / name).write_text(text + "\n", encoding="utf-8")
    write_task(root, _rows(), metric="token_f1", answers=GENERATED | CLOSED_BOOK,
               split="train = 0.5\ndev = 0.0\ntest = 0.5\nseed = 3",
               extra='[generation]\nmax_tokens = 24\n[corpus]\npaths = ["corpus"]\n'
               '[retrieval]\nk = 2\nmode = "hybrid"\n')
    build_index(load_task(root), embedder)
    return root


@pytest.fixture
def task_dir(template, tmp_path) -> Path:
    dst = tmp_path / "task"
    shutil.copytree(template, dst)
    return dst


def scripted(**kw) -> ScriptedModel:
    return ScriptedModel(answers=GENERATED | CLOSED_BOOK, default="I do not know.", **kw)


def test_sampling_is_seeded_and_spread_across_documents():
    chunks = [Chunk(f"{d}-{p}", f"doc{d}", f"doc{d}", p, f"text {d} {p}")
              for d in range(5) for p in range(4)]
    a = sample_chunks(chunks, 12, seed=7)
    assert [c.id for c in a] == [c.id for c in sample_chunks(list(reversed(chunks)), 12, 7)]
    assert [c.id for c in a] != [c.id for c in sample_chunks(chunks, 12, seed=8)]
    assert len({c.doc_id for c in a[:5]}) == 5  # every document once before any twice
    assert len({c.id for c in a}) == 12
    assert [c.id for c in sample_chunks(chunks, 5, 7)] == [c.id for c in a[:5]]  # extends
    assert len(sample_chunks(chunks, 100, 7)) == 20


def test_filters_closed_book_duplicates_and_keeps_the_rest(task_dir, embedder):
    doc = synthesize(task_dir, 6, model=scripted(), embedder=embedder, seed=1)
    c = doc["counts"]
    assert (c["sampled"], c["asked"], c["generated"]) == (6, 6, 6)
    assert c["closed_book"] == 1 and c["duplicate"] == 1 and c["kept"] == 4, doc
    assert any("roofs.md" in r and "token F1" in r for r in doc["reasons"]["closed_book"])
    assert any("decks.md" in r and "deck-q" in r for r in doc["reasons"]["duplicate"])
    rows = load_rows(task_dir)
    assert {r["doc_ids"][0] for r in rows} == {"windows.md", "fences.md", "paint.md",
                                               "chimney.md"}
    for r in rows:
        assert r["synthetic"] is True and r["status"] == "pending" and r["model"] == "default"
        assert r["calls"]["generate"]["raw"].startswith("Question:")
        assert "Passage:" in r["calls"]["generate"]["messages"][-1]["content"]
        assert r["calls"]["closed_book"]["raw"] == "I do not know."
        assert len(r["prompt_hash"]) == 16
    # the test question's text appears nowhere the synthetic files are written
    state = task_dir / ".ladder"
    for name in (ROWS_FILE, SKIPPED_FILE):
        text = (state / name).read_text(encoding="utf-8")
        assert "When does a deck need a building permit" not in text
        assert TEST_QUESTION not in text


def test_generated_questions_are_deduplicated_against_each_other(task_dir, embedder):
    same = "Question: What does the passage say about houses?\nAnswer: Something."
    model = ScriptedModel(answers=[same], default="no")  # the same reply for every call
    doc = synthesize(task_dir, 3, model=model, embedder=embedder, batch_size=1)
    assert doc["counts"]["kept"] == 1 and doc["counts"]["duplicate"] == 2
    assert all("synth-" in r for r in doc["reasons"]["duplicate"])


def test_unparseable_output_is_counted_with_its_reason(task_dir, embedder):
    model = ScriptedModel(answers=["Sure! Here is a question about roofs.",
                                   "Question: When does the library open on Saturdays?\n"
                                   "Answer: At 11 am."])
    doc = synthesize(task_dir, 2, model=model, embedder=embedder, batch_size=2)
    assert doc["counts"]["unparseable"] == 2 and doc["counts"]["kept"] == 0
    reasons = " ".join(doc["reasons"]["unparseable"])
    assert "no 'Question:' line" in reasons and "demonstration" in reasons
    skipped = [json.loads(x) for x in (task_dir / ".ladder" / SKIPPED_FILE).read_text()
               .splitlines()]
    assert {s["outcome"] for s in skipped} == {"unparseable"}
    assert skipped[0]["calls"]["generate"]["raw"].startswith("Sure!")


class Crash(ScriptedModel):
    """Raises on its `fail_at`-th generate call, like a process killed mid-run."""

    def __init__(self, fail_at: int, **kw):
        super().__init__(**kw)
        self.fail_at, self.n = fail_at, 0

    def generate(self, requests, params):
        self.n += 1
        if self.n == self.fail_at:
            raise KeyboardInterrupt
        return super().generate(requests, params)


def test_kill_mid_run_then_resume_loses_and_repeats_nothing(task_dir, embedder):
    answers = GENERATED | CLOSED_BOOK
    with pytest.raises(KeyboardInterrupt):  # killed in the 3rd chunk's closed-book call
        synthesize(task_dir, 6, model=Crash(6, answers=answers, default="no"),
                   embedder=embedder, batch_size=1, seed=1)
    first = load_rows(task_dir)
    skipped = task_dir / ".ladder" / SKIPPED_FILE

    def skipped_lines() -> list[str]:
        return skipped.read_text().splitlines() if skipped.exists() else []

    assert len(first) + len(skipped_lines()) == 2  # two chunks finished before the kill
    # a torn last line from a kill during a write is ignored, then mended
    with open(task_dir / ".ladder" / ROWS_FILE, "a", encoding="utf-8") as f:
        f.write('{"id": "synth-torn", "inp')
    again = synthesize(task_dir, 6, model=scripted(), embedder=embedder, batch_size=1, seed=1)
    assert again["counts"]["already_done"] == 6 - again["counts"]["asked"] >= 1
    rows = load_rows(task_dir)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == 4
    chunks = [r["sources"][0] for r in rows] + \
        [json.loads(x)["chunk_id"] for x in skipped_lines()]
    assert len(chunks) == len(set(chunks)) == 6  # every sampled chunk once, kept or skipped
    assert synthesize(task_dir, 6, model=scripted(), embedder=embedder,
                      seed=1)["counts"]["asked"] == 0


def test_review_promote_reject_and_splits_never_move(task_dir, embedder):
    before = prepare(load_task(task_dir)).splits
    synthesize(task_dir, 6, model=scripted(), embedder=embedder, seed=1)
    pending = pending_synthetic(task_dir)
    assert len(pending) == 4
    a, b = pending[0]["id"], pending[1]["id"]
    row = review_synthetic(task_dir, a, "promote", "ana", input="Edited question?")
    assert row["status"] == "promoted" and row["input"] == "Edited question?"
    assert review_synthetic(task_dir, b, "reject", "bo")["status"] == "rejected"
    assert [r["id"] for r in pending_synthetic(task_dir)] == [r["id"] for r in pending[2:]]
    assert review_synthetic(task_dir, b, "promote", "bo")["status"] == "promoted"  # latest wins
    after = prepare(load_task(task_dir)).splits
    assert after.ids() == before.ids()  # promoted rows move no human example between splits
    every = {e.id for part in (after.train, after.dev, after.test, after.confirm) for e in part}
    assert not every & {r["id"] for r in load_rows(task_dir)}  # synthetic rows in no split
    with pytest.raises(LadderError, match="unknown decision"):
        review_synthetic(task_dir, a, "approve", "ana")
    with pytest.raises(LadderError, match="no synthetic row"):
        review_synthetic(task_dir, "synth-nope", "promote", "ana")
    with pytest.raises(LadderError, match="cannot be empty"):
        review_synthetic(task_dir, a, "promote", "ana", reference="  ")


def test_cli_generates_lists_promotes_and_scores_retrieval(task_dir):
    runner = CliRunner()
    res = runner.invoke(app, ["synth", str(task_dir), "--from-corpus", "6", "--seed", "1",
                              "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["counts"]["kept"] == 4
    listed = json.loads(runner.invoke(app, ["synth", str(task_dir), "--list", "--json"]).stdout)
    ids = [r["id"] for r in listed]
    res = runner.invoke(app, ["synth", str(task_dir), "--promote", ",".join(ids[:3]),
                              "--reject", ids[3], "--json"])
    assert res.exit_code == 0, res.output
    assert [r["status"] for r in json.loads(res.stdout)] == ["promoted"] * 3 + ["rejected"]
    res = runner.invoke(app, ["synth", str(task_dir), "--recall", "--json"])
    doc = json.loads(res.stdout)
    assert doc["n"] == 3 and doc["k"] == 2
    # each question names its passage's subject: the hybrid retriever finds its document
    assert doc["doc_recall"]["value"] == 1.0 and doc["doc_recall"]["low"] < 1.0
    assert retrieval_check(task_dir, ("rejected",))["n"] == 1


def test_bad_input_is_a_clear_error(task_dir, tmp_path, embedder):
    for n in (0, -3):
        with pytest.raises(LadderError, match="positive number"):
            synthesize(task_dir, n, model=scripted(), embedder=embedder)
    bare = write_task(tmp_path / "bare", _rows(), metric="token_f1", answers=["x"])
    with pytest.raises(LadderError, match=r"no \[corpus\] section"):
        synthesize(bare, 3, model=scripted(), embedder=embedder)
    with _only_writer(load_task(task_dir)), pytest.raises(LadderError, match="another"):
        synthesize(task_dir, 3, model=scripted(), embedder=embedder)
    with pytest.raises(LadderError, match="unknown model 'big'"):
        synthesize(task_dir, 3, "big", embedder=embedder)
    shutil.rmtree(task_dir / ".ladder" / "index")
    with pytest.raises(LadderError, match="ladder index"):
        synthesize(task_dir, 3, model=scripted(), embedder=embedder)
    res = CliRunner().invoke(app, ["synth", str(task_dir), "--list", "--recall"])
    assert res.exit_code != 0 and "exactly one of" in str(res.exception)
    assert not (task_dir / ".ladder" / ROWS_FILE).exists()


@pytest.mark.slow
def test_real_model_writes_grounded_rows(task_dir, embedder, smol):
    doc = synthesize(task_dir, 2, model=smol, embedder=embedder, max_tokens=32, seed=1)
    c = doc["counts"]
    assert c["asked"] == 2
    assert c["kept"] + sum(c[o] for o in ("unparseable", "empty", "too_long", "closed_book",
                                          "duplicate", "error")) == 2
    for r in load_rows(task_dir):
        assert r["calls"]["generate"]["tokens_out"] > 0 and r["sources"] and r["input"]
