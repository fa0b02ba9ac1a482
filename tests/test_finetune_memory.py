"""LoRA memory (issue 13) with the real SmolLM2-135M: `max_memory_gb` splits a batch into
micro-batches by a token budget and the loss and gradients equal the unsplit batch's; the
chunked loss over many completion positions equals the unchunked one; checkpointing gives
the same gradients. The peak-memory figure itself (8 x 512 tokens under 2 GiB) is measured by
bench/bench_train_memory.py: one such step takes minutes on this CPU, too long for a test."""

from __future__ import annotations

import random

import pytest

from llm_ladder.finetune.data import IGNORE, TrainRow
from llm_ladder.task import FinetuneConfig

pytestmark = pytest.mark.slow


def rows(n: int = 8) -> list[TrainRow]:
    """Rows of different lengths (36..57 tokens), the last 34 of each the completion, so one
    batch of 8 has 272 completion positions: more than one CE_CHUNK."""
    rng = random.Random(0)
    out = []
    for i in range(n):
        ids = [rng.randrange(100, 49000) for _ in range(36 + 3 * i)]
        out.append(TrainRow(f"r{i}", ids, [IGNORE] * (len(ids) - 34) + ids[-34:]))
    return out


def config(**kw) -> FinetuneConfig:
    return FinetuneConfig(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"],
                          dtype="float32", batch_size=8, epochs=1, **kw)


@pytest.fixture(scope="module")
def base():
    from llm_ladder.models.local import resolve_weights

    return resolve_weights("smollm2-135m", None)


def grads(model, data: list[TrainRow], parts: list[list[int]], torch) -> tuple[float, dict]:
    """Loss and gradients of one optimizer step over `parts` (lists of row indices), computed
    as the training loop does: each part's loss divided by the whole batch's completion
    tokens, the backward passes accumulated."""
    from llm_ladder.finetune.lora import collate, completion_loss

    model.zero_grad(set_to_none=True)
    batches = [collate([data[i] for i in p], 0, torch) for p in parts]
    n = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches)
    total = 0.0
    for b in batches:
        loss = completion_loss(model, b, n, "cpu", torch)
        loss.backward()
        total += float(loss.detach())
    return total, {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


def close(a: dict, b: dict, tol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max().item() < tol, k


def test_max_memory_splits_the_batch_and_the_step_is_unchanged(base):
    import contextlib

    import torch

    from llm_ladder.finetune.lora import (
        SLACK,
        load_base,
        plan_memory,
        saved_bytes_per_token,
        split_batch,
    )

    torch.manual_seed(0)
    model, device, _, _ = load_base(base, config())
    model.train()
    data = rows()
    whole = list(range(8))
    loss1, g1 = grads(model, data, [whole], torch)  # 320 completion positions: chunked CE

    def plan(limit):
        return plan_memory(config(max_memory_gb=limit), model, data, 0, device, False,
                           contextlib.nullcontext, torch)

    fixed = plan(None).fixed_gb
    longest = max(len(r.input_ids) for r in data)
    per_token = SLACK * saved_bytes_per_token(model, 0, device, contextlib.nullcontext, torch,
                                              longest)
    assert per_token > 500_000  # ~2 MB per token in float32: 30 layers x ~70 kB
    # room for about 2.5 of the longest rows: the plan splits the batch without checkpointing
    p = plan(fixed + 2.5 * longest * per_token / 2**30)
    assert p.micro_tokens is not None and not p.checkpointing
    parts = split_batch(whole, [len(r.input_ids) for r in data], p.micro_tokens)
    assert 2 < len(parts) < 8 and sorted(i for q in parts for i in q) == whole
    assert all(len(q) * max(len(data[i].input_ids) for i in q) <= p.micro_tokens for q in parts)
    loss2, g2 = grads(model, data, parts, torch)
    assert abs(loss1 - loss2) < 1e-5
    close(g1, g2)
    # whole batches when they fit
    assert plan(fixed + 20 * 8 * longest * per_token / 2**30).micro_tokens is None
    # less room than one row: checkpointing is turned on, and the gradients stay the same
    p = plan(fixed + 0.5 * longest * per_token / 2**30)
    assert p.checkpointing and p.micro_tokens is not None
    inner = model.get_base_model()
    assert inner.is_activation_checkpointing
    _, g3 = grads(model, data, split_batch(whole, [len(r.input_ids) for r in data],
                                           p.micro_tokens), torch)
    close(g1, g3)


def test_training_with_a_memory_limit_reports_the_same_losses(base, tmp_path):
    """The loop itself: a step in micro-batches (the budget set by hand here: what
    max_memory_gb picks depends on this process's resident memory) reports the unsplit
    step's loss."""
    from llm_ladder.finetune.lora import train

    data = rows()
    plain, _ = train(base, config(), data, [], 0, tmp_path / "w1", tmp_path / "a")
    split, _ = train(base, config(micro_batch_tokens=120), data, [], 0, tmp_path / "w2",
                     tmp_path / "b")
    assert plain.memory["micro_tokens"] is None
    assert split.memory["micro_tokens"] == 120
    assert [h["loss"] for h in plain.history] == pytest.approx(
        [h["loss"] for h in split.history], abs=1e-4)
