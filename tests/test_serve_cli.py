"""`ladder serve` as a process (SIGTERM drains, kill -9 after an answer loses nothing, no
auth beyond loopback refused), then `ladder logs export`, `ladder eval --on-logs` on the
logged traffic, and `ladder deploy` bundles for vLLM and for `ladder serve`."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import threading
import time
import tomllib
from pathlib import Path

import httpx
import pytest
from conftest import write_task
from helpers import LADDER, free_port, ladder

from llm_ladder.data import load_examples
from llm_ladder.store import Store
from llm_ladder.task import ModelConfig, load_task


def start(task_dir: Path, target: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(task_dir / f"serve-{port}.log", "w")  # noqa: SIM115 (a pipe could fill up)
    proc = subprocess.Popen([*LADDER, "serve", target, "--task", str(task_dir), "--port",
                             str(port)], stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"ladder serve exited {proc.returncode}: "
                                 + (task_dir / f"serve-{port}.log").read_text())
        try:
            httpx.get(f"{base}/health", timeout=2)
            return proc, base
        except httpx.TransportError:
            if time.time() > deadline:
                proc.kill()
                raise
            time.sleep(0.2)


def vllm_argv(script: str) -> list[str]:
    """The vLLM command of a bundle's serve.sh, as argv (from its interpreter on)."""
    return shlex.split(script[script.index('"${PYTHON'):].replace("\\\n", " "))


def ask(base: str, text: str, max_tokens: int = 4) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", timeout=300, json={
        "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens})


@pytest.fixture(scope="module")
def served_task(tmp_path_factory):
    """A task with a stored run, and traffic served for it by real `ladder serve` processes."""
    root = write_task(tmp_path_factory.mktemp("served"), extra='[serve]\nredact = ["email"]\n')
    task = load_task(root)
    store = Store(task.state_dir / "runs.db")
    run_id = store.create_run(task.name, "few-shot-random", "default", "test",
                              {"rung": "few-shot-random", "settings": {}}, {})
    store.close()

    # kill -9 right after an answer: its log row was committed before the answer was sent
    proc, base = start(root, run_id)
    r = ask(base, "Do I need a permit for a shed? mail me at bo@example.org")
    assert r.status_code == 200
    proc.kill()
    proc.wait(30)
    logs = Store(task.state_dir / "runs.db").request_logs()
    assert [(x["status"], x["run_id"], x["rung"]) for x in logs] == [
        ("ok", run_id, "few-shot-random")]
    assert logs[0]["response"] == r.json()["choices"][0]["message"]["content"]
    assert "bo@example.org" not in json.dumps(logs)

    # SIGTERM while a request is generating: it completes and its row is stored
    proc, base = start(root, run_id)
    result: list[httpx.Response] = []
    t = threading.Thread(target=lambda: result.append(ask(base, "How big can an "
                                                            "attefallshus be?", 24)))
    t.start()
    deadline = time.time() + 60
    while httpx.get(f"{base}/health").json()["admitted"] < 1 and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    t.join(300)
    # uvicorn drains, runs the app's shutdown, then re-raises SIGTERM to exit as signalled
    assert proc.wait(120) in (0, -signal.SIGTERM)
    port = base.rsplit(":", 1)[1]
    assert "Application shutdown complete" in (root / f"serve-{port}.log").read_text()
    assert result and result[0].status_code == 200, result
    logs = Store(task.state_dir / "runs.db").request_logs()
    assert len(logs) == 2 and logs[1]["response"] == result[0].json()["choices"][0][
        "message"]["content"]
    return root, run_id


def test_serve_survives_kill_and_drains_on_sigterm(served_task):
    root, run_id = served_task  # the checks run while the fixture serves; here the outcome
    logs = Store(root / ".ladder" / "runs.db").request_logs()
    assert [x["status"] for x in logs] == ["ok", "ok"]
    assert all(x["messages"][0]["role"] == "system" and x["tokens_in"] > 0 for x in logs)


def test_refuses_public_bind_without_token(tmp_path):
    root = write_task(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "LADDER_SERVE_TOKEN"}
    t0 = time.perf_counter()
    proc = ladder("serve", "zero-shot", "--task", root, "--host", "0.0.0.0", check=False,
                  env=env)
    assert proc.returncode == 2 and "LADDER_SERVE_TOKEN" in proc.stderr
    assert "Traceback" not in proc.stderr and time.perf_counter() - t0 < 60
    proc = ladder("serve", "no-such-run", "--task", root, check=False, env=env)
    assert proc.returncode == 2 and "neither a rung" in proc.stderr


def test_logs_export_is_a_valid_examples_file(served_task, tmp_path):
    root, _ = served_task
    out = tmp_path / "served.jsonl"
    doc = json.loads(ladder("logs", "export", "--task", root, "--out", out, "--json").stdout)
    assert doc["rows"] == 2
    loaded = load_examples(out)
    assert not loaded.problems and len(loaded.examples) == 2
    ex = loaded.examples[0]
    assert isinstance(ex.input, list) and ex.input[-1]["role"] == "user"
    assert ex.meta["provisional"] is True and ex.meta["served_rung"] == "few-shot-random"
    assert "[REDACTED:email]" in ex.input[-1]["content"]


def test_eval_on_logs_scores_agreement_with_served(served_task):
    root, _ = served_task
    doc = json.loads(ladder("eval", root, "--rung", "few-shot-random", "--on-logs",
                            "--json").stdout)
    (s,) = doc["rungs"]
    assert doc["on_logs"] and doc["logged_requests"] == 2 and "not human" in doc["note"]
    assert s["n"] == 2 and s["reference"] == "served answers"
    assert s["quality"]["value"] is not None and s["tokens_in_mean"] > 0
    assert s["latency_p50_s"] > 0 and s["cost_per_1k_usd"] is not None
    run = Store(root / ".ladder" / "runs.db").get_run(s["run_id"])
    assert run["split"] == "logs" and run["status"] == "done"


def test_deploy_bundles_parse(tmp_path, monkeypatch):
    root = write_task(tmp_path / "t", extra='[serve]\ntoken_env = "MY_SERVE_TOKEN"\n',
                      model='[models.default]\nbackend = "local"\nname = "smollm2-135m"\n'
                            '[models.api]\nbackend = "openai"\nname = "m"\n'
                            'base_url = "http://127.0.0.1:9/v1"\napi_key_env = "API_KEY_X"\n')
    task = load_task(root)
    store = Store(task.state_dir / "runs.db")
    run_id = store.create_run(task.name, "few-shot-random", "default", "test",
                              {"rung": "few-shot-random", "settings": {},
                               "model": {"name": "smollm2-135m"}}, {})
    store.finish_run(run_id, {"quality": {"value": 0.5, "low": 0.3, "high": 0.7}})
    secret = "value-that-must-not-appear-123"
    env = {**os.environ, "MY_SERVE_TOKEN": secret, "API_KEY_X": secret}
    vllm = tmp_path / "bundle-vllm"
    doc = json.loads(ladder("deploy", run_id, "--task", root, "--target", "vllm", "--out",
                            vllm, "--json", env=env).stdout)
    for name in doc["files"]:
        assert (vllm / name).exists(), name
    prompt = json.loads((vllm / "prompt.json").read_text())
    assert prompt["messages"][0]["role"] == "system"
    assert prompt["messages"][-1] == {"role": "user", "content": "{{input}}"}
    assert len(prompt["messages"]) == 2 + 2 * 3  # system, 3 shots (user + assistant), input
    gen = json.loads((vllm / "generation.json").read_text())
    assert gen["temperature"] == 0.0 and gen["max_tokens"] == 12
    script = (vllm / "serve.sh").read_text()
    assert subprocess.run(["sh", "-n", str(vllm / "serve.sh")]).returncode == 0
    argv = vllm_argv(script)
    assert argv[:5] == ["${PYTHON:-python3}", "-m", "vllm.entrypoints.openai.api_server",
                        "--model", "HuggingFaceTB/SmolLM2-135M-Instruct"]
    assert "--dtype" not in argv  # the run's model did not say its precision
    assert argv[argv.index("--generation-config") + 1] == "vllm"
    pinned = json.loads(argv[argv.index("--override-generation-config") + 1])
    assert pinned == {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 12,
                      "repetition_penalty": 1.0}
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    snippet = tomllib.loads((vllm / "models.vllm.toml").read_text())
    ModelConfig(**snippet["models"]["vllm"])
    env_names = (vllm / "env.example").read_text()
    assert "MY_SERVE_TOKEN=" in env_names and "API_KEY_X=" in env_names
    for f in vllm.rglob("*"):
        assert not f.is_file() or secret not in f.read_text(errors="ignore")
    assert json.loads((vllm / "manifest.json").read_text())["run_id"] == run_id

    bundle = tmp_path / "bundle-ladder"
    ladder("deploy", run_id[:12], "--task", root, "--target", "ladder", "--out", bundle,
           env=env)
    copy = load_task(bundle / "task")
    assert copy.serve.token_env == "MY_SERVE_TOKEN"
    assert (bundle / "task" / "data" / "faq.jsonl").read_text() == \
        (root / "data" / "faq.jsonl").read_text()
    assert "ladder serve few-shot-random --task ./task" in (bundle / "serve.sh").read_text()
    assert subprocess.run(["sh", "-n", str(bundle / "serve.sh")]).returncode == 0
    ladder("check", bundle / "task")
    again = ladder("deploy", run_id, "--task", root, "--out", bundle, check=False, env=env)
    assert again.returncode == 2 and "not empty" in again.stderr


def test_deploy_rag_run_names_vector_store_env_only(tmp_path):
    from test_rag_cli import make_task

    root = make_task(tmp_path / "rag")
    toml = (root / "task.toml").read_text().replace(
        "chunk_overlap = 8\n", 'chunk_overlap = 8\nstore = "pgvector"\npg_url_env = "PG_URL"\n')
    (root / "task.toml").write_text(toml)
    task = load_task(root)
    store = Store(task.state_dir / "runs.db")
    run_id = store.create_run(task.name, "rag", "default", "test",
                              {"rung": "rag", "settings": {}, "index": {"count": 5}}, {})
    secret = "postgresql://u:pw-must-not-leak@db/x"
    out = tmp_path / "b"
    ladder("deploy", run_id, "--task", root, "--out", out, "--base", "org/model",
           env={**os.environ, "PG_URL": secret})
    vec = json.loads((out / "vector_store.json").read_text())
    assert vec["store"] == "pgvector" and vec["pg_url_env"] == "PG_URL"
    assert "PG_URL=" in (out / "env.example").read_text()
    prompt = json.loads((out / "prompt.json").read_text())
    assert "[1] source: {{source}}" in prompt["messages"][-1]["content"]
    assert "--model org/model" in (out / "serve.sh").read_text()
    for f in out.rglob("*"):
        assert not f.is_file() or "pw-must-not-leak" not in f.read_text(errors="ignore")


def test_deploy_fine_tuned_run_exports_its_adapter(tmp_path):
    """A run whose settings name an adapter: the bundle carries the PEFT folder (exported by
    the registry) and the vLLM command loads it as a LoRA module of a rank vLLM accepts."""
    root = write_task(tmp_path / "t")
    task = load_task(root)
    aid = "abc123def456"
    folder = task.state_dir / "adapters" / aid
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"id": aid, "rung": "lora",
                                                      "created": time.time()}))
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 12, "lora_alpha": 24, "target_modules": ["q_proj"],
        "base_model_name_or_path": str(tmp_path / "local-weights")}))
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    (folder / "chat_template.jinja").write_text("{{ messages }}")
    store = Store(task.state_dir / "runs.db")
    run_id = store.create_run(task.name, "lora", "default", "test", {
        "rung": "lora", "model": {"name": "smollm2-135m"},
        "settings": {"adapter": aid, "adapter_path": str(folder), "base_key": "default"}}, {})
    out = tmp_path / "b"
    doc = json.loads(ladder("deploy", run_id, "--task", root, "--out", out, "--json").stdout)
    assert doc["adapter"] == aid and doc["max_lora_rank"] == 16
    for name in ("adapter_config.json", "adapter_model.safetensors", "chat_template.jinja"):
        assert (out / "adapter" / name).read_bytes() == (folder / name).read_bytes()
    argv = vllm_argv((out / "serve.sh").read_text())
    assert argv[4] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # the local path is not there
    assert "--enable-lora" in argv and argv[argv.index("--max-lora-rank") + 1] == "16"
    assert argv[argv.index("--lora-modules") + 1] == "tiny-faq-lora=./adapter"
    assert argv[argv.index("--chat-template") + 1] == "./adapter/chat_template.jinja"
    prompt = json.loads((out / "prompt.json").read_text())
    assert prompt["rung"] == "lora" and prompt["messages"] == [
        {"role": "user", "content": "{{input}}"}]  # lora wraps zero-shot
    ladder("deploy", run_id, "--task", root, "--out", tmp_path / "l", "--target", "ladder")
    assert (tmp_path / "l" / "task" / ".ladder" / "adapters" / aid / "adapter_config.json"
            ).is_file()


def test_deploy_bundles_the_evaluated_local_weights_and_precision(tmp_path):
    """A run on local weights (the de-quantized embedded model, float32): the bundle carries
    those very weights as ./base (hard-linked, not a hub id whose weights differ), pins the
    precision, and says the anti-loop n-gram block is not available on vLLM."""
    root = write_task(tmp_path / "t")
    task = load_task(root)
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "config.json").write_text('{"model_type": "llama"}')
    (weights / "model.safetensors").write_bytes(b"\0" * 64)
    store = Store(task.state_dir / "runs.db")
    run_id = store.create_run(task.name, "zero-shot", "default", "test", {
        "rung": "zero-shot", "settings": {},
        "model": {"name": "smollm2-135m", "weights": str(weights), "dtype": "float32",
                  "anti_loop_defaults": {"repetition_penalty": 1.0,
                                         "no_repeat_ngram_size": 3}}}, {})
    out = tmp_path / "b"
    doc = json.loads(ladder("deploy", run_id, "--task", root, "--out", out, "--json").stdout)
    assert doc["base_model"] == "./base" and "base/" in doc["files"]
    assert (out / "base" / "model.safetensors").read_bytes() == b"\0" * 64
    assert os.stat(out / "base" / "model.safetensors").st_ino == \
        os.stat(weights / "model.safetensors").st_ino  # linked, not copied
    argv = vllm_argv((out / "serve.sh").read_text())
    assert argv[argv.index("--model") + 1] == "./base"
    assert argv[argv.index("--dtype") + 1] == "float32"
    assert any("3-grams" in n for n in doc["notes"])
    assert 'VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-4}"' in \
        (out / "serve.sh").read_text()  # else vLLM on CPU reserves 92% of the memory
    assert subprocess.run(["sh", "-n", str(out / "serve.sh")]).returncode == 0
