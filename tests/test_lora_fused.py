"""The fused LoRA forward (finetune/fused.py) computes PEFT's function: outputs and gradients
match PEFT's own forward, with and without dropout, and its dropout has the asked rate."""

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from llm_ladder.finetune import fused  # noqa: E402


def lora_pair(p: float, seed: int = 0):
    """Two identical PEFT models (two LoRA layers of different widths): one keeps PEFT's
    forward, the other gets the fused one."""
    models = []
    for _ in range(2):
        torch.manual_seed(seed)
        base = torch.nn.Sequential(torch.nn.Linear(24, 40, bias=False),
                                   torch.nn.Linear(40, 24, bias=True))
        m = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=p,
                                                      target_modules=["0", "1"]))
        with torch.no_grad():  # B starts at zero in PEFT: give it values so it matters
            for name, w in m.named_parameters():
                if "lora_B" in name:
                    w.normal_()
        models.append(m)
    assert fused.install(models[1], torch, peft) == 2
    return models


def grads(model, x, g):
    x = x.clone().requires_grad_(True)
    out = model(x)
    out.backward(g)
    named = {n: w.grad.clone() for n, w in model.named_parameters() if w.requires_grad}
    return out.detach(), x.grad.clone(), named


def test_without_dropout_outputs_and_gradients_equal_pefts():
    plain, quick = lora_pair(0.0)
    x, g = torch.randn(3, 5, 24), torch.randn(3, 5, 24)
    plain.train()
    quick.train()
    out_a, dx_a, w_a = grads(plain, x, g)
    out_b, dx_b, w_b = grads(quick, x, g)
    assert torch.allclose(out_a, out_b, atol=1e-5)
    assert torch.allclose(dx_a, dx_b, atol=1e-5)
    assert w_a.keys() == w_b.keys() and len(w_a) == 4
    for n in w_a:
        assert torch.allclose(w_a[n], w_b[n], atol=1e-4), n


def test_with_dropout_it_is_pefts_function_of_the_same_mask():
    """In training mode the fused layer equals base(x) + B(A(x * keep)) * scaling / (1 - p)
    for the mask `keep_mask` draws from the same generator state."""
    _, quick = lora_pair(0.3)
    quick.train()
    layer = quick.base_model.model[0]
    x = torch.randn(2, 7, 24)
    torch.manual_seed(11)
    got = layer(x)
    torch.manual_seed(11)
    keep, p = fused.keep_mask(x.shape, 0.3, x.device, torch)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    want = (layer.base_layer(x)
            + (x * keep) @ a.T @ b.T * layer.scaling["default"] / (1 - p))
    assert torch.allclose(got, want, atol=1e-5)
    assert not keep.all()  # the mask dropped something
    quick.eval()  # no dropout at evaluation
    assert torch.allclose(layer(x), layer.base_layer(x) + x @ a.T @ b.T
                          * layer.scaling["default"], atol=1e-5)


def test_the_mask_drops_at_the_asked_rate_independently():
    torch.manual_seed(0)
    n = 1_000_000
    for p in (0.05, 0.3):
        keep, rounded = fused.keep_mask((n,), p, "cpu", torch)
        assert abs(rounded - p) <= 1 / 65536
        rate = 1 - keep.float().mean().item()
        sigma = (p * (1 - p) / n) ** 0.5
        assert abs(rate - rounded) < 5 * sigma, (p, rate)
    a, _ = fused.keep_mask((4096,), 0.5, "cpu", torch)
    b, _ = fused.keep_mask((4096,), 0.5, "cpu", torch)
    assert 0.4 < (a == b).float().mean().item() < 0.6  # two draws are not the same mask
    # neighbours within one 64-bit word are not correlated
    k = fused.keep_mask((n,), 0.5, "cpu", torch)[0].float().view(-1, 4)
    assert abs(torch.corrcoef(k.T)[0, 1].item()) < 0.01


def test_merged_or_disabled_adapters_fall_back_to_pefts_forward():
    plain, quick = lora_pair(0.0)
    x = torch.randn(2, 3, 24)
    with quick.disable_adapter(), plain.disable_adapter():
        assert torch.allclose(quick(x), plain(x), atol=1e-6)
    quick.merge_adapter()
    plain.eval()
    assert torch.allclose(quick(x), plain(x), atol=1e-5)


def test_only_plain_lora_layers_get_it():
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(8, 8))
    dora = peft.get_peft_model(base, peft.LoraConfig(r=2, use_dora=True,
                                                     target_modules=["0"]))
    assert fused.install(dora, torch, peft) == 0


def test_training_gets_it_on_every_adapted_projection():
    from llm_ladder.finetune.lora import load_base
    from llm_ladder.models.local import resolve_weights
    from llm_ladder.task import FinetuneConfig

    model, device, _, _ = load_base(resolve_weights("smollm2-135m", None), FinetuneConfig())
    assert device == "cpu"
    quick = [m for m in model.modules() if getattr(m, "_ladder_adapter", None)]
    assert len(quick) == 30 * 7  # SmolLM2-135M: 30 layers x the recipe's 7 projections
