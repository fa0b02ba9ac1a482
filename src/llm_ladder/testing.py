"""A test kit: a scripted model and a helper that writes a task folder.

`ScriptedModel` is a `ChatModel` that answers from a list (in call order, cycling) or from
an input -> answer map (matched on the last user turn), registered as the `scripted` backend
so a task file can name it (`backend = "scripted"`, `path = "answers.json"`). It exists to
test our own logic (the climb, the decision, resume) fast and without weights; it is never
evidence that a real model or backend works — the real-model tests are.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from llm_ladder.data import Messages
from llm_ladder.errors import LadderError
from llm_ladder.models.base import Generation, GenParams


class ScriptedModel:
    """Answers from `answers` (a list, or a dict keyed by the last user turn's text), or from
    the JSON file at `path` holding either. Unknown inputs get `default`."""

    def __init__(self, name: str = "scripted", path: str | None = None,
                 answers: list[str] | dict[str, str] | None = None, default: str = "",
                 context_length: int | None = None, batch_size: int | None = None,
                 **_settings: Any):
        if answers is None and path is not None:
            try:
                answers = json.loads(Path(path).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise LadderError(f"{path}: cannot read the scripted answers: {e}") from None
        if not isinstance(answers, list | dict) or not answers:
            raise LadderError("the scripted model needs answers: a non-empty list or an "
                              "input -> answer object")
        self.name = name
        self.answers = answers
        self.default = default
        self.context_length = context_length or 8192
        self.batch_size = batch_size or 8
        self.calls: list[Messages] = []  # every request, as sent

    def _answer(self, messages: Messages) -> str:
        if isinstance(self.answers, list):
            return self.answers[(len(self.calls) - 1) % len(self.answers)]
        users = [str(m.get("content") or "") for m in messages if m["role"] == "user"]
        last = users[-1] if users else ""
        if last in self.answers:
            return self.answers[last]
        hits = [k for k in self.answers if k and k in last]  # e.g. a RAG prompt quoting it
        return self.answers[max(hits, key=len)] if hits else self.default

    def generate(self, requests: list[Messages], params: GenParams) -> list[Generation]:
        out = []
        for msgs in requests:
            self.calls.append(msgs)
            text = self._answer(msgs)
            n_out = min(len(text.split()), params.max_tokens)
            out.append(Generation(text, self.count_tokens(msgs), n_out, 0.001 * (1 + n_out)))
        return out

    def count_tokens(self, messages: Messages) -> int:
        return sum(len(str(m.get("content") or "").split()) + 3 for m in messages)

    def describe(self) -> dict[str, Any]:
        blob = json.dumps(self.answers, sort_keys=True).encode()
        return {"backend": "scripted", "name": self.name,
                "answers_sha256": hashlib.sha256(blob).hexdigest()[:12]}


def write_task(folder: Path, rows: list[dict[str, Any]], *, metric: str = "accuracy",
               bar: float | None = 0.5, answers: list[str] | dict[str, str] | None = None,
               split: str = "train = 0.5\ndev = 0.0\ntest = 0.5", extra: str = "") -> Path:
    """A task folder with `rows` as data/examples.jsonl; with `answers`, the default model is
    a ScriptedModel reading them from answers.json. Returns the folder."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "data" / "examples.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    model = ""
    if answers is not None:
        (folder / "answers.json").write_text(json.dumps(answers), encoding="utf-8")
        model = ('[models.default]\nbackend = "scripted"\nname = "scripted"\n'
                 f'path = "{(folder / "answers.json").as_posix()}"\n')
    bar_line = f"bar = {bar}\n" if bar is not None else ""
    (folder / "task.toml").write_text(
        f'name = "{folder.name}"\ndescription = "A test task."\n{bar_line}{extra}\n'
        f'[data]\nexamples = ["data/examples.jsonl"]\n[split]\n{split}\n'
        f'[metric]\nname = "{metric}"\n{model}', encoding="utf-8")
    return folder
