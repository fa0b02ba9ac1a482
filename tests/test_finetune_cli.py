"""`ladder tune`, `adapters`, `export` end to end with the real SmolLM2-135M: a killed
training resumes to the same weights, an adapter is never trained twice, the test split never
reaches training, and an exported adapter generates what the evaluated one did."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import write_task
from helpers import LADDER, ladder

pytestmark = pytest.mark.slow

FINETUNE = """
[finetune]
epochs = 1
batch_size = 4
save_every = 2
eval_every = 2
learning_rate = 0.002
r = 4
alpha = 8
target_modules = ["q_proj", "v_proj"]
min_examples = 10
"""


def tiny(folder: Path) -> Path:
    return write_task(folder, n_rows=36, extra=FINETUNE, max_test=2)


def weights(adapter: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(adapter / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted `ladder tune` run (shared by the tests below)."""
    task = tiny(tmp_path_factory.mktemp("clean"))
    doc = json.loads(ladder("tune", str(task), "--json").stdout)
    return task, doc


def test_tune_trains_tests_and_records(trained):
    task, doc = trained
    adapter = task / ".ladder" / "adapters" / doc["adapter"]
    files = {p.name for p in adapter.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "manifest.json",
            "training.json", "tokenizer_config.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    m = json.loads((adapter / "manifest.json").read_text())
    assert m["training"]["steps"] == doc["training"]["steps"] > 0
    assert m["metrics"]["test"]["run_id"] == doc["run_id"]
    assert doc["summary"]["one_time"]["seconds"] > 0
    # the test split never reaches training or early stopping
    runs = json.loads(ladder("show", doc["run_id"], "--task", str(task), "--json",
                             "--limit", "0").stdout)
    test_ids = {p["example_id"] for p in runs["predictions"]}
    assert test_ids and not test_ids & set(m["data"]["train_ids"] + m["data"]["dev_ids"])
    conf = json.loads((adapter / "adapter_config.json").read_text())
    assert not conf.get("modules_to_save")  # vLLM rejects adapters that carry full modules


def test_same_data_base_and_config_is_never_trained_twice(trained):
    task, doc = trained
    again = ladder("tune", str(task), "--json")
    assert "already trained" in again.stderr
    assert json.loads(again.stdout)["adapter"] == doc["adapter"]
    listed = json.loads(ladder("adapters", str(task), "--json").stdout)
    assert [a["id"] for a in listed] == [doc["adapter"]]


def test_killed_training_resumes_to_the_same_weights(trained, tmp_path):
    clean_task, doc = trained
    task = tiny(tmp_path / "killed")
    work = task / ".ladder" / "adapters" / f".work-{doc['adapter']}"
    proc = subprocess.Popen([*LADDER, "tune", str(task)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and not (work / "ckpt-000004" / "state.json").is_file():
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.2)
    proc.kill()  # SIGKILL: no cleanup runs
    proc.wait()
    adapters = task / ".ladder" / "adapters"
    # nothing half-written is taken as a finished adapter
    assert json.loads(ladder("adapters", str(task), "--json").stdout) == []
    assert not (adapters / doc["adapter"]).exists()
    r = ladder("tune", str(task), "--resume", "--json")
    assert "resuming from step" in r.stderr
    resumed = json.loads(r.stdout)
    assert resumed["adapter"] == doc["adapter"]
    a = weights(clean_task / ".ladder" / "adapters" / doc["adapter"])
    b = weights(adapters / doc["adapter"])
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max().item() < 1e-5, k
    assert not work.exists()  # checkpoints are cleaned up once the adapter is in place


def test_export_is_a_peft_folder_that_generates_the_same(trained, tmp_path):
    from llm_ladder.models.base import GenParams
    from llm_ladder.models.local import TransformersModel

    task, doc = trained
    dest = tmp_path / "exported"
    r = ladder("export", doc["adapter"][:6], "--task", str(task), "--out", str(dest))
    assert "--enable-lora --lora-modules" in r.stdout
    assert (dest / "adapter_model.safetensors").is_file()
    assert "chat_template" in (dest / "tokenizer_config.json").read_text() or \
        (dest / "chat_template.jinja").is_file()
    shown = json.loads(ladder("show", doc["run_id"], "--task", str(task), "--json").stdout)
    model = TransformersModel(adapter=str(dest), batch_size=4)
    gens = model.generate([p["messages"] for p in shown["predictions"]],
                          GenParams(max_tokens=12))
    assert [g.text for g in gens] == [p["raw_output"] for p in shown["predictions"]]
    again = ladder("export", doc["adapter"], "--task", str(task), "--out", str(dest),
                   check=False)
    assert again.returncode == 2 and "not empty" in again.stderr
    shutil.rmtree(dest)


def test_serve_the_fine_tuned_run_with_the_openai_client(trained):
    """The chosen stack (base + adapter, the rung's prompt) behind the OpenAI-compatible API
    answers exactly what the evaluated run answered."""
    import httpx
    import openai
    from conftest import free_port

    task, doc = trained
    shown = json.loads(ladder("show", doc["run_id"], "--task", str(task), "--json").stdout)
    pred = shown["predictions"][0]
    port = free_port()
    proc = subprocess.Popen([*LADDER, "serve", doc["run_id"], "--task", str(task), "--port",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while True:
            assert proc.poll() is None, "ladder serve exited"
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.time() < deadline
                time.sleep(0.3)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        name = client.models.list().data[0].id
        reply = client.chat.completions.create(model=name, messages=[
            {"role": "user", "content": pred["input"]}], max_tokens=12)
        assert reply.choices[0].message.content == pred["output"]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
