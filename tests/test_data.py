"""Example loading: every bad row is a Problem with file, line and field; good rows all load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_ladder.data import (
    Problem,
    check_lengths,
    content_id,
    format_problems,
    load_all,
    load_examples,
)
from llm_ladder.errors import LadderError


def write_lines(path: Path, lines: list[str | bytes | dict]) -> Path:
    """One JSONL row per item: dicts are dumped, str/bytes are written as they are."""
    out = []
    for line in lines:
        if isinstance(line, dict):
            line = json.dumps(line, ensure_ascii=False)
        out.append(line if isinstance(line, bytes) else line.encode("utf-8"))
    path.write_bytes(b"\n".join(out) + b"\n")
    return path


def plain(i: str, inp: str = "question", out: str = "answer") -> dict:
    return {"id": i, "input": f"{inp} {i}", "output": f"{out} {i}"}


def chat(i: str) -> dict:
    return {"id": i, "messages": [{"role": "user", "content": f"hello {i}"},
                                  {"role": "assistant", "content": f"hi {i}"}]}


def only_problem(result) -> Problem:
    assert len(result.problems) == 1, [str(p) for p in result.problems]
    return result.problems[0]


# ---- line-level problems: the row is not a usable object --------------------------------

@pytest.mark.parametrize("bad,message", [
    ('{"id": "b", "input": "x", ', "invalid JSON: Expecting property name enclosed in "
                                   "double quotes at column 27"),
    ('[1, 2]', "must be a JSON object, got list"),
    ('"just a string"', "must be a JSON object, got str"),
    (b'{"input": "caf\xe9", "output": "x"}', "not UTF-8 (byte 0xe9 at column 15)"),
    ('{"question": "q", "answer": "a"}', "unknown row format: expected keys input/output, "
                                         "messages, prompt/completion, instruction/output or "
                                         "conversations; got answer, question"),
    ('{}', "empty object"),
])
def test_bad_line_is_reported_and_good_rows_kept(tmp_path, bad, message):
    f = write_lines(tmp_path / "rows.jsonl", [plain("a"), bad, plain("c"), plain("d")])
    r = load_examples(f)
    assert only_problem(r) == Problem(str(f), 2, "", message)
    assert [e.id for e in r.examples] == ["a", "c", "d"]
    assert r.rows_read == 4


def test_blank_lines_are_skipped_but_counted_in_line_numbers(tmp_path):
    f = write_lines(tmp_path / "rows.jsonl", [plain("a"), "", "   ", "{oops", plain("e")])
    r = load_examples(f)
    p = only_problem(r)
    assert (p.file, p.line, p.field) == (str(f), 4, "")
    assert p.message.startswith("invalid JSON")
    assert [(e.id, Path(e.source).name) for e in r.examples] == [("a", "rows.jsonl:1"),
                                                     ("e", "rows.jsonl:5")]
    assert r.rows_read == 3


def test_mixing_formats_in_one_file(tmp_path):
    f = write_lines(tmp_path / "rows.jsonl", [plain("a"), plain("b"), chat("c"), plain("d")])
    r = load_examples(f)
    assert only_problem(r) == Problem(
        str(f), 3, "", "format 'messages' differs from 'plain' used since line 1; "
        "one file must use one format")
    assert [e.id for e in r.examples] == ["a", "b", "d"]


# ---- OpenAI messages -------------------------------------------------------------------

U = {"role": "user", "content": "hello"}
A = {"role": "assistant", "content": "hi"}
S = {"role": "system", "content": "be brief"}


@pytest.mark.parametrize("messages,field,message", [
    ([U, {"content": "no role"}], "messages[1]", "has no 'role'"),
    ([{"role": "robot", "content": "x"}, U, A], "messages[0].role",
     "unknown role 'robot'; use one of assistant, system, tool, user"),
    ([U, {"role": "assistant", "content": "   "}], "messages[1].content", "is empty"),
    ([{"role": "user", "content": 42}, A], "messages[0].content", "must be a string, got int"),
    ([U, {"role": "assistant"}], "messages[1]", "has no 'content'"),
    ([S, U], "messages", "has no assistant turn (nothing to learn or score)"),
    ([U, A, U], "messages", "must end with the assistant turn that is the expected output"),
    ([S, A], "messages", "has no user turn before the assistant's answer"),
    ("hello", "messages", "must be a list of messages, got str"),
    ([], "messages", "is an empty list"),
    ([U, "hi"], "messages[1]", "must be an object, got str"),
])
def test_bad_messages(tmp_path, messages, field, message):
    f = write_lines(tmp_path / "chat.jsonl",
                    [chat("a"), {"id": "b", "messages": messages}, chat("c")])
    r = load_examples(f)
    assert only_problem(r) == Problem(str(f), 2, field, message)
    assert [e.id for e in r.examples] == ["a", "c"]
    assert r.rows_read == 3


def test_openai_messages_normalize(tmp_path):
    row = {"id": "m", "messages": [S, {**U, "weight": 0}, A, {"role": "user", "content": "and?"},
                                   {"role": "assistant", "content": "done", "weight": 1}]}
    f = write_lines(tmp_path / "chat.jsonl", [row])
    r = load_examples(f)
    assert r.problems == []
    (ex,) = r.examples
    assert ex.id == "m"
    assert ex.input == [S, U, A, {"role": "user", "content": "and?"}]  # "weight" dropped
    assert ex.output == "done"
    assert Path(ex.source).name == "chat.jsonl:1"
    assert ex.input_text() == "system: be brief\nuser: hello\nassistant: hi\nuser: and?"


def test_assistant_tool_call_output_is_serialized(tmp_path):
    calls = [{"id": "c1", "type": "function",
              "function": {"name": "get_weather", "arguments": "{\"city\": \"Lund\"}"}}]
    row = {"id": "t", "messages": [U, {"role": "assistant", "tool_calls": calls}]}
    r = load_examples(write_lines(tmp_path / "chat.jsonl", [row]))
    assert r.problems == []
    assert r.examples[0].output == json.dumps(calls)
    assert r.examples[0].input == [U]


# ---- plain input/output ----------------------------------------------------------------

@pytest.mark.parametrize("bad,field,message", [
    ({"input": "   ", "output": "x"}, "input", "is empty"),
    ({"input": "x", "output": ""}, "output", "is empty"),
    ({"input": "x", "output": None}, "output", "is null"),
    ({"input": 5, "output": "x"}, "input", "must be a string, got int"),
    ({"input": [U, A], "output": "x"}, "input",
     "must not end with an assistant turn (that is the output)"),
    ({"input": [{"role": "user", "content": ""}], "output": "x"}, "input[0].content",
     "is empty"),
    ({"input": "x", "output": "y", "id": [1]}, "id", "must be a string or integer, got list"),
    ({"input": "x", "output": "y", "meta": "note"}, "meta", "must be an object, got str"),
])
def test_bad_plain_rows(tmp_path, bad, field, message):
    f = write_lines(tmp_path / "rows.jsonl", [plain("a"), {"id": "b", **bad}, plain("c")])
    r = load_examples(f)
    assert only_problem(r) == Problem(str(f), 2, field, message)
    assert [e.id for e in r.examples] == ["a", "c"]


def test_structured_outputs_are_serialized_as_json(tmp_path):
    f = write_lines(tmp_path / "rows.jsonl", [
        {"id": "o", "input": "x", "output": {"city": "Malmö", "n": [1, 2]}},
        {"id": "n", "input": "y", "output": 3},
        {"id": "s", "input": [U], "output": "plain text"},
    ])
    r = load_examples(f)
    assert r.problems == []
    out = {e.id: e.output for e in r.examples}
    assert out == {"o": '{"city": "Malmö", "n": [1, 2]}', "n": "3", "s": "plain text"}
    assert json.loads(out["o"]) == {"city": "Malmö", "n": [1, 2]}
    assert r.examples[2].input == [U]


def test_ids_meta_and_content_ids(tmp_path):
    f = write_lines(tmp_path / "rows.jsonl", [
        {"id": 7, "input": "x", "output": "y", "meta": {"src": "faq"}},
        {"input": "no id here", "output": "y"},
        {"id": "", "input": "empty id", "output": "y"},
    ])
    r = load_examples(f)
    assert r.problems == []
    assert [e.id for e in r.examples] == ["7", content_id("no id here"), content_id("empty id")]
    assert len(r.examples[1].id) == 12
    assert r.examples[0].meta == {"src": "faq"}
    assert r.examples[1].meta == {}


def test_custom_id_field(tmp_path):
    f = write_lines(tmp_path / "rows.jsonl", [
        {"key": "k1", "input": "x", "output": "y"},
        {"key": "k1", "input": "z", "output": "y"},
    ])
    r = load_examples(f, id_field="key")
    assert only_problem(r) == Problem(str(f), 2, "key", "duplicate id 'k1' (first at line 1)")
    assert [e.id for e in r.examples] == ["k1"]


def test_duplicate_ids_within_a_file(tmp_path):
    f = write_lines(tmp_path / "rows.jsonl", [plain("a"), plain("b"), plain("a"), plain("c")])
    r = load_examples(f)
    assert only_problem(r) == Problem(str(f), 3, "id", "duplicate id 'a' (first at line 1)")
    assert [(e.id, e.input) for e in r.examples] == [("a", "question a"), ("b", "question b"),
                                                    ("c", "question c")]


def test_same_content_without_ids_is_a_duplicate(tmp_path):
    row = {"input": "same", "output": "x"}
    f = write_lines(tmp_path / "rows.jsonl", [row, row])
    r = load_examples(f)
    p = only_problem(r)
    assert (p.file, p.line, p.field) == (str(f), 2, "id")
    assert p.message == f"duplicate id {content_id('same')!r} (first at line 1)"
    assert len(r.examples) == 1


def test_rejected_row_does_not_claim_its_id(tmp_path):
    f = write_lines(tmp_path / "rows.jsonl", [
        {"id": "a", "input": "x", "output": "y", "meta": "bad"},
        {"id": "a", "input": "x", "output": "y"},
    ])
    r = load_examples(f)
    assert only_problem(r) == Problem(str(f), 1, "meta", "must be an object, got str")
    assert [(e.id, Path(e.source).name) for e in r.examples] == [("a", "rows.jsonl:2")]


def test_duplicate_ids_across_files(tmp_path):
    a = write_lines(tmp_path / "a.jsonl", [plain("x"), plain("y")])
    b = write_lines(tmp_path / "b.jsonl", [plain("z"), plain("y", "other"), plain("w")])
    r = load_all([a, b])
    assert r.problems == [Problem(str(b), 2, "id", f"duplicate id 'y' (also at {a}:2)")]
    assert [(e.id, Path(e.source).name) for e in r.examples] == [
        ("x", "a.jsonl:1"), ("y", "a.jsonl:2"), ("z", "b.jsonl:1"), ("w", "b.jsonl:3")]
    assert r.examples[1].input == "question y"
    assert r.rows_read == 5


def test_load_all_collects_problems_from_every_file(tmp_path):
    a = write_lines(tmp_path / "a.jsonl", [plain("x"), "{bad"])
    b = write_lines(tmp_path / "b.jsonl", ["[]", plain("y")])
    r = load_all([a, b])
    assert [(p.file, p.line) for p in r.problems] == [(str(a), 2), (str(b), 1)]
    assert [e.id for e in r.examples] == ["x", "y"]


# ---- other JSONL formats ---------------------------------------------------------------

def test_alpaca_format(tmp_path):
    f = write_lines(tmp_path / "alpaca.jsonl", [
        {"instruction": "Translate to English", "input": "hej", "output": "hello", "id": "1"},
        {"instruction": "Say hi", "input": "", "output": "hi", "id": "2"},
        {"instruction": "Say hi", "output": "hi", "id": "3"},
        {"instruction": "No output", "input": "x", "id": "4"},
        {"instruction": "  ", "output": "x", "id": "5"},
        {"instruction": "Count", "input": 3, "output": "x", "id": "6"},
    ])
    r = load_examples(f)
    assert [(e.id, e.input, e.output) for e in r.examples] == [
        ("1", "Translate to English\n\nhej", "hello"), ("2", "Say hi", "hi"),
        ("3", "Say hi", "hi")]
    assert r.problems == [Problem(str(f), 4, "output", "is missing"),
                          Problem(str(f), 5, "instruction", "is empty"),
                          Problem(str(f), 6, "input", "must be a string, got int")]


def test_trl_prompt_completion_format(tmp_path):
    f = write_lines(tmp_path / "trl.jsonl", [
        {"id": "s", "prompt": "The sky is", "completion": " blue."},
        {"id": "c", "prompt": [S, {"role": "user", "content": "Sky colour?"}],
         "completion": [{"role": "assistant", "content": "Blue."}]},
        {"id": "e", "prompt": "x", "completion": ""},
        {"id": "u", "prompt": "x", "completion": [{"role": "user", "content": "y"}]},
    ])
    r = load_examples(f)
    assert [(e.id, e.input, e.output) for e in r.examples] == [
        ("s", "The sky is", " blue."),
        ("c", [S, {"role": "user", "content": "Sky colour?"}], "Blue.")]
    assert r.problems == [
        Problem(str(f), 3, "completion", "is empty"),
        Problem(str(f), 4, "completion", "has no assistant turn (nothing to learn or score)")]


def test_sharegpt_format(tmp_path):
    f = write_lines(tmp_path / "sg.jsonl", [
        {"id": "g", "conversations": [{"from": "system", "value": "be kind"},
                                      {"from": "human", "value": "hi there"},
                                      {"from": "gpt", "value": "hello!"}]},
        {"id": "b", "conversations": [{"from": "alien", "value": "x"}]},
        {"id": "m", "conversations": [{"from": "human"}]},
        {"id": "n", "conversations": "hi"},
    ])
    r = load_examples(f)
    assert [(e.id, e.input, e.output) for e in r.examples] == [
        ("g", [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi there"}],
         "hello!")]
    assert r.problems == [
        Problem(str(f), 2, "conversations[0].from", "unknown speaker 'alien'"),
        Problem(str(f), 3, "conversations[0]", "needs 'from' and 'value'"),
        Problem(str(f), 4, "conversations", "must be a list")]


# ---- CSV --------------------------------------------------------------------------------

def test_csv_good_file(tmp_path):
    f = tmp_path / "rows.csv"
    f.write_bytes('\ufeffid,input,output,extra\n'
                  'r1,"Hello, world",greeting,\n'
                  'r2,"two\nlines",multi,z\n'
                  'r3,Malmö,city,\n'.encode())
    r = load_examples(f)
    assert r.problems == []
    assert [(e.id, e.input, e.output, Path(e.source).name) for e in r.examples] == [
        ("r1", "Hello, world", "greeting", "rows.csv:2"),
        ("r2", "two\nlines", "multi", "rows.csv:4"),
        ("r3", "Malmö", "city", "rows.csv:5")]


def test_csv_missing_output_column(tmp_path):
    f = tmp_path / "rows.csv"
    f.write_text("input,answer\nx,y\n", encoding="utf-8")
    with pytest.raises(LadderError) as info:
        load_examples(f)
    assert str(info.value) == (f"{f}:1: CSV header needs 'input' and 'output' columns, "
                               "got answer, input")


def test_csv_row_with_too_many_or_too_few_fields(tmp_path):
    f = tmp_path / "rows.csv"
    f.write_text("input,output\na,1\nb,2,surprise,more\nc,3\nd\ne,5\n", encoding="utf-8")
    r = load_examples(f)
    assert r.problems == [Problem(str(f), 3, "", "2 more field(s) than the header"),
                          Problem(str(f), 5, "", "1 fewer field(s) than the header")]
    assert [(e.input, e.output) for e in r.examples] == [("a", "1"), ("c", "3"), ("e", "5")]
    assert r.rows_read == 5


def test_csv_empty_output_cell(tmp_path):
    f = tmp_path / "rows.csv"
    f.write_text("input,output\na,1\nb,\n", encoding="utf-8")
    r = load_examples(f)
    assert r.problems == [Problem(str(f), 3, "output", "is empty")]
    assert len(r.examples) == 1


def test_csv_not_utf8(tmp_path):
    f = tmp_path / "rows.csv"
    f.write_bytes(b"input,output\na,1\ncaf\xe9,2\n")
    with pytest.raises(LadderError) as info:
        load_examples(f)
    assert str(info.value) == f"{f}:3: not UTF-8 (byte 0xe9)"


# ---- whole-file problems ----------------------------------------------------------------

@pytest.mark.parametrize("name,content", [("empty.jsonl", b""), ("blank.jsonl", b"\n  \n"),
                                          ("header.csv", b"input,output\n")])
def test_file_without_rows(tmp_path, name, content):
    f = tmp_path / name
    f.write_bytes(content)
    r = load_examples(f)
    assert r.examples == []
    assert r.rows_read == 0
    assert r.problems == [Problem(str(f), 0, "", "file has no rows")]


def test_unsupported_extension(tmp_path):
    f = tmp_path / "rows.txt"
    f.write_text("input\toutput\n", encoding="utf-8")
    with pytest.raises(LadderError) as info:
        load_examples(f)
    assert str(info.value) == (f"{f}: unsupported examples file type '.txt'; "
                               "use .jsonl or .csv")


def test_missing_examples_file(tmp_path):
    with pytest.raises(LadderError, match="examples file not found"):
        load_examples(tmp_path / "nope.jsonl")


def test_ndjson_and_upper_case_suffix_are_jsonl(tmp_path):
    f = write_lines(tmp_path / "rows.NDJSON", [plain("a")])
    assert [e.id for e in load_examples(f).examples] == ["a"]


# ---- reporting and token lengths --------------------------------------------------------

def test_problem_str_and_format_problems():
    p = Problem("rows.jsonl", 3, "output", "is empty")
    assert str(p) == "rows.jsonl:3: output: is empty"
    assert str(Problem("rows.jsonl", 4, "", "invalid JSON")) == "rows.jsonl:4: invalid JSON"
    many = [Problem("f", i, "", "bad") for i in range(1, 6)]
    text = format_problems(many, limit=2)
    assert text.splitlines() == ["  f:1: bad", "  f:2: bad", "  ... and 3 more"]


def whitespace_tokens(messages: list[dict]) -> int:
    return sum(len((m.get("content") or "").split()) for m in messages)


def test_check_lengths_flags_long_input(tmp_path):
    long_text = " ".join(["word"] * 12)
    f = write_lines(tmp_path / "rows.jsonl", [
        {"id": "short", "input": "one two three", "output": "x"},
        {"id": "long", "input": long_text, "output": "x"},
        {"id": "at-limit", "input": "one two three four five", "output": "x"},
    ])
    examples = load_examples(f).examples
    assert len(examples) == 3
    problems = check_lengths(examples, whitespace_tokens, limit=5)
    assert len(problems) == 1
    p = problems[0]
    assert (p.example_id, p.line, p.field) == ("long", 2, "input")
    assert Path(p.file).name == "rows.jsonl"
    assert p.message == "12 tokens, longer than the 5 the model can take"


def test_check_lengths_counts_chat_inputs_as_messages(tmp_path):
    f = write_lines(tmp_path / "chat.jsonl", [
        {"id": "c", "messages": [{"role": "system", "content": "a b c"},
                                 {"role": "user", "content": "d e f"},
                                 {"role": "assistant", "content": "ok"}]}])
    examples = load_examples(f).examples
    seen = []

    def counter(messages):
        seen.append(messages)
        return whitespace_tokens(messages)

    assert check_lengths(examples, counter, limit=6) == []
    assert [p.example_id for p in check_lengths(examples, counter, limit=5)] == ["c"]
    assert seen[0] == examples[0].input
