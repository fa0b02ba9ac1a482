"""The LoRA training recipe: one readable loop over PEFT, resumable, safetensors only.

setup (base model + PEFT LoRA, or QLoRA 4-bit on CUDA) -> length-grouped batches from a
seeded schedule -> AdamW with linear warmup/decay, gradient accumulation, loss on completion
tokens only (summed over the accumulated tokens) -> dev loss every `eval_every` steps with
early stopping on `patience` -> best weights saved as a PEFT adapter folder.

Checkpoints (every `save_every` steps) hold the LoRA weights, the AdamW state, the RNG state
and the loop position, all as safetensors + JSON: no pickle is written or read, so torch's
`weights_only` default never matters. A checkpoint folder is written under a temporary name
and renamed when complete; resuming takes the newest complete one and continues the same
batch schedule, so a killed run ends with the same weights as an uninterrupted one.

`method` "full" runs the same loop over every weight of the plain model (no PEFT): the
checkpoint's weights file then holds the whole model (a tied lm_head once) and the result is
a model folder (config + model.safetensors) instead of a PEFT adapter.

Memory (`[finetune] max_memory_gb`, `plan_memory`): each scheduled batch can be split into
micro-batches by a padded-token budget (the loss is still divided by the whole batch's
completion tokens, so the update is the same up to float error and dropout's masks), and
activation checkpointing is turned on only when one longest example does not fit without
it, and then of as few decoder layers as the limit needs; the LM head's logits exist for at
most CE_CHUNK completion positions at a time.

Packing (`[finetune] packing`, on by default): where it is estimated cheaper, a batch's rows
run as one sequence with the prompt prefix they share (a chat template's system prompt) once
and no padding, under a mask that keeps each row to the prefix and itself (`pack_prefix`,
`collate`); the loss and gradients are those of the padded batch up to float rounding, but
LoRA dropout draws one mask for the shared prefix instead of one per row.

Why a hand-written loop rather than transformers' Trainer: Trainer checkpoints pickle the
optimizer and RNG state, and its default collator pads random batches; this loop is measured
against Trainer + PEFT in bench/bench_train.py. Deliberately skipped: multi-device training
(see docs/finetune.md for the accelerate/torchrun route), packing rows of different
batches together (a row never trains with rows outside its scheduled batch).
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import random
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llm_ladder.errors import LadderError, require
from llm_ladder.finetune import fused
from llm_ladder.finetune.data import IGNORE, TrainRow
from llm_ladder.finetune.registry import fsync_dir, fsync_tree
from llm_ladder.hardware import cpu_has_bf16
from llm_ladder.task import FinetuneConfig

OnStep = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    steps: int
    total_steps: int
    best_step: int
    best_dev_loss: float | None
    stopped_early: bool
    resumed_from: int | None
    seconds: float
    train_tokens: int  # the examples' tokens trained on
    tokens_per_s: float
    peak_rss_mb: float
    device: str
    dtype: str
    quantized: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)  # the MemoryPlan it trained with
    # positions run through the model: padding included, a packed batch's prefix once
    model_tokens: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def schedule(lengths: list[int], batch_size: int, epochs: float, seed: int) -> list[list[int]]:
    """Every epoch: shuffle, sort by length inside windows of 32 batches, shuffle the batches.

    Batches hold examples of similar length (little padding) in a seeded, reproducible order.
    """
    n, out = len(lengths), []
    for e in range(math.ceil(epochs)):
        rng = random.Random(seed * 1_000_003 + e)
        order = list(range(n))
        rng.shuffle(order)
        if e + 1 > epochs:  # a fractional last epoch
            order = order[: max(1, round((epochs - e) * n))]
        window = batch_size * 32
        batches = []
        for s in range(0, len(order), window):
            chunk = sorted(order[s : s + window], key=lambda i: lengths[i])
            batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
        rng.shuffle(batches)
        out += batches
    return out


def collate(rows: list[TrainRow], pad_id: int, torch: Any,
            prefix: int | None = None) -> dict[str, Any]:
    """The rows as model inputs. By default right-padded tensors: padding has attention 0 and
    label -100. With `prefix` (see `pack_prefix`): packed, one row of the rows one after
    another with their first `prefix` tokens once, each row's positions counting on from the
    prefix, and a causal mask under which a token sees the prefix and its own row only
    (`packed_mask`, batch x 1 x query x key, True = attend). Since the label after the prefix
    is -100 in every row, the shift by one of the loss never crosses from one row into the
    next. `tokens` is the rows' own token count either way."""
    tokens = sum(len(r.input_ids) for r in rows)
    if prefix is not None:
        ids, labels = rows[0].input_ids[:prefix], rows[0].labels[:prefix]
        positions, owner = list(range(prefix)), [-1] * prefix
        for i, r in enumerate(rows):
            ids = ids + r.input_ids[prefix:]
            labels = labels + r.labels[prefix:]
            positions += range(prefix, len(r.input_ids))
            owner += [i] * (len(r.input_ids) - prefix)
        row = torch.tensor(owner)
        mask = torch.ones(len(ids), len(ids), dtype=torch.bool).tril_() & (
            (row[:, None] == row[None, :]) | (row[None, :] < 0))
        return {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]),
                "position_ids": torch.tensor([positions]), "packed_mask": mask[None, None],
                "tokens": tokens}
    width = max(len(r.input_ids) for r in rows)
    ids = [r.input_ids + [pad_id] * (width - len(r.input_ids)) for r in rows]
    labels = [r.labels + [IGNORE] * (width - len(r.labels)) for r in rows]
    mask = [[1] * len(r.input_ids) + [0] * (width - len(r.input_ids)) for r in rows]
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask),
            "labels": torch.tensor(labels), "tokens": tokens}


def shared_prefix(rows: list[TrainRow]) -> int:
    """How many first tokens all `rows` have in common (a chat template's system prompt and
    turn header), stopping before the last position whose next token is in the loss anywhere,
    so that the prefix's own outputs feed no loss term and every row keeps a token of its own."""
    common = len(os.path.commonprefix([r.input_ids for r in rows]))
    first = min(next((i for i, t in enumerate(r.labels) if t != IGNORE), len(r.labels))
                for r in rows)
    return max(0, min(common, first - 1))


def pack_prefix(rows: list[TrainRow], pair_cost: float | None) -> int | None:
    """The shared prefix to pack `rows` with (`collate`), or None to pad them.

    Packed, the prefix runs once instead of once per row and no padding runs at all, but
    attention covers every (query, key) pair of the one long sequence, masked or not, where
    the padded batch's causal kernel covers half of each row's. Estimated compute, in units
    of one token through the linear layers: padded rows x width x (1 + pair_cost x width / 2),
    packed length x (1 + pair_cost x length); packed when that is less. `pair_cost` is
    attention's compute per pair in those units (`attention_pair_cost`); None never packs.
    On the FAQ example's 64-row benchmark epoch (batches of 8 rows of ~47 tokens with a
    24-token chat-template prefix), 3,096 padded positions become 1,657."""
    if pair_cost is None or len(rows) < 2:
        return None
    lengths = [len(r.input_ids) for r in rows]
    prefix, width = shared_prefix(rows), max(lengths)
    packed = prefix + sum(n - prefix for n in lengths)
    padded_cost = len(rows) * width * (1 + pair_cost * width / 2)
    return prefix if packed * (1 + pair_cost * packed) < padded_cost else None


def _inner(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (or the model itself, for `full`)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def attention_pair_cost(model: Any) -> float | None:
    """Attention's training compute per (query, key) pair over the linear layers' per
    position, per layer: scores and weighted sum are 4 x hidden size FLOP a pair forward and
    about 3x that with the backward pass (gradients of queries, keys, values and scores); the
    frozen linear weights 2 x their count forward, 2x that with the backward pass (the input
    gradient only): 3 x hidden / weights, 1/2,048 for SmolLM2-135M. It predicted the measured
    packed/padded step time to within 0.13 on six batch shapes (docs/finetune.md). None (never
    pack) when the model's attention is not PyTorch's sdpa (the only one the packed mask is
    built for) or any layer attends over a sliding window (Gemma 3's local layers, Mistral):
    the packed mask is causal within each row and does not apply a window."""
    inner = _inner(model)
    config = inner.config
    layers = getattr(getattr(inner, "model", None), "layers", None)
    kinds = getattr(config, "layer_types", None) or []
    windowed = any(k != "full_attention" for k in kinds) or (
        not kinds and getattr(config, "sliding_window", None))
    if getattr(config, "_attn_implementation", None) != "sdpa" or not layers or windowed:
        return None
    torch = require("torch", "local")
    weights = sum(m.weight.numel() for name, m in layers[0].named_modules()
                  if isinstance(m, torch.nn.Linear) and "lora_" not in name)
    return 3 * config.hidden_size / weights if weights else None


def pick_precision(cfg: FinetuneConfig, n_params: int | None = None) -> tuple[str, str, bool]:
    """(device, dtype, quantize) for this machine and config."""
    torch = require("torch", "local")
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if cfg.dtype != "auto":
        dtype = cfg.dtype
    elif cuda:
        dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    else:
        # bf16 autocast where the CPU has native bf16 dot products (measured 1.28x float32
        # on an AVX512-BF16 CPU: docs/benchmarks.md); emulated bf16 would be slower
        dtype = "bfloat16" if cpu_has_bf16() else "float32"
    quantize = cfg.quantize == "4bit" or (cfg.quantize == "auto" and cuda
                                          and (n_params or 0) >= 3_000_000_000)
    if quantize and not cuda:
        raise LadderError("finetune.quantize = '4bit' (QLoRA) needs a CUDA GPU and "
                          "bitsandbytes; use quantize = 'none' on this machine")
    return device, dtype, quantize


METHODS = ("lora", "full")


def load_base(folder: Path, cfg: FinetuneConfig, trust_remote_code: bool = False,
              method: str = "lora"):
    """The base model with fresh LoRA layers (PEFT), or for `method` "full" the plain model
    with every weight trainable, on the picked device and precision."""
    if method not in METHODS:
        raise LadderError(f"unknown fine-tuning method {method!r}; known: {', '.join(METHODS)}")
    torch = require("torch", "local")
    transformers = require("transformers", "local")
    device, dtype, quantize = pick_precision(cfg)
    if method == "full" and quantize:
        raise LadderError("the full fine-tune trains every weight in float32: it cannot use "
                          "a 4-bit base; set finetune.quantize = 'none'")
    kwargs: dict[str, Any] = {"use_safetensors": True, "trust_remote_code": trust_remote_code}
    if quantize:
        require("bitsandbytes", "gpu")
        kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
        kwargs["device_map"] = {"": 0}
    else:
        kwargs["dtype"] = torch.float32
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    if quantize:
        model = require("peft", "finetune").prepare_model_for_kbit_training(model)
    elif device != "cpu":
        model.to(device)
    if method == "full":
        model.requires_grad_(True)
        return model, device, dtype, quantize
    peft = require("peft", "finetune")
    lora = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                           target_modules=cfg.target_modules, bias="none",
                           task_type="CAUSAL_LM")
    try:
        model = peft.get_peft_model(model, lora)
    except ValueError as e:
        raise LadderError(f"finetune.target_modules: {e}") from None
    if device == "cpu":  # the same LoRA function in fewer passes (finetune/fused.py)
        fused.install(model, torch, peft)
    return model, device, dtype, quantize


CE_CHUNK = 256  # completion positions whose logits exist at once (256 x 49k x 4 B = 50 MB)


def completion_loss(model: Any, batch: dict[str, Any], n_items: int, device: str,
                    torch: Any) -> Any:
    """Summed cross-entropy over the completion tokens, divided by `n_items`.

    The LM head (49k-way for SmolLM2; a quarter of the model's compute per token) runs only
    at the positions that predict a completion token, not at every prompt position, and over
    at most CE_CHUNK of them at a time: with gradients on, each chunk's logits are recomputed
    in the backward pass instead of kept (8 x 128 completion positions kept whole would hold
    ~0.6 GB of float logits and their gradients).
    """
    inner = _inner(model)
    ids = batch["input_ids"].to(device)
    # Padded rows get no attention mask: `collate` pads on the right, so under causal
    # attention no real token sees a pad, positions count from 0 either way, and pad
    # positions are never in the loss; sdpa then runs its causal kernel instead of
    # materializing and applying a mask. Packed rows bring their positions and mask.
    packed = {"position_ids": batch["position_ids"].to(device),
              "attention_mask": batch["packed_mask"].to(device)} if "packed_mask" in batch else {}
    hidden = inner.model(input_ids=ids, use_cache=False, **packed).last_hidden_state
    target = batch["labels"][:, 1:].to(device)
    keep = target != IGNORE
    h, t = hidden[:, :-1][keep], target[keep]

    def ce(h_part: Any, t_part: Any) -> Any:
        return torch.nn.functional.cross_entropy(inner.lm_head(h_part).float(), t_part,
                                                 reduction="sum")

    if len(t) <= CE_CHUNK:
        return ce(h, t) / n_items
    from torch.utils.checkpoint import checkpoint

    total = 0.0
    for s in range(0, len(t), CE_CHUNK):
        part = (h[s : s + CE_CHUNK], t[s : s + CE_CHUNK])
        total = total + (checkpoint(ce, *part, use_reentrant=False)
                         if torch.is_grad_enabled() else ce(*part))
    return total / n_items


HEAP_MMAP_THRESHOLD = 4 << 20  # bytes: blocks this large get their own mapping (glibc)
M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h


def _glibc(function: str) -> Any:
    """A function of glibc's malloc, or None where the C library is not glibc (the heap
    tuning below then changes nothing)."""
    try:
        return getattr(ctypes.CDLL("libc.so.6"), function, None)
    except OSError:
        return None


def _trim_heap() -> bool:
    """Give the heap's free pages back to the system (glibc's `malloc_trim`), so that the
    resident memory measured next is what is in use: the planner's probe passes left ~330 MB
    of freed graph resident, which its `fixed` counted as taken (and which training then
    reused). One call, a few ms; per micro-batch it cost ~15% of the speed in page faults
    (docs/finetune.md). False where the C library is not glibc."""
    trim = _glibc("malloc_trim")
    return bool(trim and trim(0))


def _return_freed_blocks() -> bool:
    """Fix glibc's mmap threshold at HEAP_MMAP_THRESHOLD, so that freed tensors of 4 MB and
    more go back to the system instead of staying in the heap. glibc raises the threshold
    by itself after such frees (up to 32 MB), after which activation-sized tensors come from
    the heap and their memory stays resident after they are freed: training 4 x 512 tokens
    in float32 with activation checkpointing grew the process by 1.7 GB in one forward pass,
    where the checkpointed layer inputs come to 0.14 GB; with the threshold fixed, 0.12 GB. A
    fixed 64 kB threshold cost ~40% of the speed (docs/finetune.md); 4 MB maps only the big
    activations. False where the C library is not glibc."""
    mallopt = _glibc("mallopt")
    return bool(mallopt and mallopt(M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD))


def _rss_bytes(field: str = "VmRSS") -> int:
    """This process's resident memory (`field` of /proc/self/status), 0 where unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def saved_bytes_per_token(model: Any, pad_id: int, device: str, autocast: Any, torch: Any,
                          tokens: int = 256) -> float:
    """Bytes the autograd graph keeps per token of a batch, measured: forward passes of one
    row of 16 and of `tokens` tokens (8 completion positions each) with every tensor saved
    for the backward pass counted once (by storage); the difference over the extra tokens is
    the per-token cost at that length (what does not grow with tokens, such as the weights
    and their bf16 copies under autocast, cancels out). No backward pass is run.

    Rows longer than PROBE_MAX tokens are not run: the graph of one 512-token row is itself
    ~0.7 GB, which set the whole training's peak under `max_memory_gb = 2`. The saved bytes
    are measured at 16, PROBE_MAX / 2 and PROBE_MAX tokens instead and the quadratic through
    them (attention without sdpa keeps seq x seq scores) gives the size at `tokens`."""

    def saved(tokens: int) -> int:
        seen: dict[int, int] = {}

        def pack(t: Any) -> Any:
            try:
                st = t.untyped_storage()
                seen[st.data_ptr()] = st.nbytes()
            except (RuntimeError, NotImplementedError):  # a tensor without storage
                pass
            # Detached: a saved output returned as itself would point back at its own graph
            # node, a cycle through C++ that Python's collector cannot see, and the whole
            # graph would stay resident (it did: 3.7 GiB after three probes). No backward
            # pass runs on this graph, so the lost grad_fn does not matter.
            return t.detach()

        ids = [pad_id + 1] * tokens
        batch = collate([TrainRow("probe", ids, [IGNORE] * (tokens - 8) + ids[-8:])],
                        pad_id, torch)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast():
            loss = completion_loss(model, batch, 1, device, torch)
        del loss
        return sum(seen.values())

    tokens = max(tokens, 32)
    if tokens <= PROBE_MAX:
        return max(0.0, (saved(tokens) - saved(16)) / (tokens - 16))
    xs = (16, PROBE_MAX // 2, PROBE_MAX)
    ys = [saved(x) for x in xs]

    def at(x: int) -> float:  # Lagrange form of the quadratic through (xs, ys)
        return sum(y * math.prod((x - xk) / (xj - xk) for xk in xs if xk != xj)
                   for xj, y in zip(xs, ys, strict=True))

    return max(0.0, (at(tokens) - ys[0]) / (tokens - 16))


PROBE_MAX = 128  # the longest row `saved_bytes_per_token` runs


# saved activations -> peak: the backward pass's gradients, the heap's fragmentation; 1.29 to
# 1.43 measured on steps of 8 x 512 tokens of SmolLM2-135M in float32 with 10 to 25 of its
# 30 layers checkpointed (docs/finetune.md)
SLACK = 1.5


@dataclass
class MemoryPlan:
    """How a training fits `max_memory_gb`: micro-batches of at most `micro_tokens` padded
    tokens (rows x longest row; None = whole batches) and activation checkpointing."""

    micro_tokens: int | None
    checkpointing: bool
    fixed_gb: float
    per_token_kb: float
    note: str
    # how many of the decoder layers are checkpointed (the first ones); None = every layer
    # when `checkpointing`, else none
    checkpointed_layers: int | None = None
    # the gradients allocated before the first pass and zeroed in place after each step,
    # instead of allocated anew by each step's first backward pass, where ~400 small
    # tensors landing among the activations fragmented the heap (~190 MB more resident at
    # the peak); set with a memory limit. The update is the same: every trained weight gets
    # a gradient in every step (LoRA's adapters; a causal LM's weights in a full fine-tune)
    gradients_first: bool = False


MIN_MICRO_TOKENS = 512  # the micro-batch partial checkpointing aims for (see plan_memory)


def plan_memory(cfg: FinetuneConfig, model: Any, rows: list[TrainRow], pad_id: int,
                device: str, use_bf16: bool, autocast: Any, torch: Any) -> MemoryPlan:
    """Pick micro-batch size and activation checkpointing so the peak stays under
    `cfg.max_memory_gb` (see docs/finetune.md, "Memory"), and turn checkpointing on when
    picked (or when `gradient_checkpointing` = "on").

    peak ~ fixed + tokens per micro-batch x bytes per token, where fixed = resident memory
    after the measuring passes, their freed graph given back (process, every weight paged
    in) + gradients and AdamW
    moments of the trained weights (3 x their float32 size) + bf16 copies of the weights
    under autocast + the chunked loss's logits (CE_CHUNK x vocabulary, float32, three
    copies), and bytes per token is what the autograd graph keeps (`saved_bytes_per_token`,
    at the longest row's length) times SLACK for the backward pass's transient gradients
    and the heap's fragmentation. With checkpointing the graph keeps each layer's input and
    what lives outside the layers (measured the same way), plus one layer's activations and
    their gradients while it is recomputed (2 x plain / layers); with k of L layers
    checkpointed, k/L of the way from plain to that (`with_some`). Under a limit the plan
    also has the training allocate the gradients first (`gradients_first`).
    Whole batches when they fit; otherwise the largest token budget that fits; checkpointing
    only when even one longest row does not fit without it, and then of as few layers as
    let a micro-batch of MIN_MICRO_TOKENS (at least one longest row, at most the batch) fit:
    a checkpointed layer runs its forward again in the backward pass, which for LoRA (no
    gradients of the frozen weights) is about half as much compute again for that layer, so
    checkpointing every layer ran at ~0.64x; the rest of the layers keep their activations
    (selective checkpointing by layer, as Megatron's `recompute_num_layers`); a model whose
    layers lack transformers' per-layer switch (GradientCheckpointingLayer) gets every layer.
    `gradient_checkpointing = "on"` checkpoints every layer. `micro_batch_tokens` set by
    hand, or no `max_memory_gb`, skips all this (nothing is measured; `fixed_gb` is then
    the resident memory before any pass, weights not yet paged in).
    """
    params = list(model.parameters())
    trained = sum(p.numel() for p in params if p.requires_grad)
    copies = sum(p.numel() for p in params) * 2 if use_bf16 else 0
    conf = model.config
    vocab = int(getattr(conf, "vocab_size", 0) or 0)

    def fixed_now() -> int:  # the resident part now + what training adds that does not grow
        return _rss_bytes() + 3 * 4 * trained + copies + 3 * 4 * CE_CHUNK * vocab

    fixed = fixed_now()
    longest = max(len(r.input_ids) for r in rows)
    mode = cfg.gradient_checkpointing
    if cfg.micro_batch_tokens is not None:  # set by hand: no estimate
        if mode == "on":
            _checkpointing(model, True)
        return MemoryPlan(cfg.micro_batch_tokens, mode == "on", fixed / 2**30, 0.0,
                          "micro_batch_tokens set")
    if cfg.max_memory_gb is None:  # nothing to fit: nothing measured
        if mode == "on":
            _checkpointing(model, True)
        return MemoryPlan(None, mode == "on", fixed / 2**30, 0.0, "no memory limit set")
    _return_freed_blocks()  # else the heap keeps what the graph freed (see there)
    plain = saved_bytes_per_token(model, pad_id, device, autocast, torch, longest)
    _trim_heap()  # what the probe's graph freed is not taken
    fixed = fixed_now()  # the probe's forward passes paged in every weight (safetensors mmap)

    # partial checkpointing needs transformers' per-layer switch; a model without it gets
    # every layer or none
    switchable = len(_decoder_layers(model))
    layers = switchable or int(getattr(conf, "num_hidden_layers", 1) or 1)

    def outside() -> float:  # bytes a token keeps outside the layers, every one checkpointed
        _checkpointing(model, True)
        return saved_bytes_per_token(model, pad_id, device, autocast, torch, longest)

    def with_some(k: int, out: float) -> float:  # the first k layers checkpointed: k/L of
        # the way from none to all (`out`), plus one layer's activations and gradients while
        # it is recomputed
        return SLACK * (plain - k * (plain - out) / layers + 2 * plain / layers)

    ckpt, some = mode == "on", None
    per_token = with_some(layers, outside()) if ckpt else SLACK * plain
    room = cfg.max_memory_gb * 2**30 - fixed
    if room >= cfg.batch_size * longest * per_token:
        return MemoryPlan(None, ckpt, fixed / 2**30, per_token / 1024, "whole batches fit",
                          gradients_first=True)
    if room < longest * per_token and not ckpt and mode == "auto":
        out = outside()
        target = min(cfg.batch_size * longest, max(longest, MIN_MICRO_TOKENS))
        some = next((k for k in range(1, switchable) if room >= target * with_some(k, out)),
                    None)
        ckpt = True
        per_token = with_some(some or layers, out)
        if some is not None:
            _checkpointing(model, True, some)
    budget = int(room / per_token) if per_token > 0 else cfg.batch_size * longest
    if budget < longest:
        raise LadderError(
            f"finetune.max_memory_gb = {cfg.max_memory_gb}: the weights and optimizer need "
            f"{fixed / 2**30:.2f} GiB and one {longest}-token example "
            f"{longest * per_token / 2**30:.2f} GiB more"
            + (" with activation checkpointing" if ckpt else "")
            + "; raise max_memory_gb or lower max_seq_len")
    which = ("" if not ckpt else " with activation checkpointing" if some is None
             else f" with activation checkpointing of {some} of {layers} layers")
    return MemoryPlan(budget, ckpt, fixed / 2**30, per_token / 1024,
                      f"micro-batches of at most {budget} tokens{which}", some,
                      gradients_first=True)


def _decoder_layers(model: Any) -> list[Any]:
    """The model's checkpointable decoder layers (transformers' GradientCheckpointingLayer),
    in order."""
    layer = require("transformers.modeling_layers", "finetune").GradientCheckpointingLayer
    return [m for m in _inner(model).modules() if isinstance(m, layer)]


def _checkpointing(model: Any, on: bool, layers: int | None = None) -> None:
    """Activation checkpointing (non-reentrant) of the first `layers` decoder layers, or of
    every one; off with `on` False."""
    inner = _inner(model)
    if not on:
        inner.activation_checkpointing_disable()
        return
    inner.activation_checkpointing_enable(activation_checkpointing_kwargs={
        "use_reentrant": False})
    if layers is not None:
        for i, layer in enumerate(_decoder_layers(model)):
            layer.gradient_checkpointing = i < layers
    if hasattr(model, "get_base_model"):  # PEFT: frozen embeddings, yet a graph to recompute
        inner.enable_input_require_grads()


def split_batch(batch: list[int], lengths: list[int], micro_tokens: int | None) -> list[list[int]]:
    """The rows of one batch in micro-batches whose padded size (rows x longest row) stays
    within `micro_tokens`; in order, so the same batch always splits the same way."""
    if micro_tokens is None:
        return [batch]
    out: list[list[int]] = [[]]
    width = 0
    for i in batch:
        w = max(width, lengths[i])
        if out[-1] and (len(out[-1]) + 1) * w > micro_tokens:
            out.append([])
            w = lengths[i]
        out[-1].append(i)
        width = w
    return out


def _trainable(model: Any) -> dict[str, Any]:
    """The trained parameters by name; a tied weight (SmolLM2's lm_head is embed_tokens)
    appears once, under its first name, as `named_parameters` lists it."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _weights_file(model: Any) -> str:
    """The checkpoint file of the trained weights: the LoRA layers, or the whole model."""
    return "lora.safetensors" if hasattr(model, "get_base_model") else "weights.safetensors"


def _save_checkpoint(work: Path, step: int, model: Any, opt: Any, state: dict[str, Any],
                     best: dict[str, Any] | None, torch: Any) -> None:
    from safetensors.torch import save_file

    final = work / f"ckpt-{step:06d}"
    tmp = work / f".ckpt-{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    names = list(_trainable(model))
    save_file({n: p.detach().cpu().contiguous() for n, p in _trainable(model).items()},
              tmp / _weights_file(model))
    if best is not None:
        save_file(best, tmp / "best.safetensors")
    opt_state = opt.state_dict()
    tensors = {}
    for i, st in opt_state["state"].items():
        for k, v in st.items():
            tensors[f"{i}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).cpu()
    save_file(tensors, tmp / "optimizer.safetensors")
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"cuda{i}"] = s
    save_file(rng, tmp / "rng.safetensors")
    meta = {**state, "param_names": names, "param_groups": [
        {k: v for k, v in g.items() if k != "params"} for g in opt_state["param_groups"]]}
    (tmp / "state.json").write_text(json.dumps(meta), encoding="utf-8")
    fsync_tree(tmp)  # on disk before the rename makes it "complete"
    tmp.rename(final)  # only a complete checkpoint carries the final name
    fsync_dir(work)
    for old in sorted(work.glob("ckpt-*"))[:-2]:  # keep the newest two
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(work: Path) -> Path | None:
    done = [p for p in sorted(work.glob("ckpt-*")) if (p / "state.json").is_file()]
    return done[-1] if done else None


def _load_checkpoint(ckpt: Path, model: Any, opt: Any, torch: Any) -> tuple[dict, dict | None]:
    from safetensors.torch import load_file

    state = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
    params = _trainable(model)
    if state["param_names"] != list(params):
        raise LadderError(f"{ckpt}: checkpoint does not match this model and LoRA config")
    weights = load_file(ckpt / _weights_file(model))
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(weights[n].to(p.device))
    tensors = load_file(ckpt / "optimizer.safetensors")
    opt_state: dict[str, Any] = {"state": {}, "param_groups": []}
    for key, v in tensors.items():
        i, k = key.split(".", 1)
        opt_state["state"].setdefault(int(i), {})[k] = v
    groups = opt.state_dict()["param_groups"]
    for g, saved in zip(groups, state["param_groups"], strict=True):
        opt_state["param_groups"].append({**saved, "params": g["params"]})
    opt.load_state_dict(opt_state)
    rng = load_file(ckpt / "rng.safetensors")
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available():
        torch.cuda.set_rng_state_all([rng[k] for k in sorted(rng) if k.startswith("cuda")])
    best = load_file(ckpt / "best.safetensors") if (ckpt / "best.safetensors").is_file() \
        else None
    return state, best


def _dev_loss(model: Any, rows: list[TrainRow], bs: int, pad: int, device: str,
              autocast: Any, torch: Any, pair_cost: float | None) -> float:
    model.eval()
    total, count = 0.0, 0
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].input_ids))
    with torch.no_grad():
        for s in range(0, len(order), bs):
            part = [rows[i] for i in order[s : s + bs]]
            batch = collate(part, pad, torch, pack_prefix(part, pair_cost))
            n = int((batch["labels"][:, 1:] != IGNORE).sum())
            with autocast():
                loss = completion_loss(model, batch, n, device, torch)
            total += float(loss) * n
            count += n
    model.train()
    return total / max(count, 1)


def train(folder: Path, cfg: FinetuneConfig, rows: list[TrainRow], dev: list[TrainRow],
          pad_id: int, work: Path, out: Path, resume: bool = False,
          on_step: OnStep | None = None, max_steps: int | None = None,
          method: str = "lora") -> tuple[TrainResult, Path]:
    """Train LoRA (or, with `method` "full", every weight) on `rows` (early stopping on `dev`
    when given).

    `work` holds checkpoints. The adapter (for "full": the whole model folder, safetensors) is
    written next to `out` under a temporary name, which is returned with the result; the
    caller renames it to `out` when it is complete. `max_steps` stops early on purpose
    (benchmarks, tests); the schedule is unchanged.
    """
    torch = require("torch", "local")
    torch.manual_seed(cfg.seed)
    model, device, dtype, quantize = load_base(folder, cfg, method=method)
    model.train()
    params = list(_trainable(model).values())
    peak_lr = cfg.full_learning_rate if method == "full" else cfg.learning_rate
    # the fused kernel: one pass over all parameters instead of a loop of small ops per
    # tensor (420 LoRA tensors: 31 -> 7 ms a step on 2 cores); the same update and state
    opt = torch.optim.AdamW(params, lr=peak_lr, weight_decay=cfg.weight_decay,
                            fused=device in ("cpu", "cuda"))
    batches = schedule([len(r.input_ids) for r in rows], cfg.batch_size, cfg.epochs, cfg.seed)
    total_steps = math.ceil(len(batches) / cfg.grad_accum)
    warmup = int(cfg.warmup_ratio * total_steps)

    def lr_at(step: int) -> float:  # linear warmup, then linear decay to 0
        if step < warmup:
            return peak_lr * (step + 1) / warmup
        return peak_lr * max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    use_bf16 = dtype == "bfloat16" and not quantize

    def autocast():
        return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=use_bf16)

    plan = plan_memory(cfg, model, rows, pad_id, device, use_bf16, autocast, torch)
    if plan.gradients_first:  # before any activation, so they do not fragment the heap
        for p in params:
            p.grad = torch.zeros_like(p)
    pair_cost = attention_pair_cost(model) if cfg.packing else None
    lengths = [len(r.input_ids) for r in rows]
    state: dict[str, Any] = {"step": 0, "best_dev_loss": None, "best_step": 0, "bad_evals": 0,
                             "history": [], "train_tokens": 0, "model_tokens": 0, "seconds": 0.0,
                             "stopped_early": False}
    best: dict[str, Any] | None = None
    resumed_from = None
    if resume and (ckpt := latest_checkpoint(work)) is not None:
        state, best = _load_checkpoint(ckpt, model, opt, torch)
        resumed_from = state["step"]
        if on_step:
            on_step({"resumed": resumed_from, "checkpoint": str(ckpt)})
    elif work.exists():
        if (old := latest_checkpoint(work)) is not None and on_step:
            on_step({"warning": f"discarding an unfinished training ({old.name}); pass "
                                "--resume to continue it instead"})
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter() - state["seconds"]
    t_resume = time.perf_counter()
    t_window, tok_window = time.perf_counter(), 0
    step = state["step"]
    limit = min(total_steps, max_steps or total_steps)
    while step < limit and not state["stopped_early"]:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        micro = [m for b in batches[step * cfg.grad_accum : (step + 1) * cfg.grad_accum]
                 for m in split_batch(b, lengths, plan.micro_tokens)]
        groups = [[rows[i] for i in b] for b in micro]
        parts = [collate(g, pad_id, torch, pack_prefix(g, pair_cost)) for g in groups]
        n_items = sum(int((p["labels"][:, 1:] != IGNORE).sum()) for p in parts)
        loss_sum = 0.0
        for p in parts:
            with autocast():
                loss = completion_loss(model, p, n_items, device, torch)
            loss.backward()
            loss_sum += float(loss.detach())
            state["train_tokens"] += p["tokens"]
            state["model_tokens"] = state.get("model_tokens", 0) + p["input_ids"].numel()
            tok_window += p["tokens"]
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=not plan.gradients_first)
        t_trained = time.perf_counter()  # the progress rate leaves out dev loss and checkpoint
        step += 1
        state["step"] = step
        record: dict[str, Any] = {"step": step, "loss": round(loss_sum, 5), "lr": lr_at(step - 1)}
        if dev and (step % cfg.eval_every == 0 or step == limit):
            dl = _dev_loss(model, dev, cfg.batch_size, pad_id, device, autocast, torch,
                           pair_cost)
            record["dev_loss"] = round(dl, 5)
            if state["best_dev_loss"] is None or dl < state["best_dev_loss"] - 1e-4:
                state.update(best_dev_loss=dl, best_step=step, bad_evals=0)
                best = {n: p.detach().cpu().clone() for n, p in _trainable(model).items()}
            else:
                state["bad_evals"] += 1
                if state["bad_evals"] >= cfg.patience:
                    state["stopped_early"] = True
        state["history"].append(record)
        now = time.perf_counter()
        state["seconds"] = now - t_start
        if on_step:
            rate = tok_window / max(t_trained - t_window, 1e-9)
            done = step - (resumed_from or 0)
            eta = (limit - step) * (now - t_resume) / done if done else None
            on_step({**record, "total": limit, "tokens_per_s": rate, "eta_s": eta})
        if step % cfg.save_every == 0 and step < limit and not state["stopped_early"]:
            _save_checkpoint(work, step, model, opt, state, best, torch)
        t_window, tok_window = time.perf_counter(), 0
    if best is not None:  # early stopping keeps the weights with the lowest dev loss
        with torch.no_grad():
            for n, p in _trainable(model).items():
                p.copy_(best[n].to(p.device))
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)  # ties lm_head to embed_tokens again
    if method == "lora":
        _point_at_base(tmp, folder)
    seconds = state["seconds"]
    result = TrainResult(
        steps=step, total_steps=total_steps, best_step=state["best_step"] or step,
        best_dev_loss=state["best_dev_loss"], stopped_early=state["stopped_early"],
        resumed_from=resumed_from, seconds=seconds, train_tokens=state["train_tokens"],
        model_tokens=state.get("model_tokens", 0),
        tokens_per_s=state["train_tokens"] / max(seconds, 1e-9),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        device=device, dtype=dtype, quantized=quantize, history=state["history"],
        memory=asdict(plan))
    (tmp / "training.json").write_text(json.dumps(result.as_dict(), indent=1),
                                       encoding="utf-8")
    return result, tmp


def _point_at_base(adapter: Path, base: Path) -> None:
    """Record the base weights folder in adapter_config.json (PEFT loads from it)."""
    p = adapter / "adapter_config.json"
    conf = json.loads(p.read_text(encoding="utf-8"))
    conf["base_model_name_or_path"] = str(base)
    p.write_text(json.dumps(conf, indent=2), encoding="utf-8")
