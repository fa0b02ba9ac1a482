"""Docs stay in sync with the code: every command and option is documented, every shipped
task file validates, and the README starts with the two commands."""

import re
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
