"""Tool schemas, the JSON call protocol, the tool_call metric and tool execution (no model)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llm_ladder.errors import LadderError
from llm_ladder.task import parse_task
from llm_ladder.tools.calls import parse_calls
from llm_ladder.tools.executor import Executor
from llm_ladder.tools.metric import ToolCall, canonical_call, read_prediction
from llm_ladder.tools.schemas import load_tools

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"],
                                             "default": "C"},
        "days": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}},
        "required": ["city"]}}}
OTHER = {**WEATHER["function"], "name": "other"}


def write(tmp_path: Path, tools) -> Path:
    path = tmp_path / "tools.json"
    path.write_text(json.dumps(tools) if not isinstance(tools, str) else tools)
    return path


# ---- schemas ------------------------------------------------------------------------------

def test_a_valid_tools_file_loads(tmp_path):
    tools = load_tools(write(tmp_path, {"tools": [WEATHER]}))
    assert [t["function"]["name"] for t in tools] == ["get_weather"]


@pytest.mark.parametrize("bad, field, words", [
    ({"type": "tool", "function": OTHER}, "type", "must be \"function\""),
    ({"type": "function", "function": {**OTHER, "name": "get.weather"}},
     "function.name", "letters, digits"),
    ({"type": "function", "function": {**OTHER, "parameters": {
        "type": "object", "properties": {"city": {"type": "dict"}}}}},
     "function.parameters.properties.city.type", "is not valid"),
    ({"type": "function", "function": {**OTHER, "parameters": {
        "type": "object", "properties": {}, "required": ["city"]}}},
     "function.parameters.required", "city, not in properties"),
    ({"type": "function", "function": {**OTHER, "params": {}}},
     "function", "unknown key(s) params"),
])
def test_schema_errors_name_file_tool_and_field(tmp_path, bad, field, words):
    path = write(tmp_path, [WEATHER, bad])
    with pytest.raises(LadderError) as e:
        load_tools(path)
    msg = str(e.value)
    assert str(path) in msg and "tool 1" in msg and f": {field}: " in msg and words in msg


def test_duplicate_names_bad_json_and_missing_file(tmp_path):
    with pytest.raises(LadderError, match="'get_weather' is declared twice"):
        load_tools(write(tmp_path, [WEATHER, WEATHER]))
    with pytest.raises(LadderError, match=r"tools.json: line 1 column \d+: invalid JSON"):
        load_tools(write(tmp_path, "[{"))
    with pytest.raises(LadderError, match="tools file not found"):
        load_tools(tmp_path / "nope.json")


def test_tools_section_in_the_task_file(tmp_path):
    raw = {"name": "t", "data": {"examples": ["x.jsonl"]},
           "tools": {"file": "tools.json", "max_steps": 0}}
    with pytest.raises(LadderError, match="tools.max_steps"):
        parse_task(raw, tmp_path, tmp_path / "task.toml")
    raw["tools"] = {"file": "tools.json", "implementation": {}}
    with pytest.raises(LadderError, match="unknown key 'tools.implementation'"):
        parse_task(raw, tmp_path, tmp_path / "task.toml")


# ---- the JSON protocol --------------------------------------------------------------------

@pytest.mark.parametrize("text, calls", [
    ('{"name": "get_weather", "arguments": {"city": "Paris"}}',
     [{"name": "get_weather", "arguments": {"city": "Paris"}}]),
    ('Sure, here it is:\n```json\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n```'
     "\nHope that helps {not json}", [{"name": "get_weather", "arguments": {"city": "Oslo"}}]),
    ('I will call {"name": "f", "parameters": "{\\"x\\": 2}"} now.',
     [{"name": "f", "arguments": {"x": 2}}]),
    ('[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"y": [1, 2]}}]',
     [{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"y": [1, 2]}}]),
    ('{"function": {"name": "f", "arguments": {"k": true}}}', [{"name": "f",
                                                              "arguments": {"k": True}}]),
    ("The weather in Paris is sunny.", []),
    ('The result is {"temperature": 21}.', []),  # JSON, but not a call
    ('{"name": "f", "arguments": {"x": 1}', []),  # truncated
])
def test_parse_calls(text, calls):
    assert parse_calls(text) == calls


# ---- the metric ---------------------------------------------------------------------------

def out(*calls, answer=""):
    return json.dumps({"calls": list(calls), "answer": answer})


def call(name, **args):
    return {"name": name, "arguments": args}


M = ToolCall()


def test_type_aware_arguments():
    ref = json.dumps([{"name": "area", "arguments": {"base": 10, "unit": "Square Meters",
                                                     "exact": True}}])
    assert M.score(out(call("area", base=10.0, unit="square-meters", exact=True)), ref).value == 1
    s = M.score(out(call("area", base="10", unit="square meters", exact=True)), ref)
    assert s.value == 0 and s.details["args"][0] == {"base": False, "unit": True, "exact": True}
    assert s.details["sub"] == {"call": 0.0, "name": 1.0, "args": pytest.approx(2 / 3)}
    assert M.score(out(call("area", base=10, unit="square meters", exact=1)), ref).value == 0


def test_acceptable_values_and_optional_arguments():
    ref = json.dumps([{"name": "tri", "acceptable": {"base": [10], "height": [5, 5.5],
                                                     "unit": ["units", ""]}}])
    assert M.score(out(call("tri", base=10, height=5.5)), ref).value == 1  # unit omitted
    assert M.score(out(call("tri", base=10, height=5, unit="Units")), ref).value == 1
    s = M.score(out(call("tri", base=10)), ref)  # height is not optional
    assert s.value == 0 and s.details["args"][0]["height"] is False
    s = M.score(out(call("tri", base=10, height=5, colour="red")), ref)  # unexpected argument
    assert s.value == 0 and s.details["args"][0]["colour"] is False


def test_nested_bfcl_dict_values():
    ref = json.dumps([{"name": "f", "acceptable": {"opts": [{"a": [1, 2], "b": ["", "x"]}]}}])
    assert M.score(out(call("f", opts={"a": 2})), ref).value == 1
    assert M.score(out(call("f", opts={"a": 1, "b": "X"})), ref).value == 1
    assert M.score(out(call("f", opts={"a": 3})), ref).value == 0
    assert M.score(out(call("f", opts={"a": 1, "c": 1})), ref).value == 0
    assert canonical_call(json.loads(ref)[0]) == call("f", opts={"a": 1, "b": "x"})


def test_lists_are_ordered_unless_unordered():
    ordered = json.dumps([{"name": "f", "arguments": {"xs": ["a", "b"]}}])
    unordered = json.dumps([{"name": "f", "arguments": {"xs": ["a", "b"]},
                             "unordered": ["xs"]}])
    assert M.score(out(call("f", xs=["b", "a"])), ordered).value == 0
    assert M.score(out(call("f", xs=["b", "a"])), unordered).value == 1
    assert M.score(out(call("f", xs=["b", "b"])), unordered).value == 0
    # the tool schema can say so too (uniqueItems), and give defaults
    with_schema = ToolCall(tools=[WEATHER])
    ref = json.dumps([{"name": "get_weather", "arguments": {"city": "Paris",
                                                            "days": ["mon", "tue"]}}])
    pred = out(call("get_weather", city="paris", days=["tue", "mon"], unit="C"))
    assert with_schema.score(pred, ref).value == 1
    assert M.score(pred, ref).value == 0  # without the schema: unordered unknown, unit extra
    bad_default = out(call("get_weather", city="paris", days=["mon", "tue"], unit="F"))
    assert with_schema.score(bad_default, ref).value == 0


def test_several_calls_in_any_order():
    ref = json.dumps([call("w", city="Paris"), call("w", city="Oslo")])
    assert M.score(out(call("w", city="Oslo"), call("w", city="Paris")), ref).value == 1
    s = M.score(out(call("w", city="Oslo")), ref)
    assert s.value == 0 and s.details["sub"]["name"] == 0 and s.details["sub"]["args"] == 0.5
    s = M.score(out(call("w", city="Oslo"), call("w", city="Rome")), ref)
    assert s.value == 0 and s.details["sub"]["name"] == 1 and s.details["sub"]["args"] == 0.5


def test_irrelevance_and_final_answers():
    assert M.score(out(answer="I cannot do that."), "[]").details["sub"] == {"irrelevance": 1}
    assert M.score(out(call("w", city="x")), "[]").value == 0
    assert M.score(out(call("w"), answer="It is 21 C in Paris."), "21 C").value == 1
    assert M.score(out(answer="It is 12 C."), "21 C").value == 0
    assert M.score(out(call("w")), '[{"arguments": {}}]').value is None  # bad reference


def test_raw_text_from_prompting_rungs_is_scored_the_same_way():
    ref = '{"name": "get_weather", "arguments": {"city": "Paris"}}'  # one object: one call
    assert M.score('```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
                   ref).value == 1
    assert M.score("It is sunny in Paris.", ref).value == 0
    assert read_prediction("It is sunny.") == ([], "It is sunny.")


# ---- executing calls ----------------------------------------------------------------------

def test_python_tools_from_the_task_folder(tmp_path):
    (tmp_path / "mytools.py").write_text(
        "def add(a, b):\n    return {'sum': a + b}\n\ndef boom():\n    raise ValueError('no')\n")
    ex = Executor({"add": "mytools:add", "boom": "mytools:boom", "gone": "mytools:missing"},
                  tmp_path)
    assert ex.run(call("add", a=2, b=3)) == ('{"sum": 5}', None)
    assert ex.run(call("boom")) == ("error: ValueError: no", "ValueError: no")
    assert ex.run(call("add", a=1))[1].startswith("TypeError")
    assert ex.run({"name": "add", "arguments": "a=1"})[1] == "arguments are not an object"
    assert ex.run(call("nope"))[1] == "no implementation for 'nope'"
    with pytest.raises(LadderError, match=r"implementations.gone: cannot load 'mytools:missing'"):
        ex.run(call("gone"))


class _Tool(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        args = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status = 500 if args.get("fail") else 200
        body = b"broken" if status == 500 else json.dumps({"echo": args}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def test_http_tools(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Tool)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/tool?token=SECRET"
    try:
        ex = Executor({"echo": url}, tmp_path)
        assert json.loads(ex.run(call("echo", x=1))[0]) == {"echo": {"x": 1}}
        text, error = ex.run(call("echo", fail=True))
        assert error == "RuntimeError: HTTP 500: broken" and "SECRET" not in text
    finally:
        server.shutdown()
        server.server_close()
    text, error = ex.run(call("echo", x=1))
    assert "cannot reach the tool's endpoint" in error and "SECRET" not in error
