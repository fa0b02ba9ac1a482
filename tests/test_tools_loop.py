"""The tool-calling loop against real servers on loopback and the real embedded model.

* llama.cpp's OpenAI-compatible server (llama-cpp-python) returns native `tool_calls` for
  SmolLM2 with `--chat_format chatml-function-calling` (its default GGUF template ignores
  `tools`); the loop executes a real Python tool with the model's arguments.
* That chat format does not render `tool` messages, so the follow-up turn's wire format
  (assistant tool_calls, then tool results by id) is checked with a minimal stdlib server.
* `ladder eval --rung few-shot-tools` end to end on the embedded model (JSON protocol).
"""

from __future__ import annotations

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import LADDER
from servers import llama_server

from llm_ladder.models.base import GenParams
from llm_ladder.tools.executor import Executor
from llm_ladder.tools.loop import Request, run_loop

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
TOOL_MODULE = """
import json, pathlib

def get_weather(city):
    log = pathlib.Path(__file__).with_name("calls.log")
    with log.open("a") as f:
        f.write(json.dumps({"city": city}) + "\\n")
    return {"city": city, "temperature_c": 21, "sky": "sunny"}
"""


def _tool_folder(tmp_path: Path) -> Path:
    (tmp_path / "weather.py").write_text(TOOL_MODULE)
    return tmp_path


@pytest.mark.slow
def test_native_calls_from_llama_cpp_server_run_a_python_tool(tmp_path):
    from llm_ladder.models.openai import OpenAIModel

    folder = _tool_folder(tmp_path)
    executor = Executor({"get_weather": "weather:get_weather"}, folder)
    with llama_server(threads=2, extra=["--chat_format", "chatml-function-calling"]) as base:
        model = OpenAIModel("smollm2", base_url=base, concurrency=2)
        requests = [Request([{"role": "user", "content": "What is the weather in Paris?"}],
                            [WEATHER])]
        (res,) = run_loop(model, requests, GenParams(max_tokens=24), True, executor, 2)
    first = res.trace[0]
    assert first["calls"] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert first["results"][0]["result"] == json.dumps(
        {"city": "Paris", "temperature_c": 21, "sky": "sunny"})
    # the tool really ran, with the model's arguments
    assert (folder / "calls.log").read_text().splitlines() == ['{"city": "Paris"}']
    assert res.messages[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert res.messages[2]["role"] == "tool"
    assert res.messages[2]["tool_call_id"] == res.messages[1]["tool_calls"][0]["id"]
    assert len(res.trace) == 2 and res.generation.tokens_in > 0
    out = json.loads(res.output)
    assert out["calls"] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]


class _Scripted(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint: a tool call first, then an answer naming the result."""

    seen: list[dict] = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(body)
        tool_msgs = [m for m in body["messages"] if m["role"] == "tool"]
        if not tool_msgs:
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_7", "type": "function", "function": {
                    "name": "get_weather", "arguments": '{"city": "Oslo"}'}}]}
            finish = "tool_calls"
        else:
            message = {"role": "assistant", "content": f"Got: {tool_msgs[-1]['content']}"}
            finish = "stop"
        reply = json.dumps({"id": "x", "object": "chat.completion", "created": 0,
                            "model": body["model"], "choices": [
                                {"index": 0, "message": message, "finish_reason": finish}],
                            "usage": {"prompt_tokens": 10, "completion_tokens": 5,
                                      "total_tokens": 15}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *a):
        pass


def test_native_follow_up_turn_sends_the_tool_result_by_id(tmp_path):
    from llm_ladder.models.openai import OpenAIModel

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        model = OpenAIModel("m", base_url=f"http://127.0.0.1:{server.server_port}/v1",
                            max_retries=0)
        executor = Executor({"get_weather": "weather:get_weather"}, _tool_folder(tmp_path))
        (res,) = run_loop(model, [Request([{"role": "user", "content": "Weather in Oslo?"}],
                                          [WEATHER])], GenParams(max_tokens=16), True,
                          executor, 4)
    finally:
        server.shutdown()
        server.server_close()
    first, second = _Scripted.seen[-2:]
    assert first["tools"] == [WEATHER] and first["tool_choice"] == "auto"
    assert second["messages"][1]["tool_calls"][0]["id"] == "call_7"
    assert second["messages"][2] == {"role": "tool", "tool_call_id": "call_7",
                                     "content": '{"city": "Oslo", "temperature_c": 21, '
                                                '"sky": "sunny"}'}
    assert json.loads(res.output) == {
        "calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
        "answer": 'Got: {"city": "Oslo", "temperature_c": 21, "sky": "sunny"}'}
    assert res.generation.tokens_in == 20 and len(res.trace) == 2


def _rows() -> list[dict]:
    cities = ["Oslo", "Paris", "Rome", "Berlin", "Madrid", "Vienna", "Lisbon", "Prague",
              "Dublin", "Athens", "Warsaw", "Zurich"]
    rows = [{"id": f"w{i}", "input": f"What is the weather like in {c} today?",
             "output": json.dumps([{"name": "get_weather", "arguments": {"city": c}}])}
            for i, c in enumerate(cities)]
    rows += [{"id": f"n{i}", "input": q, "output": "[]"} for i, q in enumerate([
        "Write a haiku about autumn leaves.", "What is 12 times 12?",
        "Translate 'good morning' into French.", "Tell me a joke about cats."])]
    return rows


@pytest.mark.slow
def test_ladder_eval_few_shot_tools_end_to_end(tmp_path):
    """The embedded model through the JSON protocol; the tool runs when it is called."""
    folder = _tool_folder(tmp_path)
    (folder / "tools.json").write_text(json.dumps([WEATHER]))
    (folder / "data").mkdir()
    (folder / "data" / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in _rows()))
    (folder / "task.toml").write_text("""
name = "weather-tools"
description = "Answer with the tools."
[data]
examples = ["data/rows.jsonl"]
[split]
train = 0.75
dev = 0.0
test = 0.25
seed = 3
max_test = 4
[metric]
name = "tool_call"
[generation]
max_tokens = 24
[prompt]
few_shot_k = 3
[tools]
file = "tools.json"
implementations = { get_weather = "weather:get_weather" }
max_steps = 2
[models.default]
backend = "local"
name = "smollm2-135m"
batch_size = 4
""")
    proc = subprocess.run([*LADDER, "eval", str(folder), "--rung", "few-shot-tools", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (summary,) = json.loads(proc.stdout)["rungs"]
    n = summary["n"]
    assert 1 <= n <= 4 and summary["unscored"] == 0
    subs = summary["sub_scores"]
    assert set(subs) <= {"call", "name", "args", "irrelevance"}
    assert subs.get("call", {"n": 0})["n"] + subs.get("irrelevance", {"n": 0})["n"] == n
    from llm_ladder.store import Store

    preds = Store(folder / ".ladder" / "runs.db").predictions(summary["run_id"])
    for p in preds:
        trace = p["details"]["trace"]
        assert trace and trace[0]["step"] == 0 and p["messages"][0]["role"] == "system"
        assert json.loads(p["output"])["calls"] == [c for t in trace for c in t["calls"]]
        if trace[0]["calls"] and trace[0]["calls"][0]["name"] == "get_weather":
            # executed, its result fed back, and a second turn taken
            assert trace[0]["results"][0]["result"].startswith('{"city"')
            assert p["messages"][-1]["content"].startswith("Result of get_weather: {")
            assert len(trace) == 2
    called = [json.loads(line)["city"] for line in
              (folder / "calls.log").read_text().splitlines()] \
        if (folder / "calls.log").exists() else []
    made = [c["arguments"].get("city") for p in preds for t in p["details"]["trace"]
            for c in t["calls"] if c["name"] == "get_weather"]
    assert called == made or sorted(called) == sorted(made)
    assert made, "the model made no get_weather call at all (few-shot turns show it how)"
