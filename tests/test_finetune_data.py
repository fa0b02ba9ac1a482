"""Training data: completion-only labels with the model's own chat template, and the checks
that run before any training (too few, too long, duplicates, conflicts); batches padded or
packed with their shared prompt prefix once (same loss and gradients)."""

from __future__ import annotations

import pytest

from llm_ladder.data import Example
from llm_ladder.errors import LadderError
from llm_ladder.finetune.data import IGNORE, TrainRow, build_rows, data_hash, encode
from llm_ladder.finetune.lora import collate, pack_prefix, schedule, shared_prefix


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from llm_ladder.models.local import resolve_weights

    return AutoTokenizer.from_pretrained(resolve_weights("smollm2-135m", None))


def user(text: str):
    return [{"role": "user", "content": text}]


def test_labels_cover_the_answer_and_end_of_turn_only(tok):
    prompt = [{"role": "system", "content": "Label it."}] + user("Is a deck permit needed?")
    ids, labels = encode(tok, prompt, "altan-staket-plank")
    head = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                   return_dict=True)["input_ids"]
    # the prompt part is exactly what inference sends (same template, same tokens)
    assert ids[: len(head)] == list(head)
    assert all(t == IGNORE for t in labels[: len(head)])
    learned = [t for t in labels if t != IGNORE]
    assert tok.decode(learned) == "altan-staket-plank<|im_end|>"
    assert learned[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert len(ids) == len(labels)


def test_checks_report_and_never_cut(tok):
    exs = [Example("a", "short question", "yes"),
           Example("b", "short question", "yes"),            # exact duplicate of a
           Example("c", "short question", "no"),             # conflicts with a
           Example("d", "word " * 300, "long"),              # longer than max_seq_len
           Example("e", "another question", "   "),          # nothing to learn
           Example("f", "a third question", "maybe")]
    rows, rep = build_rows(exs, user, tok, max_seq_len=128, min_examples=50)
    assert [r.id for r in rows] == ["a", "c", "f"]
    assert rep.duplicates == ["b"]
    assert rep.conflicts == [["a", "c"]]
    assert rep.empty == ["e"]
    assert [i for i, _ in rep.too_long] == ["d"] and rep.too_long[0][1] > 128
    text = " ".join(rep.warnings)
    assert "longer than max_seq_len 128" in text and "never cut" in text
    assert "only 3 usable train example(s)" in text and "at least 50" in text
    assert all(len(r.input_ids) <= 128 for r in rows)


def test_nothing_left_is_an_error(tok):
    with pytest.raises(LadderError, match="no usable train examples"):
        build_rows([Example("d", "word " * 300, "x")], user, tok, 64, 1)


def test_data_hash_depends_on_content_not_order(tok):
    exs = [Example("a", "q1", "x"), Example("b", "q2", "y")]
    r1, _ = build_rows(exs, user, tok, 128, 1)
    r2, _ = build_rows(exs[::-1], user, tok, 128, 1)
    r3, _ = build_rows([Example("a", "q1", "x"), Example("b", "q2", "z")], user, tok, 128, 1)
    assert data_hash(r1) == data_hash(r2) != data_hash(r3)


def test_schedule_is_seeded_length_grouped_and_complete():
    lengths = [((i * 37) % 101) + 5 for i in range(200)]
    a = schedule(lengths, 8, 2, seed=3)
    assert a == schedule(lengths, 8, 2, seed=3)
    assert a != schedule(lengths, 8, 2, seed=4)
    per_epoch = len(a) // 2
    for epoch in (a[:per_epoch], a[per_epoch:]):
        assert sorted(i for b in epoch for i in b) == list(range(200))
    # grouping by length: far less padding than random batches of the same size
    def pad(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b)
                   for b in batches)
    import random

    order = list(range(200))
    random.Random(0).shuffle(order)
    rand = [order[j : j + 8] for j in range(0, 200, 8)]
    assert pad(a[:per_epoch]) < 0.25 * pad(rand)
    half = schedule(lengths, 8, 1.5, seed=3)
    assert sum(len(b) for b in half) == 300


def test_collate_pads_right_with_ignored_labels(tok):
    import torch

    rows, _ = build_rows([Example("a", "q", "x"), Example("b", "a much longer question here",
                                                          "y")], user, tok, 128, 1)
    batch = collate(rows, tok.eos_token_id, torch)
    short = min(range(2), key=lambda i: len(rows[i].input_ids))
    n = len(rows[short].input_ids)
    assert batch["attention_mask"][short, n:].sum() == 0
    assert (batch["labels"][short, n:] == IGNORE).all()
    assert batch["input_ids"].shape == batch["labels"].shape


def test_completion_loss_equals_the_full_logits_loss(tok):
    """Computing the LM head only where a completion token is predicted changes nothing."""
    import torch

    from llm_ladder.finetune.lora import completion_loss, load_base
    from llm_ladder.models.local import resolve_weights
    from llm_ladder.task import FinetuneConfig

    torch.manual_seed(0)
    model, device, _, _ = load_base(resolve_weights("smollm2-135m", None),
                                    FinetuneConfig(r=4, target_modules=["q_proj", "v_proj"]))
    rows, _ = build_rows([Example("a", "Is a permit needed for a deck?", "altan-staket-plank"),
                          Example("b", "Fence?", "altan-staket-plank")], user, tok, 256, 1)
    batch = collate(rows, tok.eos_token_id, torch)
    n = int((batch["labels"][:, 1:] != IGNORE).sum())
    with torch.no_grad():
        ours = completion_loss(model, batch, n, device, torch)
        reference = model(**batch, num_items_in_batch=n).loss
    assert abs(float(ours) - float(reference)) < 1e-4


def test_a_pickled_adapter_is_refused(tmp_path):
    from llm_ladder.models.local import TransformersModel

    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(LadderError, match="only safetensors"):
        TransformersModel(adapter=str(tmp_path))


def test_the_end_of_turn_id_is_looked_up_once_per_build(tok, monkeypatch):
    # get_vocab() copies the whole vocabulary (2 s a call for Gemma's 262k entries): once per
    # build_rows, not once per example
    calls = []
    real = type(tok).get_vocab

    def counted(self):
        calls.append(1)
        return real(self)

    monkeypatch.setattr(type(tok), "get_vocab", counted)
    exs = [Example(id=f"e{i}", input=f"question number {i}?", output=f"label-{i}")
           for i in range(12)]
    rows, _ = build_rows(exs, user, tok, 256, 1)
    assert len(rows) == 12
    assert len(calls) == 1


FAQ = [("Is a permit needed for a deck?", "altan-staket-plank"),
       ("Fence?", "altan-staket-plank"),
       ("Can I put a shed of 15 square metres in my garden without asking?", "friggebod"),
       ("Who decides on a new window in a listed building?", "k-markt"),
       ("Do I need a permit to repaint my facade another colour?", "fasad")]


def test_shared_prefix_stops_where_the_loss_begins():
    a = TrainRow("a", [1, 2, 3, 4, 5, 6], [IGNORE] * 4 + [5, 6])
    b = TrainRow("b", [1, 2, 3, 9, 5, 6, 7], [IGNORE] * 5 + [6, 7])
    assert shared_prefix([a, b]) == 3
    # identical rows: the prefix ends before the position that predicts the first label,
    # so its outputs feed no loss term and each row keeps tokens of its own
    assert shared_prefix([a, TrainRow("c", a.input_ids, a.labels)]) == 3
    assert shared_prefix([a, TrainRow("d", [7, 2, 3], [IGNORE, 2, 3])]) == 0


def test_packing_is_chosen_for_short_rows_with_a_shared_prefix_only():
    prefix = list(range(100, 124))
    short = [TrainRow(str(i), prefix + [i] * 20, [IGNORE] * 34 + [i] * 10) for i in range(8)]
    long = [TrainRow(str(i), prefix + [i] * 500, [IGNORE] * 400 + [i] * 124) for i in range(8)]
    smollm2 = 1 / 2048  # attention_pair_cost of SmolLM2-135M: 3 x 576 / 3.54M
    assert pack_prefix(short, smollm2) == 24
    # one sequence of ~4,000 tokens would cost more in attention than the prefix saves
    assert pack_prefix(long, smollm2) is None
    assert pack_prefix(short[:1], smollm2) is None
    assert pack_prefix(short, None) is None


def test_a_packed_row_sees_the_prefix_and_itself_only(tok):
    import torch

    rows, _ = build_rows([Example(str(i), q, a) for i, (q, a) in enumerate(FAQ[:3])], user,
                         tok, 256, 1)
    p = shared_prefix(rows)
    batch = collate(rows, tok.eos_token_id, torch, p)
    mask = batch["packed_mask"][0, 0]
    n = [len(r.input_ids) - p for r in rows]
    assert batch["input_ids"].shape == (1, p + sum(n)) == batch["labels"].shape
    assert batch["tokens"] == sum(len(r.input_ids) for r in rows)
    first, second = p, p + n[0]  # where rows 0 and 1 start after the prefix
    assert mask[second, :p].all() and mask[second, second]
    assert not mask[second, first:second].any()  # row 1 never sees row 0
    assert not mask[first, first + 1:].any()  # causal
    assert batch["position_ids"][0, second].item() == p  # row 1's positions restart
    assert batch["labels"][0, second].item() == IGNORE  # the shift never crosses rows
    assert batch["input_ids"][0, second:second + n[1]].tolist() == rows[1].input_ids[p:]


def test_a_packed_batch_gives_the_padded_loss_and_gradients(tok):
    """Packing with the prefix once changes nothing but float rounding (no dropout)."""
    import torch

    from llm_ladder.finetune.lora import attention_pair_cost, completion_loss, load_base
    from llm_ladder.models.local import resolve_weights
    from llm_ladder.task import FinetuneConfig

    torch.manual_seed(0)
    model, device, _, _ = load_base(resolve_weights("smollm2-135m", None), FinetuneConfig(
        r=4, dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"]))
    for name, w in model.named_parameters():
        if "lora_B" in name:  # B starts at 0, which would leave A without a gradient
            torch.nn.init.normal_(w, std=0.02)
    rows, _ = build_rows([Example(str(i), q, a) for i, (q, a) in enumerate(FAQ)], user,
                         tok, 256, 1)
    config = model.get_base_model().config
    kinds = getattr(config, "layer_types", None)
    # a model with sliding-window layers is never packed (the packed mask has no window)
    config.layer_types = ["sliding_attention"] * config.num_hidden_layers
    assert attention_pair_cost(model) is None
    config.layer_types = kinds
    prefix = pack_prefix(rows, attention_pair_cost(model))
    assert prefix is not None and prefix >= 20  # the chat template's system prompt
    params = [w for w in model.parameters() if w.requires_grad]
    results = []
    for layout in (None, prefix):
        batch = collate(rows, tok.eos_token_id, torch, layout)
        n = int((batch["labels"][:, 1:] != IGNORE).sum())
        model.zero_grad()
        loss = completion_loss(model, batch, n, device, torch)
        loss.backward()
        results.append((float(loss), n, [w.grad.clone() for w in params]))
    (padded, n_pad, g_pad), (packed, n_pack, g_pack) = results
    assert n_pad == n_pack
    assert abs(packed - padded) < 1e-5 * abs(padded)
    for a, b in zip(g_pad, g_pack, strict=True):
        assert (a - b).abs().max() <= 1e-4 * a.abs().max()
