"""Training examples for LoRA: the exact prompt the rung sends at inference, plus the answer.

Each example is tokenized with the model's own chat template: the prompt part is what
`apply_chat_template(..., add_generation_prompt=True)` gives at inference (so training and
serving see the same tokens), the completion is the assistant turn up to and including the
end-of-turn token, and the loss is on the completion only (prompt labels are -100).

Checks before any training (each reported, none silent): too few examples; examples longer
than `max_seq_len` (dropped and counted, never cut); exact duplicates (dropped); conflicts
(same input, different outputs: kept, reported). Train/test leakage is removed earlier by
`splits.decontaminate`; its counts are passed through. Deliberately skipped: packing several
examples into one sequence (needs a varlen attention kernel the CPU path lacks); batches are
length-grouped instead.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llm_ladder.data import Example, Messages
from llm_ladder.errors import LadderError

IGNORE = -100


@dataclass
class TrainRow:
    id: str
    input_ids: list[int]
    labels: list[int]

    @property
    def completion_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


@dataclass
class DataReport:
    """What the checks found; `warnings` are sentences for the user."""

    given: int = 0
    kept: int = 0
    too_long: list[tuple[str, int]] = field(default_factory=list)  # (id, tokens)
    duplicates: list[str] = field(default_factory=list)
    conflicts: list[list[str]] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tokens: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"given": self.given, "kept": self.kept, "too_long": self.too_long,
                "duplicates": self.duplicates, "conflicts": self.conflicts,
                "empty": self.empty, "warnings": self.warnings, "tokens": self.tokens}


def _key(inp: str | Messages) -> str:
    return json.dumps(inp, sort_keys=True, ensure_ascii=False)


def end_of_turn(tokenizer: Any) -> int | None:
    """The id that ends an assistant turn: ChatML's `<|im_end|>` when the vocabulary has it,
    else the end-of-sequence id. Look it up once per tokenizer: `get_vocab()` builds a dict
    of the whole vocabulary (2 s for Gemma's 262k entries on a busy 2-core machine)."""
    return (tokenizer.convert_tokens_to_ids("<|im_end|>")
            if "<|im_end|>" in tokenizer.get_vocab() else tokenizer.eos_token_id)


def encode(tokenizer: Any, prompt: Messages, answer: str,
           eot: int | None = None) -> tuple[list[int], list[int]]:
    """input_ids and labels for prompt + answer; loss on the answer and end-of-turn only.
    `eot` is `end_of_turn(tokenizer)`, looked up here when not given."""
    head = list(tokenizer.apply_chat_template(prompt, add_generation_prompt=True,
                                              tokenize=True, return_dict=True)["input_ids"])
    full = list(tokenizer.apply_chat_template(
        prompt + [{"role": "assistant", "content": answer}], tokenize=True,
        return_dict=True)["input_ids"])
    if full[: len(head)] != head:
        raise LadderError("the chat template renders the prompt differently with and without "
                          "the answer; completion-only loss cannot be computed for this model")
    tail = full[len(head):]
    # stop after the end-of-turn token: what follows it (a newline) is never generated
    eot = end_of_turn(tokenizer) if eot is None else eot
    if eot in tail:
        tail = tail[: tail.index(eot) + 1]
    return head + tail, [IGNORE] * len(head) + tail


def build_rows(examples: list[Example], prompt: Callable[[str | Messages], Messages],
               tokenizer: Any, max_seq_len: int, min_examples: int,
               leakage_removed: int = 0) -> tuple[list[TrainRow], DataReport]:
    """Check and tokenize `examples` (train split only) with the rung's prompt builder."""
    rep = DataReport(given=len(examples))
    seen: dict[str, str] = {}
    outputs: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    rows: list[TrainRow] = []
    eot = end_of_turn(tokenizer)
    for ex in examples:
        k = _key(ex.input)
        if not ex.output.strip():
            rep.empty.append(ex.id)
            continue
        if seen.get(k) == ex.output:
            rep.duplicates.append(ex.id)
            continue
        seen.setdefault(k, ex.output)
        outputs[k][ex.output].append(ex.id)
        ids, labels = encode(tokenizer, prompt(ex.input), ex.output, eot)
        if len(ids) > max_seq_len:
            rep.too_long.append((ex.id, len(ids)))
            continue
        rows.append(TrainRow(ex.id, ids, labels))
    rep.conflicts = [sum(by_out.values(), []) for by_out in outputs.values() if len(by_out) > 1]
    rep.kept = len(rows)
    if rows:
        lens = sorted(len(r.input_ids) for r in rows)
        rep.tokens = {"min": lens[0], "median": lens[len(lens) // 2], "max": lens[-1],
                      "total": sum(lens),
                      "completion": sum(r.completion_tokens for r in rows)}
    if rep.too_long:
        rep.warnings.append(f"{len(rep.too_long)} example(s) longer than max_seq_len "
                            f"{max_seq_len} tokens were left out (never cut): "
                            + ", ".join(f"{i} ({n})" for i, n in rep.too_long[:5]))
    if rep.duplicates:
        rep.warnings.append(f"{len(rep.duplicates)} exact duplicate(s) dropped: "
                            + ", ".join(rep.duplicates[:5]))
    if rep.empty:
        rep.warnings.append(f"{len(rep.empty)} example(s) with an empty output dropped: "
                            + ", ".join(rep.empty[:5]))
    if rep.conflicts:
        rep.warnings.append(f"{len(rep.conflicts)} input(s) appear with different outputs "
                            "(conflicting labels teach noise): "
                            + "; ".join(" vs ".join(c) for c in rep.conflicts[:3]))
    if leakage_removed:
        rep.warnings.append(f"{leakage_removed} train example(s) overlapping the test split "
                            "were removed before training")
    if len(rows) < min_examples:
        rep.warnings.append(f"only {len(rows)} usable train example(s); LoRA usually needs "
                            f"at least {min_examples} (a few hundred for a new label set or "
                            "format) to beat few-shot prompting")
    if not rows:
        raise LadderError("no usable train examples left for fine-tuning: "
                          + "; ".join(rep.warnings))
    return rows, rep


def data_hash(rows: list[TrainRow]) -> str:
    """Content hash of the tokenized training data (ids, tokens, labels)."""
    h = hashlib.sha256()
    for r in sorted(rows, key=lambda r: r.id):
        h.update(json.dumps([r.id, r.input_ids, r.labels]).encode())
    return h.hexdigest()[:16]
