"""Tests that could pass without checking anything, made to fail when the thing is broken:
the repeat-variance detector must report variance when outputs do differ."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import ladder

from llm_ladder.testing import write_task


def test_repeat_reports_variance_when_outputs_differ(tmp_path: Path) -> None:
    """A model that answers differently on every call (the scripted model cycles through its
    answers) must be reported as nondeterministic; a detector stuck at 0 fails here."""
    rows = [{"id": f"r{i}", "input": f"question {i}", "output": "yes"} for i in range(12)]
    answers = ["yes", "no", "maybe", "yes", "no"]  # 5 answers: a repeat never lines up
    task = write_task(tmp_path / "t", rows, answers=answers, split="train = 0.0\ndev = 0.0\n"
                      "test = 1.0")
    doc = json.loads(ladder("eval", task, "--rung", "zero-shot", "--repeat", "2",
                            "--json").stdout)
    rep = doc["repeat"]["zero-shot"]
    assert rep["n"] == 12 and len(set(rep["runs"])) == 2
    assert rep["differing"] > 0


def test_an_embedder_folder_with_pickled_weights_is_refused(tmp_path: Path) -> None:
    """The adapters' pickle guard, now also on the embedder folder: a copy of the shipped
    embedder plus a pickled file is refused before anything is loaded."""
    import shutil

    import pytest

    from llm_ladder.embedding import Embedder, minilm_folder
    from llm_ladder.errors import LadderError

    folder = tmp_path / "embedder"
    shutil.copytree(minilm_folder(), folder)
    (folder / "2_Dense").mkdir()
    (folder / "2_Dense" / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")  # pickle of 1
    with pytest.raises(LadderError, match=r"pickled weights \(2_Dense/pytorch_model.bin\)"):
        Embedder(str(folder))
    shutil.rmtree(folder / "2_Dense")
    (folder / "model.safetensors").rename(folder / "weights.pt")
    with pytest.raises(LadderError, match="pickled weights"):
        Embedder(str(folder))
