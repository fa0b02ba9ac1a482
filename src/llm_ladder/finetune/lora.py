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

Why a hand-written loop rather than transformers' Trainer: Trainer checkpoints pickle the
optimizer and RNG state, and its default collator pads random batches; this loop is measured
against Trainer + PEFT in bench/bench_train.py. Deliberately skipped: multi-device training
(see docs/finetune.md for the accelerate/torchrun route), packing, gradient checkpointing.
"""

from __future__ import annotations

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
from llm_ladder.finetune.data import IGNORE, TrainRow
from llm_ladder.finetune.registry import fsync_dir, fsync_tree
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
    train_tokens: int
    tokens_per_s: float
    peak_rss_mb: float
    device: str
    dtype: str
    quantized: bool
    history: list[dict[str, Any]] = field(default_factory=list)

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


def collate(rows: list[TrainRow], pad_id: int, torch: Any) -> dict[str, Any]:
    """Right-padded tensors; padding has attention 0 and label -100."""
    width = max(len(r.input_ids) for r in rows)
    ids = [r.input_ids + [pad_id] * (width - len(r.input_ids)) for r in rows]
    labels = [r.labels + [IGNORE] * (width - len(r.labels)) for r in rows]
    mask = [[1] * len(r.input_ids) + [0] * (width - len(r.input_ids)) for r in rows]
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask),
            "labels": torch.tensor(labels)}


def cpu_has_bf16() -> bool:
    """Whether this CPU does bf16 dot products natively (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


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


def load_base(folder: Path, cfg: FinetuneConfig, trust_remote_code: bool = False):
    """The base model with fresh LoRA layers (PEFT), on the picked device and precision."""
    torch = require("torch", "local")
    transformers = require("transformers", "local")
    peft = require("peft", "finetune")
    device, dtype, quantize = pick_precision(cfg)
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
        model = peft.prepare_model_for_kbit_training(model)
    elif device != "cpu":
        model.to(device)
    lora = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                           target_modules=cfg.target_modules, bias="none",
                           task_type="CAUSAL_LM")
    try:
        model = peft.get_peft_model(model, lora)
    except ValueError as e:
        raise LadderError(f"finetune.target_modules: {e}") from None
    return model, device, dtype, quantize


def completion_loss(model: Any, batch: dict[str, Any], n_items: int, device: str,
                    torch: Any) -> Any:
    """Summed cross-entropy over the completion tokens, divided by `n_items`.

    The LM head (49k-way for SmolLM2; a quarter of the model's compute per token) runs only
    at the positions that predict a completion token, not at every prompt position.
    """
    inner = model.get_base_model()
    ids = batch["input_ids"].to(device)
    hidden = inner.model(input_ids=ids,
                         attention_mask=batch["attention_mask"].to(device)).last_hidden_state
    target = batch["labels"][:, 1:].to(device)
    keep = target != IGNORE
    logits = inner.lm_head(hidden[:, :-1][keep]).float()
    return torch.nn.functional.cross_entropy(logits, target[keep], reduction="sum") / n_items


def _trainable(model: Any) -> dict[str, Any]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _save_checkpoint(work: Path, step: int, model: Any, opt: Any, state: dict[str, Any],
                     best: dict[str, Any] | None, torch: Any) -> None:
    from safetensors.torch import save_file

    final = work / f"ckpt-{step:06d}"
    tmp = work / f".ckpt-{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    names = list(_trainable(model))
    save_file({n: p.detach().cpu().contiguous() for n, p in _trainable(model).items()},
              tmp / "lora.safetensors")
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
    weights = load_file(ckpt / "lora.safetensors")
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
              autocast: Any, torch: Any) -> float:
    model.eval()
    total, count = 0.0, 0
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].input_ids))
    with torch.no_grad():
        for s in range(0, len(order), bs):
            batch = collate([rows[i] for i in order[s : s + bs]], pad, torch)
            n = int((batch["labels"][:, 1:] != IGNORE).sum())
            with autocast():
                loss = completion_loss(model, batch, n, device, torch)
            total += float(loss) * n
            count += n
    model.train()
    return total / max(count, 1)


def train(folder: Path, cfg: FinetuneConfig, rows: list[TrainRow], dev: list[TrainRow],
          pad_id: int, work: Path, out: Path, resume: bool = False,
          on_step: OnStep | None = None,
          max_steps: int | None = None) -> tuple[TrainResult, Path]:
    """Train LoRA on `rows` (early stopping on `dev` when given).

    `work` holds checkpoints. The adapter is written next to `out` under a temporary name,
    which is returned with the result; the caller renames it to `out` when it is complete.
    `max_steps` stops early on purpose (benchmarks, tests); the schedule is unchanged.
    """
    torch = require("torch", "local")
    torch.manual_seed(cfg.seed)
    model, device, dtype, quantize = load_base(folder, cfg)
    model.train()
    params = list(_trainable(model).values())
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    batches = schedule([len(r.input_ids) for r in rows], cfg.batch_size, cfg.epochs, cfg.seed)
    total_steps = math.ceil(len(batches) / cfg.grad_accum)
    warmup = int(cfg.warmup_ratio * total_steps)

    def lr_at(step: int) -> float:  # linear warmup, then linear decay to 0
        if step < warmup:
            return cfg.learning_rate * (step + 1) / warmup
        return cfg.learning_rate * max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    use_bf16 = dtype == "bfloat16" and not quantize

    def autocast():
        return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=use_bf16)

    state: dict[str, Any] = {"step": 0, "best_dev_loss": None, "best_step": 0, "bad_evals": 0,
                             "history": [], "train_tokens": 0, "seconds": 0.0,
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
        micro = batches[step * cfg.grad_accum : (step + 1) * cfg.grad_accum]
        parts = [collate([rows[i] for i in b], pad_id, torch) for b in micro]
        n_items = sum(int((p["labels"][:, 1:] != IGNORE).sum()) for p in parts)
        loss_sum = 0.0
        for p in parts:
            with autocast():
                loss = completion_loss(model, p, n_items, device, torch)
            loss.backward()
            loss_sum += float(loss.detach())
            tokens = int(p["attention_mask"].sum())
            state["train_tokens"] += tokens
            tok_window += tokens
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        state["step"] = step
        record: dict[str, Any] = {"step": step, "loss": round(loss_sum, 5), "lr": lr_at(step - 1)}
        if dev and (step % cfg.eval_every == 0 or step == limit):
            dl = _dev_loss(model, dev, cfg.batch_size, pad_id, device, autocast, torch)
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
            rate = tok_window / max(now - t_window, 1e-9)
            done = step - (resumed_from or 0)
            eta = (limit - step) * (now - t_resume) / done if done else None
            on_step({**record, "total": limit, "tokens_per_s": rate, "eta_s": eta})
        t_window, tok_window = now, 0
        if step % cfg.save_every == 0 and step < limit and not state["stopped_early"]:
            _save_checkpoint(work, step, model, opt, state, best, torch)
    if best is not None:  # early stopping keeps the weights with the lowest dev loss
        with torch.no_grad():
            for n, p in _trainable(model).items():
                p.copy_(best[n].to(p.device))
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    _point_at_base(tmp, folder)
    seconds = state["seconds"]
    result = TrainResult(
        steps=step, total_steps=total_steps, best_step=state["best_step"] or step,
        best_dev_loss=state["best_dev_loss"], stopped_early=state["stopped_early"],
        resumed_from=resumed_from, seconds=seconds, train_tokens=state["train_tokens"],
        tokens_per_s=state["train_tokens"] / max(seconds, 1e-9),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        device=device, dtype=dtype, quantized=quantize, history=state["history"])
    (tmp / "training.json").write_text(json.dumps(result.as_dict(), indent=1),
                                       encoding="utf-8")
    return result, tmp


def _point_at_base(adapter: Path, base: Path) -> None:
    """Record the base weights folder in adapter_config.json (PEFT loads from it)."""
    p = adapter / "adapter_config.json"
    conf = json.loads(p.read_text(encoding="utf-8"))
    conf["base_model_name_or_path"] = str(base)
    p.write_text(json.dumps(conf, indent=2), encoding="utf-8")
