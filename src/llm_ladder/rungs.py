"""The prompting rungs: zero-shot, system prompt, few-shot (random, nearest), chain-of-thought.

A rung turns (task, train split) into a Pipeline: how to build the messages for one input,
the generation settings, and how to read the answer out of the raw text. Few-shot pools come
from the train split only; the caller never passes test examples here. Each rung is ~20
lines; they share `instructions()` and nothing else.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from llm_ladder.data import Example, Messages
from llm_ladder.models.base import GenParams
from llm_ladder.task import Task


@dataclass
class Pipeline:
    """What a rung produces: messages for an input, generation settings, answer parsing."""

    rung: str
    build_messages: Callable[[str | Messages], Messages]
    params: GenParams
    parse: Callable[[str], str] = str.strip
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class RungContext:
    task: Task
    train: list[Example]
    labels: list[str] | None = None
    schema: dict[str, Any] | None = None


@runtime_checkable
class Rung(Protocol):
    name: str
    description: str

    def build(self, ctx: RungContext) -> Pipeline: ...


def as_messages(inp: str | Messages) -> Messages:
    return list(inp) if isinstance(inp, list) else [{"role": "user", "content": inp}]


def instructions(ctx: RungContext) -> str:
    """The task's system prompt, or one written from its description, labels and schema."""
    if ctx.task.prompt.system:
        return ctx.task.prompt.system
    parts = [ctx.task.description.strip() or "Answer the user's request."]
    if ctx.labels:
        parts.append("Reply with exactly one of these labels and nothing else: "
                     + ", ".join(ctx.labels) + ".")
    if ctx.schema:
        parts.append("Reply with only a JSON object that matches this JSON schema:\n"
                     + json.dumps(ctx.schema, ensure_ascii=False))
    return "\n".join(parts)


def _with_system(system: str, msgs: Messages) -> Messages:
    if msgs and msgs[0]["role"] == "system":
        return [{"role": "system", "content": system + "\n\n" + msgs[0]["content"]}] + msgs[1:]
    return [{"role": "system", "content": system}] + msgs


def _shots(examples: list[Example]) -> Messages:
    out: Messages = []
    for ex in examples:
        out += as_messages(ex.input)
        out.append({"role": "assistant", "content": ex.output})
    return out


def _params(ctx: RungContext, max_tokens: int | None = None) -> GenParams:
    gen = ctx.task.generation
    return GenParams(max_tokens=max_tokens or gen.max_tokens, temperature=gen.temperature)


class ZeroShot:
    name = "zero-shot"
    description = "the input alone, as the user turn"

    def build(self, ctx: RungContext) -> Pipeline:
        return Pipeline(self.name, as_messages, _params(ctx))


class SystemPrompt:
    name = "system-prompt"
    description = "instructions (labels, output format) in a system message"

    def build(self, ctx: RungContext) -> Pipeline:
        system = instructions(ctx)
        return Pipeline(self.name, lambda inp: _with_system(system, as_messages(inp)),
                        _params(ctx), settings={"system": system})


class FewShotRandom:
    name = "few-shot-random"
    description = "system prompt + k random train examples as earlier turns"

    def build(self, ctx: RungContext) -> Pipeline:
        k = min(ctx.task.prompt.few_shot_k, len(ctx.train))
        shots = random.Random(ctx.task.split.seed).sample(ctx.train, k)
        system = instructions(ctx)
        prefix = _shots(shots)
        return Pipeline(self.name,
                        lambda inp: _with_system(system, prefix + as_messages(inp)),
                        _params(ctx), settings={"k": k, "shot_ids": [e.id for e in shots]})


class FewShotNearest:
    name = "few-shot-nearest"
    description = "system prompt + the k train examples most similar to the input (embeddings)"

    def build(self, ctx: RungContext) -> Pipeline:
        from llm_ladder.embedding import Embedder

        embedder = Embedder()
        k = min(ctx.task.prompt.few_shot_k, len(ctx.train))
        pool = ctx.train
        vecs = embedder.embed([e.input_text() for e in pool])
        system = instructions(ctx)

        def build(inp: str | Messages) -> Messages:
            text = inp if isinstance(inp, str) else Example("", inp, "").input_text()
            sims = vecs @ embedder.embed([text])[0]
            best = sorted(range(len(pool)), key=lambda i: -sims[i])[:k]
            shots = [pool[i] for i in reversed(best)]  # most similar last, nearest the input
            return _with_system(system, _shots(shots) + as_messages(inp))

        return Pipeline(self.name, build, _params(ctx),
                        settings={"k": k, "embedder": embedder.name, "pool": len(pool)})


_ANSWER = re.compile(r"answer\s*[:：]\s*(.+)", re.I | re.S)


def extract_answer(text: str) -> str:
    """The text after the last 'Answer:'; without one, the last non-empty line."""
    hits = list(_ANSWER.finditer(text))
    if hits:
        return hits[-1].group(1).strip()
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


class ChainOfThought:
    name = "chain-of-thought"
    description = "system prompt + reason step by step, then 'Answer: ...' (extracted)"

    def build(self, ctx: RungContext) -> Pipeline:
        system = instructions(ctx) + (
            "\nFirst think step by step in a few short sentences. Then write the final answer "
            "on its own last line as 'Answer: <answer>'.")
        return Pipeline(self.name, lambda inp: _with_system(system, as_messages(inp)),
                        _params(ctx, ctx.task.prompt.cot_max_tokens), parse=extract_answer,
                        settings={"system": system})


PROMPTING_RUNGS = ["zero-shot", "system-prompt", "few-shot-random", "few-shot-nearest",
                   "chain-of-thought"]


def get_rung(name: str) -> Rung:
    from llm_ladder import plugins

    return plugins.get("rungs", name)()
