"""The OpenAI-compatible backend against a real server no one here wrote (llama.cpp's),
plus fault injection (429/500, unreachable) on a loopback stdlib HTTP server."""

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import write_task
from helpers import LADDER, free_port
from servers import llama_server

from llm_ladder.models.base import GenParams
from llm_ladder.models.openai import OpenAIModel

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
SUM = [{"role": "user", "content": "What is 2 + 2?"}]
SECRET = "sk-test-0123456789abcdef"


@pytest.fixture(scope="module")
def server():
    with llama_server(api_key=SECRET) as base:
        yield base


def test_generates_against_llama_cpp_server(server, monkeypatch):
    monkeypatch.setenv("LADDER_TEST_KEY", SECRET)
    model = OpenAIModel("smollm2", base_url=server, api_key_env="LADDER_TEST_KEY",
                        concurrency=2)
    gens = model.generate([SUM, SUM, FRANCE], GenParams(max_tokens=20))
    for g in gens:
        assert g.error is None
        assert g.tokens_in > 10 and 0 < g.tokens_out <= 20 and g.latency_s > 0
    assert gens[0].text == gens[1].text == "The answer to this classic math problem is 4."
    assert SECRET not in json.dumps(model.describe())


def test_wrong_key_is_an_error_without_the_key(server, monkeypatch):
    monkeypatch.setenv("LADDER_TEST_KEY", "sk-wrong-key-value-42")
    model = OpenAIModel("smollm2", base_url=server, api_key_env="LADDER_TEST_KEY",
                        max_retries=0)
    (g,) = model.generate([FRANCE], GenParams(max_tokens=4))
    assert g.error and "401" in g.error
    assert "sk-wrong-key-value-42" not in g.error


def test_ladder_eval_over_http(server, tmp_path):
    backend = (f'[models.default]\nbackend = "openai"\nname = "smollm2"\n'
               f'base_url = "{server}"\napi_key_env = "LADDER_TEST_KEY"\nconcurrency = 2\n')
    task = write_task(tmp_path / "t", max_test=4, model=backend)
    env = {**__import__("os").environ, "LADDER_TEST_KEY": SECRET}
    proc = subprocess.run([*LADDER, "eval", str(task), "--rung", "system-prompt", "--json"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)["rungs"][0]
    assert run["n"] == 4 and run["errors"] == 0 and run["tokens_out_mean"] > 0
    assert run["cost_per_1k_usd"] is None  # no price set for a server: unknown, not zero
    db = (task / ".ladder" / "runs.db").read_bytes()
    assert SECRET.encode() not in db


class Flaky(BaseHTTPRequestHandler):
    """Answers 429, then 500, then a valid chat completion: the client must retry."""

    calls = 0

    def do_POST(self):  # noqa: N802
        type(self).calls += 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if type(self).calls <= 2:
            code = 429 if type(self).calls == 1 else 500
            body = json.dumps({"error": {"message": "try later"}}).encode()
            self.send_response(code)
            self.send_header("Retry-After", "0")
        else:
            body = json.dumps({
                "id": "x", "object": "chat.completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "ok"}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
            }).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_retries_429_and_5xx_then_succeeds():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        model = OpenAIModel("m", base_url=f"http://127.0.0.1:{httpd.server_port}/v1",
                            max_retries=3)
        (g,) = model.generate([FRANCE], GenParams(max_tokens=4))
        assert g.error is None and g.text == "ok" and Flaky.calls == 3
    finally:
        httpd.shutdown()


def test_unreachable_server_is_an_error_not_a_crash():
    model = OpenAIModel("m", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=1,
                        timeout_s=2)
    (g,) = model.generate([FRANCE], GenParams(max_tokens=4))
    assert g.error and "Connection" in g.error and g.text == ""
