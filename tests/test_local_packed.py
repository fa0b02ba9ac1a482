"""The local backend's oneDNN-packed linear layers (models/packed.py), on the real SmolLM2:
every linear layer packed, the old weights freed, the same next-token logits as PyTorch's
own kernels, the tied LM head still tied to the embeddings, and the setting that turns it off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llm_ladder.models import build_model, packed
from llm_ladder.models.base import GenParams
from llm_ladder.models.local import TransformersModel
from llm_ladder.task import ModelConfig

pytestmark = pytest.mark.skipif(not packed.available(torch), reason="PyTorch without oneDNN")

PROMPTS = [[{"role": "user", "content": "What is the capital of France?"}],
           [{"role": "user", "content": "Name a primary colour."}]]


def _logits(model: TransformersModel) -> torch.Tensor:
    enc = model.tokenizer.apply_chat_template(PROMPTS[0], add_generation_prompt=True,
                                              return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        return model.model(**enc).logits[0, -1]


def test_packed_layers_match_the_default_kernels(smol) -> None:
    plain = TransformersModel(batch_size=4, packed_weights=False)
    linears = [m for m in smol.model.modules() if isinstance(m, torch.nn.Linear)]
    # 30 layers x 7 projections + the LM head, all packed; none in the plain model
    assert smol.packed_layers == len(linears) == 211
    assert plain.packed_layers == 0
    assert smol.describe()["packed_weights"] is True
    assert plain.describe()["packed_weights"] is False
    # the same function: next-token logits agree to float32 rounding, and so does the choice
    a, b = _logits(smol), _logits(plain)
    assert torch.allclose(a, b, rtol=0, atol=1e-3), float((a - b).abs().max())
    assert int(a.argmax()) == int(b.argmax())
    params = GenParams(max_tokens=12)
    assert ([g.text for g in smol.generate(PROMPTS, params)]
            == [g.text for g in plain.generate(PROMPTS, params)])


def test_weights_are_replaced_not_copied_and_the_tied_head_stays_tied(smol) -> None:
    inner = smol.model.model
    q = inner.layers[0].self_attn.q_proj
    plain_q = TransformersModel(batch_size=1, packed_weights=False).model.model.layers[0] \
        .self_attn.q_proj
    # the packed weight took the old one's place: same shape, oneDNN's opaque layout, and no
    # second copy kept
    assert q.weight.shape == plain_q.weight.shape
    assert q.weight.is_mkldnn and not plain_q.weight.is_mkldnn
    assert "_ladder_packed" not in q.__dict__
    # the LM head shares its weight with the embeddings: that one is kept as it was
    head = smol.model.lm_head
    assert head.weight is inner.embed_tokens.weight
    assert not head.weight.is_mkldnn and head.__dict__["_ladder_packed"].is_mkldnn
    # packing twice does nothing
    assert packed.pack(smol.model, torch) == 0


def test_a_packed_layer_refuses_to_train() -> None:
    layer = torch.nn.Linear(8, 4)
    assert packed.pack(layer, torch) == 1
    x = torch.randn(3, 8, requires_grad=True)
    with pytest.raises(RuntimeError, match="no backward"):
        layer(x)
    with torch.no_grad():
        assert layer(x).shape == (3, 4)


def test_the_setting_reaches_the_backend_and_bf16_is_not_packed() -> None:
    model = build_model(ModelConfig(packed_weights=False, batch_size=1))
    assert model.packed_layers == 0
    bf16 = build_model(ModelConfig(dtype="bfloat16", batch_size=1))
    assert bf16.packed_layers == 0 and bf16.describe()["packed_weights"] is False


def test_a_tied_weight_keeps_its_original_and_runs_on_its_packed_copy() -> None:
    a, b = torch.nn.Linear(8, 4, bias=False), torch.nn.Linear(8, 4, bias=False)
    b.weight = a.weight  # tied, as the LM head and the input embeddings
    pair = torch.nn.ModuleList([a, b])
    original = a.weight.detach().clone()
    assert packed.pack(pair, torch) == 2
    assert b.weight is a.weight and torch.equal(a.weight, original)  # both kept the original
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.allclose(a(x), x @ original.t(), atol=1e-5)
        # the forward reads the packed copy, not the original
        a.__dict__["_ladder_packed"] = torch.ops.mkldnn._reorder_linear_weight(
            torch.zeros(4, 8), packed.BATCH_HINT)
        assert torch.equal(a(x), torch.zeros(3, 4))


RSS_PROBE = """
from llm_ladder.models.base import GenParams
from llm_ladder.models.local import TransformersModel
m = TransformersModel(batch_size=1, packed_weights={packed})
m.generate([[{{"role": "user", "content": "hi"}}]], GenParams(max_tokens=4))
status = dict(l.split(":", 1) for l in open("/proc/self/status"))
print(int(status["VmRSS"].split()[0]) // 1024, int(status["RssFile"].split()[0]) // 1024)
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_packing_does_not_keep_the_replaced_weights_resident() -> None:
    """The replaced weights lived in transformers' mapping of the safetensors file; while the
    embeddings still pointed into it, all 538 MB of it stayed resident beside the packed
    copies (measured 1,485 against 966 MB unpacked)."""
    def rss(packed_weights: bool) -> tuple[int, int]:
        out = subprocess.run([sys.executable, "-c", RSS_PROBE.format(packed=packed_weights)],
                             capture_output=True, text=True, check=True,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})
        total, file_backed = out.stdout.split()[-2:]
        return int(total), int(file_backed)

    (packed_total, packed_file), (plain_total, _) = rss(True), rss(False)
    assert packed_file < 300, packed_file  # no weights left in the file mapping
    assert packed_total < plain_total + 200, (packed_total, plain_total)  # + the LM head copy
