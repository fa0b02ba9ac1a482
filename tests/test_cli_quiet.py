"""What the CLI shows while it works: third-party noise silenced unless --verbose, each
rung's row as it finishes, and the finished rows on Ctrl-C.

The quiet test runs the real embedded model (two test examples, one rung); the others use
the scripted model and run in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_task
from helpers import ladder

from llm_ladder import ladder as ladder_mod
from llm_ladder.cli import main
from llm_ladder.testing import write_task as write_scripted

ROWS = [{"id": f"q{i}", "input": f"question {i}", "output": "yes" if i % 2 else "no"}
        for i in range(12)]
ANSWERS = {f"question {i}": "yes" if i % 2 else "no" for i in range(12)}


def noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if "Warning" in line or "Loading weights" in line or "Writing model shards" in line]


def test_default_output_has_no_third_party_noise(tmp_path: Path) -> None:
    task = write_task(tmp_path / "t", n_rows=12, max_test=2)
    proc = ladder("run", task, "--rungs", "zero-shot", "--no-report", timeout=600)
    assert noise(proc.stderr) == [], proc.stderr
    assert "zero-shot" in proc.stdout  # the table is still there


def test_verbose_restores_third_party_output(tmp_path: Path) -> None:
    """--verbose is a global option: the library's own bars come back."""
    task = write_task(tmp_path / "t", n_rows=12, max_test=2)
    proc = ladder("--verbose", "run", task, "--rungs", "zero-shot", "--no-report",
                  timeout=600)
    assert any("Loading weights" in line for line in proc.stderr.splitlines()), proc.stderr


def test_rows_come_one_line_per_rung_in_a_log(tmp_path: Path) -> None:
    """Not a terminal: each rung's row is one line on stderr as it finishes; --json keeps
    stdout one document."""
    task = write_scripted(tmp_path / "t", ROWS, answers=ANSWERS, bar=0.99)
    proc = ladder("run", task, "--rungs", "zero-shot,system-prompt", "--no-report", "--json")
    doc = json.loads(proc.stdout)
    assert [r["rung"] for r in doc["rungs"]] == ["zero-shot", "system-prompt"]
    lines = [line for line in proc.stderr.splitlines()
             if line.startswith(("zero-shot:", "system-prompt:"))]
    assert len(lines) == 2, proc.stderr
    assert lines[0].startswith("zero-shot: accuracy 1.000 [")


def test_ctrl_c_prints_the_finished_rows_and_exits_130(tmp_path: Path, monkeypatch,
                                                        capsys) -> None:
    task = write_scripted(tmp_path / "t", ROWS, answers=ANSWERS, bar=0.99)
    real = ladder_mod.run_rung
    calls: list[str] = []

    def interrupted(prep, name, *args, **kwargs):
        calls.append(name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(prep, name, *args, **kwargs)

    monkeypatch.setattr(ladder_mod, "run_rung", interrupted)
    monkeypatch.setattr("sys.argv", ["ladder", "run", str(task), "--rungs",
                                     "zero-shot,system-prompt", "--no-report"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 130
    cap = capsys.readouterr()
    assert "(interrupted)" in cap.out and "zero-shot" in cap.out
    assert "system-prompt" not in cap.out.split("(interrupted)", 1)[1]
    assert "1 of 2 rung(s) finished and stored" in cap.err
    assert "--resume" in cap.err
