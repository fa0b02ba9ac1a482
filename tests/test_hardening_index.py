"""A `ladder index` killed between two commits loses nothing: the rerun stores exactly the
chunks of a clean full index of the same corpus, and a third run embeds nothing.

The kill is deterministic: a real `ladder index` subprocess, with the embedding batch made
small and the store's `add` wrapped to SIGKILL the process right after its first commit, so
one document is left with only some of its chunks stored."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from helpers import ladder

# ~5 chunks of 16 tokens per document; with batches of 8 chunks the first commit ends inside
# the second document.
DOC = "Gutters need cleaning twice a year, in spring and in autumn. " * 6
KILL_AFTER_FIRST_ADD = """
import os, signal, sys
import llm_ladder.rag.index as index
import llm_ladder.rag.stores as stores
index.EMBED_BATCH = 8
add = stores.LanceStore.add
def add_then_die(self, chunks, vectors):
    n = add(self, chunks, vectors)
    os.kill(os.getpid(), signal.SIGKILL)
    return n
stores.LanceStore.add = add_then_die
sys.argv = ["ladder", "index", sys.argv[1], "--json"]
from llm_ladder.cli import main
main()
"""


def make_task(root: Path) -> Path:
    (root / "corpus").mkdir(parents=True)
    for i in range(4):
        (root / "corpus" / f"doc{i}.md").write_text(f"# Doc {i}\n\n{i}: {DOC}\n",
                                                   encoding="utf-8")
    (root / "data").mkdir()
    (root / "data" / "qa.jsonl").write_text(
        "".join(json.dumps({"id": f"q{i}", "input": f"Q{i}?", "output": "A."}) + "\n"
                for i in range(4)), encoding="utf-8")
    (root / "task.toml").write_text("""
name = "kill-index"
description = "Answer."
[data]
examples = ["data/qa.jsonl"]
[metric]
name = "token_f1"
[corpus]
paths = ["corpus"]
chunker = "fixed"
chunk_tokens = 16
chunk_overlap = 0
[models.default]
backend = "local"
name = "smollm2-135m"
""", encoding="utf-8")
    return root


def index(task: Path) -> dict:
    return json.loads(ladder("index", task, "--json").stdout)


def stored(task: Path) -> dict[str, int]:
    """Chunk ids per document in the task's LanceDB index."""
    import lancedb

    table = lancedb.connect(str(task / ".ladder" / "index")).open_table("chunks")
    rows = table.to_arrow().select(["id", "doc_id"]).to_pylist()
    out: dict[str, int] = {}
    for r in rows:
        out[r["doc_id"]] = out.get(r["doc_id"], 0) + 1
    return out


def test_index_killed_between_commits_matches_a_clean_index(tmp_path: Path) -> None:
    from llm_ladder.embedding import build_embedder
    from llm_ladder.rag.index import build_index
    from llm_ladder.task import load_task

    clean = make_task(tmp_path / "clean")
    clean_task = load_task(clean)
    embedder = build_embedder(clean_task.corpus)
    full = build_index(clean_task, embedder).as_dict()
    assert full["chunks"] >= 12 and full["chunks_embedded"] == full["chunks"]

    task = make_task(tmp_path / "killed")
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_FIRST_ADD, str(task)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    partial = stored(task)
    assert sum(partial.values()) == 8  # one batch committed, a document cut in two

    rerun = index(task)
    assert rerun["chunks_embedded"] == full["chunks"] - 8
    assert rerun["chunks"] == full["chunks"] == rerun["store"]["count"]
    assert stored(task) == stored(clean)
    third = build_index(load_task(task), embedder).as_dict()
    assert third["chunks_embedded"] == 0 and third["unchanged"] == 4
    assert stored(task) == stored(clean)
