"""A faster forward for PEFT's LoRA linear layers on CPU: the same function, fewer passes.

PEFT computes `base(x) + lora_B(lora_A(dropout(x))) * scaling`. On a 2-core CPU training
SmolLM2-135M at batch 8, a profile of one training step (docs/finetune.md, "Training speed")
spent ~18% of the time in `bernoulli_` alone: `nn.Dropout` draws one 32-bit random number per
element for each of the 7 adapted projections of each of the 30 layers, then multiplies by
the mask and divides by 1 - p. This forward gives the same distribution with less work:

- the keep mask comes from 16-bit slices of 64-bit random words (four draws per word from
  torch's own generator, so `torch.manual_seed` and the checkpointed RNG state still make a
  run reproducible and resumable); p is rounded to a multiple of 1/65536 (0.05 becomes
  0.0500031) and the kept values are scaled by 1 / (1 - that p), so the mean is unchanged;
- the mask multiplies x once, and its 1 / (1 - p) goes into LoRA's scaling, which goes into
  the alpha of one `addmm` that also adds the LoRA term to the base output: no separate
  scaling, division or addition over the layer's output.

Installed only for the plain case (`install`): one adapter, vanilla LoRA (no DoRA or other
variant, no LoRA bias) on a `torch.nn.Linear`. Anything else at call time (adapters
disabled or merged, extra arguments) falls back to PEFT's own forward. Not used on CUDA,
where PEFT's dropout is a fused kernel already.
"""

from __future__ import annotations

import math
import types
from typing import Any

WORD_SLICES = 4  # 16-bit uniforms per 64-bit random word


def keep_mask(shape: Any, p: float, device: Any, torch: Any) -> tuple[Any, float]:
    """A bool mask of `shape`, each element False with probability p rounded to k / 65536,
    drawn from torch's generator; returns (mask, the rounded p)."""
    cut = round(p * 65536)
    n = math.prod(shape)
    words = torch.empty((n + WORD_SLICES - 1) // WORD_SLICES, dtype=torch.int64,
                        device=device).random_(-(2**63), None)  # the full 64-bit range
    uniform = words.view(torch.int16)[:n].view(shape)  # uniform over -32768 .. 32767
    return uniform >= cut - 32768, cut / 65536


def _fused_forward(self: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
    torch = self._ladder_torch
    name = self._ladder_adapter
    if (args or kwargs or self.disable_adapters or self.merged
            or list(self.active_adapters) != [name]):
        return type(self).forward(self, x, *args, **kwargs)
    base = self.base_layer
    lead = x.shape[:-1]
    # a fresh 2-D output (not a view), so adding in place below costs autograd no copies;
    # the base layer's backward needs its input and weight, not this output
    result = torch.nn.functional.linear(x.reshape(-1, x.shape[-1]), base.weight, base.bias)
    a = self.lora_A[name].weight
    b = self.lora_B[name].weight
    scale = self.scaling[name]
    h = self._cast_input_dtype(x, a.dtype)  # as PEFT does
    p = getattr(self.lora_dropout[name], "p", 0.0)  # nn.Identity: no dropout
    if self.training and p > 0:
        keep, p = keep_mask(h.shape, p, h.device, torch)
        if p > 0:
            h = h * keep.to(h.dtype)  # a float mask: faster than where() or a bool mask
            scale = scale / (1.0 - p)
    low = torch.nn.functional.linear(h.reshape(-1, h.shape[-1]), a)  # (tokens, r)
    result.addmm_(low.to(result.dtype), b.t().to(result.dtype), alpha=scale)
    return result.view(*lead, result.shape[-1])


def install(model: Any, torch: Any, peft: Any) -> int:
    """Give every plain LoRA linear layer of `model` (a PEFT model) the fused forward;
    returns how many layers got it (0 when PEFT's layout is not the one this knows)."""
    LoraLinear = getattr(getattr(getattr(peft, "tuners", None), "lora", None), "Linear", None)
    if LoraLinear is None:  # another PEFT layout: keep its forward
        return 0
    count = 0
    for module in model.modules():
        if type(module) is not LoraLinear or len(module.lora_A) != 1:
            continue
        name = next(iter(module.lora_A.keys()))
        if (getattr(module, "lora_variant", {}) or module.lora_bias.get(name, False)
                or module.fan_in_fan_out
                or not isinstance(module.base_layer, torch.nn.Linear)
                or not isinstance(module.lora_dropout[name],
                                  torch.nn.Dropout | torch.nn.Identity)):
            continue
        module._ladder_torch = torch
        module._ladder_adapter = name
        module.forward = types.MethodType(_fused_forward, module)
        count += 1
    return count
