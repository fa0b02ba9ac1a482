"""Example loading and validation, with file and line for every problem.

Accepted row formats (one format per file; a file that mixes them is rejected):
  plain      {"input": str | messages, "output": str}
  messages   {"messages": [...]}  (OpenAI chat; the last assistant turn is the output)
  prompt     {"prompt": str | messages, "completion": str | messages}  (TRL)
  alpaca     {"instruction": str, "input": str?, "output": str}
  sharegpt   {"conversations": [{"from": ..., "value": ...}]}
CSV files need `input` and `output` columns. Every row becomes an `Example` whose input is
text or chat messages and whose output is text. Token-length checks need a tokenizer and
live in `check_lengths`; this module never truncates.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_ladder.errors import LadderError

Messages = list[dict[str, Any]]
ROLES = {"system", "user", "assistant", "tool"}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "tool": "tool", "function_call": "assistant",
                  "observation": "tool"}


@dataclass
class Example:
    """One example: an id, the input (text or chat messages), the reference output, free-form
    metadata, and where it was read from (file:line)."""

    id: str
    input: str | Messages
    output: str
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # "file:line", for messages

    def input_text(self) -> str:
        """The input as one string (chat turns joined), for matching and leakage checks."""
        if isinstance(self.input, str):
            return self.input
        return "\n".join(f"{m['role']}: {m.get('content') or ''}" for m in self.input)


@dataclass
class Problem:
    file: str
    line: int
    field: str
    message: str
    example_id: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else \
            f"{where}: {self.message}"


@dataclass
class LoadResult:
    examples: list[Example]
    problems: list[Problem]
    rows_read: int


class RowError(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def detect_format(row: dict[str, Any]) -> str:
    if "messages" in row:
        return "messages"
    if "conversations" in row:
        return "sharegpt"
    if "prompt" in row and "completion" in row:
        return "prompt"
    if "instruction" in row:
        return "alpaca"
    if "input" in row and "output" in row:
        return "plain"
    raise RowError("", "unknown row format: expected keys input/output, messages, "
                   "prompt/completion, instruction/output or conversations; got "
                   + ", ".join(sorted(row)) if row else "empty object")


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise RowError(name, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise RowError(name, "is empty")
    return value


def check_messages(msgs: Any, name: str = "messages") -> Messages:
    """Validate OpenAI chat messages the way OpenAI's fine-tuning data check does."""
    if not isinstance(msgs, list):
        raise RowError(name, f"must be a list of messages, got {type(msgs).__name__}")
    if not msgs:
        raise RowError(name, "is an empty list")
    out: Messages = []
    for i, m in enumerate(msgs):
        where = f"{name}[{i}]"
        if not isinstance(m, dict):
            raise RowError(where, f"must be an object, got {type(m).__name__}")
        if "role" not in m:
            raise RowError(where, "has no 'role'")
        if m["role"] not in ROLES:
            raise RowError(f"{where}.role", f"unknown role {m['role']!r}; use one of "
                           + ", ".join(sorted(ROLES)))
        content = m.get("content")
        if content is None and not m.get("tool_calls"):
            raise RowError(where, "has no 'content'")
        if content is not None:
            if not isinstance(content, str):
                raise RowError(f"{where}.content",
                               f"must be a string, got {type(content).__name__}")
            if not content.strip() and not m.get("tool_calls"):
                raise RowError(f"{where}.content", "is empty")
        out.append({k: v for k, v in m.items() if k in ("role", "content", "name", "tool_calls",
                                                         "tool_call_id")})
    return out


def _split_last_assistant(msgs: Messages, name: str,
                          need_user: bool = True) -> tuple[Messages, str]:
    if msgs[-1]["role"] != "assistant":
        if not any(m["role"] == "assistant" for m in msgs):
            raise RowError(name, "has no assistant turn (nothing to learn or score)")
        raise RowError(name, "must end with the assistant turn that is the expected output")
    prompt = msgs[:-1]
    if need_user and not any(m["role"] == "user" for m in prompt):
        raise RowError(name, "has no user turn before the assistant's answer")
    last = msgs[-1]
    if last.get("tool_calls") and not last.get("content"):
        return prompt, json.dumps(last["tool_calls"], ensure_ascii=False)
    return prompt, _text(last.get("content"), f"{name}[{len(msgs) - 1}].content")


def _input(value: Any, name: str) -> str | Messages:
    if isinstance(value, list):
        msgs = check_messages(value, name)
        if msgs[-1]["role"] == "assistant":
            raise RowError(name, "must not end with an assistant turn (that is the output)")
        return msgs
    return _text(value, name)


def normalize_row(row: Any, fmt: str) -> tuple[str | Messages, str]:
    """Turn one row of a known format into (input, output)."""
    if fmt == "plain":
        out = row["output"]
        if not isinstance(out, str):  # structured outputs may be given as JSON values
            if out is None:
                raise RowError("output", "is null")
            out = json.dumps(out, ensure_ascii=False)
        return _input(row["input"], "input"), _text(out, "output")
    if fmt == "messages":
        return _split_last_assistant(check_messages(row["messages"]), "messages")
    if fmt == "prompt":
        comp = row["completion"]
        if isinstance(comp, list):
            # TRL's conversational completion is just the assistant turn(s); no user turn
            comp = _split_last_assistant(check_messages(comp, "completion"), "completion",
                                         need_user=False)[1]
        return _input(row["prompt"], "prompt"), _text(comp, "completion")
    if fmt == "alpaca":
        instr = _text(row.get("instruction"), "instruction")
        extra = row.get("input") or ""
        if not isinstance(extra, str):
            raise RowError("input", f"must be a string, got {type(extra).__name__}")
        text = f"{instr}\n\n{extra}" if extra.strip() else instr
        if "output" not in row:
            raise RowError("output", "is missing")
        return text, _text(row["output"], "output")
    if fmt == "sharegpt":
        conv = row["conversations"]
        if not isinstance(conv, list):
            raise RowError("conversations", "must be a list")
        msgs = []
        for i, turn in enumerate(conv):
            if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
                raise RowError(f"conversations[{i}]", "needs 'from' and 'value'")
            role = SHAREGPT_ROLES.get(turn["from"])
            if role is None:
                raise RowError(f"conversations[{i}].from", f"unknown speaker {turn['from']!r}")
            msgs.append({"role": role, "content": turn["value"]})
        return _split_last_assistant(check_messages(msgs, "conversations"), "conversations")
    raise RowError("", f"unknown format {fmt}")


def content_id(inp: str | Messages) -> str:
    blob = inp if isinstance(inp, str) else json.dumps(inp, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def _iter_jsonl(path: Path):
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield lineno, None, RowError("", f"not UTF-8 (byte 0x{raw[e.start]:02x} at "
                                             f"column {e.start + 1})")
                continue
            if not text.strip():
                continue
            try:
                yield lineno, json.loads(text.rstrip("\r\n")), None  # colno on this line
            except json.JSONDecodeError as e:
                yield lineno, None, RowError("", f"invalid JSON: {e.msg} at column {e.colno}")


def _iter_csv(path: Path):
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise LadderError(f"{path}:{line}: not UTF-8 (byte 0x{data[e.start]:02x})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    cols = set(reader.fieldnames or [])
    if not {"input", "output"} <= cols:
        raise LadderError(f"{path}:1: CSV header needs 'input' and 'output' columns, "
                          f"got {', '.join(sorted(cols)) or 'none'}")
    for row in reader:
        lineno = reader.line_num
        if None in row:
            yield lineno, None, RowError("", f"{len(row[None])} more field(s) than the header")
            continue
        short = sum(1 for v in row.values() if v is None)
        if short:
            yield lineno, None, RowError("", f"{short} fewer field(s) than the header")
            continue
        yield lineno, {k: v for k, v in row.items() if v is not None}, None


def load_examples(path: Path, id_field: str = "id") -> LoadResult:
    """Load one JSONL or CSV file. Bad rows become Problems; good rows are all kept."""
    if not path.is_file():
        raise LadderError(f"{path}: examples file not found")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = _iter_jsonl(path)
    elif suffix == ".csv":
        rows = _iter_csv(path)
    else:
        raise LadderError(f"{path}: unsupported examples file type {suffix!r}; use .jsonl or .csv")
    examples: list[Example] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    fmt_of_file: tuple[str, int] | None = None
    n = 0
    for lineno, row, err in rows:
        n += 1
        try:
            if err:
                raise err
            if not isinstance(row, dict):
                raise RowError("", f"must be a JSON object, got {type(row).__name__}")
            fmt = "plain" if suffix == ".csv" else detect_format(row)
            if fmt_of_file is None:
                fmt_of_file = (fmt, lineno)
            elif fmt != fmt_of_file[0]:
                raise RowError("", f"format {fmt!r} differs from {fmt_of_file[0]!r} used since "
                               f"line {fmt_of_file[1]}; one file must use one format")
            inp, out = normalize_row(row, fmt)
            ex_id = row.get(id_field)
            if ex_id is None or ex_id == "":
                ex_id = content_id(inp)
            elif not isinstance(ex_id, str | int):
                raise RowError(id_field, f"must be a string or integer, got {type(ex_id).__name__}")
            ex_id = str(ex_id)
            meta = row.get("meta") or {}
            if not isinstance(meta, dict):
                raise RowError("meta", f"must be an object, got {type(meta).__name__}")
            if ex_id in seen:
                raise RowError(id_field, f"duplicate id {ex_id!r} (first at line {seen[ex_id]})")
            seen[ex_id] = lineno
            examples.append(Example(ex_id, inp, out, meta, f"{path}:{lineno}"))
        except RowError as e:
            problems.append(Problem(str(path), lineno, e.field, e.message))
    if n == 0:
        problems.append(Problem(str(path), 0, "", "file has no rows"))
    return LoadResult(examples, problems, n)


def load_all(paths: list[Path], id_field: str = "id") -> LoadResult:
    """Load several files; ids must be unique across them."""
    examples, problems, rows = [], [], 0
    where: dict[str, str] = {}
    for p in paths:
        r = load_examples(p, id_field)
        rows += r.rows_read
        problems += r.problems
        for ex in r.examples:
            if ex.id in where:
                file, line = ex.source.rsplit(":", 1)
                problems.append(Problem(str(p), int(line), id_field,
                                        f"duplicate id {ex.id!r} (also at {where[ex.id]})"))
                continue
            where[ex.id] = ex.source
            examples.append(ex)
    return LoadResult(examples, problems, rows)


def format_problems(problems: list[Problem], limit: int = 20) -> str:
    shown = [f"  {p}" for p in problems[:limit]]
    if len(problems) > limit:
        shown.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(shown)


def check_lengths(examples: list[Example], count_tokens, limit: int) -> list[Problem]:
    """Report inputs whose token count exceeds `limit` (never truncated)."""
    problems = []
    for ex in examples:
        n = count_tokens(ex.input if isinstance(ex.input, list) else
                         [{"role": "user", "content": ex.input}])
        if n > limit:
            file, _, line = ex.source.rpartition(":")
            problems.append(Problem(file, int(line or 0), "input",
                                    f"{n} tokens, longer than the {limit} the model can take",
                                    ex.id))
    return problems
