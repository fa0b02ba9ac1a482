"""`[models.x] dtype = "bfloat16"` for the local backend: the real SmolLM2 runs with bf16
weights (also when an adapter is merged first), answers, and says so in describe()."""

from __future__ import annotations

import pytest
import torch

from llm_ladder.errors import LadderError
from llm_ladder.models import build_model
from llm_ladder.models.base import GenParams
from llm_ladder.models.local import TransformersModel
from llm_ladder.rungs.finetune import adapter_model
from llm_ladder.task import ModelConfig, load_task

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def _dtypes(model: TransformersModel) -> set[torch.dtype]:
    return {p.dtype for p in model.model.parameters()}


def test_bf16_weights_answer_and_are_described() -> None:
    model = build_model(ModelConfig(dtype="bfloat16", batch_size=2))
    assert isinstance(model, TransformersModel)
    assert _dtypes(model) == {torch.bfloat16}
    assert model.describe()["dtype"] == "bfloat16"
    gens = model.generate([FRANCE, [{"role": "user", "content": "Name a primary colour."}]],
                          GenParams(max_tokens=16))
    assert all(g.error is None and g.text for g in gens)
    assert "Paris" in gens[0].text


def test_float32_stays_the_default_and_bad_values_are_refused() -> None:
    assert ModelConfig().dtype == "float32"
    with pytest.raises(ValueError):
        ModelConfig(dtype="float16")
    with pytest.raises(LadderError, match="dtype 'int8'"):
        TransformersModel(dtype="int8")


def test_an_adapter_model_gets_the_task_dtype(tmp_path) -> None:
    peft = pytest.importorskip("peft")
    # an untrained LoRA adapter (B = 0, so merging it changes nothing), saved as safetensors
    base = TransformersModel(batch_size=1)
    lora = peft.get_peft_model(base.model, peft.LoraConfig(r=4, target_modules=["q_proj"]))
    lora.save_pretrained(tmp_path / "adapter")
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "data.jsonl").write_text('{"input": "a", "output": "b"}\n')
    (tmp_path / "task" / "task.toml").write_text(
        'name = "t"\n[data]\nexamples = ["data.jsonl"]\n[metric]\nname = "exact"\n'
        '[models.default]\nbackend = "local"\ndtype = "bfloat16"\n')
    task = load_task(tmp_path / "task")
    model = adapter_model(task, "default", str(tmp_path / "adapter"))
    assert _dtypes(model) == {torch.bfloat16}
    (gen,) = model.generate([FRANCE], GenParams(max_tokens=16))
    assert "Paris" in gen.text
