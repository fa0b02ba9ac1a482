"""The `full` rung with the real SmolLM2-135M: every weight trained by the LoRA loop, written
as a safetensors model folder (lm_head tied to embed_tokens again), resumed from a checkpoint
to the same weights as an uninterrupted run, and `ladder run --rungs lora,full` reporting
both artifacts' sizes in `one_time`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_task
from helpers import ladder

from llm_ladder.data import Example
from llm_ladder.errors import LadderError

pytestmark = pytest.mark.slow

QUESTIONS = ["Do I need a permit for a deck?", "Can I build a fence?", "Is a shed allowed?",
             "Who checks the roof?", "May I move a wall?", "Is a carport allowed?",
             "Can I add a window?", "Is a pool allowed?", "Do I need a permit for a sign?",
             "Can I paint the facade?"]


@pytest.fixture(scope="module")
def setup():
    from transformers import AutoTokenizer

    from llm_ladder.finetune.data import build_rows
    from llm_ladder.models.local import resolve_weights

    folder = resolve_weights("smollm2-135m", None)
    tok = AutoTokenizer.from_pretrained(folder)
    examples = [Example(f"e{i}", q, ["permit", "no-permit"][i % 2])
                for i, q in enumerate(QUESTIONS)]
    rows, _ = build_rows(examples, lambda q: [{"role": "user", "content": q}], tok, 64, 1)
    return folder, tok, rows


def cfg(**kw):
    from llm_ladder.task import FinetuneConfig

    return FinetuneConfig(epochs=1, batch_size=4, max_seq_len=64, save_every=1, eval_every=1,
                          patience=10, full_learning_rate=1e-4, **kw)


def test_full_trains_every_weight_saves_a_tied_model_and_resumes_to_the_same_weights(
        setup, tmp_path: Path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from llm_ladder.finetune.lora import train

    folder, tok, rows = setup
    work = tmp_path / "work"
    # 2 steps of 4 rows; a checkpoint after step 1 (dev = the last 2 rows: early stopping on)
    clean, tmp = train(folder, cfg(), rows[:8], rows[8:], tok.eos_token_id, work,
                       tmp_path / "clean", method="full")
    assert clean.steps == 2 and (work / "ckpt-000001" / "weights.safetensors").is_file()
    files = {p.name for p in tmp.iterdir()}
    assert "model.safetensors" in files and "config.json" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    assert "adapter_config.json" not in files
    # the checkpoint holds every weight (the tied lm_head once) and the AdamW state
    ckpt = load_file(work / "ckpt-000001" / "weights.safetensors")
    assert "lm_head.weight" not in ckpt and "model.embed_tokens.weight" in ckpt
    assert len(ckpt) == 1 + 9 * 30 + 1  # embeddings, 9 tensors per layer x 30, final norm

    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tuned = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32)
    assert tuned.lm_head.weight.data_ptr() == tuned.model.embed_tokens.weight.data_ptr()
    changed = [n for n, p in tuned.named_parameters()
               if not torch.equal(p, dict(base.named_parameters())[n])]
    assert len(changed) > 200  # every layer moved, not only LoRA-targeted ones

    # a run that resumes from the step-1 checkpoint ends with the same weights
    resumed, tmp2 = train(folder, cfg(), rows[:8], rows[8:], tok.eos_token_id, work,
                          tmp_path / "resumed", resume=True, method="full")
    assert resumed.resumed_from == 1 and resumed.steps == 2
    a, b = load_file(tmp / "model.safetensors"), load_file(tmp2 / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_full_refuses_a_non_local_base(tmp_path: Path):
    from llm_ladder.rungs.base import get_rung
    from llm_ladder.session import prepare
    from llm_ladder.task import load_task

    task = write_task(tmp_path / "t", n_rows=20, extra="[finetune]\nmin_examples = 5\n",
                      model='[models.default]\nbackend = "llamacpp"\nname = "smollm2-135m"\n')
    ctx = prepare(load_task(task)).context()
    with pytest.raises(LadderError, match="needs a local"):
        get_rung("full").build(ctx)


def test_ladder_run_full_reports_training_time_and_artifact_size_beside_lora(tmp_path: Path):
    task = write_task(tmp_path / "t", n_rows=16, max_test=1, extra="""
[finetune]
epochs = 0.5
batch_size = 8
max_seq_len = 64
r = 4
alpha = 8
target_modules = ["q_proj", "v_proj"]
min_examples = 5
""")
    toml = task / "task.toml"  # a dev split, for `ladder curve` below
    toml.write_text(toml.read_text().replace("train = 0.7\ndev = 0.0", "train = 0.5\ndev = 0.2"))
    first = ladder("run", task, "--rungs", "full", "--json")
    second = ladder("run", task, "--rungs", "lora,full", "--all", "--json")
    doc = json.loads(second.stdout)
    one = {s["rung"]: s["one_time"] for s in doc["rungs"]}
    assert one["full"]["artifact_bytes"] > 100e6 > 50e6 > one["lora"]["artifact_bytes"] > 0
    assert one["full"]["seconds"] > 0 and one["lora"]["seconds"] > 0
    assert "full fine-tune" in one["full"]["what"] and "MB" in one["full"]["what"]
    adapters = task / ".ladder" / "adapters"
    manifests = [json.loads(p.read_text()) for p in adapters.glob("*/manifest.json")]
    full = next(m for m in manifests if m["rung"] == "full")
    assert full["method"] == "full" and "r" not in full["config"]
    assert full["size_bytes"] == one["full"]["artifact_bytes"]
    # the second run reused the stored model instead of training it again
    assert "already trained" not in first.stderr
    assert f"training full model {full['id']}" in first.stderr  # not "full adapter"
    assert f"full model {full['id']} already trained" in second.stderr
    # `ladder tune --rung full` is the same rung: it reuses the model and tests it
    tuned = ladder("tune", task, "--rung", "full", "--json")
    assert json.loads(tuned.stdout)["adapter"] == full["id"]
    assert f"full model {full['id']} already trained" in tuned.stderr
    # `ladder export` copies the model folder and says to serve it as a model
    dest = tmp_path / "exported"
    r = ladder("export", full["id"][:8], "--task", str(task), "--out", str(dest))
    assert (dest / "model.safetensors").is_file() and not (dest / "adapter_config.json").exists()
    assert f"vllm serve {dest}" in r.stdout.replace("\n", "") and "--lora-modules" not in r.stdout
    bad = ladder("export", full["id"], "--task", str(task), "--out", str(tmp_path / "m"),
                 "--merge", check=False)
    assert bad.returncode != 0 and "full fine-tune" in bad.stderr and "--merge" in bad.stderr
    assert not (tmp_path / "m").exists()
    # `ladder curve --rung full`: the whole split reuses the model, half trains a new one
    cdoc = json.loads(ladder("curve", task, "--rung", "full", "--fractions", "0.5,1",
                             "--json").stdout)
    assert [p["fraction"] for p in cdoc["points"]] == [0.5, 1.0]
    assert cdoc["points"][1]["adapter"] == full["id"] != cdoc["points"][0]["adapter"]
    assert all(p["score"] is not None for p in cdoc["points"])
    # a rung that trains nothing is refused by name
    no = ladder("tune", task, "--rung", "few-shot", check=False)
    assert no.returncode != 0 and "lora-tools" in no.stderr and "full" in no.stderr
    # `ladder serve RUN_ID` serves the run's own tuned model folder (not an adapter)
    from llm_ladder.serving.build import build_served
    from llm_ladder.store import open_run_store
    from llm_ladder.task import load_task

    t = load_task(task)
    run_id = next(s["run_id"] for s in doc["rungs"] if s["rung"] == "full")
    served = build_served(t, "full", run=open_run_store(t).get_run(run_id))
    model = served.pipeline.model
    assert Path(model.folder).resolve() == (adapters / full["id"]).resolve()
    assert model.adapter is None
