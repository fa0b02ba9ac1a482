"""`ladder init` from bare JSONL files of each kind, then `ladder run` on the result with no
hand edit (the scripted model answers, so the run takes seconds), plus the inference rules."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from helpers import LADDER, ladder

from llm_ladder.errors import LadderError
from llm_ladder.init import infer_kind, infer_schema, init_task

CITIES = ["Lund", "Malmö", "Umeå", "Kiruna", "Visby", "Borås"]


def rows_of(kind: str, n: int = 60) -> list[dict[str, str]]:
    out = []
    for i in range(n):
        city = CITIES[i % len(CITIES)]
        if kind == "labels":
            out.append({"input": f"Ticket {i}: the heating in {city} is broken",
                        "output": ["heating", "water", "billing"][i % 3]})
        elif kind == "json":
            out.append({"input": f"Book a table for {i % 7 + 1} in {city} at {i % 12}pm",
                        "output": json.dumps({"city": city, "people": i % 7 + 1,
                                              "vegetarian": i % 2 == 0})})
        else:
            out.append({"input": f"Describe request {i} from {city}.",
                        "output": f"Request {i} came from {city} and asks for a new "
                                  f"{['roof', 'window', 'door'][i % 3]} within {i % 9} weeks."})
    return out


def write_bare(folder: Path, rows: list[dict[str, str]]) -> tuple[Path, Path]:
    """The bare examples file and a perfect scripted model's answers for it."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "examples.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    answers = folder / "answers.json"
    answers.write_text(json.dumps({r["input"]: r["output"] for r in rows}), encoding="utf-8")
    return data, answers


@pytest.mark.parametrize(("kind", "metric"), [("labels", "accuracy"), ("json", "json_match"),
                                              ("text", "token_f1")])
def test_init_then_run_from_a_bare_file(tmp_path: Path, kind: str, metric: str) -> None:
    data, answers = write_bare(tmp_path / "raw", rows_of(kind))
    task = tmp_path / "task"
    proc = ladder("init", task, "--examples", data, "--model-backend", "scripted",
                  "--model-path", answers)
    assert f"next: ladder run {task.as_posix()}" in proc.stdout
    text = (task / "task.toml").read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    assert raw["metric"]["name"] == metric
    assert text.count("\n# ") >= 8  # the values come with their reasons
    if kind == "labels":
        assert raw["metric"]["labels"] == ["billing", "heating", "water"]
    if kind == "json":
        schema = json.loads((task / "schema.json").read_text())
        assert schema["properties"]["people"] == {"type": "integer"}
        assert sorted(schema["required"]) == ["city", "people", "vegetarian"]
    doc = json.loads(ladder("run", task, "--no-report", "--json").stdout)
    assert doc["rungs"][0]["rung"] == "zero-shot"
    assert doc["rungs"][0]["quality"]["value"] == 1.0
    assert doc["recommendation"]["meets_bar"] is True


def test_init_never_overwrites_without_force(tmp_path: Path) -> None:
    data, answers = write_bare(tmp_path / "raw", rows_of("labels"))
    task = tmp_path / "task"
    ladder("init", task, "--examples", data, "--bar", "0.6")
    (task / "task.toml").write_text("# mine\n" + (task / "task.toml").read_text())
    proc = ladder("init", task, "--examples", data, check=False)
    assert proc.returncode == 2
    assert "exists; pass --force" in proc.stderr
    assert (task / "task.toml").read_text().startswith("# mine")
    ladder("init", task, "--examples", data, "--force")
    assert not (task / "task.toml").read_text().startswith("# mine")


def test_init_with_a_corpus_writes_corpus_and_retrieval(tmp_path: Path) -> None:
    data, _ = write_bare(tmp_path / "raw", rows_of("text"))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Roofs\nRoofs take three weeks.\n")
    task = tmp_path / "task"
    doc = json.loads(ladder("init", task, "--examples", data, "--corpus", tmp_path / "docs",
                            "--bar", "0.4", "--json").stdout)
    raw = tomllib.loads((task / "task.toml").read_text())
    assert raw["corpus"]["paths"] == ["../docs"]
    assert raw["retrieval"] == {"k": 4, "mode": "hybrid"}
    assert raw["bar"] == 0.4
    assert doc["next"].startswith("ladder index ")


def test_kind_rules() -> None:
    assert infer_kind(["yes", "no"] * 10)[0] == "labels"
    assert infer_kind(['{"a": 1}', '{"a": 2, "b": "x"}'])[0] == "json"
    assert infer_kind([f"answer number {i}" for i in range(20)])[0] == "text"
    assert infer_kind(["[1, 2]", "[3]"] * 5)[0] == "labels"  # JSON arrays are not objects
    schema = infer_schema([{"a": 1, "b": "x"}, {"a": 2.5}])
    assert schema == {"type": "object", "properties": {"a": {"type": "number"},
                                                       "b": {"type": "string"}},
                      "required": ["a"]}


def test_split_is_sized_by_the_power_calculation(tmp_path: Path) -> None:
    """Few rows: the largest test fraction and a sentence saying the decision needs more;
    many rows: a smaller fraction that still confirms a 0.10 margin."""
    from llm_ladder.init import infer_task

    small, _ = write_bare(tmp_path / "s", rows_of("labels", 30))
    inf = infer_task(tmp_path / "ts", small, bar=0.8)
    assert inf.split["test"] == 0.5
    assert "collect more examples" in inf.split_why
    big, _ = write_bare(tmp_path / "b", rows_of("labels", 900))
    inf = infer_task(tmp_path / "tb", big, bar=0.8)
    assert inf.split["test"] < 0.5
    assert inf.power["min_margin"] <= 0.10


def run_in_terminal(args: list[Any], dialogue: list[tuple[str, str]],
                    timeout: float = 120) -> tuple[int, str]:
    """Run `ladder ARGS` under a pseudo-terminal (stdin is a TTY), answering each prompt in
    `dialogue` — (text the prompt contains, answer) — once it appears. Returns (exit code,
    everything the terminal showed, ANSI codes stripped)."""
    env = {**os.environ, "TERM": "dumb", "NO_COLOR": "1", "COLUMNS": "200"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdin, stdout and stderr are the terminal
        os.execve(LADDER[0], [*LADDER, *map(str, args)], env)
    seen, step, mark, deadline = "", 0, 0, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", chunk.decode(errors="replace"))
            if step < len(dialogue) and dialogue[step][0] in seen[mark:].rsplit("\n", 1)[-1]:
                os.write(fd, (dialogue[step][1] + "\n").encode())
                step, mark = step + 1, len(seen)  # the next prompt comes after this one
        else:
            os.kill(pid, 9)
            raise AssertionError(f"ladder {args} did not finish; the terminal showed:\n{seen}")
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    assert step == len(dialogue), f"only {step} prompts answered:\n{seen}"
    return os.waitstatus_to_exitcode(status), seen


def test_init_asks_on_a_terminal_and_flags_skip_the_questions(tmp_path: Path) -> None:
    data, _ = write_bare(tmp_path / "raw", rows_of("labels"))
    task = tmp_path / "task"
    code, screen = run_in_terminal(
        ["init", task, "--examples", data],
        [("metric [", "macro_f1"),
         ("label set", "billing, heating, water, plumbing"),  # one with no example yet
         ("quality bar", "1.5"), ("quality bar", "0.75"),     # out of range: asked again
         ("model backend", "")])                              # Enter: the proposal
    assert code == 0, screen
    assert "a labels task" in screen and "between 0 and 1" in screen
    raw = tomllib.loads((task / "task.toml").read_text())
    assert raw["metric"] == {"name": "macro_f1",
                             "labels": ["billing", "heating", "plumbing", "water"]}
    assert raw["bar"] == 0.75
    assert raw["models"]["default"]["backend"] == "local"
    # the flags answer the questions: only the model is asked
    code, screen = run_in_terminal(
        ["init", task, "--examples", data, "--force", "--metric", "accuracy", "--labels",
         "billing,heating,water", "--bar", "0.6"], [("model backend", "openai"),
                                                    ("model name", "gpt-4o-mini")])
    assert code == 0, screen
    raw = tomllib.loads((task / "task.toml").read_text())
    assert raw["metric"]["name"] == "accuracy" and raw["bar"] == 0.6
    assert raw["models"]["default"] == {"backend": "openai", "name": "gpt-4o-mini"}


def test_init_never_asks_without_a_terminal(tmp_path: Path) -> None:
    """stdin is an open pipe nobody writes to: a prompt would wait forever."""
    data, _ = write_bare(tmp_path / "raw", rows_of("labels"))
    proc = subprocess.Popen([*LADDER, "init", str(tmp_path / "task"), "--examples", str(data)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        proc.wait(timeout=120)  # stdin stays open: only a process that never reads ends
    finally:
        proc.kill()
    stdout, stderr = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    assert proc.returncode == 0, stderr
    assert "metric [" not in stdout + stderr and "quality bar" not in stdout + stderr
    raw = tomllib.loads((tmp_path / "task" / "task.toml").read_text())
    assert raw["metric"]["name"] == "accuracy" and raw["bar"] == 0.8  # the proposals


def test_given_metric_and_labels_are_checked_against_the_data(tmp_path: Path) -> None:
    data, _ = write_bare(tmp_path / "raw", rows_of("labels"))
    with pytest.raises(LadderError, match="does not fit a labels task"):
        init_task(tmp_path / "t", data, metric="token_f1")
    with pytest.raises(LadderError, match="missing: water"):
        init_task(tmp_path / "t", data, labels=["billing", "heating"])
