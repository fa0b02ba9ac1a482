"""Linear layers of an inference model through oneDNN with pre-packed weights (CPU, float32).

`torch.nn.functional.linear` on CPU calls MKL's sgemm, which re-reads the weight in its
stored row-major layout at every call. Batched greedy decoding multiplies a few rows (the
batch) by every weight once per token, so that layout, not the arithmetic, sets the speed:
on a 2-core AVX2 EPYC, a decode step of 16 rows through SmolLM2-135M's 30 layers spent ~70 ms
in MKL against ~50 ms with the weights reordered once into oneDNN's blocked layout, and the
49k-row LM head 32 against 16 ms (bench/bench_local.py measures the whole effect). The
reordered weight replaces the original one and the parameters left are copied out of the
file mapping they shared with it, so memory grows only by a weight shared with another module
(the LM head tied to the input embeddings), which keeps its original and gains a packed copy:
SmolLM2 after load and one answer, 1,070 MB resident against 966 MB unpacked.

The two operators are PyTorch's own (`torch.ops.mkldnn._reorder_linear_weight` and
`_linear_pointwise`, the ones its compiler emits for frozen CPU models); `pack` leaves the
model as it is where they are missing (a build without oneDNN) and reports 0 layers. The
packed forward has no backward pass: `pack` is for models that only generate (`eval`,
`inference_mode`), and a packed layer refuses to run with gradients enabled. Results match
MKL's to float32 rounding (different summation order), not bit for bit; the benchmark counts
the greedy answers that differ. Skipped: bfloat16 weights, GPUs, quantized layers.
"""

from __future__ import annotations

import types
from typing import Any

# The batch size oneDNN picks the blocked layout for: batched decoding is 8-32 rows. Measured
# on 1,536 x 576 (2-core AVX2): with 16 the packed layer beat MKL at every size from 1 to
# 4,096 rows (1.1-1.9x); with 1 it lost at 1 row.
BATCH_HINT = 16


def available(torch: Any) -> bool:
    """Whether this PyTorch build has the oneDNN operators `pack` uses."""
    ops = getattr(torch.ops, "mkldnn", None)
    return (bool(torch.backends.mkldnn.is_available()) and ops is not None
            and hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise"))


def _packed_forward(self: Any, x: Any) -> Any:
    torch = self._ladder_torch
    if torch.is_grad_enabled() and x.requires_grad:
        raise RuntimeError("a packed linear layer (models/packed.py) has no backward pass")
    weight = self.__dict__.get("_ladder_packed", self.weight)  # a tied weight's packed copy
    y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), weight, self.bias,
                                           "none", [], "")
    return y.view(*x.shape[:-1], y.shape[-1])


def pack(model: Any, torch: Any) -> int:
    """Give every float32 `nn.Linear` of `model` (on CPU) a oneDNN-packed weight and a forward
    that uses it; returns how many layers were packed (0 where oneDNN is missing)."""
    if not available(torch):
        return 0
    linears = [m for m in model.modules()
               if isinstance(m, torch.nn.Linear) and m.weight.dtype == torch.float32
               and m.weight.device.type == "cpu" and not getattr(m, "_ladder_is_packed", False)]
    owners: dict[int, int] = {}  # weight storage -> modules holding it (tied weights)
    for m in model.modules():
        for p in m.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    if not linears:
        return 0
    with torch.no_grad():
        for m in linears:
            packed = torch.ops.mkldnn._reorder_linear_weight(m.weight.detach(), BATCH_HINT)
            m._ladder_torch = torch
            if owners[id(m.weight)] == 1:
                # the layout changes, not the shape: the old weight is freed, and reading
                # `weight` as numbers is no longer meaningful (only this forward does)
                m.weight = torch.nn.Parameter(packed, requires_grad=False)
            else:  # tied to another module (the LM head and the embeddings): keep both
                m.__dict__["_ladder_packed"] = packed  # a plain attribute, not a buffer
            m._ladder_is_packed = True
            m.forward = types.MethodType(_packed_forward, m)
        # transformers maps the safetensors file into memory and the weights are views of
        # that one mapping: while any view lives (the embeddings, the norms), the replaced
        # originals stay resident too. Copying the rest out releases the mapping.
        for p in model.parameters():
            if not p.is_mkldnn:
                p.data = p.data.clone()
    return len(linears)
