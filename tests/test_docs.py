"""Docs stay in sync with the code: every command and option is documented, every shipped
task file validates, and the README starts with the two commands."""

import re
import shutil
from pathlib import Path

import pytest
import typer.main

from llm_ladder import plugins
from llm_ladder.cli import app
from llm_ladder.task import load_task

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_starts_with_the_two_commands():
    first_block = README.split("```bash", 1)[1].split("```", 1)[0]
    assert "make demo" in first_block and "make test" in first_block
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_command_and_option_is_in_the_readme():
    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():
        assert f"ladder {name}" in README, f"`ladder {name}` is not documented in README.md"
        for param in cmd.params:
            for opt in param.opts:
                if opt.startswith("--") and opt not in ("--help",):
                    assert opt in README, f"option {opt} of `ladder {name}` is not in README.md"


def test_every_builtin_rung_and_metric_is_documented():
    for rung in plugins.names("rungs"):
        assert f"`{rung}`" in README
    for metric in plugins.names("metrics"):
        assert metric in README


@pytest.mark.parametrize("task_dir", sorted(p.parent for p in ROOT.glob("examples/*/task.toml")))
def test_shipped_tasks_validate(task_dir):
    task = load_task(task_dir)
    for rel in task.data.examples:
        assert task.path(rel).is_file(), f"{task_dir}: {rel} missing; run prepare.py"
    header = (task_dir / "task.toml").read_text()
    assert re.search(r"CC BY|Apache|MIT|licen[cs]e", header), "name the data's licence"


@pytest.mark.slow
def test_the_python_api_examples_run(tmp_path, monkeypatch):
    """The README's Python API blocks, run as written on a copy of the FAQ example whose
    test split is capped at 12 questions and whose served-latency probe is off (the code is
    the README's; the probe, tested in test_latency_served, made this the slowest test)."""
    section = README.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    src = ROOT / "examples" / "construction-faq"
    copy = tmp_path / "examples" / "construction-faq"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns(".ladder"))
    toml = (copy / "task.toml").read_text(encoding="utf-8")
    assert "max_test = 60" in toml
    (copy / "task.toml").write_text(toml.replace("max_test = 60", "max_test = 12")
                                    + "\n[serve]\nlatency_probe = 0\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    first: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), first)  # noqa: S102 - our own README
    assert [s["rung"] for s in first["result"].rungs] == ["zero-shot", "system-prompt"]
    assert first["result"].to_dict()["recommendation"]["reason"]
    second: dict = {}
    exec(compile(blocks[1], "README.md", "exec"), second)  # noqa: S102
    assert second["run"]["summary"]["quality"]["n"] == 12
